// The reference step: core/train_step.hpp's walk over op functions in double on the CPU. Its
// GEMMs, and its convolutions as im2col + GEMM, are OpenBLAS's dgemm (double: what no fp32 path
// runs; it makes ResNet-50 at 224x224 a second an image, where one sum per output point took
// twenty); the rest are plain loops here and in core/layers.cpp. The finite-difference tests
// (tests/test_train.cpp) are its own check.
//
// Rounded, every op's result is rounded to float, as an fp32 step stores it, and the GEMMs (the
// convolutions' too) sum in fp32, as every step's do; in a bf16 step every map (activation or
// its gradient) is rounded to bf16, and every convolution's and GEMM's inputs to bf16 first, as
// its oneDNN primitives read them; in a tf32 step (the GPU's tensor cores on fp32 maps) the
// convolutions' and GEMMs' inputs to tf32, the maps stored in fp32: how far that walk lands
// from the exact one is how much the model amplifies the step's rounding, which sets the
// verification's bound (see compare_step). The sums matter: a result's rounding never moves it
// across 0, a sum's rounding error (sqrt(k) u times its terms' magnitudes) does, and one ReLU
// decided otherwise moves a batch norm over a few values a channel, and through it every
// gradient before it. ResNet-50 at batch 1 on 64x64, rounding only the results, landed 0.12%
// from the exact step; both CPU steps, and the walk summing in fp32, 7-12%.
//
// Kinks (the exact walk of a model without batch norm): a ReLU whose input lies within fp32's
// summation error of 0 may pass its gradient in an fp32 step where the exact walk does not, or
// the other way. The forward pass records, for each GEMM's, convolution's and add's output, its
// dot length k and the sum of its terms' magnitudes S; a ReLU input z with |z| <= kKinkSigmas
// sqrt(k) u S (u = 2^-24; the probabilistic bound of Higham and Mary, SIAM J. Sci. Comput. 41(5),
// 2019, exceeded with probability below 2k exp(-kKinkSigmas^2 / 2)) is one fp32 may decide
// otherwise, and its gradient there is a seed. Slack: the backward pass again in absolute values
// from those seeds alone (|W|, |x|, nothing from the loss), so that each parameter's gradient
// bounds how far flipping any set of them moves it, to first order (a flip moves the forward
// pass by |z|, below rounding). Max pooling likewise: a window whose chosen input and another
// lie within their two widths of each other may choose the other in fp32, and the window's
// gradient is a seed at both.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/train.hpp"
#include "core/train_step.hpp"

namespace pb {

namespace {

class ReferenceOps : public HostOps<double> {
 public:
  // rounded: as a step of dtype t rounds (fp32 or bf16); else exact.
  // Its kinks pass keys each map's terms by its address: every map keeps its own
  // (core/train_step.hpp's KeepsEveryMap).
  static constexpr bool kKeepsEveryMap = true;
  ReferenceOps(bool rounded, Dtype t)
      : fp32_(rounded),
        low_(rounded && t != Dtype::fp32 ? t : Dtype::fp32),
        maps_(t == Dtype::bf16 || t == Dtype::fp16 ? low_ : Dtype::fp32) {}
  // The walk's next forward and backward pass: plain; kinks (exact, recording the terms and the
  // seeds); slack (after a kinks pass on the same batch: the seeds' reach in absolute values).
  enum class Pass { plain, kinks, slack };
  void start(Pass p) {
    pass_ = p, backward_ = false, relu_ = 0;
    if (p == Pass::slack) return;
    terms_.clear();
    seeds_.clear();
    ties_.clear();
    kinks_ = 0;
  }
  std::int64_t kinks() const { return kinks_; }  // the seeds of the last kinks pass

