// The list of GPU implementations, compiled with or without CUDA.
#include "kernels/gpu.hpp"

namespace pb::gpu {

std::vector<ImplSpec> gemm_impls() {
  auto spec = [](const char* name, bool tensor_dtypes) {
    ImplSpec sp;
    sp.op = "gemm";
    sp.name = name;
    sp.device = Device::gpu;
    sp.supports = [tensor_dtypes](const Workload& w) {
      return tensor_dtypes || w.dtype() == Dtype::fp32;
    };
    sp.make = [n = std::string(name)](const Workload& w, int) {
      return make_gemm(n, static_cast<const GemmWorkload&>(w).gemm());
    };
    return sp;
  };
  // cublas runs fp32 through cublasSgemm and tf32 / fp16 / bf16 through cublasGemmEx.
  return {spec("naive", false), spec("tiled", false), spec("cublas", true)};
}

}  // namespace pb::gpu
