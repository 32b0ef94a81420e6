// NCCL's collectives on this process's GPU, one rank, as the lent GPU machine runs them: each
// kind in fp32 and bf16 through the case's implementation and its exact check, run twice (a
// timed loop runs it many times). On one rank NCCL moves nothing in place, so the case runs out
// of place into a buffer of NaNs: a collective that did nothing fails the check. Skips, with
// the reason, without a GPU or without NCCL; across ranks: tests/test_mpi.py.
#include <gtest/gtest.h>

#include <string>

#include "core/collective.hpp"
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

}  // namespace
}  // namespace pb