  // c = alpha op(a) op(b) + beta c, row-major.
  void gemm(const GemmShape& g, const double* a, const double* b, double* c) {
    if (pass_ == Pass::kinks && !backward_) {  // S = |a| |b| + |beta c|
      Terms& t = terms_[c];
      t.k = g.k;
      t.s.resize(static_cast<std::size_t>(g.m * g.n));
      for (std::size_t i = 0; i < t.s.size(); ++i) t.s[i] = std::fabs(g.beta * c[i]);
      GemmShape ga = g;
      ga.alpha = std::fabs(g.alpha), ga.beta = 1;
      product(ga, absolute(a, g.m * g.k, 0), absolute(b, g.k * g.n, 1), t.s.data());
    }
    if (pass_ == Pass::slack && backward_) {
      product(g, absolute(a, g.m * g.k, 0), absolute(b, g.k * g.n, 1), c);
      return;
    }
    product(g, low(a, g.m * g.k, 0), low(b, g.k * g.n, 1), c);
    if (g.ta)  // the walk's weight gradients are its only GEMMs with A transposed
      round(c, g.m * g.n);
    else
      round_maps(c, g.m * g.n);
  }
  // Per image: fwd y = W col + b; bwd_data col = W^T dy, dx = col2im(col); bwd_filter
  // dW += dy col^T and db the sums of dy. col is the image itself for a 1x1 convolution of
  // stride 1 without padding.
  void conv(const ConvShape& s, const double* in0, const double* in1, const double* b, double* out,
            double* db) {
    const std::int64_t sizes[3][2] = {{s.x_size(), s.w_size()},   // fwd: x, w
                                      {s.y_size(), s.w_size()},   // bwd_data: dy, w
                                      {s.x_size(), s.y_size()}};  // bwd_filter: x, dy
    const auto* size = sizes[static_cast<int>(s.dir)];
    const bool slack = pass_ == Pass::slack && backward_;
    in0 = slack ? absolute(in0, size[0], 0) : low(in0, size[0], 0);
    in1 = slack ? absolute(in1, size[1], 1) : low(in1, size[1], 1);
    Terms* terms = pass_ == Pass::kinks && s.dir == ConvDir::fwd ? &terms_[out] : nullptr;
    std::vector<double> abs_w, abs_col;
    if (terms) {
      terms->k = s.crs();
      terms->s.resize(static_cast<std::size_t>(s.y_size()));
      abs_w.assign(in1, in1 + s.w_size());
      for (double& v : abs_w) v = std::fabs(v);
    }
    const std::int64_t pq = s.pq(), crs = s.crs(), x_img = s.c * s.h * s.w, y_img = s.k * pq;
    const bool identity =
        s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
    col_.resize(identity ? 0 : static_cast<std::size_t>(crs * pq));
    GemmShape g;
    for (std::int64_t n = 0; n < s.n; ++n) {
      switch (s.dir) {
        case ConvDir::fwd: {
          double* y = out + n * y_img;
          for (std::int64_t k = 0; k < s.k; ++k) std::fill(y + k * pq, y + (k + 1) * pq, b[k]);
          g.m = s.k, g.n = pq, g.k = crs, g.beta = 1;
          const double* col = identity ? in0 + n * x_img : im2col(s, in0 + n * x_img);
          product(g, in1, col, y);
          if (!terms) break;
          double* t = terms->s.data() + n * y_img;
          for (std::int64_t k = 0; k < s.k; ++k)
            std::fill(t + k * pq, t + (k + 1) * pq, std::fabs(b[k]));
          abs_col.assign(col, col + crs * pq);
          for (double& v : abs_col) v = std::fabs(v);
          product(g, abs_w.data(), abs_col.data(), t);
          break;
        }
        case ConvDir::bwd_data:
          g.m = crs, g.n = pq, g.k = s.k, g.ta = true;
          if (identity) {
            product(g, in1, in0 + n * y_img, out + n * x_img);
            break;
          }
          product(g, in1, in0 + n * y_img, col_.data());
          col2im(s, out + n * x_img);
          break;
        case ConvDir::bwd_filter:
          g.m = s.k, g.n = crs, g.k = pq, g.tb = true, g.beta = n == 0 ? 0.0f : 1.0f;
          product(g, in1 + n * y_img, identity ? in0 + n * x_img : im2col(s, in0 + n * x_img), out);
          break;
      }
    }
    const std::int64_t count = s.dir == ConvDir::fwd        ? s.y_size()
                               : s.dir == ConvDir::bwd_data ? s.x_size()
                                                            : s.w_size();
    if (s.dir == ConvDir::bwd_filter)
      round(out, count);
    else
      round_maps(out, count);
    if (s.dir != ConvDir::bwd_filter || !db) return;
#pragma omp parallel for schedule(static)
    for (std::int64_t k = 0; k < s.k; ++k) {
      double sum = 0;
      for (std::int64_t n = 0; n < s.n; ++n)
        for (std::int64_t i = 0; i < pq; ++i) sum += in1[n * y_img + k * pq + i];
      db[k] = sum;
    }
    round(db, s.k);
  }
  void relu(const double* z, const double* dy, double* out, std::int64_t n) {
    if (!dy && pass_ == Pass::kinks) {  // its output has its input's terms, for a pooling or add
      auto t = terms_.find(z);
      if (t != terms_.end()) terms_[out] = t->second;
    }
    const std::vector<double>* seed = nullptr;
    if (dy && pass_ == Pass::kinks) seeds_.push_back(kink_seeds(z, dy, n));
    if (dy && pass_ == Pass::slack && relu_ < seeds_.size()) seed = &seeds_[relu_++];
#pragma omp parallel for simd schedule(static)
    for (std::int64_t j = 0; j < n; ++j)
      out[j] = dy ? (z[j] > 0 ? dy[j] : 0.0) : std::max(z[j], 0.0);
    if (!seed || seed->empty()) return;
    for (std::int64_t j = 0; j < n; ++j) out[j] += (*seed)[static_cast<std::size_t>(j)];
  }
  void maxpool_forward(const PoolShape& s, const double* x, double* out, std::int32_t* arg) {
    HostOps::maxpool_forward(s, x, out, arg);
    if (pass_ == Pass::kinks) ties_[arg] = near_ties(s, x, arg);
  }
  void maxpool_backward(const PoolShape& s, const double* dout, const std::int32_t* arg,
                        double* dx) {
    HostOps::maxpool_backward(s, dout, arg, dx);
    auto t = ties_.find(arg);
    if (t == ties_.end()) return;
    const std::int64_t hw = s.h * s.w, per_out = s.oh() * s.ow();
    for (Tie& tie : t->second) {
      if (pass_ == Pass::kinks) tie.seed = std::fabs(dout[tie.out]);
      if (pass_ != Pass::slack) continue;
      double* plane = dx + tie.out / per_out * hw;
      plane[arg[tie.out]] += tie.seed;
      plane[tie.other] += tie.seed;
    }
  }
  // The loss per row, or its gradient (softmax - onehot) / rows.
  void rows(const RowShape& s, const double* x, const std::int32_t* labels, double* out) {
    if (s.kind != RowOp::loss_fwd) backward_ = true;
    if (s.kind != RowOp::loss_fwd && pass_ == Pass::slack) {  // no seed at the logits
      std::fill(out, out + s.rows * s.cols, 0.0);
      return;
    }
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
    if (s.kind == RowOp::loss_fwd)
      round(out, s.rows);
    else
      round_maps(out, s.rows * s.cols);
  }
  void mean(const double* x, std::int64_t n, double* out) {
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += x[i];
    *out = sum / static_cast<double>(n);
    round(out, 1);
  }
  void bias_rows(const double* b, double* out, std::int64_t rows, std::int64_t cols) {
    for (std::int64_t i = 0; i < rows; ++i) std::copy(b, b + cols, out + i * cols);
  }
  void column_sums(const double* x, std::int64_t rows, std::int64_t cols, double* out) {
    std::fill(out, out + cols, 0.0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) out[j] += x[i * cols + j];
    round(out, cols);
  }
  void sgd_momentum(double* p, double* v, const double* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t j = 0; j < n; ++j)
      sgd_momentum_at<double>(p[j], v[j], g[j], lr, momentum, weight_decay);
    round(p, n);
    round(v, n);
  }
  void add(const double* a, const double* b, double* out, std::int64_t n) {
    if (pass_ == Pass::kinks && !backward_) {  // the operands' terms, or the operands
      Terms t;
      t.s.resize(static_cast<std::size_t>(n));
      for (const double* x : {a, b}) {
        auto it = terms_.find(x);
        const bool has = it != terms_.end() && it->second.s.size() == t.s.size();
        if (has) t.k = std::max(t.k, it->second.k);
        for (std::int64_t j = 0; j < n; ++j)
          t.s[static_cast<std::size_t>(j)] +=
              has ? it->second.s[static_cast<std::size_t>(j)] : std::fabs(x[j]);
      }
      terms_[out] = std::move(t);
    }
#pragma omp parallel for simd schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = a[j] + b[j];
    round_maps(out, n);
  }
  void batchnorm_forward(const BnShape& s, bool train, const double* x, const double* weight,
                         const double* bias, double* y, double* mean, double* invstd,
                         double* running_mean, double* running_var) {
    HostOps::batchnorm_forward(s, train, x, weight, bias, y, mean, invstd, running_mean,
                               running_var);
    for (double* v : {mean, invstd, running_mean, running_var}) round(v, s.c);
    round_maps(y, s.size());
  }
  void batchnorm_backward(const BnShape& s, const double* x, const double* weight,
                          const double* mean, const double* invstd, const double* dy, double* dx,
                          double* dweight, double* dbias) {
    HostOps::batchnorm_backward(s, x, weight, mean, invstd, dy, dx, dweight, dbias);
    round(dweight, s.c);
    round(dbias, s.c);
    if (dx) round_maps(dx, s.size());
  }
  void plane_means(const Maps& s, const double* x, double* out) {
    HostOps::plane_means(s, x, out);
    round_maps(out, s.n * s.c);
  }
  void spread_means(const Maps& s, const double* dout, double* dx) {
    HostOps::spread_means(s, dout, dx);
    round_maps(dx, s.size());
  }

