// The training step on the CPU: core/train_step.hpp's walk over the CPU's op functions, the ones
// the single-op benchmarks time (no second copy of any op): GEMMs through OpenBLAS (`openblas`)
// or oneDNN's matmul plans (`onednn`); convolutions through im2col + OpenBLAS (`openblas`) or
// oneDNN's convolution plans (`onednn`); ReLU forward and backward and the softmax cross-entropy
// loss through the OpenMP activation and row functions; max pooling, batch normalization and
// global average pooling (core/layers.hpp); and the small ones here: the bias broadcast, the bias
// gradient (column sums), SGD, the residual add.
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <cstring>
#include <map>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "core/activation.hpp"
#include "core/held_weights.hpp"
#include "core/train.hpp"
#include "core/train_step.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

namespace {

template <class X, class Y, class F>
void convert(const X* x, Y* out, std::int64_t n, int threads, F f) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
}

// A map value as float, and back (the maps are float or bf16).
inline float as_float(float v) { return v; }
inline float as_float(Bf16 v) { return from_bf16(v); }
inline void store(float v, float* out) { *out = v; }
inline void store(float v, Bf16* out) { *out = to_bf16(v); }

// A convolution's inference tail (core/train_step.hpp's ConvTail) over its output y, in place,
// where oneDNN did not compute it in the convolution's pass: y = relu(scale y + shift +
// residual), each part optional, per output channel of maps m.
template <class T>
void apply_tail(const Maps& m, const float* scale, const float* shift, const T* residual, bool relu,
                T* y, int threads) {
  const std::int64_t len = m.channels_last ? m.c : m.hw;  // a run of values
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t p = 0; p < m.size() / len; ++p) {
    for (std::int64_t j = 0; j < len; ++j) {
      const std::int64_t ch = m.channels_last ? j : p % m.c, at = p * len + j;
      const bool folded = scale != nullptr;
      store(conv_tail_at(as_float(y[at]), folded, folded ? scale[ch] : 1.0f,
                         folded ? shift[ch] : 0.0f, residual != nullptr,
                         residual ? as_float(residual[at]) : 0.0f, relu),
            y + at);
    }
  }
}

// A GEMM through OpenBLAS, or through oneDNN's plan for its shape (built on first use: the
// first step, which the harness runs before timing). In bf16, operands given in float are
// converted to it first, and a bf16 output comes from oneDNN's fp32 one (the model's GEMMs are
// its small linear layers).
class GemmRunner {
 public:
  GemmRunner(TrainBackend b, Dtype t, int threads) : backend_(b), dtype_(t), threads_(threads) {}
  template <class A, class B, class C>
  void operator()(GemmShape g, const A* a, const B* b, C* c) {
    if constexpr (std::is_same_v<A, float> && std::is_same_v<B, float> && std::is_same_v<C, float>)
      if (backend_ == TrainBackend::openblas) return gemm_openblas(g, a, b, c);
    g.dtype = dtype_;
    auto& plan = plans_[std::make_tuple(g.m, g.n, g.k, g.ta, g.tb, g.alpha, g.beta, g.dtype)];
    if (!plan) plan = std::make_unique<OnednnMatmul>(g);
    if constexpr (std::is_same_v<A, float> && std::is_same_v<B, float> && std::is_same_v<C, float>)
      if (g.dtype == Dtype::fp32) return plan->run(a, b, c);
    const void* a16 = low(*plan, true, a, g.m * g.k, low_a_);
    const void* b16 = low(*plan, false, b, g.k * g.n, low_b_);
    if constexpr (std::is_same_v<C, float>) {
      plan->run(a16, b16, c);
    } else {
      const std::int64_t n = g.m * g.n;
      out_.resize(std::max(out_.size(), static_cast<std::size_t>(n)));
      if (g.beta != 0.0f) convert(c, out_.data(), n, threads_, from_bf16);
      plan->run(a16, b16, out_.data());
      convert(out_.data(), c, n, threads_, to_bf16);
    }
  }

