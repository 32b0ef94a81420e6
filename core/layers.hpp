// The per-element math of the layers a training step walks, beyond GEMM, convolution and the
// activations: max pooling, batch normalization and SGD. One definition for the reference
// (double), the CPU's step (float, core/layers.cpp runs them on the CPU's threads) and the GPU's
// kernels (kernels/train.cu).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/hd.hpp"
#include "core/types.hpp"

namespace pb {

// Max pooling over `planes` maps of h x w: a k x k window every `stride`, the maps padded by
// `pad` (which no window's maximum comes from), PyTorch's MaxPool2d (2x2 stride 2 in the small
// models; 3x3 stride 2 pad 1 in ResNet-50's stem). The planes are images x c channels, NCHW, or
// NHWC where channels_last (a plane's pixels then lie c apart: step()). Output o (of planes x oh
// x ow, in the input's layout): the maximum of its window, and in *arg the maximum's pixel within
// its plane (the first of equals, in window order). Backward routes each output's gradient to its
// maximum: an input's gradient is the sum of those of the windows whose maximum it is (windows
// overlap where stride < k). The GPU's backward gathers through maxpool_grad_at, the CPU's
// scatters through arg (the tests hold them equal).
struct PoolShape {
  std::int64_t planes = 1, h = 2, w = 2, k = 2, stride = 2, pad = 0;
  std::int64_t c = 1;  // channels a image (planes / c images)
  bool channels_last = false;
  HD std::int64_t oh() const { return (h + 2 * pad - k) / stride + 1; }
  HD std::int64_t ow() const { return (w + 2 * pad - k) / stride + 1; }
  HD std::int64_t step() const { return channels_last ? c : 1; }
  // Where plane p's first pixel lies in a tensor of `pixels` a plane.
  HD std::int64_t plane(std::int64_t p, std::int64_t pixels) const {
    return channels_last ? p / c * pixels * c + p % c : p * pixels;
  }
  // The other way: value o of such a tensor (in memory order) lies in plane *p at pixel
  // *pixel, plane(*p, pixels) + *pixel * step() being o (the GPU's kernels, one value each).
  HD void locate(std::int64_t o, std::int64_t pixels, std::int64_t* p, std::int64_t* pixel) const {
    *p = channels_last ? o / (pixels * c) * c + o % c : o / pixels;
    *pixel = channels_last ? o / c % pixels : o % pixels;
  }
};
// The window at output row i, column j of a plane (x: the plane's first pixel; arg: where the
// choice goes).
template <class T>
HD inline T maxpool_at(const PoolShape& s, const T* x, std::int64_t i, std::int64_t j,
                       std::int32_t* arg) {
  std::int64_t best = -1;
  const std::int64_t step = s.step();
  for (std::int64_t r = 0; r < s.k; ++r) {
    const std::int64_t ih = i * s.stride - s.pad + r;
    if (ih < 0 || ih >= s.h) continue;
    for (std::int64_t c = 0; c < s.k; ++c) {
      const std::int64_t iw = j * s.stride - s.pad + c;
      if (iw < 0 || iw >= s.w) continue;
      const std::int64_t at = ih * s.w + iw;
      if (best < 0 || x[at * step] > x[best * step]) best = at;
    }
  }
  *arg = static_cast<std::int32_t>(best);
  return x[best * step];
}
// The gradient of input row r, column c of a plane (dout and arg: the plane's first output): the
// windows that hold it, in output order, summed in Sum (float for 16-bit maps: one rounding).
template <class T, class Sum = T>
HD inline Sum maxpool_grad_at(const PoolShape& s, const T* dout, const std::int32_t* arg,
                              std::int64_t r, std::int64_t c) {
  // Output rows i with i stride - pad <= r < i stride - pad + k, and likewise columns.
  const std::int64_t nr = r + s.pad - s.k + 1, nc = c + s.pad - s.k + 1;
  const std::int64_t i0 = nr <= 0 ? 0 : (nr + s.stride - 1) / s.stride;
  const std::int64_t j0 = nc <= 0 ? 0 : (nc + s.stride - 1) / s.stride;
  const std::int64_t i1 = (r + s.pad) / s.stride, j1 = (c + s.pad) / s.stride;
  const std::int64_t oh = s.oh(), ow = s.ow(), at = r * s.w + c, step = s.step();
  Sum sum = Sum(0);
  for (std::int64_t i = i0; i <= i1 && i < oh; ++i)
    for (std::int64_t j = j0; j <= j1 && j < ow; ++j)
      if (arg[(i * ow + j) * step] == at) sum += static_cast<Sum>(dout[(i * ow + j) * step]);
  return sum;
}
template <class T>
void maxpool_forward(const PoolShape& s, const T* x, T* out, std::int32_t* arg);
template <class T>
void maxpool_backward(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx);
// The same over bf16 maps (each value the upper half of an fp32's bits), NHWC only: the same
// choices and values as over the fp32 maps (a maximum is exact); backward sums each input's
// gradients in float and rounds once.
void maxpool_forward_bf16(const PoolShape& s, const Bf16* x, Bf16* out, std::int32_t* arg);
void maxpool_backward_bf16(const PoolShape& s, const Bf16* dout, const std::int32_t* arg, Bf16* dx);

// n images of c maps of hw pixels each, NCHW or NHWC.
//
// Batch normalization over the channels of n x c x hw maps (BatchNorm2d; BatchNorm1d with hw 1),
// PyTorch's training mode: per channel the batch's mean and biased variance over its m = n hw
// values, y = weight (x - mean) invstd + bias with invstd = 1/sqrt(var + eps), and the running
// statistics moved by `momentum` toward the mean and the unbiased variance (m/(m-1) var). In
// inference the running statistics normalize. The backward pass, with xhat = (x - mean) invstd:
//   dbias = sum dy,  dweight = sum dy xhat,  dx = weight invstd (dy - (dbias + xhat dweight)/m).
struct Maps {
  std::int64_t n = 1, c = 1, hw = 1;
  bool channels_last = false;  // NHWC, else NCHW
  HD std::int64_t size() const { return n * c * hw; }
  HD std::int64_t channel(std::int64_t i) const { return channels_last ? i % c : i / hw % c; }
  HD std::int64_t count() const { return n * hw; }  // the values of one channel
  // The map value i lies in, as image x c + channel (a row of global average pooling's n x c).
  HD std::int64_t map(std::int64_t i) const { return i / (c * hw) * c + channel(i); }
  // The i-th value of channel ch (i < count()).
  HD std::int64_t at(std::int64_t ch, std::int64_t i) const {
    return channels_last ? i * c + ch : (i / hw * c + ch) * hw + i % hw;
  }
  // NCHW: a channel's values as rows of contiguous values, each plane cut into pieces of at
  // most kPieceValues (the GPU's batch norm sums: a warp reads a row, rows spread over blocks).
  // How many rows a channel has, and where row r of channel ch starts and how long it is.
  static constexpr std::int64_t kPieceValues = 1024;
  HD std::int64_t pieces() const { return (hw + kPieceValues - 1) / kPieceValues; }
  HD std::int64_t piece_rows() const { return n * pieces(); }
  HD std::int64_t piece_at(std::int64_t ch, std::int64_t r, std::int64_t* len) const {
    const std::int64_t per = pieces(), first = r % per * kPieceValues;
    *len = hw - first < kPieceValues ? hw - first : kPieceValues;
    return (r / per * c + ch) * hw + first;
  }
};
// n / d for 32-bit unsigned n and a divisor d >= 1 fixed in advance, as a multiply, an add and a
// shift (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994:
// shift = ceil(log2 d), mul = floor(2^32 (2^shift - d) / d) + 1, n / d = (mulhi(mul, n) + n) >>
// shift, exact for every n): for GPU loops that would otherwise divide at every value, where a
// 32-bit division by a variable is about twenty instructions, three of them on the slow unit.
struct FastDiv {
  std::uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  explicit FastDiv(std::uint32_t divisor) : d(divisor == 0 ? 1 : divisor) {
    while ((std::uint64_t{1} << shift) < d) ++shift;
    mul = static_cast<std::uint32_t>(
        (std::uint64_t{1} << 32) * ((std::uint64_t{1} << shift) - d) / d + 1);
  }
  HD std::uint32_t operator()(std::uint32_t n) const {
    const std::uint64_t high = (std::uint64_t{mul} * n) >> 32;
    return static_cast<std::uint32_t>((high + n) >> shift);
  }
};

// Maps::channel(e) through FastDiv for maps of fewer than 2^32 values (the GPU's per-value
// kernels); larger maps take Maps::channel's divisions.
struct ChannelOf {
  Maps m;
  FastDiv by_hw, by_c;
  bool fast = false;
  ChannelOf() = default;
  explicit ChannelOf(const Maps& maps)
      : m(maps), fast(maps.size() > 0 && maps.size() <= std::int64_t{0xffffffff}) {
    if (fast)
      by_hw = FastDiv(static_cast<std::uint32_t>(m.hw)),
      by_c = FastDiv(static_cast<std::uint32_t>(m.c));
  }
  HD std::int64_t operator()(std::int64_t e) const {
    if (!fast) return m.channel(e);
    const auto u = static_cast<std::uint32_t>(e);
    const std::uint32_t plane = m.channels_last ? u : by_hw(u);  // NCHW: image x c + channel
    return plane - by_c(plane) * static_cast<std::uint32_t>(m.c);
  }
};

struct BnShape : Maps {
  float momentum = 0.1f, eps = 1e-5f;
  // The maps stand for this many copies of themselves (the reference of a batch made of
  // repeats: core/train.hpp's TrainShape::replicas): the unbiased variance counts every copy.
  std::int64_t replicas = 1;
  // y = relu(batch norm(x)) in one pass: the inference walk's fusion of a ReLU that is the batch
  // norm's only reader, for an Ops that says it fuses (core/train_step.hpp's FusesRelu); the
  // CPU's loops (batchnorm_forward) honour it.
  bool relu = false;
};
template <class T>
HD inline T bn_forward_at(T x, T mean, T invstd, T weight, T bias) {
  return weight * (x - mean) * invstd + bias;
}
// Batch norm in inference folded into a per-channel scale and shift, y = scale x + shift:
// scale = weight / sqrt(var + eps), shift = bias - mean scale (the running statistics).
HD inline void bn_fold_at(float weight, float bias, float mean, float var, float eps, float* scale,
                          float* shift) {
  *scale = weight / sqrtf(var + eps);
  *shift = bias - mean * *scale;
}
// A convolution's inference tail (core/train_step.hpp's ConvTail) at one output value v:
// relu(scale v + shift + r), each part where asked (folded: a batch norm; residual: r added).
// The CPU's pass over the output (cpu_ref/train.cpp) and the GPU's kernel (kernels/train.cu).
HD inline float conv_tail_at(float v, bool folded, float scale, float shift, bool residual, float r,
                             bool relu) {
  if (folded) v = scale * v + shift;
  if (residual) v += r;
  return relu && v < 0.0f ? 0.0f : v;
}
// A channel's mean and biased variance from its sums of d = x - k and of d^2 over m values,
// k one of its values (near its mean, so that the one-pass variance does not cancel).
HD inline void bn_shifted_stats_at(double k, double sum_d, double sum_d2, double m, double* mean,
                                   double* var) {
  const double d = sum_d / m, v = sum_d2 / m - d * d;
  *mean = k + d;
  *var = v > 0 ? v : 0;
}
// A channel's forward pass as y = scale x + shift (the CPU's tuned loops and the GPU's packed
// kernel): from the batch's statistics (train: mean, invstd) or the running ones.
HD inline void bn_scale_shift_at(bool train, float eps, float weight, float bias, float mean,
                                 float invstd, float running_mean, float running_var, float* scale,
                                 float* shift) {
  const double is = train ? invstd : 1 / sqrt(double(running_var) + double(eps));
  const double mu = train ? mean : running_mean;
  *scale = static_cast<float>(weight * is);
  *shift = static_cast<float>(bias - mu * weight * is);
}
// A channel's dx as p dy + q (x - mean) + r, which is bn_backward_at's weight invstd (dy -
// (dbias + xhat dweight) / m) with xhat = (x - mean) invstd (x - mean first: no cancellation
// where the mean is large); from dbias and dweight over m values.
struct BnDxTerms {
  float p, q, r;
};
HD inline BnDxTerms bn_dx_terms_at(float weight, float invstd, double dbias, double dweight,
                                   double m) {
  const double is = invstd, wi = weight * is;
  return {static_cast<float>(wi), static_cast<float>(-wi * is * dweight / m),
          static_cast<float>(-wi * dbias / m)};
}
template <class T>
HD inline T bn_backward_at(T dy, T xhat, T weight, T invstd, T dbias, T dweight, T m) {
  return weight * invstd * (dy - (dbias + xhat * dweight) / m);
}
// The running statistics after a batch of mean and (biased) var over m values.
template <class T>
HD inline void bn_running_at(const BnShape& s, T mean, T var, T* running_mean, T* running_var) {
  const T m = static_cast<T>(s.count() * s.replicas), mom = static_cast<T>(s.momentum);
  *running_mean = (1 - mom) * *running_mean + mom * mean;
  *running_var = (1 - mom) * *running_var + mom * (m > 1 ? var * m / (m - 1) : var);
}
// On the CPU's threads (NCHW: one channel a thread; NHWC: the rows split, each thread's sums
// added). train: the batch's statistics into mean and invstd
// (c each, for the backward pass) and the running ones updated; else the running ones used.
template <class T>
void batchnorm_forward(const BnShape& s, bool train, const T* x, const T* weight, const T* bias,
                       T* y, T* mean, T* invstd, T* running_mean, T* running_var);
template <class T>
void batchnorm_backward(const BnShape& s, const T* x, const T* weight, const T* mean,
                        const T* invstd, const T* dy, T* dx, T* dweight, T* dbias);
// Global average pooling on the CPU's threads: out (n x c) the mean of each map, and back: dx
// each map's gradient spread evenly.
template <class T>
void plane_means(const Maps& s, const T* x, T* out);
template <class T>
void spread_means(const Maps& s, const T* dout, T* dx);
// The maps in the other layout: NCHW to NHWC where s is NCHW, and back.
template <class T>
void relayout(const Maps& s, const T* x, T* out);
// The same with each value converted on the way (on the CPU's threads).
template <class X, class T, class Convert>
void relayout_as(const Maps& s, const X* x, T* out, Convert convert) {
  Maps other = s;
  other.channels_last = !s.channels_last;
#ifdef _OPENMP  // a header: some includers build without OpenMP
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t p = 0; p < s.n * s.c; ++p) {
    const std::int64_t image = p / s.c, ch = p % s.c;
    for (std::int64_t i = image * s.hw; i < (image + 1) * s.hw; ++i)
      out[other.at(ch, i)] = convert(x[s.at(ch, i)]);
  }
}

