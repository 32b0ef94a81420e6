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

// Builds one (throws std::runtime_error when CUDA is not built in or the device fails).
// units: streaming multiprocessors to use for implementations that sweep them; 0 means all.
std::unique_ptr<Impl> make_impl(const std::string& op, const std::string& name, const Workload& w,
                                int units);

}  // namespace pb::gpu
