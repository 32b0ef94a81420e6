// GPU activations, softmax and loss against their workloads' checks. Skips, with the reason,
// where there is no GPU; the functors they share with the CPU are tested in test_activation.
#include <gtest/gtest.h>

#include "core/activation.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

class GpuActivation : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  }
  static Check run(const std::string& op, const Workload& w) {
    auto x = gpu::make_impl(op, GetParam(), w, 0);
    const auto in = w.make_inputs();
    x->prepare(in);
    x->run();
    return w.verify(in, x->result());
  }
};

TEST_P(GpuActivation, EveryFunctionAndDirection) {
  for (Act a : all_acts())
    for (bool backward : {false, true})
      for (std::int64_t n : {1, 5, 1000003}) {
        const ActivationWorkload w({a, backward, n});
        const Check c = run("activation", w);
        EXPECT_TRUE(c.ok) << to_string(a) << " n=" << n << ": " << c.detail;
      }
}

TEST_P(GpuActivation, SoftmaxAndLoss) {
  for (RowOp k : {RowOp::softmax, RowOp::loss_fwd, RowOp::loss_bwd})
    for (auto [rows, cols] :
         {std::pair<std::int64_t, std::int64_t>{1, 1}, {3, 7}, {5, 1000}, {300, 1024}}) {
      const RowWorkload w({k, rows, cols});
      const Check c = run(k == RowOp::softmax ? "softmax" : "loss", w);
      EXPECT_TRUE(c.ok) << w.shape().to_string() << ": " << c.detail;
    }
}

INSTANTIATE_TEST_SUITE_P(Impls, GpuActivation, ::testing::Values("naive", "vectorized"));

}  // namespace
}  // namespace pb
