// 2-D convolution as image classifiers use it: NCHW activations, KCRS filters, any stride and
// padding, dilation 1, with bias. Three passes, each its own workload (shape key `dir`):
//   fwd         y[n][k][p][q]  = b[k] + sum_{c,r,s} x[n][c][p*sh-ph+r][q*sw-pw+s] w[k][c][r][s]
//   bwd_data    dx[n][c][h][w] = sum_{k,r,s} dy[n][k][p][q] w[k][c][r][s]  (p*sh-ph+r = h, ...)
//   bwd_filter  dw[k][c][r][s] = sum_{n,p,q} dy[n][k][p][q] x[n][c][p*sh-ph+r][q*sw-pw+s],
//               db[k] = sum_{n,p,q} dy[n][k][p][q]  (two outputs)
// The index math below is shared by the CPU and GPU code and tested on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/hd.hpp"
#include "core/workload.hpp"

namespace pb {

enum class ConvDir { fwd, bwd_data, bwd_filter };
const char* to_string(ConvDir d);

// The most workspace a cuDNN convolution's algorithm may take (kernels/conv.cu), counted by the
// GPU memory check. PyTorch's cudnn.benchmark takes any algorithm whose workspace it can
// allocate; 256 MiB left out algorithms that ResNet-50's layers at batch 256 may need.
constexpr std::size_t kConvWorkspaceCap = std::size_t{1} << 30;

struct ConvShape {
  ConvDir dir = ConvDir::fwd;
  std::int64_t n = 1, c = 1, h = 1, w = 1;  // input: batch, channels, height, width
  std::int64_t k = 1, r = 1, s = 1;         // filters: count (output channels), height, width
  std::int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  Dtype dtype = Dtype::fp32;
  // Whether the layer has a bias. Without one, fwd's b is zeros and bwd_filter's db is dropped
  // (the training walk's convention): a backend may skip both.
  bool bias = true;

