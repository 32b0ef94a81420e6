// The GPU side as the rest of pairbench sees it: plain C++, no CUDA headers, the same API
// whether CUDA is built in or not (kernels/stub.cpp stands in when it is not).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/workload.hpp"

namespace pb::gpu {

struct DeviceInfo {
  bool available = false;
  std::string reason;  // why there is no usable GPU, e.g. "cudaErrorInsufficientDriver: ..."
  std::string name;
  int cc_major = 0, cc_minor = 0, sms = 0;
  double total_bytes = 0, free_bytes = 0, l2_bytes = 0;
  double clock_khz = 0, mem_clock_khz = 0, bus_width_bits = 0;
  double peak_fp32_gflops = 0, peak_bandwidth_gbs = 0;  // theoretical, from device attributes
  int driver_version = 0, runtime_version = 0, cublas_version = 0;
};

// Probes once; any CUDA error means "no GPU", with the error as the reason.
const DeviceInfo& probe();

// The GPU implementations of an op ("gemm", "stream", "transfer"); listed even without a GPU,
// so that runs can show them as skipped.
std::vector<ImplSpec> impls(const std::string& op);

// "" while the device is usable; after a fault that leaves the CUDA context unusable (an
// illegal address, a watchdog timeout), the error every later call would fail with.
std::string sticky_error();

// What the GPU actually runs for a dtype that names a kind of arithmetic, "" when it is what
// the name says: tf32 needs tensor cores of compute capability 8.0 or later and is turned off
// by NVIDIA_TF32_OVERRIDE=0 (tf32_override: that variable's value, "" when unset); bf16 has
// tensor cores from 8.0 on (before, cuBLAS computes it without them); fp16 from 7.0.
std::string math_note(Dtype t, int cc_major, int cc_minor, const std::string& tf32_override);

// Builds one (throws std::runtime_error when CUDA is not built in or the device fails).
// units: streaming multiprocessors to use for implementations that sweep them; 0 means all.
std::unique_ptr<Impl> make_impl(const std::string& op, const std::string& name, const Workload& w,
                                int units);

}  // namespace pb::gpu