 private:
  // An operand in bf16: itself, or converted into `into`.
  template <class X>
  static const void* low(const OnednnMatmul& plan, bool first, const X* x, std::int64_t n,
                         std::vector<Bf16>& into) {
    if constexpr (std::is_same_v<X, float>) {
      into.resize(std::max(into.size(), static_cast<std::size_t>(n)));
      plan.convert(first, x, into.data());
      return into.data();
    } else {
      return x;
    }
  }
  TrainBackend backend_;
  Dtype dtype_;
  int threads_;
  std::vector<Bf16> low_a_, low_b_;  // float operands in bf16
  std::vector<float> out_;           // a bf16 output in fp32
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, float, float, Dtype>,
           std::unique_ptr<OnednnMatmul>>
      plans_;
};

// A convolution pass through im2col + OpenBLAS (NCHW in and out), or oneDNN's plan for it (NHWC
// in and out: oneDNN's convolutions read and write NHWC maps where they lie, with no reorder;
// low_maps: the maps are stored in the step's dtype, bf16).
class ConvRunner {
 public:
  ConvRunner(TrainBackend b, int threads, Dtype t, bool low_maps)
      : backend_(b), threads_(threads), dtype_(t), low_maps_(low_maps) {}
  template <class A, class B, class C>
  void operator()(ConvShape s, const A* in0, const B* in1, const float* bias, C* out, float* db) {
    s.dtype = dtype_;
    if constexpr (std::is_same_v<A, float> && std::is_same_v<B, float> &&
                  std::is_same_v<C, float>) {
      if (backend_ == TrainBackend::openblas) {
        col_.resize(std::max(col_.size(), static_cast<std::size_t>(s.crs() * s.pq())));
        return conv_im2col(s, in0, in1, bias, out, db, col_.data(), threads_);
      }
    }
    plan(s, {})->run(in0, in1, bias, out, db);
  }
  // A forward convolution and its inference tail (the batch norm folded into a per-channel scale
  // and shift): in oneDNN's pass as post-ops, its weights held in oneDNN's layout from one pass
  // to the next (until drop_held_weights()), else (OpenBLAS, or post-ops oneDNN cannot run here)
  // in a pass over the output after it.
  template <class T>
  void fused(ConvShape s, const T* x, const float* w, const float* b, const ConvTail<T, float>& t,
             T* out) {
    s.dtype = dtype_;
    const float *scale = nullptr, *shift = nullptr;
    if (t.weight) {
      scale_.resize(static_cast<std::size_t>(s.k));
      shift_.resize(static_cast<std::size_t>(s.k));
      for (std::int64_t c = 0; c < s.k; ++c)
        bn_fold_at(t.weight[c], t.bias[c], t.mean[c], t.var[c], t.eps, &scale_[c], &shift_[c]);
      scale = scale_.data(), shift = shift_.data();
    }
    if (backend_ == TrainBackend::onednn) {
      if (OnednnConvolution* p = plan(s, {t.weight != nullptr, t.residual != nullptr, t.relu})) {
        p->post_inputs(scale, shift, t.residual);
        return p->run(x, w, b, out, nullptr, /*hold_weights=*/true);
      }
    }
    (*this)(s, x, w, b, out, nullptr);
    apply_tail(Maps{s.n, s.k, s.pq(), backend_ == TrainBackend::onednn}, scale, shift, t.residual,
               t.relu, out, threads_);
  }
  void drop_held_weights() {
    for (auto& [key, p] : plans_)
      if (p) p->drop_held_weights();
  }

 private:
  // oneDNN's plan for a pass (NHWC maps), built on first use; null for a tail oneDNN cannot
  // compute in the pass here (its kernels without the post-ops).
  OnednnConvolution* plan(const ConvShape& s, ConvPost post) {
    const std::int64_t tail = post.scale_shift | post.residual << 1 | post.relu << 2;
    auto [it, fresh] = plans_.try_emplace(
        {s.n, s.c, s.h, s.w, s.k, s.r, s.s, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
         static_cast<std::int64_t>(s.dir), static_cast<std::int64_t>(s.dtype), s.bias, tail});
    if (fresh) {
      try {
        it->second = std::make_unique<OnednnConvolution>(s, true, low_maps_, post);
      } catch (const Unavailable&) {
        if (post.any()) return nullptr;  // kept null: the pass and its tail apart
        plans_.erase(it);
        throw;
      }
    }
    return it->second.get();
  }
  TrainBackend backend_;
  int threads_;
  Dtype dtype_;
  bool low_maps_;
  std::vector<float> col_;
  std::vector<float> scale_, shift_;  // a folded batch norm
  std::map<std::array<std::int64_t, 15>, std::unique_ptr<OnednnConvolution>> plans_;  // by shape
};