  // Output height and width.
  HD std::int64_t p() const { return (h + 2 * pad_h - r) / stride_h + 1; }
  HD std::int64_t q() const { return (w + 2 * pad_w - s) / stride_w + 1; }
  // The rows of the im2col matrix (one per filter tap, c * r * s) and its columns (p * q).
  HD std::int64_t crs() const { return c * r * s; }
  HD std::int64_t pq() const { return p() * q(); }
  std::int64_t x_size() const { return n * c * h * w; }
  std::int64_t y_size() const { return n * k * p() * q(); }
  std::int64_t w_size() const { return k * c * r * s; }
};

// Why a shape cannot be convolved ("" when it can): sizes below 1, a stride below 1, padding
// below 0, a filter larger than the padded input.
std::string conv_shape_problem(const ConvShape& s);

// The shape in one phrase for an error message: "fwd bf16 256x3x224x224 * 64x3x7x7, stride 2,
// pad 3".
std::string describe(const ConvShape& s);

// --- the index math ----------------------------------------------------------------------------
// The input pixel that output pixel (p, q) sees through filter tap (r, s): sets *ih and *iw and
// returns whether it lies inside the image (outside, it is padding: zero).
HD inline bool conv_input_pixel(const ConvShape& s, std::int64_t p, std::int64_t q, std::int64_t r,
                                std::int64_t t, std::int64_t* ih, std::int64_t* iw) {
  *ih = p * s.stride_h - s.pad_h + r;
  *iw = q * s.stride_w - s.pad_w + t;
  return *ih >= 0 && *ih < s.h && *iw >= 0 && *iw < s.w;
}

// im2col of one image x (c x h x w): the (crs x pq) matrix whose row c*R*S + r*S + s and column
// p*Q + q hold the input pixel that tap (r, s) of channel c meets at output (p, q), 0 in padding.
// Then fwd is Y (k x pq) = W (k x crs) * col, per image.
HD inline float im2col_value(const ConvShape& s, const float* x, std::int64_t row,
                             std::int64_t col) {
  const std::int64_t c = row / (s.r * s.s), r = row / s.s % s.r, t = row % s.s;
  const std::int64_t q = s.q(), p = col / q, qq = col % q;
  std::int64_t ih, iw;
  return conv_input_pixel(s, p, qq, r, t, &ih, &iw) ? x[(c * s.h + ih) * s.w + iw] : 0.0f;
}

// col2im, as a gather: the sum over every (row, col) of the im2col matrix `col` that
// im2col_value reads from input pixel (c, ih, iw). bwd_data is col = W^T dY, then this, per image.
HD inline float col2im_value(const ConvShape& s, const float* col, std::int64_t c, std::int64_t ih,
                             std::int64_t iw) {
  const std::int64_t pcount = s.p(), qcount = s.q();
  float sum = 0;
  for (std::int64_t r = 0; r < s.r; ++r) {
    const std::int64_t ph = ih + s.pad_h - r;  // = p * stride_h
    if (ph < 0 || ph % s.stride_h != 0 || ph / s.stride_h >= pcount) continue;
    const std::int64_t p = ph / s.stride_h;
    for (std::int64_t t = 0; t < s.s; ++t) {
      const std::int64_t qw = iw + s.pad_w - t;
      if (qw < 0 || qw % s.stride_w != 0 || qw / s.stride_w >= qcount) continue;
      sum += col[((c * s.r + r) * s.s + t) * (pcount * qcount) + p * qcount + qw / s.stride_w];
    }
  }
  return sum;
}

// The pass's two operands, as the op functions take them (in0, in1): x and w (fwd), dy and w
// (bwd_data), x and dy (bwd_filter); fwd also takes the bias b.
std::pair<const char*, const char*> conv_operands(ConvDir d);
// The pass's outputs, named and shaped, zero: y (fwd); dx (bwd_data); dw and db (bwd_filter).
Tensors conv_outputs(const ConvShape& s);

// Whether im2col is the image itself (1x1 filters, stride 1, no padding): then it is skipped.
HD inline bool im2col_is_identity(const ConvShape& s) {
  return s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// The terms one output point sums, handed to sum.add(term) or sum.add(a, b) for a product (a
// double sum with its squares for the reference and verification, a float sum in the GPU's
// direct kernels); the operands float, or double in a training step's reference. i is the point's
// flat index in y (fwd), dx (bwd_data), dw (bwd_filter) or db (k).
template <class Sum, class X, class Wt>
HD void conv_fwd_terms(const ConvShape& s, const X* x, const Wt* w, const Wt* b, std::int64_t i,
                       Sum& sum) {
  const std::int64_t q = s.q(), p = s.p();
  const std::int64_t qq = i % q, pp = i / q % p, k = i / (q * p) % s.k, n = i / (q * p * s.k);
  sum.add(b[k]);
  for (std::int64_t c = 0; c < s.c; ++c)
    for (std::int64_t r = 0; r < s.r; ++r)
      for (std::int64_t t = 0; t < s.s; ++t) {
        std::int64_t ih, iw;
        if (conv_input_pixel(s, pp, qq, r, t, &ih, &iw))
          sum.add(x[((n * s.c + c) * s.h + ih) * s.w + iw], w[((k * s.c + c) * s.r + r) * s.s + t]);
      }
}

template <class Sum, class Y, class Wt>
HD void conv_bwd_data_terms(const ConvShape& s, const Y* dy, const Wt* w, std::int64_t i,
                            Sum& sum) {
  const std::int64_t iw = i % s.w, ih = i / s.w % s.h, c = i / (s.w * s.h) % s.c,
                     n = i / (s.w * s.h * s.c);
  const std::int64_t p = s.p(), q = s.q();
  for (std::int64_t r = 0; r < s.r; ++r) {
    const std::int64_t ph = ih + s.pad_h - r;  // = output row * stride_h, when there is one
    if (ph < 0 || ph % s.stride_h || ph / s.stride_h >= p) continue;
    for (std::int64_t t = 0; t < s.s; ++t) {
      const std::int64_t qw = iw + s.pad_w - t;
      if (qw < 0 || qw % s.stride_w || qw / s.stride_w >= q) continue;
      for (std::int64_t k = 0; k < s.k; ++k)
        sum.add(dy[((n * s.k + k) * p + ph / s.stride_h) * q + qw / s.stride_w],
                w[((k * s.c + c) * s.r + r) * s.s + t]);
    }
  }
}

template <class Sum, class X>
HD void conv_bwd_filter_terms(const ConvShape& s, const X* x, const X* dy, std::int64_t i,
                              Sum& sum) {
  const std::int64_t t = i % s.s, r = i / s.s % s.r, c = i / (s.s * s.r) % s.c,
                     k = i / (s.s * s.r * s.c);
  const std::int64_t p = s.p(), q = s.q();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t pp = 0; pp < p; ++pp)
      for (std::int64_t qq = 0; qq < q; ++qq) {
        std::int64_t ih, iw;
        if (conv_input_pixel(s, pp, qq, r, t, &ih, &iw))
          sum.add(dy[((n * s.k + k) * p + pp) * q + qq], x[((n * s.c + c) * s.h + ih) * s.w + iw]);
      }
}

template <class Sum, class Y>
HD void conv_bias_grad_terms(const ConvShape& s, const Y* dy, std::int64_t k, Sum& sum) {
  const std::int64_t per_k = s.pq();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t j = 0; j < per_k; ++j) sum.add(dy[(n * s.k + k) * per_k + j]);
}

