// Convolution: the three passes over ResNet-50 layers and DeepBench shapes, batch 1 to 32; the
// CPU's reference, im2col + OpenBLAS and oneDNN, the GPU's direct kernels, im2col + cuBLAS and
// cuDNN (in every dtype).
#include "bench/ops/family.hpp"
#include "core/conv.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

OpFamily conv_family() {
  OpFamily f;
  f.name = "conv";
  f.shape_keys =
      "batch=N,c=C,h=H,w=W,k=K,r=R[,s=S][,stride=U][,pad=P][,dir=fwd|bwd_data|bwd_filter]";
  f.suite = [](int level, Dtype t) {
    std::vector<SuiteEntry> out;
    for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter})
      for (ConvShape s : conv_suite(d, level)) {
        // The quick and standard suites' batch sweep is fp32's; tf32 (the GPU's alone), bf16
        // and fp16 run at batch 8.
        if (level <= 1 && t != Dtype::fp32 && s.n != 8) continue;
        s.dtype = t;
        // The thread sweep: ResNet-50's 3x3 layer on 56x56 at batch 8, forward.
        const bool sweep =
            t == Dtype::fp32 && d == ConvDir::fwd && s.c == 64 && s.h == 56 && s.n == 8;
        out.push_back(entry<ConvWorkload>(s, sweep));
      }
    return out;
  };
  f.from_shape = [](const KeyValues& kv, Dtype t) -> std::shared_ptr<const Workload> {
    ConvShape s = parse_conv_shape(kv);
    s.dtype = t;
    return std::make_shared<ConvWorkload>(s);
  };
  // cuDNN in every dtype: bf16 and fp16 on NHWC maps (kernels/conv.cu's CudnnLowConv).
  ImplSpec cudnn = gpu::spec("conv", "cudnn", any);
  cudnn.library = "cudnn";
  cudnn.workspace_bytes = static_cast<double>(kConvWorkspaceCap);  // the most an algorithm takes
  cudnn.unavailable = [](const Workload& w) -> std::string {
    const gpu::DeviceInfo& d = gpu::probe();
    if (w.dtype() == Dtype::bf16 && d.available && d.cc_major < 8) return bf16_needs_sm80(d);
    return gpu::cudnn_unavailable();
  };
  // im2col's GEMMs run cuBLAS's tf32 tensor cores in tf32; direct is FMA alone.
  f.impls = concat(cpu::conv_impls(), {gpu::spec("conv", "direct", fp32_only),
                                       gpu::spec("conv", "im2col", fp32_or_tf32), cudnn});
  return f;
}

}  // namespace pb::ops
