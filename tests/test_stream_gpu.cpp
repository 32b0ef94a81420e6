// GPU STREAM and copies against their workloads' checks. Skips, with the reason, where there is
// no GPU; the per-element math and the checks are tested on the CPU in test_stream.
#include <gtest/gtest.h>

#include "core/stream.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

class GpuStream : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  }
  static Check run(const std::string& op, const std::string& impl, const Workload& w, int sms) {
    auto x = gpu::make_impl(op, impl, w, sms);
    const auto in = w.make_inputs();
    x->prepare(in);
    x->run();
    return w.verify(in, x->result());
  }
};

TEST_F(GpuStream, EveryKernelOnAwkwardLengths) {
  for (StreamKernel k : all_stream_kernels())
    for (std::int64_t n : {1, 3, 4, 1000003}) {
      const StreamWorkload w({k, n});
      const Check c = run("stream", "cuda", w, 0);
      EXPECT_TRUE(c.ok) << to_string(k) << " n=" << n << ": " << c.detail;
    }
}

TEST_F(GpuStream, TriadOnFewSms) {
  const StreamWorkload w({StreamKernel::triad, 1000003});
  for (int sms : {1, 2, gpu::probe().sms}) {
    const Check c = run("stream", "sm_limited", w, sms);
    EXPECT_TRUE(c.ok) << "sms=" << sms << ": " << c.detail;
  }
  EXPECT_ANY_THROW(run("stream", "sm_limited", w, gpu::probe().sms + 1));
}

TEST_F(GpuStream, CopiesEveryWay) {
  for (CopyDir d : {CopyDir::h2d, CopyDir::d2h, CopyDir::d2d})
    for (bool pinned : {false, true}) {
      if (d == CopyDir::d2d && pinned) continue;
      const TransferWorkload w({d, pinned, 4 << 20});
      EXPECT_TRUE(run("transfer", "memcpy", w, 0).ok) << to_string(d) << " pinned=" << pinned;
    }
}

}  // namespace
}  // namespace pb