// The CPU's backend for core/train_step.hpp: host vectors and the OpenMP, OpenBLAS and oneDNN
// op functions, on `threads` threads, in fp32. With oneDNN the maps stay NHWC between layers,
// and training fuses a ReLU into the batch norm before it through oneDNN's primitive.
class CpuOps : public HostOps<float> {
 public:
  CpuOps(TrainBackend backend, int threads)
      : channels_last_(backend == TrainBackend::onednn),
        gemm_(backend, Dtype::fp32, threads),
        conv_(backend, threads, Dtype::fp32, false),
        threads_(threads),
        tmp_(static_cast<std::size_t>(10 * threads)) {
    if (backend == TrainBackend::onednn && onednn::built())
      relu_bn_ = std::make_unique<OnednnBatchNorm>(Dtype::fp32, true);
  }
  bool channels_last() const { return channels_last_; }
  // Batch norm: the loops tuned for the CPU, in either layout.
  void batchnorm_forward(const BnShape& s, bool train, const float* x, const float* weight,
                         const float* bias, float* y, float* mean, float* invstd,
                         float* running_mean, float* running_var) {
    tuned_batchnorm_forward(s, train, x, weight, bias, y, mean, invstd, running_mean, running_var,
                            threads_);
  }
  void batchnorm_backward(const BnShape& s, const float* x, const float* weight, const float* mean,
                          const float* invstd, const float* dy, float* dx, float* dweight,
                          float* dbias) {
    tuned_batchnorm_backward(s, x, weight, mean, invstd, dy, dx, dweight, dbias, threads_);
  }
  // Training's fusion of a ReLU into the batch norm before it (core/train_step.hpp's
  // FusesTrainingRelu; with oneDNN alone): oneDNN's primitive with the ReLU fused, which keeps
  // the variance where the loops keep invstd, and its workspace for the mask.
  std::int64_t batchnorm_relu_mask_bytes(const BnShape& s) {
    return relu_bn_ ? relu_bn_->relu_mask_bytes(s) : -1;
  }
  void batchnorm_relu_forward(const BnShape& s, const float* x, const float* weight,
                              const float* bias, float* y, float* mean, float* var,
                              float* running_mean, float* running_var, std::uint8_t* mask) {
    relu_bn_->forward(s, true, x, weight, bias, y, mean, var, running_mean, running_var, mask);
  }
  void batchnorm_relu_backward(const BnShape& s, const float* x, const float* weight,
                               const float* mean, const float* var, const std::uint8_t* mask,
                               const float* dy, float* dx, float* dweight, float* dbias) {
    relu_bn_->backward(s, x, weight, mean, var, mask, dy, dx, dweight, dbias);
  }
  void relayout(const Maps& s, const float* x, float* out) { pb::relayout(s, x, out); }
  void gemm(const GemmShape& g, const float* a, const float* b, float* c) { gemm_(g, a, b, c); }
  void conv(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
            float* db) {
    conv_(s, in0, in1, b, out, db);
  }
  // Inference's convolution with its tail (core/train_step.hpp's FusesConv).
  void conv_fused(const ConvShape& s, const float* x, const float* w, const float* b,
                  const ConvTail<float, float>& t, float* out) {
    conv_.fused(s, x, w, b, t, out);
  }
  void drop_held_weights() { conv_.drop_held_weights(); }
  void relu(const float* z, const float* dy, float* out, std::int64_t n) {
    activation_omp(Act::relu, z, dy, out, n, threads_);
  }
  void rows(const RowShape& s, const float* x, const std::int32_t* labels, float* out) {
    tmp_.resize(std::max(tmp_.size(), static_cast<std::size_t>(s.cols * threads_)));
    rows_omp(s, x, labels, out, tmp_.data(), threads_);
  }
  void mean(const float* x, std::int64_t n, float* out) {
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += x[i];
    *out = static_cast<float>(sum / static_cast<double>(n));
  }
  void bias_rows(const float* b, float* out, std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t i = 0; i < rows; ++i) std::copy(b, b + cols, out + i * cols);
  }
  void column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* out) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < cols; ++j) {
      float sum = 0;
      for (std::int64_t i = 0; i < rows; ++i) sum += x[i * cols + j];
      out[j] = sum;
    }
  }
  void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j)
      sgd_momentum_at(p[j], v[j], g[j], lr, momentum, weight_decay);
  }
  void add(const float* a, const float* b, float* out, std::int64_t n) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = a[j] + b[j];
  }
  // Inference's fusions (core/train_step.hpp's FusesRelu): relu(a + b) here (training's too),
  // relu(batch norm) in core/layers.cpp's loops (BnShape::relu): one pass over the maps where
  // there were two.
  void add_relu(const float* a, const float* b, float* out, std::int64_t n) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = std::max(a[j] + b[j], 0.0f);
  }

 private:
  bool channels_last_;
  GemmRunner gemm_;
  ConvRunner conv_;
  int threads_;
  std::vector<float> tmp_;                    // the row functions' scratch: a row's floats a thread
  std::unique_ptr<OnednnBatchNorm> relu_bn_;  // training's batch norms with their ReLU (oneDNN)
};

