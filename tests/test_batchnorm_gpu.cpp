// The GPU's batch normalization against its workload's check, in each direction and on the
// awkward shapes the CPU's are tested on. Skips, with the reason, where there is no GPU; the
// per-element math it shares with the CPU and the reference are tested in test_batchnorm.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/batchnorm.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

// Each GPU implementation: the project's kernels, and cuDNN's where it is built in. For the
// kernels, the first two shapes take the per-value kernels, the last (planes of 3136 values, a
// whole number of 4-float packs) the packs; its NCHW sums run four rows a plane (three of 1024
// values and one of 64).
TEST(GpuBatchNorm, EachDirectionPassesTheCheck) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  const BatchNormShape shapes[] = {
      {BnDir::fwd, 1, 3, 7, 5}, {BnDir::fwd, 4, 17, 1, 1}, {BnDir::fwd, 8, 64, 56, 56}};
  std::vector<std::string> impls = {"cuda"};
  if (gpu::cudnn_unavailable().empty()) impls.push_back("cudnn");
  for (const std::string& name : impls)
    for (BatchNormShape s : shapes)
      for (BnDir d : {BnDir::fwd, BnDir::bwd, BnDir::infer}) {
        s.dir = d;
        const BatchNormWorkload w(s);
        auto impl = gpu::make_impl("batchnorm", name, w, 0);
        const Tensors in = w.make_inputs();
        impl->prepare(in);
        impl->run();
        const Check c = w.verify(in, impl->result());
        EXPECT_TRUE(c.ok) << name << " " << w.shape().to_string() << ": " << c.detail;
      }
}

}  // namespace
}  // namespace pb
