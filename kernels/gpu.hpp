// The GPU side as the rest of pairbench sees it: plain C++, no CUDA headers, the same API
// whether CUDA is built in or not (kernels/stub.cpp stands in when it is not).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/gemm.hpp"
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

// The GPU GEMM implementations; listed even without a GPU so runs can show them as skipped.
std::vector<ImplSpec> gemm_impls();

// Builds the GPU GEMM implementation `name` (throws when CUDA is not built in).
std::unique_ptr<Impl> make_gemm(const std::string& name, const GemmShape& shape);

}  // namespace pb::gpu