#ifdef PAIRBENCH_HAVE_DNNL
// The backend of a bf16 step (mixed precision, as PyTorch's autocast trains on a CPU with
// bf16): the maps and their gradients stored in bf16 between layers, NHWC; the parameters,
// their gradients, the momentum and the update fp32. Convolutions and GEMMs in bf16 through
// oneDNN (fp32 accumulation), batch norm through oneDNN's primitive (fp32 statistics; a ReLU
// after it fused, in training too), ReLU, the residual add, the bias and the conversions here, max
// pooling on the bf16 maps (core/layers.hpp); the loss and global average pooling through CpuOps's
// fp32 op functions on converted copies (of the logits, the last maps).
class Bf16Ops : public HostBuffers {
 public:
  using ActType = Bf16;
  using ParamType = float;
  explicit Bf16Ops(int threads)
      : f32_(TrainBackend::onednn, threads),
        gemm_(TrainBackend::onednn, Dtype::bf16, threads),
        conv_(TrainBackend::onednn, threads, Dtype::bf16, true),
        threads_(threads) {}
  bool channels_last() const { return true; }
  void relayout(const Maps& s, const float* x, Bf16* out) { relayout_as(s, x, out, to_bf16); }
  void relayout(const Maps& s, const Bf16* x, Bf16* out) {
    relayout_as(s, x, out, [](Bf16 v) { return v; });
  }
  void to_float(const Bf16* x, float* out, std::int64_t n) {
    convert(x, out, n, threads_, from_bf16);
  }
  // A float b is a linear layer's weights (the forward pass and the input's gradient): held in
  // bf16 from one use to the next (core/held_weights.hpp), so that the two share a conversion.
  template <class A, class B, class C>
  void gemm(const GemmShape& g, const A* a, const B* b, C* c) {
    if constexpr (std::is_same_v<B, float>) {
      const std::int64_t n = g.k * g.n;
      const Bf16* w = held_.get(
          b, n, [](std::int64_t size) { return std::vector<Bf16>(static_cast<std::size_t>(size)); },
          [&](Bf16* out) { convert(b, out, n, threads_, to_bf16); });
      gemm_(g, a, w, c);
    } else {
      gemm_(g, a, b, c);
    }
  }
  template <class A, class B, class C>
  void conv(const ConvShape& s, const A* in0, const B* in1, const float* b, C* out, float* db) {
    conv_(s, in0, in1, b, out, db);
  }
  void conv_fused(const ConvShape& s, const Bf16* x, const float* w, const float* b,
                  const ConvTail<Bf16, float>& t, Bf16* out) {
    conv_.fused(s, x, w, b, t, out);
  }
  void drop_held_weights() {
    conv_.drop_held_weights();
    held_.drop();
  }
  // On the bits: z > 0 where the sign is clear and z is not zero.
  void relu(const Bf16* z, const Bf16* dy, Bf16* out, std::int64_t n) {
    if (dy) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
      for (std::int64_t j = 0; j < n; ++j) out[j] = (z[j] & 0x8000u) || z[j] == 0 ? 0 : dy[j];
      return;
    }
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = (z[j] & 0x8000u) ? 0 : z[j];
  }
  void rows(const RowShape& s, const Bf16* x, const std::int32_t* labels, float* out) {
    f32_.rows(s, floats(x, s.rows * s.cols, a_), labels, out);  // the loss
  }
  void rows(const RowShape& s, const Bf16* x, const std::int32_t* labels, Bf16* out) {
    const std::int64_t n = s.rows * s.cols;  // its gradient
    f32_.rows(s, floats(x, n, a_), labels, room(b_, n));
    convert(b_.data(), out, n, threads_, to_bf16);
  }
  void mean(const float* x, std::int64_t n, float* out) { f32_.mean(x, n, out); }
  void bias_rows(const float* b, Bf16* out, std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) out[i * cols + j] = to_bf16(b[j]);
  }
  void column_sums(const Bf16* x, std::int64_t rows, std::int64_t cols, float* out) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < cols; ++j) {
      float sum = 0;
      for (std::int64_t i = 0; i < rows; ++i) sum += from_bf16(x[i * cols + j]);
      out[j] = sum;
    }
  }
  void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
    f32_.sgd_momentum(p, v, g, n, lr, momentum, weight_decay);
  }
  void add(const Bf16* a, const Bf16* b, Bf16* out, std::int64_t n) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = to_bf16(from_bf16(a[j]) + from_bf16(b[j]));
  }
  // Inference's fusions, as CpuOps's: relu(a + b) here (relu's bits, as relu() takes them;
  // training's too), relu(batch norm) through oneDNN's fused primitive (BnShape::relu).
  void add_relu(const Bf16* a, const Bf16* b, Bf16* out, std::int64_t n) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) {
      const Bf16 sum = to_bf16(from_bf16(a[j]) + from_bf16(b[j]));
      out[j] = (sum & 0x8000u) ? 0 : sum;
    }
  }
  void copy(const Bf16* x, Bf16* out, std::int64_t n) { std::copy(x, x + n, out); }
  void zero(float* x, std::int64_t n) { std::fill(x, x + n, 0.0f); }
  void maxpool_forward(const PoolShape& s, const Bf16* x, Bf16* out, std::int32_t* arg) {
    pb::maxpool_forward_bf16(s, x, out, arg);
  }
  void maxpool_backward(const PoolShape& s, const Bf16* dout, const std::int32_t* arg, Bf16* dx) {
    pb::maxpool_backward_bf16(s, dout, arg, dx);
  }
  void plane_means(const Maps& s, const Bf16* x, Bf16* out) {
    f32_.plane_means(s, floats(x, s.size(), a_), room(b_, s.n * s.c));
    convert(b_.data(), out, s.n * s.c, threads_, to_bf16);
  }
  void spread_means(const Maps& s, const Bf16* dout, Bf16* dx) {
    f32_.spread_means(s, floats(dout, s.n * s.c, a_), room(b_, s.size()));
    convert(b_.data(), dx, s.size(), threads_, to_bf16);
  }
  // The statistics kept for the backward pass are the mean and the (biased) variance.
  void batchnorm_forward(const BnShape& s, bool train, const Bf16* x, const float* weight,
                         const float* bias, Bf16* y, float* mean, float* var, float* running_mean,
                         float* running_var) {
    bn_.forward(s, train, x, weight, bias, y, mean, var, running_mean, running_var);
  }
  void batchnorm_backward(const BnShape& s, const Bf16* x, const float* weight, const float* mean,
                          const float* var, const Bf16* dy, Bf16* dx, float* dweight,
                          float* dbias) {
    bn_.backward(s, x, weight, mean, var, nullptr, dy, dx, dweight, dbias);
  }
  // Training's fusion of a ReLU into the batch norm before it (core/train_step.hpp's
  // FusesTrainingRelu): oneDNN's primitive with the ReLU fused, its workspace the mask.
  std::int64_t batchnorm_relu_mask_bytes(const BnShape& s) { return bn_.relu_mask_bytes(s); }
  void batchnorm_relu_forward(const BnShape& s, const Bf16* x, const float* weight,
                              const float* bias, Bf16* y, float* mean, float* var,
                              float* running_mean, float* running_var, std::uint8_t* mask) {
    bn_.forward(s, true, x, weight, bias, y, mean, var, running_mean, running_var, mask);
  }
  void batchnorm_relu_backward(const BnShape& s, const Bf16* x, const float* weight,
                               const float* mean, const float* var, const std::uint8_t* mask,
                               const Bf16* dy, Bf16* dx, float* dweight, float* dbias) {
    bn_.backward(s, x, weight, mean, var, mask, dy, dx, dweight, dbias);
  }

 private:
  float* room(std::vector<float>& v, std::int64_t n) {
    v.resize(std::max(v.size(), static_cast<std::size_t>(n)));
    return v.data();
  }
  const float* floats(const Bf16* x, std::int64_t n, std::vector<float>& into) {
    convert(x, room(into, n), n, threads_, from_bf16);
    return into.data();
  }
  CpuOps f32_;
  GemmRunner gemm_;
  ConvRunner conv_;
  OnednnBatchNorm bn_{Dtype::bf16, true};  // NHWC bf16 maps, fp32 statistics
  int threads_;
  std::vector<float> a_, b_;             // fp32 copies for the fp32 op functions
  HeldWeights<std::vector<Bf16>> held_;  // the linear layers' weights in bf16
};
static_assert(FusesConv<Bf16Ops>::value && FusesRelu<Bf16Ops>::value &&
              FusesTrainingRelu<Bf16Ops>::value && HoldsWeights<Bf16Ops>::value);
