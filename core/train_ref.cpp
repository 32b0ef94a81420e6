// The reference step: core/train_step.hpp's walk over op functions in double on the CPU, plain
// loops (OpenMP over the outputs), independent of the devices' libraries. The finite-difference
// tests (tests/test_train.cpp) are its own check.
#include <algorithm>
#include <cmath>

#include "core/train.hpp"
#include "core/train_step.hpp"

namespace pb {

namespace {

class ReferenceOps : public HostOps<double> {
 public:
  // c = op(a) op(b) + beta c, row-major.
  void gemm(const GemmShape& g, const double* a, const double* b, double* c) {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < g.m; ++i)
      for (std::int64_t j = 0; j < g.n; ++j) {
        double sum = 0;
        for (std::int64_t k = 0; k < g.k; ++k)
          sum +=
              (g.ta ? a[k * g.m + i] : a[i * g.k + k]) * (g.tb ? b[j * g.k + k] : b[k * g.n + j]);
        c[i * g.n + j] = sum + (g.beta != 0 ? static_cast<double>(g.beta) * c[i * g.n + j] : 0.0);
      }
  }
  // Every output point through conv_terms; bwd_filter also gives the bias gradient.
  void conv(const ConvShape& s, const double* in0, const double* in1, const double* b, double* out,
            double* db) {
    const std::int64_t count = s.dir == ConvDir::fwd        ? s.y_size()
                               : s.dir == ConvDir::bwd_data ? s.x_size()
                                                            : s.w_size();
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      DoubleSum sum;
      conv_terms(s, in0, in1, b, i, sum);
      out[i] = sum.value;
    }
    if (s.dir != ConvDir::bwd_filter || !db) return;
    for (std::int64_t k = 0; k < s.k; ++k) {
      DoubleSum sum;
      conv_bias_grad_terms(s, in1, k, sum);
      db[k] = sum.value;
    }
  }
  void relu(const double* z, const double* dy, double* out, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j)
      out[j] = dy ? (z[j] > 0 ? dy[j] : 0.0) : std::max(z[j], 0.0);
  }
  // The loss per row, or its gradient (softmax - onehot) / rows.
  void rows(const RowShape& s, const double* x, const std::int32_t* labels, double* out) {
    for (std::int64_t i = 0; i < s.rows; ++i) {
      const double* r = x + i * s.cols;
      const double m = *std::max_element(r, r + s.cols);
      double sum = 0;
      for (std::int64_t j = 0; j < s.cols; ++j) sum += std::exp(r[j] - m);
      if (s.kind == RowOp::loss_fwd) {
        out[i] = m + std::log(sum) - r[labels[i]];
        continue;
      }
      for (std::int64_t j = 0; j < s.cols; ++j)
        out[i * s.cols + j] =
            (std::exp(r[j] - m) / sum - (j == labels[i] ? 1.0 : 0.0)) / static_cast<double>(s.rows);
    }
  }
  void mean(const double* x, std::int64_t n, double* out) {
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += x[i];
    *out = sum / static_cast<double>(n);
  }
  void bias_rows(const double* b, double* out, std::int64_t rows, std::int64_t cols) {
    for (std::int64_t i = 0; i < rows; ++i) std::copy(b, b + cols, out + i * cols);
  }
  void column_sums(const double* x, std::int64_t rows, std::int64_t cols, double* out) {
    std::fill(out, out + cols, 0.0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) out[j] += x[i * cols + j];
  }
  void sgd_momentum(double* p, double* v, const double* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
    for (std::int64_t j = 0; j < n; ++j)
      sgd_momentum_at<double>(p[j], v[j], g[j], lr, momentum, weight_decay);
  }
  void add(const double* a, const double* b, double* out, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) out[j] = a[j] + b[j];
  }
  void plane_means(const double* x, std::int64_t planes, std::int64_t hw, double* out) {
    for (std::int64_t p = 0; p < planes; ++p) mean(x + p * hw, hw, out + p);
  }
  void spread_means(const double* dout, std::int64_t planes, std::int64_t hw, double* dx) {
    for (std::int64_t i = 0; i < planes * hw; ++i) dx[i] = dout[i / hw] / static_cast<double>(hw);
  }
};

std::vector<double> doubles(const float* v, std::int64_t n) { return {v, v + n}; }

}  // namespace

ReferenceStep reference_step(const ModelDesc& m, const TrainShape& s, const float* x,
                             const std::int32_t* labels, const float* params, const float* velocity,
                             const float* state) {
  ReferenceOps ops;
  Walk<ReferenceOps> walk(m, s, ops);
  const std::vector<double> in = doubles(x, s.batch * m.input.size());
  ReferenceStep out;
  out.params = doubles(params, m.param_count);
  out.state = state ? doubles(state, m.state_count) : std::vector<double>();
  auto logits = [&] {
    return std::vector<double>(walk.logits(), walk.logits() + s.batch * m.classes);
  };
  if (!s.train) {
    walk.forward(in.data(), out.params.data(), out.state.data(), false);
    out.logits = logits();
    return out;
  }
  walk.forward_backward(in.data(), labels, out.params.data(), out.state.data());
  out.logits = logits();
  out.loss = *walk.loss();
  out.grads.assign(walk.grads(), walk.grads() + m.param_count);
  out.velocity = doubles(velocity, m.param_count);
  walk.update(out.params.data(), out.velocity.data());
  return out;
}

}  // namespace pb