// What every host backend of core/train_step.hpp shares (the CPU's, in float, and the
// reference's, in double, derive from it): host vectors for buffers, copy and zero, and the six
// above as op functions.
// Host vectors as a backend's buffers.
struct HostBuffers {
  template <class E>
  using Buffer = std::vector<E>;
  template <class E>
  Buffer<E> buffer(std::int64_t n) {
    return Buffer<E>(static_cast<std::size_t>(n));
  }
};
template <class T>
struct HostOps : HostBuffers {
  using ActType = T;
  using ParamType = T;
  void copy(const T* x, T* out, std::int64_t n) { std::copy(x, x + n, out); }
  void zero(T* x, std::int64_t n) { std::fill(x, x + n, T(0)); }
  void maxpool_forward(const PoolShape& s, const T* x, T* out, std::int32_t* arg) {
    pb::maxpool_forward(s, x, out, arg);
  }
  void maxpool_backward(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx) {
    pb::maxpool_backward(s, dout, arg, dx);
  }
  void batchnorm_forward(const BnShape& s, bool train, const T* x, const T* weight, const T* bias,
                         T* y, T* mean, T* invstd, T* running_mean, T* running_var) {
    pb::batchnorm_forward(s, train, x, weight, bias, y, mean, invstd, running_mean, running_var);
  }
  void batchnorm_backward(const BnShape& s, const T* x, const T* weight, const T* mean,
                          const T* invstd, const T* dy, T* dx, T* dweight, T* dbias) {
    pb::batchnorm_backward(s, x, weight, mean, invstd, dy, dx, dweight, dbias);
  }
  void plane_means(const Maps& s, const T* x, T* out) { pb::plane_means(s, x, out); }
  void spread_means(const Maps& s, const T* dout, T* dx) { pb::spread_means(s, dout, dx); }
};

