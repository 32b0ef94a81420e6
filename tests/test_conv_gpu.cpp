// GPU convolution against the workload's check, every implementation and pass on awkward shapes;
// the libraries in tf32, cuDNN in bf16 and fp16.
// Skips, with the reason, where there is no GPU; the index math the kernels share with the CPU
// (core/conv.hpp) and the checks are tested on the CPU in test_conv.
#include <gtest/gtest.h>

#include "core/conv.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

class GpuConv : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
    if (std::string(GetParam()) == "cudnn" && !gpu::cudnn_unavailable().empty())
      GTEST_SKIP() << gpu::cudnn_unavailable();
  }
};

TEST_P(GpuConv, EveryPassOnAwkwardShapes) {
  const std::int64_t shapes[][9] = {
      {2, 3, 9, 7, 5, 3, 3, 2, 1},      {1, 1, 8, 8, 3, 3, 3, 1, 0},
      {3, 4, 6, 11, 7, 1, 1, 1, 0},     {2, 6, 8, 7, 9, 1, 1, 2, 0},
      {1, 2, 13, 5, 4, 7, 3, 2, 3},     {8, 64, 56, 56, 64, 3, 3, 1, 1},
      {2, 256, 14, 14, 256, 3, 3, 1, 1}};
  for (const auto& d : shapes)
    for (ConvDir dir : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
      ConvShape s;
      s.dir = dir, s.n = d[0], s.c = d[1], s.h = d[2], s.w = d[3], s.k = d[4], s.r = d[5];
      s.s = d[6], s.stride_h = s.stride_w = d[7], s.pad_h = s.pad_w = d[8];
      const ConvWorkload w(s);
      auto impl = gpu::make_impl("conv", GetParam(), w, 0);
      const Tensors in = w.make_inputs();
      impl->prepare(in);
      impl->run();
      const Tensors out = impl->result();
      const Check c = w.verify(in, out);
      EXPECT_TRUE(c.ok) << GetParam() << " " << w.shape().to_string() << ": " << c.detail << " ("
                        << impl->detail() << ")";
    }
}

// The tf32 convolutions (cuDNN, and im2col's cuBLAS GEMMs on tensor cores: the GPU
// implementations the registry gives tf32 cases; its choice is tested on the CPU in
// test_registry), each pass.
TEST(GpuConvTf32, TheLibrariesVerifyWithTheDtypesTolerance) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  for (const char* name : {"cudnn", "im2col"})
    for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
      if (std::string(name) == "cudnn" && !gpu::cudnn_unavailable().empty()) continue;
      ConvShape s;
      s.n = 2, s.c = 32, s.h = s.w = 14, s.k = 32, s.r = s.s = 3, s.pad_h = s.pad_w = 1;
      s.dtype = Dtype::tf32, s.dir = d;
      const ConvWorkload w(s);
      auto impl = gpu::make_impl("conv", name, w, 0);
      const Tensors in = w.make_inputs();
      impl->prepare(in);
      impl->run();
      const Check c = w.verify(in, impl->result());
      EXPECT_TRUE(c.ok) << name << " " << w.shape().to_string() << ": " << c.detail << " ("
                        << impl->detail() << ")";
    }
}

// cuDNN in bf16 and fp16 (NHWC maps, KRSC filters, 16-bit outputs: the training step's plans),
// each pass, on a ResNet-50 layer, a stride-2 layer, a 1x1 projection and the stem's 3 input
// channels: the workload's check (one rounding of the output to the dtype allowed).
TEST(GpuConvLow, CudnnVerifiesIn16Bits) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  if (!gpu::cudnn_unavailable().empty()) GTEST_SKIP() << gpu::cudnn_unavailable();
  const std::int64_t shapes[][9] = {{2, 64, 14, 14, 64, 3, 3, 1, 1},
                                    {2, 32, 15, 15, 48, 3, 3, 2, 1},
                                    {2, 64, 14, 14, 256, 1, 1, 1, 0},
                                    {2, 3, 32, 32, 64, 7, 7, 2, 3}};
  for (Dtype t : {Dtype::fp16, Dtype::bf16}) {
    if (t == Dtype::bf16 && gpu::probe().cc_major < 8) continue;  // no bf16 convolutions there
    for (const auto& d : shapes)
      for (ConvDir dir : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
        ConvShape s;
        s.dir = dir, s.n = d[0], s.c = d[1], s.h = d[2], s.w = d[3], s.k = d[4], s.r = d[5];
        s.s = d[6], s.stride_h = s.stride_w = d[7], s.pad_h = s.pad_w = d[8], s.dtype = t;
        const ConvWorkload w(s);
        auto impl = gpu::make_impl("conv", "cudnn", w, 0);
        const Tensors in = w.make_inputs();
        impl->prepare(in);
        impl->run();
        const Check c = w.verify(in, impl->result());
        EXPECT_TRUE(c.ok) << w.shape().to_string() << ": " << c.detail << " (" << impl->detail()
                          << ")";
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Impls, GpuConv, ::testing::Values("direct", "im2col", "cudnn"));

}  // namespace
}  // namespace pb
