// GPU GEMM against the CPU reference. Skips, with the reason, where there is no GPU; the same
// index math (core/gemm.hpp) and cuBLAS mapping are tested on the CPU in test_core and
// test_cublas_args, which never skip.
#include <gtest/gtest.h>

#include "bench/ops/family.hpp"
#include "kernels/gpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

// The GPU implementations of GEMM, as its family lists them.
std::vector<ImplSpec> gpu_gemm_impls() {
  std::vector<ImplSpec> out;
  for (const ImplSpec& s : ops::gemm_family().impls)
    if (s.device == Device::gpu) out.push_back(s);
  return out;
}

class GpuGemm : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  }
};

TEST_P(GpuGemm, MatchesReferenceOnAwkwardShapes) {
  const ImplSpec spec = testing::find_impl(gpu_gemm_impls(), GetParam());
  for (Dtype t : all_dtypes()) {
    for (GemmShape s : testing::awkward_shapes()) {
      s.dtype = t;
      const GemmWorkload w(s);
      if (!spec.supports(w)) continue;
      const testing::Floats got = testing::run_impl(spec, w);
      const Check c = testing::verify(w, w.make_inputs(), got);
      EXPECT_TRUE(c.ok) << testing::describe(s) << ": " << c.detail;
      // Inputs are representable in every dtype, so only accumulation order differs.
      EXPECT_LT(testing::max_rel_diff(got, testing::reference(w)),
                (t == Dtype::fp32 ? 1 : 16) * testing::fp32_tolerance(s))
          << testing::describe(s);
    }
  }
}

TEST_P(GpuGemm, SquareAcrossManyTiles) {
  const ImplSpec spec = testing::find_impl(gpu_gemm_impls(), GetParam());
  GemmShape s;
  s.m = 300, s.n = 257, s.k = 513;
  const GemmWorkload w(s);
  EXPECT_TRUE(testing::verify(w, w.make_inputs(), testing::run_impl(spec, w)).ok);
}

INSTANTIATE_TEST_SUITE_P(Impls, GpuGemm, ::testing::Values("naive", "tiled", "cublas"));

TEST(GpuProbe, ReportsAReasonWhenUnavailable) {
  const auto& d = gpu::probe();
  if (d.available) {
    EXPECT_GT(d.sms, 0);
    EXPECT_GT(d.peak_fp32_gflops, 0);
    EXPECT_GT(d.peak_bandwidth_gbs, 0);
  } else {
    EXPECT_FALSE(d.reason.empty());
  }
}

TEST(GpuGemmWithoutDevice, MakingAnImplementationFailsLoudly) {
  if (gpu::probe().available) GTEST_SKIP() << "a GPU is present";
  GemmShape s;
  s.m = s.n = s.k = 4;
  const GemmWorkload w(s);
  EXPECT_ANY_THROW(testing::run_impl(testing::find_impl(gpu_gemm_impls(), "cublas"), w));
}

// The label check behind each cuBLAS case's impl_detail: a pure function, tested on the CPU.
TEST(GpuMathNote, SaysWhenTheDtypeIsNotWhatRuns) {
  EXPECT_EQ(gpu_math_note(Dtype::tf32, 9, 0, ""), "");  // H100: tf32 tensor cores
  EXPECT_EQ(gpu_math_note(Dtype::bf16, 8, 0, ""), "");
  EXPECT_EQ(gpu_math_note(Dtype::fp16, 7, 5, ""), "");
  EXPECT_EQ(gpu_math_note(Dtype::fp32, 7, 5, ""), "");
  const std::string t4_tf32 = gpu_math_note(Dtype::tf32, 7, 5, "");  // a T4
  EXPECT_NE(t4_tf32.find("sm_75"), std::string::npos) << t4_tf32;
  EXPECT_NE(t4_tf32.find("plain fp32 ran"), std::string::npos) << t4_tf32;
  EXPECT_NE(gpu_math_note(Dtype::bf16, 7, 5, "").find("no bf16 tensor cores"), std::string::npos);
  EXPECT_NE(gpu_math_note(Dtype::tf32, 9, 0, "0").find("NVIDIA_TF32_OVERRIDE=0"),
            std::string::npos);
  EXPECT_EQ(gpu_math_note(Dtype::tf32, 9, 0, "1"), "");
}

}  // namespace
}  // namespace pb