#endif
// The memory check counts the CPU's walk with both fusions (walk_bytes, Device::cpu).
static_assert(FusesConv<CpuOps>::value && FusesRelu<CpuOps>::value &&
              FusesTrainingRelu<CpuOps>::value && HoldsWeights<CpuOps>::value);

// A step that owns its backend (made before the step, which allocates through it).
template <class Ops>
struct OwnsOps {
  Ops ops;
};
template <class Ops>
class CpuModelStep : private OwnsOps<Ops>, public WalkStep<Ops> {
 public:
  CpuModelStep(const ModelDesc& m, const TrainShape& s, Ops ops)
      : OwnsOps<Ops>{std::move(ops)}, WalkStep<Ops>(m, s, this->ops) {}
};

}  // namespace

std::unique_ptr<ModelStep> make_model_step(const ModelDesc& m, const TrainShape& s,
                                           TrainBackend backend, int threads) {
  if (s.dtype == Dtype::fp32)
    return std::make_unique<CpuModelStep<CpuOps>>(m, s, CpuOps(backend, threads));
  if (backend == TrainBackend::openblas || s.dtype != Dtype::bf16)
    throw std::invalid_argument(std::string("the CPU's ") +
                                (backend == TrainBackend::openblas ? "OpenBLAS" : "oneDNN") +
                                " step runs no " + to_string(s.dtype));
#ifdef PAIRBENCH_HAVE_DNNL
  return std::make_unique<CpuModelStep<Bf16Ops>>(m, s, Bf16Ops(threads));
#else
  throw Unavailable(onednn::unavailable(s.dtype));
#endif
}