// The terms of output i of the pass s.dir names, its operands as conv_operands names them (b
// for fwd only), all of one type: what the verification and the GPU's direct kernel sum.
template <class Sum, class T>
HD void conv_terms(const ConvShape& s, const T* in0, const T* in1, const T* b, std::int64_t i,
                   Sum& sum) {
  if (s.dir == ConvDir::fwd)
    conv_fwd_terms(s, in0, in1, b, i, sum);
  else if (s.dir == ConvDir::bwd_data)
    conv_bwd_data_terms(s, in0, in1, i, sum);
  else
    conv_bwd_filter_terms(s, in0, in1, i, sum);
}

// Terms added in double, with the sum of their squares (their rounding scale): what
// conv_*_terms hand over in the references.
struct DoubleSum {
  double value = 0, scale2 = 0;
  void add(double t) { value += t, scale2 += t * t; }
  void add(double a, double b) { add(a * b); }
};

// One output point computed directly in double (the naive implementation's and verification's
// reference): its value and the root sum of squares of its terms.
struct ConvPoint {
  double value = 0, scale = 0;
};
ConvPoint conv_point(const ConvShape& s, const float* in0, const float* in1, const float* b,
                     std::int64_t i);  // the pass s.dir; in0, in1 as cpu::conv_naive takes them
ConvPoint conv_bias_grad_point(const ConvShape& s, const float* dy, std::int64_t k);

// --- suites and --shape ------------------------------------------------------------------------
// A named layer: ResNet-50's (conv1 7x7/2 on 224x224x3; 3x3 on 56x56x64; the 1x1 bottleneck
// 56x56x256->64; 3x3 on 14x14x256) and a subset of Baidu DeepBench's training convolutions
// (github.com/baidu-research/DeepBench, code/kernels/conv_problems.h; ../shared/data).
struct ConvLayer {
  const char* name;
  std::int64_t c, h, w, k, r, s, stride, pad;
};
const std::vector<ConvLayer>& conv_layers();

// The suite's shapes in one pass: quick, the four ResNet-50 layers at batch 1 and 8 (conv1 at
// batch 1 only); standard, those at 1, 8, 32 and the DeepBench subset at 8; full, all at 1, 8, 32.
std::vector<ConvShape> conv_suite(ConvDir dir, int level);

// --shape keys: batch (n), c, h, w, k, r (required), s (default r), stride, pad (default 1, 0;
// or stride_h/stride_w, pad_h/pad_w), dir (fwd, bwd_data, bwd_filter; default fwd). `batch` is
// also the key of the report's batch sweeps.
// Throws std::invalid_argument with a one-line message.
ConvShape parse_conv_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class ConvWorkload : public Workload {
 public:
  explicit ConvWorkload(ConvShape s, std::uint64_t seed = 11);
  const ConvShape& conv() const { return s_; }

  std::string op() const override { return "conv"; }
  Shape shape() const override;
  Dtype dtype() const override { return s_.dtype; }
  double flops() const override;  // 2 n k c r s p q, every pass
  double min_bytes() const override;
  double write_allocate_bytes() const override;
  double items() const override { return static_cast<double>(s_.n); }  // images
  Metric metric() const override { return Metric::gflops; }
  double host_bytes(Device) const override;
  double device_bytes() const override;
  // fwd: x (n c h w), w (k c r s), b (k); bwd_data: dy (n k p q), w; bwd_filter: x, dy. Values
  // in [-1, 1], representable in the dtype.
  Tensors make_inputs() const override;
  // fwd: y; bwd_data: dx; bwd_filter: dw and db.
  std::vector<std::string> outputs() const override;
  // Every output point up to 2e8 terms in all, else a random sample of that cost, and every db,
  // each computed directly in double: the error relative to the root sum of squares of its terms,
  // within factor x unit roundoff x (sqrt(terms) + 1) (factor 64 for fp32, which leaves room for
  // Winograd and FFT algorithms; 256 for reduced precisions). In bf16 and fp16 an output may also
  // be rounded once to the dtype (cuDNN's 16-bit convolutions give 16-bit outputs; fwd, the bias
  // in y rounded too, cuDNN adding the convolution to it): the bound of each point grows by the
  // dtype's unit roundoff times its own size (fwd: plus its bias's), no more.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;
  // The terms one output point sums, and the tolerance that follows.
  double terms() const;
  double tolerance() const;

 private:
  struct ConvReference {
    std::vector<std::int64_t> points;  // the output points checked
    std::vector<ConvPoint> values;     // theirs, in double
    std::vector<ConvPoint> db;         // bwd_filter: every db[k]
  };
  ConvShape s_;
  std::uint64_t seed_;
  ReferenceMemo<ConvReference> reference_;
};

}  // namespace pb
