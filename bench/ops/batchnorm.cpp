// Batch normalization: training forward, backward and inference on ResNet-50's maps; the CPU's
// OpenMP loops and oneDNN's primitive, the GPU's kernels and cuDNN's (kernels/batchnorm.cu).
#include "bench/ops/family.hpp"
#include "core/batchnorm.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

OpFamily batchnorm_family() {
  auto suite = [](int level) {
    std::vector<SuiteEntry> out;
    for (const BatchNormShape& s : batchnorm_suite(level))
      out.push_back(entry<BatchNormWorkload>(s));
    return out;
  };
  ImplSpec cudnn = gpu::spec("batchnorm", "cudnn", any);
  cudnn.library = "cudnn";
  cudnn.unavailable = [](const Workload& w) -> std::string {
    if (static_cast<const BatchNormWorkload&>(w).elements() >= 2147483648.0)  // 32-bit counts
      return "cuDNN's batch normalization takes maps of fewer than 2^31 values";
    return gpu::cudnn_unavailable();
  };
  return fp32_family<BatchNormWorkload>(
      "batchnorm", "dir=fwd|bwd|infer,batch=N,c=C,h=H,w=W", suite, parse_batchnorm_shape,
      concat(cpu::batchnorm_impls(), {gpu::spec("batchnorm", "cuda", any), cudnn}));
}

}  // namespace pb::ops