// --- the implementations ---

namespace {

// One rank's step: on its shard of the global batch, its gradients averaged over the ranks
// (after the backward pass, or overlapped with it) unless the shape says local.
class TrainCpu : public CpuImpl {
 public:
  TrainCpu(const TrainWorkload& w, TrainBackend backend, int threads, bool overlap)
      : CpuImpl(threads), w_(w), step_(make_model_step(w.model(), w.train(), backend, threads)) {
    const TrainShape& s = w.train();
    if (s.ranks < 2 || s.local || !s.train) return;
    reducer_ = std::make_unique<GradientReducer>(w.model().param_count, overlap);
    step_->reduce = [r = reducer_.get()](float* g, std::int64_t) { r->finish(g); };
    if (overlap)
      step_->on_ready = [r = reducer_.get()](float* g, std::int64_t from) { r->ready(g, from); };
  }
  void prepare(const Tensors& in) override {
    const TrainShape& s = w_.train();
    const std::int64_t f = w_.model().input.size(), first = s.rank * s.batch;
    const std::vector<float>& x = at(in, "x").f32();
    const std::vector<std::int32_t>& labels = at(in, "labels").i32();
    x_.assign(x.begin() + first * f, x.begin() + (first + s.batch) * f);  // this rank's shard
    labels_.assign(labels.begin() + first, labels.begin() + first + s.batch);
    params_ = at(in, "params").f32();
    velocity_ = at(in, "velocity").f32();
    if (const Tensor* state = find(in, "state")) state_ = state->f32();
    forwarded_ = false;
  }
  void run() override {
    if (w_.train().train)
      step_->step(x_.data(), labels_.data(), params_.data(), velocity_.data(), state_.data(),
                  w_.model().param_count);
    else  // params_ changes only in prepare(): the passes after the first reuse its weights
      step_->forward(x_.data(), params_.data(), state_.data(),
                     forwarded_ ? ModelStep::Params::unchanged : ModelStep::Params::fresh);
    forwarded_ = true;
  }
  Tensors result() override {
    const std::int64_t batch = w_.train().batch, classes = w_.model().classes;
    if (!w_.train().train) {
      Tensor logits("logits", {batch, classes});
      std::copy(step_->logits(), step_->logits() + logits.f32().size(), logits.f32().begin());
      return {logits};
    }
    if (reducer_ && !same_on_every_rank(params_))
      throw std::runtime_error("the ranks hold different parameters after the step");
    Tensors out = {Tensor::of("loss", std::vector<float>{*step_->loss()}),
                   Tensor::of("params", params_), Tensor::of("velocity", velocity_)};
    if (!state_.empty()) out.push_back(Tensor::of("state", state_));
    return out;
  }

