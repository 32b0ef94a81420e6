// GEMM: square sizes and DeepBench shapes in every dtype; the CPU's reference, OpenMP, OpenBLAS
// and oneDNN, the GPU's naive and tiled kernels and cuBLAS.
#include "bench/ops/family.hpp"
#include "core/gemm.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

OpFamily gemm_family() {
  OpFamily f;
  f.name = "gemm";
  f.shape_keys = "m=M,n=N,k=K[,ta=1][,tb=1][,alpha=A][,beta=B]";
  f.suite = [](int level, Dtype t) {
    std::vector<SuiteEntry> out;
    for (GemmShape s : gemm_suite(level)) {
      s.dtype = t;
      // The thread sweep runs at 1024^3 (2048^3 in the full suite).
      const bool sweep = t == Dtype::fp32 && s.m == s.n && s.n == s.k && !s.ta && !s.tb &&
                         s.m == (level == 2 ? 2048 : 1024);
      out.push_back(entry<GemmWorkload>(s, sweep));
    }
    return out;
  };
  f.from_shape = [](const KeyValues& kv, Dtype t) -> std::shared_ptr<const Workload> {
    GemmShape s = parse_gemm_shape(kv);
    s.dtype = t;
    return std::make_shared<GemmWorkload>(s);
  };
  // cublas: cublasSgemm for fp32, cublasGemmEx for tf32, fp16 and bf16.
  ImplSpec cublas = gpu::spec("gemm", "cublas", any);
  cublas.library = "cublas";
  cublas.workspace_bytes = 64.0 * (1 << 20);  // cuBLAS's default workspace: 32 MiB on Hopper
  f.impls = concat(cpu::gemm_impls(), {gpu::spec("gemm", "naive", fp32_only),
                                       gpu::spec("gemm", "tiled", fp32_only), cublas});
  return f;
}

}  // namespace pb::ops
