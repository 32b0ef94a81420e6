// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/hd.hpp"
#include "core/workload.hpp"

namespace pb {

struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0;
  bool ta = false, tb = false;  // A is stored k x m (B is stored n x k) when transposed
  float alpha = 1, beta = 0;
  Dtype dtype = Dtype::fp32;

  HD std::int64_t lda() const { return ta ? m : k; }
  HD std::int64_t ldb() const { return tb ? k : n; }
  HD std::int64_t ldc() const { return n; }
};

// op(X)[r][c] for a row-major X with leading dimension ld: the one index rule every GEMM
// implementation (CPU and GPU) uses.
HD inline std::int64_t op_index(bool trans, std::int64_t r, std::int64_t c, std::int64_t ld) {
  return trans ? c * ld + r : r * ld + c;
}

// op(X)[r][c], or 0 outside the rows x cols matrix: lets tiled kernels load edge tiles.
HD inline float op_load(const float* x, bool trans, std::int64_t r, std::int64_t c,
                        std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  return (r < rows && c < cols) ? x[op_index(trans, r, c, ld)] : 0.0f;
}

// Element e (0 <= e < rows * cols) of an op(X) tile that a block's threads load together: the
// row and column within the tile. Consecutive e walk along the dimension that is contiguous in
// memory (along a row of a row-major operand, down a column of a transposed one), so that a
// warp's loads coalesce whatever the transposes.
HD inline void tile_element(bool transposed, int e, int rows, int cols, int* r, int* c) {
  *r = transposed ? e % rows : e / cols;
  *c = transposed ? e / rows : e % cols;
}

// Column-major BLAS arguments (cuBLAS, or cblas with CblasColMajor) that compute a row-major
// GEMM. A row-major matrix read as column-major is its transpose, so row-major C = op(A) op(B)
// is column-major C^T = op(B)^T op(A)^T: pass B first, A second, and swap m and n.
struct ColMajorGemmArgs {
  bool trans_first, trans_second;  // first operand: B's buffer; second: A's
  std::int64_t m, n, k;            // column-major m (= row-major n), n (= row-major m), k
  std::int64_t ld_first, ld_second, ldc;
};

inline ColMajorGemmArgs col_major_args(const GemmShape& s) {
  return ColMajorGemmArgs{s.tb, s.ta, s.n, s.m, s.k, s.ldb(), s.lda(), s.ldc()};
}

// Suites: 0 quick, 1 standard, 2 full. Square sizes grow with the suite; the rest are shapes of
// Baidu's DeepBench (github.com/baidu-research/DeepBench, code/kernels/gemm_problems.h,
// training set), transposes included.
std::vector<GemmShape> gemm_suite(int level);

// Builds a shape from --shape keys m, n, k (required), ta, tb (0/1), alpha, beta.
// Throws std::invalid_argument with a one-line message on a missing, unknown or bad key.
GemmShape parse_gemm_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class GemmWorkload : public Workload {
 public:
  explicit GemmWorkload(GemmShape s, std::uint64_t seed = 42) : s_(s), seed_(seed) {}
  const GemmShape& gemm() const { return s_; }

  std::string op() const override { return "gemm"; }
  Role role() const override { return Role::compute_reference; }
  Shape shape() const override;
  Dtype dtype() const override { return s_.dtype; }
  double flops() const override;
  double min_bytes() const override;
  double write_allocate_bytes() const override;  // C, when beta = 0 does not read it
  double host_bytes(Device) const override;
  double device_bytes() const override;
  // {A, B, C0}, uniform in [-1, 1) and rounded to the dtype so every device sees the same values.
  Tensors make_inputs() const override;  // a (m x k or k x m), b, c (m x n, beta's C)
  std::vector<std::string> outputs() const override { return {"c"}; }
  // Freivalds' test, O(n^2): compares C x with alpha A (B x) + beta C0 x for random sign vectors
  // x, each row's residual measured in units of its statistical rounding-error scale.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;
  // The tolerance on that normalised residual for this dtype and reduction length.
  double tolerance() const;

 private:
  GemmShape s_;
  std::uint64_t seed_;
};

}  // namespace pb