 private:
  const TrainWorkload& w_;
  std::unique_ptr<ModelStep> step_;
  std::unique_ptr<GradientReducer> reducer_;
  std::vector<float> x_, params_, velocity_, state_;
  std::vector<std::int32_t> labels_;
  bool forwarded_ = false;  // a forward pass ran on params_ since prepare()
};

ImplSpec spec(const char* name, TrainBackend backend, bool overlap = false) {
  ImplSpec sp;
  sp.op = "train";
  sp.name = name;
  sp.device = Device::cpu;
  sp.threaded = true;  // on the cores (--threads); no model is a sweep shape
  sp.library = backend == TrainBackend::onednn ? "onednn" : "openblas";
  sp.supports = [](const Workload& w) { return w.dtype() == Dtype::fp32; };
  sp.make = [backend, overlap](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<TrainCpu>(static_cast<const TrainWorkload&>(w), backend, threads,
                                      overlap);
  };
  return sp;
}

}  // namespace

std::vector<ImplSpec> train_impls() {
  ImplSpec with_onednn = spec("onednn", TrainBackend::onednn);
  with_onednn.supports = [](const Workload& w) {
    return w.dtype() == Dtype::fp32 || w.dtype() == Dtype::bf16;
  };
  with_onednn.unavailable = [](const Workload& w) { return onednn::unavailable(w.dtype()); };
  ImplSpec with_openblas = spec("openblas", TrainBackend::openblas);
  // The suites leave out its steps above ResNet-50's at batch 8 on 224x224 (194 GFLOP): the
  // im2col path's cost shows there, and at batch 32 its step is the suite's slowest case.
  with_openblas.max_flops = 2.5e11;
  // Over several ranks, oneDNN's step with its all-reduce in buckets overlapped with the
  // backward pass (the other two reduce after it).
  ImplSpec overlapped = spec("onednn_overlap", TrainBackend::onednn, true);
  overlapped.supports = [supports = with_onednn.supports](const Workload& w) {
    const TrainShape& s = static_cast<const TrainWorkload&>(w).train();
    return s.train && s.ranks > 1 && !s.local && supports(w);
  };
  overlapped.unavailable = [unavailable = with_onednn.unavailable](const Workload& w) {
    const std::string why = unavailable(w);
    return why.empty() ? overlap_unavailable() : why;
  };
  return {with_openblas, with_onednn, overlapped};
}

}  // namespace pb::cpu
