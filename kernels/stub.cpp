// Stands in for the CUDA sources when pairbench is built with -DPAIRBENCH_CUDA=OFF.
#include <stdexcept>

#include "kernels/gpu.hpp"

namespace pb::gpu {

const DeviceInfo& probe() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    d.reason = "pairbench was built without CUDA (-DPAIRBENCH_CUDA=OFF or no nvcc)";
    return d;
  }();
  return info;
}

std::string sticky_error() { return ""; }

std::unique_ptr<Impl> make_impl(const std::string&, const std::string&, const Workload&, int) {
  throw std::runtime_error(probe().reason);
}

}  // namespace pb::gpu
