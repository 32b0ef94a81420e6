// NCCL's collectives on this process's GPU, one rank, as the lent GPU machine runs them: each
// kind in fp32 and bf16 through the case's implementation and its exact check, run twice (a
// timed loop runs it many times). On one rank NCCL moves nothing in place, so the case runs out
// of place into a buffer of NaNs: a collective that did nothing fails the check. Skips, with
// the reason, without a GPU or without NCCL; across ranks: tests/test_mpi.py. And the
// data-parallel training step's NCCL calls, on one rank.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/collective.hpp"
#include "core/train.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

TEST(GpuCollective, EachKindOnOneRankPassesItsCheck) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  if (const std::string why = gpu::nccl_load(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(gpu::nccl_init(gpu::nccl_unique_id(), 1, 0), "");
  for (Dtype t : {Dtype::fp32, Dtype::bf16})
    for (CollectiveKind k : all_collectives())
      for (std::int64_t bytes : {std::int64_t{4096}, std::int64_t{1} << 20}) {
        CollectiveShape s;
        s.kind = k, s.bytes = bytes, s.dtype = t, s.ranks = 1, s.rank = 0;
        const CollectiveWorkload w(s);
        auto impl = gpu::make_impl("collective", "nccl", w, 0);
        const Tensors in = w.make_inputs();
        impl->prepare(in);
        EXPECT_NE(impl->detail().find("out of place"), std::string::npos) << impl->detail();
        for (int run = 0; run < 2; ++run) {
          impl->run();
          const Check c = w.verify(in, impl->result());
          EXPECT_TRUE(c.ok) << w.shape().to_string() << " run " << run << ": " << c.detail;
        }
      }
}

// The data-parallel step's NCCL calls (the gradients' ncclAvg on the step's stream, the
// parameters' hash compared by ncclMax, the first step run in prepare), on one rank through the
// step's test hook: over one rank the average changes nothing, and the step passes its check.
TEST(GpuCollective, TheDataParallelStepsNcclCallsRunOnOneRank) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  if (const std::string why = gpu::nccl_load(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(gpu::nccl_init(gpu::nccl_unique_id(), 1, 0), "");  // "" again where it is up
  TrainShape s;
  s.model = "cnn", s.batch = 8;
  const TrainWorkload w(s);
  setenv("PAIRBENCH_TEST_NCCL_REDUCE", "1", 1);
  auto impl = gpu::make_impl("train", "kernels", w, 0);
  unsetenv("PAIRBENCH_TEST_NCCL_REDUCE");
  const Tensors in = w.make_inputs();
  impl->prepare(in);
  impl->run();
  const Check c = w.verify(in, impl->result());
  EXPECT_TRUE(c.ok) << c.detail;
  EXPECT_NE(impl->detail().find("by NCCL (ncclAvg)"), std::string::npos) << impl->detail();
}

}  // namespace
}  // namespace pb
