// The GPU implementations as the registry lists them, compiled with or without CUDA.
#include "kernels/gpu.hpp"

namespace pb::gpu {

ImplSpec spec(const std::string& op, const std::string& name,
              std::function<bool(const Workload&)> supports, bool sweeps_sms) {
  ImplSpec sp;
  sp.op = op;
  sp.name = name;
  sp.device = Device::gpu;
  sp.sm_sweep = sweeps_sms;
  sp.supports = std::move(supports);
  sp.make = [op, name](const Workload& w, int units) { return make_impl(op, name, w, units); };
  return sp;
}

}  // namespace pb::gpu

namespace pb::gpu {

std::string cudnn_unavailable() {
#if defined(PAIRBENCH_HAVE_CUDA) && !defined(PAIRBENCH_HAVE_CUDNN)
  return "pairbench was built without cuDNN (CMake found no cudnn.h and libcudnn beside the CUDA "
         "toolkit or in .venv)";
#else
  return "";
#endif
}

}  // namespace pb::gpu
