// The list of GPU implementations, compiled with or without CUDA.
#include "core/stream.hpp"
#include "kernels/gpu.hpp"

namespace pb::gpu {

std::vector<ImplSpec> impls(const std::string& op) {
  auto spec = [&op](const char* name, std::function<bool(const Workload&)> supports,
                    bool sweeps_sms = false) {
    ImplSpec sp;
    sp.op = op;
    sp.name = name;
    sp.device = Device::gpu;
    sp.sweeps_units = sweeps_sms;
    sp.supports = std::move(supports);
    sp.make = [op, n = std::string(name)](const Workload& w, int units) {
      return make_impl(op, n, w, units);
    };
    return sp;
  };
  auto any = [](const Workload&) { return true; };
  auto fp32 = [](const Workload& w) { return w.dtype() == Dtype::fp32; };
  if (op == "gemm") {  // cublas: cublasSgemm for fp32, cublasGemmEx for tf32, fp16 and bf16
    ImplSpec cublas = spec("cublas", any);
    cublas.library = "cublas";
    cublas.workspace_bytes = 64.0 * (1 << 20);  // cuBLAS's default workspace: 32 MiB on Hopper
    return {spec("naive", fp32), spec("tiled", fp32), cublas};
  }
  if (op == "stream") {
    auto triad = [](const Workload& w) {
      return static_cast<const StreamWorkload&>(w).stream().kernel == StreamKernel::triad;
    };
    return {spec("cuda", any), spec("sm_limited", triad, true)};
  }
  if (op == "transfer") return {spec("memcpy", any)};
  if (op == "activation" || op == "softmax" || op == "loss")
    return {spec("naive", any), spec("vectorized", any)};
  return {};
}

}  // namespace pb::gpu
