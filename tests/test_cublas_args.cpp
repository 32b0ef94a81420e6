// The cuBLAS argument tuple for a row-major GEMM, replayed on column-major cblas_sgemm, gives
// the row-major reference: the mapping is checked without a GPU.
#include <cblas.h>
#include <gtest/gtest.h>

#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

TEST(CublasArgs, ReplayedOnColumnMajorBlasEqualsRowMajorReference) {
  for (const GemmShape& s : testing::awkward_shapes()) {
    const GemmWorkload w(s);
    Tensors in = w.make_inputs();
    const ColMajorGemmArgs g = col_major_args(s);
    // Exactly the call kernels/gemm.cu makes: B's buffer first, A's second.
    cblas_sgemm(CblasColMajor, g.trans_first ? CblasTrans : CblasNoTrans,
                g.trans_second ? CblasTrans : CblasNoTrans, static_cast<blasint>(g.m),
                static_cast<blasint>(g.n), static_cast<blasint>(g.k), s.alpha, in[1].f32().data(),
                static_cast<blasint>(g.ld_first), in[0].f32().data(),
                static_cast<blasint>(g.ld_second), s.beta, in[2].f32().data(),
                static_cast<blasint>(g.ldc));
    EXPECT_LT(testing::max_rel_diff(in[2].f32(), testing::reference(w)), testing::fp32_tolerance(s))
        << testing::describe(s);
  }
}

TEST(CublasArgs, SwapsOperandsAndDimensions) {
  GemmShape s;
  s.m = 3, s.n = 5, s.k = 7, s.ta = true;
  const ColMajorGemmArgs g = col_major_args(s);
  EXPECT_EQ(g.m, 5);
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.k, 7);
  EXPECT_FALSE(g.trans_first);  // B, not transposed
  EXPECT_TRUE(g.trans_second);  // A, transposed
  EXPECT_EQ(g.ld_first, 5);     // B stored k x n
  EXPECT_EQ(g.ld_second, 3);    // A stored k x m
  EXPECT_EQ(g.ldc, 5);
}

}  // namespace
}  // namespace pb