 private:
  struct Terms {
    std::int64_t k = 1;     // the dot length
    std::vector<double> s;  // per output, the sum of its terms' magnitudes
  };
  // Per ReLU input, |dy| where z is within kKinkSigmas sqrt(k) u S of 0, else 0; none where
  // the input's terms are not known (after a batch norm).
  std::vector<double> kink_seeds(const double* z, const double* dy, std::int64_t n) {
    auto t = terms_.find(z);
    if (t == terms_.end() || t->second.s.size() != static_cast<std::size_t>(n)) return {};
    const double width = kKinkSigmas * std::sqrt(static_cast<double>(t->second.k)) * 0x1p-24;
    std::vector<double> seed(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t j = 0; j < n; ++j)
      if (std::fabs(z[j]) <= width * t->second.s[static_cast<std::size_t>(j)]) {
        seed[static_cast<std::size_t>(j)] = std::fabs(dy[j]);
        ++kinks_;
      }
    return seed;
  }
  // A max-pooling window that fp32 may decide otherwise: its output, the other input (within
  // the plane) and, from the kinks pass's backward, the window's gradient's magnitude.
  struct Tie {
    std::int64_t out;
    std::int32_t other;
    double seed = 0;
  };
  // The windows (NCHW, as the reference walks) whose chosen input and another lie within their
  // widths (as kink_seeds') of each other; none where the inputs' terms are not known.
  std::vector<Tie> near_ties(const PoolShape& s, const double* x, const std::int32_t* arg) {
    auto t = terms_.find(x);
    const std::int64_t hw = s.h * s.w, oh = s.oh(), ow = s.ow();
    if (t == terms_.end() || s.channels_last ||
        t->second.s.size() != static_cast<std::size_t>(s.planes * hw))
      return {};
    const double unit = kKinkSigmas * std::sqrt(static_cast<double>(t->second.k)) * 0x1p-24;
    const std::vector<double>& sum = t->second.s;
    std::vector<Tie> ties;
    for (std::int64_t p = 0; p < s.planes; ++p)
      for (std::int64_t i = 0; i < oh; ++i)
        for (std::int64_t j = 0; j < ow; ++j) {
          const std::int64_t o = (p * oh + i) * ow + j, best = p * hw + arg[o];
          for (std::int64_t r = 0; r < s.k; ++r)
            for (std::int64_t c = 0; c < s.k; ++c) {
              const std::int64_t ih = i * s.stride - s.pad + r, iw = j * s.stride - s.pad + c;
              if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
              const std::int64_t e = p * hw + ih * s.w + iw;
              if (e != best && x[best] - x[e] <= unit * (sum[static_cast<std::size_t>(best)] +
                                                         sum[static_cast<std::size_t>(e)]))
                ties.push_back({o, static_cast<std::int32_t>(ih * s.w + iw)});
            }
        }
    kinks_ += static_cast<std::int64_t>(ties.size());
    return ties;
  }
  // x's magnitudes, in lows_[which].
  const double* absolute(const double* x, std::int64_t n, int which) {
    std::vector<double>& v = lows_[which];
    v.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = std::fabs(x[i]);
    return v.data();
  }
  // c = alpha op(a) op(b) + beta c: in double exactly; rounded, in fp32 (OpenBLAS's sgemm on
  // a, b and c as floats), so that the sums' rounding, which reaches the ReLUs' kinks where
  // the stores' rounding does not, is the step's too.
  void product(const GemmShape& g, const double* a, const double* b, double* c) {
    const auto ta = g.ta ? CblasTrans : CblasNoTrans, tb = g.tb ? CblasTrans : CblasNoTrans;
    const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k),
              lda = static_cast<int>(g.ta ? g.m : g.k), ldb = static_cast<int>(g.tb ? g.k : g.n);
    if (!fp32_) {
      cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, g.alpha, a, lda, b, ldb, g.beta, c, n);
      return;
    }
    auto floats = [](std::vector<float>& v, const double* x, std::int64_t count, bool read) {
      v.resize(static_cast<std::size_t>(count));
      float* f = v.data();
#pragma omp parallel for simd schedule(static)
      for (std::int64_t i = 0; i < count; ++i) f[i] = read ? static_cast<float>(x[i]) : 0.0f;
      return f;
    };
    const std::int64_t mn = g.m * g.n;
    float* fc = floats(sums_[2], c, mn, g.beta != 0);  // c is not read where beta is 0
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(g.alpha),
                floats(sums_[0], a, g.m * g.k, true), lda, floats(sums_[1], b, g.k * g.n, true),
                ldb, static_cast<float>(g.beta), fc, n);
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < mn; ++i) c[i] = fc[i];
  }
  // Row (c, r, t) of one image's column matrix (crs x pq): the input pixel each output reads
  // through tap (r, t) of channel c, 0 in the padding.
  const double* im2col(const ConvShape& s, const double* x) {
    const std::int64_t p = s.p(), q = s.q();
#pragma omp parallel for schedule(static)
    for (std::int64_t row = 0; row < s.crs(); ++row) {
      const std::int64_t c = row / (s.r * s.s), r = row / s.s % s.r, t = row % s.s;
      for (std::int64_t i = 0; i < p; ++i)
        for (std::int64_t j = 0; j < q; ++j) {
          const std::int64_t ih = i * s.stride_h - s.pad_h + r, iw = j * s.stride_w - s.pad_w + t;
          const bool inside = ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
          col_[static_cast<std::size_t>((row * p + i) * q + j)] =
              inside ? x[(c * s.h + ih) * s.w + iw] : 0.0;
        }
    }
    return col_.data();
  }
  // dx from col_: each pixel the sum of the column entries im2col read from it (the threads
  // split the channels, whose planes are disjoint).
  void col2im(const ConvShape& s, double* dx) const {
    const std::int64_t p = s.p(), q = s.q();
#pragma omp parallel for schedule(static)
    for (std::int64_t c = 0; c < s.c; ++c) {
      std::fill(dx + c * s.h * s.w, dx + (c + 1) * s.h * s.w, 0.0);
      for (std::int64_t r = 0; r < s.r; ++r)
        for (std::int64_t t = 0; t < s.s; ++t)
          for (std::int64_t i = 0; i < p; ++i)
            for (std::int64_t j = 0; j < q; ++j) {
              const std::int64_t ih = i * s.stride_h - s.pad_h + r,
                                 iw = j * s.stride_w - s.pad_w + t;
              if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
                dx[(c * s.h + ih) * s.w + iw] +=
                    col_[static_cast<std::size_t>((((c * s.r + r) * s.s + t) * p + i) * q + j)];
            }
    }
  }
  void round(double* x, std::int64_t n) const {
    if (!fp32_) return;
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i]);
  }
  // A map (an activation or its gradient) as the step stores it: in bf16 in a bf16 step.
  void round_maps(double* x, std::int64_t n) const {
    if (maps_ == Dtype::fp32) return round(x, n);
    const Dtype t = maps_;
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) x[i] = round_to(t, static_cast<float>(x[i]));
  }
  // A GEMM's or convolution's input as the step's dtype reads it: x itself, or in bf16 x
  // rounded into lows_[which].
  const double* low(const double* x, std::int64_t n, int which) {
    if (low_ == Dtype::fp32) return x;
    std::vector<double>& v = lows_[which];
    v.resize(static_cast<std::size_t>(n));
    const Dtype t = low_;
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) v[i] = round_to(t, static_cast<float>(x[i]));
    return v.data();
  }

  bool fp32_;
  Pass pass_ = Pass::plain;
  bool backward_ = false;                                 // past the loss
  std::map<const double*, Terms> terms_;                  // per forward output
  std::vector<std::vector<double>> seeds_;                // per ReLU backward, in the walk's order
  std::map<const std::int32_t*, std::vector<Tie>> ties_;  // per max pool (by its choices)
  std::size_t relu_ = 0;                                  // the slack pass's next ReLU
  std::int64_t kinks_ = 0;
  Dtype low_;                    // the convolutions' and GEMMs' input type
  Dtype maps_;                   // the maps' (tf32's are fp32)
  std::vector<double> lows_[2];  // their inputs in it
  std::vector<double> col_;      // one image's column matrix
  std::vector<float> sums_[3];   // rounded: a GEMM's a, b and c in fp32
};