// SGD with momentum and weight decay for one parameter, PyTorch's form:
//   g += weight_decay p;  v = momentum v + g;  p -= lr v.
template <class T>
HD inline void sgd_momentum_at(T& p, T& v, T g, T lr, T momentum, T weight_decay) {
  v = momentum * v + g + weight_decay * p;
  p -= lr * v;
}

// Dynamic loss scaling, as fp16 mixed precision trains (PyTorch's GradScaler, its defaults): the
// loss's gradient is multiplied by `scale` and the parameters' gradients divided by it before
// the update, so that small gradients do not underflow fp16. A step whose gradients are not all
// finite (`overflow`) is skipped and halves the scale; `interval` steps in a row without one
// double it. Floats alone, so that it lives in device memory a replayed CUDA graph updates.
struct LossScale {
  float scale = 65536.0f;
  float overflow = 0;    // 1 where this step's gradients were not all finite
  float good_steps = 0;  // steps since the last overflow (or the last growth)
  float skipped = 0;     // steps skipped, in all
};
HD inline void loss_scale_after_step(LossScale& s, float interval = 2000.0f) {
  if (s.overflow != 0) {
    s.scale *= 0.5f, s.good_steps = 0, s.skipped += 1;
    return;
  }
  s.good_steps += 1;
  if (s.good_steps >= interval) s.scale *= 2.0f, s.good_steps = 0;
}

}  // namespace pb
