// Every CPU GEMM implementation equals the naive reference on awkward shapes.
#include <gtest/gtest.h>

#include "cpu_ref/cpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

class CpuGemm : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuGemm, MatchesNaiveOnAwkwardShapes) {
  const ImplSpec spec = testing::find_impl(cpu::gemm_impls(), GetParam());
  for (int threads : {1, 2}) {
    for (const GemmShape& s : testing::awkward_shapes()) {
      const GemmWorkload w(s);
      const Buffer ref = testing::reference(w);
      const Buffer got = testing::run_impl(spec, w, threads);
      EXPECT_LT(testing::max_rel_diff(got, ref), testing::fp32_tolerance(s))
          << testing::describe(s) << " threads=" << threads;
      EXPECT_TRUE(w.verify(w.make_inputs(), got).ok) << testing::describe(s);
    }
  }
}

TEST_P(CpuGemm, LargerThanOneBlock) {
  // Spans several KC and NC blocks of the omp implementation, with edges in every direction.
  GemmShape s;
  s.m = 150, s.n = 600, s.k = 530, s.tb = true, s.beta = 2.0f;
  const GemmWorkload w(s);
  EXPECT_LT(testing::max_rel_diff(
                testing::run_impl(testing::find_impl(cpu::gemm_impls(), GetParam()), w, 2),
                testing::reference(w)),
            testing::fp32_tolerance(s));
}

INSTANTIATE_TEST_SUITE_P(Impls, CpuGemm, ::testing::Values("omp", "openblas"));

TEST(CpuGemmReference, NaiveMatchesHandComputedProduct) {
  // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50], with beta * C0 added.
  GemmShape s;
  s.m = s.n = s.k = 2;
  s.beta = 1.0f;
  const GemmWorkload w(s);
  std::vector<Buffer> in = {{1, 2, 3, 4}, {5, 6, 7, 8}, {1, 0, 0, 1}};
  auto impl = testing::find_impl(cpu::gemm_impls(), "naive").make(w, 1);
  impl->prepare(in);
  impl->run();
  EXPECT_EQ(impl->result(), (Buffer{20, 22, 43, 51}));
}

TEST(CpuThreads, SetsOpenMPAndOpenBLAS) {
  cpu::set_threads(1);
  EXPECT_EQ(cpu::cpu_info().openblas_threading, "openmp");
  cpu::set_threads(2);
}

}  // namespace
}  // namespace pb