std::vector<double> doubles(const float* v, std::int64_t n) { return {v, v + n}; }

}  // namespace

ReferenceStep reference_step(const ModelDesc& m, const TrainShape& s, const float* x,
                             const std::int32_t* labels, const float* params, const float* velocity,
                             const float* state, bool rounded) {
  ReferenceOps ops(rounded, s.dtype);
  Walk<ReferenceOps> walk(m, s, ops);
  const std::int64_t f = m.input.size();
  ReferenceStep out;
  out.params = doubles(params, m.param_count);
  const std::vector<double> state0 = state ? doubles(state, m.state_count) : std::vector<double>();
  auto logits = [&] {
    return std::vector<double>(walk.logits(), walk.logits() + s.batch * m.classes);
  };
  // The shards this rank's step depends on: every rank's when the gradients are averaged.
  const bool averaged = s.train && s.ranks > 1 && !s.local;
  // The kinks' slack of an exact step of a model without batch norm (see the top of this file)
  const bool kinks = s.train && !rounded && m.state_count == 0;
  std::vector<double> grads(s.train ? static_cast<std::size_t>(m.param_count) : 0);
  if (kinks) out.slack.assign(grads.size(), 0.0);
  auto accumulate = [&](std::vector<double>& sum) {
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += walk.grads()[i];
  };
  for (int r = averaged ? 0 : s.rank; r < (averaged ? s.ranks : s.rank + 1); ++r) {
    const std::vector<double> in = doubles(x + r * s.batch * f, s.batch * f);
    std::vector<double> st = state0;
    if (!s.train) {
      walk.forward(in.data(), out.params.data(), st.data(), false);
    } else {
      ops.start(kinks ? ReferenceOps::Pass::kinks : ReferenceOps::Pass::plain);
      walk.forward_backward(in.data(), labels + r * s.batch, out.params.data(), st.data());
      accumulate(grads);
      out.kinks += ops.kinks();
    }
    if (r == s.rank) {
      out.logits = logits();
      out.state = st;
      if (s.train) out.loss = *walk.loss();
    }
    if (!kinks) continue;
    ops.start(ReferenceOps::Pass::slack);
    std::vector<double> unused = state0;
    walk.forward_backward(in.data(), labels + r * s.batch, out.params.data(), unused.data());
    accumulate(out.slack);
  }
  if (!s.train) return out;
  const double shards = averaged ? s.ranks : 1;
  for (double& g : grads) g /= shards;
  for (double& g : out.slack) g /= shards;
  std::copy(grads.begin(), grads.end(), walk.grads());
  out.grads = std::move(grads);
  out.velocity = doubles(velocity, m.param_count);
  walk.update(out.params.data(), out.velocity.data());
  return out;
}

}  // namespace pb
