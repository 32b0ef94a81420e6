// Every CPU GEMM implementation equals the naive reference on awkward shapes.
#include <gtest/gtest.h>

#include <stdexcept>

#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

class CpuGemm : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuGemm, MatchesNaiveOnAwkwardShapes) {
  const ImplSpec spec = testing::find_impl(cpu::gemm_impls(), GetParam());
  if (spec.unavailable && !spec.unavailable(GemmWorkload(GemmShape{})).empty())
    GTEST_SKIP() << spec.unavailable(GemmWorkload(GemmShape{}));  // a build without oneDNN
  for (int threads : {1, 2}) {
    for (const GemmShape& s : testing::awkward_shapes()) {
      const GemmWorkload w(s);
      const testing::Floats ref = testing::reference(w);
      const testing::Floats got = testing::run_impl(spec, w, threads);
      EXPECT_LT(testing::max_rel_diff(got, ref), testing::fp32_tolerance(s))
          << testing::describe(s) << " threads=" << threads;
      EXPECT_TRUE(testing::verify(w, w.make_inputs(), got).ok) << testing::describe(s);
    }
  }
}

TEST_P(CpuGemm, LargerThanOneBlock) {
  // Spans several KC and NC blocks of the omp implementation, with edges in every direction.
  GemmShape s;
  s.m = 150, s.n = 600, s.k = 530, s.tb = true, s.beta = 2.0f;
  const GemmWorkload w(s);
  const ImplSpec spec = testing::find_impl(cpu::gemm_impls(), GetParam());
  if (spec.unavailable && !spec.unavailable(w).empty()) GTEST_SKIP() << spec.unavailable(w);
  EXPECT_LT(testing::max_rel_diff(testing::run_impl(spec, w, 2), testing::reference(w)),
            testing::fp32_tolerance(s));
}

INSTANTIATE_TEST_SUITE_P(Impls, CpuGemm, ::testing::Values("omp", "openblas", "onednn"));

// bf16 and fp16 inputs, fp32 accumulation and output, checked as the harness checks them:
// Freivalds' test with the dtype's tolerance, which a wrong element must still fail. Run
// whatever this CPU's ISA (oneDNN emulates bf16 on plain AVX-512); skipped only where oneDNN
// has no implementation at all for the dtype, or is not built in.
class CpuReducedGemm : public ::testing::TestWithParam<Dtype> {};

TEST_P(CpuReducedGemm, OnednnPassesFreivaldsWithTheDtypesTolerance) {
  const ImplSpec spec = testing::find_impl(cpu::gemm_impls(), "onednn");
  std::vector<GemmShape> shapes = testing::awkward_shapes();
  GemmShape big;
  big.m = 192, big.n = 320, big.k = 1000, big.ta = true;
  shapes.push_back(big);
  for (GemmShape s : shapes) {
    s.dtype = GetParam();
    const GemmWorkload w(s);
    if (!cpu::onednn::built()) GTEST_SKIP() << cpu::onednn::unavailable(s.dtype);
    const auto inputs = w.make_inputs();
    testing::Floats got;
    try {
      got = testing::run_impl(spec, w, 2, inputs);
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()).find("oneDNN has no") != 0) throw;
      GTEST_SKIP() << e.what();
    }
    const Check ok = testing::verify(w, inputs, got);
    EXPECT_TRUE(ok.ok) << testing::describe(s) << ": " << ok.detail;
    got[got.size() / 2] += 0.25f;
    EXPECT_FALSE(testing::verify(w, inputs, got).ok) << testing::describe(s);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CpuReducedGemm, ::testing::Values(Dtype::bf16, Dtype::fp16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(CpuGemmReference, NaiveMatchesHandComputedProduct) {
  // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50], with beta * C0 added.
  GemmShape s;
  s.m = s.n = s.k = 2;
  s.beta = 1.0f;
  const GemmWorkload w(s);
  Tensors in = {Tensor::of("a", testing::Floats{1, 2, 3, 4}),
                Tensor::of("b", testing::Floats{5, 6, 7, 8}),
                Tensor::of("c", testing::Floats{1, 0, 0, 1})};
  auto impl = testing::find_impl(cpu::gemm_impls(), "naive").make(w, 1);
  impl->prepare(in);
  impl->run();
  EXPECT_EQ(at(impl->result(), "c").f32(), (testing::Floats{20, 22, 43, 51}));
}

TEST(CpuThreads, SetsOpenMPAndOpenBLAS) {
  cpu::set_threads(1);
  EXPECT_EQ(cpu::cpu_info().openblas_threading, "openmp");
  cpu::set_threads(2);
}

// The oneDNN plan is built once and runs on whatever buffers it is given: two different A's
// through the same plan give two different, right products (what a training step needs).
TEST(OnednnMatmulPlan, RunsOnTheCallersBuffers) {
  GemmShape s;
  s.m = 37, s.n = 29, s.k = 41, s.tb = true, s.beta = 0.5f;
  if (!cpu::onednn::unavailable(s.dtype).empty()) GTEST_SKIP() << cpu::onednn::unavailable(s.dtype);
  cpu::OnednnMatmul plan(s);
  EXPECT_FALSE(plan.kernel().empty());
  EXPECT_TRUE(plan.storage(true, std::vector<float>(4)).empty());  // fp32: the floats themselves
  for (std::uint64_t seed : {1, 2}) {
    const Tensors in = GemmWorkload(s, seed).make_inputs();
    std::vector<float> c = at(in, "c").f32(), ref = c;
    plan.run(at(in, "a").f32().data(), at(in, "b").f32().data(), c.data());
    cpu::gemm_naive(s, at(in, "a").f32().data(), at(in, "b").f32().data(), ref.data());
    EXPECT_LT(testing::max_rel_diff(c, ref), testing::fp32_tolerance(s)) << "seed " << seed;
  }
}

}  // namespace
}  // namespace pb
