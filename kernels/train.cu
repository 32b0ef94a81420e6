// The training step on the GPU: core/train_step.hpp's walk (the very sequence of calls the CPU's
// tests run) over the GPU's op functions, every one enqueued on the case's stream, so the step
// never waits for the host. Backends, named by the implementations:
//   kernels    - the project's kernels: the tiled GEMM and the direct convolution.
//   cublas     - cuBLAS GEMMs; convolutions as im2col + cuBLAS.
//   cudnn      - cuBLAS GEMMs; cuDNN's convolutions (true fp32, kernels/conv.cu's plan).
//   cublas_h2d, cudnn_h2d - the same, with each batch (images and labels) copied from pinned
//                host memory inside the step: the end-to-end step, the copy in the time.
//   cublas_graph, cudnn_graph - the same step captured once as a CUDA graph (after a first
//                step outside the capture, which plans cuDNN and sizes the buffers) and
//                replayed with one cudaGraphLaunch: the step without its launches' host cost.
// In tf32 (cublas and cudnn) the maps, parameters and update stay fp32 and the GEMMs and
// convolutions run on tensor cores: cuBLAS's FAST_TF32 compute, cuDNN's default math (PyTorch's
// default for cuDNN's convolutions). In bf16 and fp16 (cudnn and cudnn_graph: GpuLowOps) the
// maps are 16-bit and NHWC, the parameters, their gradients and the update fp32 (mixed
// precision, AMP's rules); fp16 scales the loss dynamically, as PyTorch's GradScaler.
// ReLU, the loss rows and the mean are the op functions of kernels/activation.cu and
// kernels/conv.cu, batch normalization and the column sums (a bias's gradient)
// kernels/batchnorm.cu's; the bias broadcast and the maps' relayouts and conversions
// kernels/maps.cuh's; max
// pooling, the residual add, global average pooling, inference's convolution tails (a batch norm,
// residual and ReLU after a convolution, in one pass), the loss scaling and SGD are here, their
// per-element math from core/layers.hpp.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <type_traits>
#include <map>
#include <memory>
#include <string>

#include "core/held_weights.hpp"
#include "core/layers.hpp"
#include "core/train.hpp"
#include "core/train_step.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"
#include "kernels/maps.cuh"

namespace pb::gpu {

namespace {

// The element kernels take the maps in T: float, or a mixed-precision step's __nv_bfloat16
// or __half (the arithmetic in float, each result rounded once).
template <class T>
__global__ void maxpool_forward_kernel(PoolShape s, const T* x, T* out, std::int32_t* arg) {
  const std::int64_t oh = s.oh(), ow = s.ow();
  PB_GRID_STRIDE(o, s.planes * oh * ow) {
    std::int64_t p = 0, pixel = 0;
    s.locate(o, oh * ow, &p, &pixel);
    out[o] = maxpool_at(s, x + s.plane(p, s.h * s.w), pixel / ow, pixel % ow, arg + o);
  }
}

template <class T>
__global__ void maxpool_backward_kernel(PoolShape s, const T* dout, const std::int32_t* arg,
                                        T* dx) {
  const std::int64_t per_out = s.oh() * s.ow();
  PB_GRID_STRIDE(e, s.planes * s.h * s.w) {
    std::int64_t p = 0, pixel = 0;
    s.locate(e, s.h * s.w, &p, &pixel);
    const std::int64_t first = s.plane(p, per_out);
    dx[e] = from_f32<T>(
        maxpool_grad_at<T, float>(s, dout + first, arg + first, pixel / s.w, pixel % s.w));
  }
}

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, std::int64_t n) {
  PB_GRID_STRIDE(j, n) { out[j] = from_f32<T>(to_f32(a[j]) + to_f32(b[j])); }
}
template <class T>
__global__ void add_pack_kernel(const Pack<T>* a, const Pack<T>* b, Pack<T>* out,
                                std::int64_t packs) {
  PB_GRID_STRIDE(j, packs) {
    const Pack<T> x = a[j], y = b[j];
    Pack<T> o;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) o.v[k] = from_f32<T>(to_f32(x.v[k]) + to_f32(y.v[k]));
    out[j] = o;
  }
}
// out = a + b over n values (the residual add, either step), in packs where packable.
template <class T>
void add_values(cudaStream_t stream, const T* a, const T* b, T* out, std::int64_t n) {
  if (packable<T>(n, a, b, out)) {
    const std::int64_t p = n / Pack<T>::kSize;
    return launch(stream, add_pack_kernel<T>, p, packs(a), packs(b), packs(out), p);
  }
  launch(stream, add_kernel<T>, n, a, b, out, n);
}

// Global average pooling's backward pass: each map's dx its dout / hw (dout: n x c).
template <class T>
__global__ void spread_means_kernel(Maps s, const T* dout, T* dx) {
  PB_GRID_STRIDE(e, s.size()) {
    dx[e] = from_f32<T>(to_f32(dout[s.map(e)]) / static_cast<float>(s.hw));
  }
}

// Global average pooling, one thread a map (neighbours take neighbouring channels: NHWC's
// neighbouring values), the sum in float.
template <class T>
__global__ void plane_means_kernel(Maps s, const T* x, T* out) {
  PB_GRID_STRIDE(j, s.n * s.c) {
    const std::int64_t first = j / s.c * s.hw, ch = j % s.c;
    float sum = 0;
    for (std::int64_t i = first; i < first + s.hw; ++i) sum += to_f32(x[s.at(ch, i)]);
    out[j] = from_f32<T>(sum / static_cast<float>(s.hw));
  }
}

// A convolution's inference tail: its batch norm folded from the running statistics into a
// scale and shift per channel (fold: k of each), then relu(scale y + shift + residual) over its
// output y (maps m), in place, each part optional (fold null: no batch norm). The per-value math
// is core/layers.hpp's, the CPU's.
template <class T>
__global__ void bn_fold_kernel(ConvTail<T, float> t, std::int64_t k, float* fold) {
  PB_GRID_STRIDE(ch, k) {
    bn_fold_at(t.weight[ch], t.bias[ch], t.mean[ch], t.var[ch], t.eps, fold + ch, fold + k + ch);
  }
}

template <class T>
__global__ void conv_tail_kernel(Maps m, ChannelOf channel_of, ConvTail<T, float> t,
                                 const float* fold, T* y) {
  PB_GRID_STRIDE(e, m.size()) {
    const std::int64_t ch = channel_of(e);  // m's (core/layers.hpp: no division per value)
    const float r = t.residual ? to_f32(t.residual[e]) : 0.0f;
    y[e] =
        from_f32<T>(conv_tail_at(to_f32(y[e]), fold != nullptr, fold ? fold[ch] : 1.0f,
                                 fold ? fold[m.c + ch] : 0.0f, t.residual != nullptr, r, t.relu));
  }
}

template <class T>
__global__ void relu_kernel(const T* z, const T* dy, T* out, std::int64_t n) {
  PB_GRID_STRIDE(j, n) {
    const bool on = to_f32(z[j]) > 0.0f;
    out[j] = on ? (dy ? dy[j] : z[j]) : from_f32<T>(0.0f);
  }
}
// The same a pack a thread (kernels/gpu_impl.cuh's Pack): packs of z, dy and out.
template <class T>
__global__ void relu_pack_kernel(const Pack<T>* z, const Pack<T>* dy, Pack<T>* out,
                                 std::int64_t packs) {
  PB_GRID_STRIDE(j, packs) {
    const Pack<T> in = z[j], pass = dy ? dy[j] : in;
    Pack<T> o;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k)
      o.v[k] = to_f32(in.v[k]) > 0.0f ? pass.v[k] : from_f32<T>(0.0f);
    out[j] = o;
  }
}

__global__ void sgd_momentum_kernel(float* p, float* v, const float* g, std::int64_t n, float lr,
                                    float momentum, float weight_decay) {
  PB_GRID_STRIDE(j, n) { sgd_momentum_at(p[j], v[j], g[j], lr, momentum, weight_decay); }
}

// fp16's dynamic loss scaling (core/layers.hpp's LossScale, in device memory, so that a replayed
// graph moves it): the loss's gradient scaled into T; the parameters' gradients unscaled and
// the step's overflow found; the update skipped on one; the scale moved.
template <class T>
__global__ void scaled_convert_kernel(const float* x, const LossScale* ls, T* out, std::int64_t n) {
  PB_GRID_STRIDE(j, n) { out[j] = from_f32<T>(x[j] * ls->scale); }
}

__global__ void unscale_kernel(float* g, std::int64_t n, LossScale* ls) {
  const float inv = 1.0f / ls->scale;  // a power of two: exact
  bool bad = false;
  PB_GRID_STRIDE(j, n) {
    g[j] *= inv;
    bad = bad || !isfinite(g[j]);
  }
  if (bad) ls->overflow = 1.0f;  // any thread that saw one; all write the same
}

__global__ void sgd_momentum_unless_overflow_kernel(float* p, float* v, const float* g,
                                                    std::int64_t n, float lr, float momentum,
                                                    float weight_decay, const LossScale* ls) {
  if (ls->overflow != 0) return;
  PB_GRID_STRIDE(j, n) { sgd_momentum_at(p[j], v[j], g[j], lr, momentum, weight_decay); }
}

__global__ void loss_scale_kernel(LossScale* ls) {
  if (blockIdx.x == 0 && threadIdx.x == 0) loss_scale_after_step(*ls);
}

enum class Backend { kernels, cublas, cudnn };

// n elements of device memory.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::int64_t n) : mem_(static_cast<std::size_t>(n) * sizeof(T)) {}
  T* data() const { return mem_.as<T>(); }

 private:
  DeviceMem mem_;
};

// The GPU's backend for core/train_step.hpp: every op function on `stream`.
class GpuOps {
 public:
  using ActType = float;
  using ParamType = float;
  static constexpr bool kLossScaling = false;
  template <class T>
  using Buffer = DeviceBuffer<T>;
  // math: fp32, or tf32 (tensor cores) for cuBLAS's and cuDNN's GEMMs and convolutions.
  GpuOps(cudaStream_t stream, Backend backend, Dtype math)
      : stream_(stream), backend_(backend), math_(math), cublas_(stream) {}
  template <class T>
  Buffer<T> buffer(std::int64_t n) {
    return Buffer<T>(n);
  }
  // cuBLAS's workspace fixed to memory of our own (32 MiB, what cuBLAS asks for on Hopper), so
  // that a captured step allocates nothing and every replay uses the same memory.
  void fix_cublas_workspace() {
    constexpr std::size_t kBytes = 32u << 20;
    if (!cublas_workspace_.as<void>()) cublas_workspace_ = DeviceMem(kBytes);
    cublas_.set_workspace(cublas_workspace_.as<void>(), kBytes);
  }
  void gemm(const GemmShape& shape, const float* a, const float* b, float* c) {
    if (backend_ == Backend::kernels) return gemm_tiled(stream_, shape, a, b, c);
    GemmShape g = shape;
    g.dtype = math_;
    gemm_cublas(cublas_.get(), g, a, b, c);
  }
  void conv(const ConvShape& shape, const float* in0, const float* in1, const float* b, float* out,
            float* db) {
    ConvShape s = shape;
    s.dtype = math_;
    switch (backend_) {
      case Backend::kernels:
        return conv_direct(stream_, s, in0, in1, b, out, db);
      case Backend::cublas: {
        const std::int64_t need = s.crs() * s.pq();  // one image's column matrix
        if (need > col_floats_) {  // the first step (untimed) sizes it for every pass
          PB_CUDA(cudaStreamSynchronize(stream_));
          col_ = DeviceBuffer<float>(need), col_floats_ = need;
        }
        return conv_im2col(stream_, cublas_.get(), s, in0, in1, b, out, db, col_.data());
      }
      case Backend::cudnn:
        return run_cudnn(s, false, in0, in1, b, out, db);
    }
  }
  // Inference's convolution and the layers it takes (core/train_step.hpp's FusesConv): the
  // convolution, then its tail in one pass over the output (NCHW maps).
  void conv_fused(const ConvShape& s, const float* x, const float* w, const float* b,
                  const ConvTail<float, float>& t, float* out) {
    conv(s, x, w, b, out, nullptr);
    conv_tail(Maps{s.n, s.k, s.pq(), false}, t, out);
  }
  // A tail over maps m of y (either layout, any element type): the batch norm's fold into
  // scratch of 2 c floats (sized in the first step, untimed), then one pass.
  template <class T>
  void conv_tail(const Maps& m, const ConvTail<T, float>& t, T* y) {
    float* fold = nullptr;
    if (t.weight) {
      if (2 * m.c > fold_floats_) {
        PB_CUDA(cudaStreamSynchronize(stream_));
        fold_ = DeviceBuffer<float>(), fold_floats_ = 0;
        fold_ = DeviceBuffer<float>(2 * m.c), fold_floats_ = 2 * m.c;
      }
      fold = fold_.data();
      launch(stream_, bn_fold_kernel<T>, m.c, t, m.c, fold);
    }
    launch(stream_, conv_tail_kernel<T>, m.size(), m, ChannelOf(m), t,
           static_cast<const float*>(fold), y);
  }
  // cuDNN's plan for the shape and layout (CudnnConvolution), made in the first step (untimed)
  // and kept only if it works, run on the workspace every plan shares.
  // accumulate: out += the convolution (CudnnConvolution::run's).
  void run_cudnn(const ConvShape& s, bool channels_last, const void* in0, const void* in1,
                 const float* b, void* out, float* db, bool accumulate = false) {
    const ConvPlanKey key = conv_plan_key(s, channels_last);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      std::unique_ptr<CudnnConvolution> plan;
      try {
        plan = std::make_unique<CudnnConvolution>(stream_, s, channels_last);
      } catch (const std::exception& e) {  // which of the model's layers, on a first GPU
        throw std::runtime_error("cuDNN's plan for the convolution " + describe(s) +
                                 (channels_last ? " (NHWC)" : " (NCHW)") + ": " + e.what());
      }
      // One workspace for every plan: they run one after another on the stream. The old
      // one goes first, so growing never holds both.
      const std::size_t need = plan->workspace_bytes();
      if (need > workspace_bytes_) {
        PB_CUDA(cudaStreamSynchronize(stream_));
        workspace_ = DeviceMem(), workspace_bytes_ = 0;
        workspace_ = DeviceMem(need), workspace_bytes_ = need;
      }
      it = plans_.emplace(key, std::move(plan)).first;
    }
    it->second->run(in0, in1, b, out, db, workspace_.as<void>(), accumulate);
  }
  cublasHandle_t cublas() const { return cublas_.get(); }
  void relu(const float* z, const float* dy, float* out, std::int64_t n) {
    activation_vectorized(stream_, Act::relu, z, dy, out, n);
  }
  // Rows of a few logits (10 classes): one thread a row (rows_naive) fits them; a block a row
  // would idle. Correct for any count; a model of 1000 classes would want rows_vectorized.
  void rows(const RowShape& s, const float* x, const std::int32_t* labels, float* out) {
    rows_naive(stream_, s, x, labels, out);
  }
  void mean(const float* x, std::int64_t n, float* out) {
    channel_sums(stream_, x, 1, 1, n, out, 1.0f / static_cast<float>(n));
  }
  void bias_rows(const float* b, float* out, std::int64_t rows, std::int64_t cols) {
    gpu::bias_rows(stream_, b, out, rows, cols);
  }
  void column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* out) {
    gpu::column_sums(stream_, x, rows, cols, out, bn_sums(cols));
  }
  void maxpool_forward(const PoolShape& s, const float* x, float* out, std::int32_t* arg) {
    launch(stream_, maxpool_forward_kernel<float>, s.planes * s.oh() * s.ow(), s, x, out, arg);
  }
  void maxpool_backward(const PoolShape& s, const float* dout, const std::int32_t* arg, float* dx) {
    launch(stream_, maxpool_backward_kernel<float>, s.planes * s.h * s.w, s, dout, arg, dx);
  }
  void batchnorm_forward(const BnShape& s, bool train, const float* x, const float* weight,
                         const float* bias, float* y, float* mean, float* invstd,
                         float* running_mean, float* running_var) {
    gpu::batchnorm_forward(stream_, s, train, x, weight, bias, y, mean, invstd, running_mean,
                           running_var, bn_sums(s.c));
  }
  void batchnorm_backward(const BnShape& s, const float* x, const float* weight, const float* mean,
                          const float* invstd, const float* dy, float* dx, float* dweight,
                          float* dbias) {
    gpu::batchnorm_backward(stream_, s, x, weight, mean, invstd, dy, dx, dweight, dbias,
                            bn_sums(s.c));
  }
  // Scratch for a batch norm's sums and coefficients, 4 c doubles, and column_sums' 2 cols
  // (grown in the first step, untimed; every batch norm and column sum of the step uses it in
  // turn on the stream).
  double* bn_sums(std::int64_t c) {
    if (4 * c > bn_doubles_) {
      PB_CUDA(cudaStreamSynchronize(stream_));
      bn_sums_ = DeviceBuffer<double>(), bn_doubles_ = 0;
      bn_sums_ = DeviceBuffer<double>(4 * c), bn_doubles_ = 4 * c;
    }
    return bn_sums_.data();
  }
  void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
    launch(stream_, sgd_momentum_kernel, n, p, v, g, n, lr, momentum, weight_decay);
  }
  void copy(const float* x, float* out, std::int64_t n) {
    PB_CUDA(cudaMemcpyAsync(out, x, static_cast<std::size_t>(n) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(float* x, std::int64_t n) {
    PB_CUDA(cudaMemsetAsync(x, 0, static_cast<std::size_t>(n) * sizeof(float), stream_));
  }
  void add(const float* a, const float* b, float* out, std::int64_t n) {
    add_values(stream_, a, b, out, n);
  }
  // NCHW maps (the walk keeps every map NCHW on the GPU).
  void plane_means(const Maps& s, const float* x, float* out) {
    channel_sums(stream_, x, 1, s.n * s.c, s.hw, out, 1.0f / static_cast<float>(s.hw));
  }
  void spread_means(const Maps& s, const float* dout, float* dx) {
    launch(stream_, spread_means_kernel<float>, s.size(), s, dout, dx);
  }

  // The cuDNN algorithms the step chose, one per convolution pass.
  std::string detail() const {
    std::string out;
    for (const auto& [key, plan] : plans_) out += (out.empty() ? "" : " | ") + plan->detail();
    return out;
  }

 private:
  cudaStream_t stream_;
  Backend backend_;
  Dtype math_;
  CublasHandle cublas_;
  DeviceMem cublas_workspace_;      // fix_cublas_workspace's
  DeviceBuffer<float> col_, fold_;  // im2col's columns; a tail's batch norm folded (conv_tail)
  DeviceBuffer<double> bn_sums_;    // batch norm's and column_sums' sums (bn_sums)
  std::int64_t col_floats_ = 0, fold_floats_ = 0, bn_doubles_ = 0;
  std::map<ConvPlanKey, std::unique_ptr<CudnnConvolution>> plans_;
  DeviceMem workspace_;  // the largest any plan needs, shared
  std::size_t workspace_bytes_ = 0;
};

// The GPU's mixed-precision backend (AMP's rules, as the CPU's Bf16Ops): the maps in T
// (__nv_bfloat16 or __half) and NHWC; the parameters, their gradients, the momentum and the
// update fp32. Convolutions through cuDNN on tensor cores (T in, T out, fp32 accumulation; the
// fp32 KCRS weights converted to T KRSC and held (core/held_weights.hpp): once a training step,
// for its forward pass and its input's gradient, and once a set of parameters in inference; the
// weight gradient converted back), the linear layers through cuBLAS (T operands, fp32
// accumulation; their weights in T held likewise), batch norm through the
// project's kernels (fp32 statistics); the loss on fp32 copies of the logits. fp16 scales the
// loss dynamically (LossScale; bf16 has fp32's range and needs none).
template <class T>
class GpuLowOps {
 public:
  using ActType = T;
  using ParamType = float;
  static constexpr bool kLossScaling = std::is_same_v<T, __half>;
  template <class E>
  using Buffer = DeviceBuffer<E>;
  GpuLowOps(cudaStream_t stream, Backend, Dtype math)
      : stream_(stream), math_(math), f32_(stream, Backend::cudnn, Dtype::fp32) {
    if (!kLossScaling) return;
    set_loss_scale(LossScale{});
  }
  // fp16: the loss scale as the last step left it (waits for the stream: never in a timed step).
  LossScale loss_scale() const {
    LossScale now;
    PB_CUDA(cudaMemcpyAsync(&now, scale_.data(), sizeof now, cudaMemcpyDeviceToHost, stream_));
    PB_CUDA(cudaStreamSynchronize(stream_));
    return now;
  }
  void set_loss_scale(const LossScale& to) {
    PB_CUDA(cudaMemcpyAsync(scale_.data(), &to, sizeof to, cudaMemcpyHostToDevice, stream_));
    PB_CUDA(cudaStreamSynchronize(stream_));
  }
  template <class E>
  Buffer<E> buffer(std::int64_t n) {
    return Buffer<E>(n);
  }
  void fix_cublas_workspace() { f32_.fix_cublas_workspace(); }
  std::string detail() const { return f32_.detail(); }
  bool channels_last() const { return true; }
  template <class X, class Y>
  void relayout(const Maps& s, const X* x, Y* out) {
    gpu::relayout(stream_, s, x, out);
  }
  void to_float(const T* x, float* out, std::int64_t n) { convert(stream_, x, out, n); }
  // c = a op(w): the forward pass (w: the weights) and the input's gradient.
  void gemm(const GemmShape& g, const T* a, const float* w, T* c) {
    const std::int64_t n = g.n * g.k;
    const T* wl = held(w, n, [&](T* to) { convert(stream_, w, to, n); });
    gemm_cublas(f32_.cublas(), low(g), a, wl, c, kType);
  }
  // The weights' gradient, in fp32.
  void gemm(const GemmShape& g, const T* a, const T* b, float* c) {
    gemm_cublas(f32_.cublas(), low(g), a, b, c, CUDA_R_32F);
  }
  // fwd (in0 x) and bwd_data (in0 dy): the weights as cuDNN's NHWC takes them (KRSC, in T).
  void conv(const ConvShape& s, const T* in0, const float* w, const float* b, T* out, float*) {
    const T* wl = held(w, s.w_size(), [&](T* to) {
      relayout(Maps{s.k, s.c, s.r * s.s, false}, w, to);
    });
    // The bias (a 16-bit plan takes none) first in y, rounded to T there, and cuDNN adds the
    // convolution to it: y = round(conv + round(b)), two roundings.
    const bool biased = s.dir == ConvDir::fwd && s.bias;
    if (biased) gpu::bias_rows(stream_, b, out, s.n * s.pq(), s.k);
    f32_.run_cudnn(plan(s), true, in0, wl, nullptr, out, nullptr, biased);
  }
  // Inference's convolution and the layers it takes, as GpuOps's (NHWC maps).
  void conv_fused(const ConvShape& s, const T* x, const float* w, const float* b,
                  const ConvTail<T, float>& t, T* out) {
    conv(s, x, w, b, out, nullptr);
    f32_.conv_tail(Maps{s.n, s.k, s.pq(), true}, t, out);
  }
  // The held weights stale (core/train_step.hpp's HoldsWeights): the parameters changed.
  void drop_held_weights() { held_.drop(); }
  // bwd_filter: cuDNN's KRSC gradient in T, converted to the fp32 KCRS one; db where s.bias.
  void conv(const ConvShape& s, const T* x, const T* dy, const float*, float* dw, float* db) {
    T* dwl = room(dw_low_, dw_floats_, s.w_size());
    f32_.run_cudnn(plan(s), true, x, dy, nullptr, dwl, nullptr);
    relayout(Maps{s.k, s.c, s.r * s.s, true}, dwl, dw);
    if (s.bias) column_sums(dy, s.n * s.pq(), s.k, db);
  }
  void relu(const T* z, const T* dy, T* out, std::int64_t n) {
    if (packable<T>(n, z, dy, out)) {
      const std::int64_t p = n / Pack<T>::kSize;
      return launch(stream_, relu_pack_kernel<T>, p, packs(z), packs(dy), packs(out), p);
    }
    launch(stream_, relu_kernel<T>, n, z, dy, out, n);
  }
  // The loss of each row, and its gradient in T, through the fp32 rows on converted logits.
  void rows(const RowShape& s, const T* x, const std::int32_t* labels, float* out) {
    f32_.rows(s, floats(x, s.rows * s.cols), labels, out);
  }
  void rows(const RowShape& s, const T* x, const std::int32_t* labels, T* out) {
    const std::int64_t n = s.rows * s.cols;
    float* g = room(grad_f32_, grad_floats_, n);
    f32_.rows(s, floats(x, n), labels, g);
    if constexpr (kLossScaling)  // the loss's gradient scaled: so is every gradient before it
      launch(stream_, scaled_convert_kernel<T>, n, g, scale_.data(), out, n);
    else
      convert(stream_, static_cast<const float*>(g), out, n);
  }
  void mean(const float* x, std::int64_t n, float* out) { f32_.mean(x, n, out); }
  void bias_rows(const float* b, T* out, std::int64_t rows, std::int64_t cols) {
    gpu::bias_rows(stream_, b, out, rows, cols);
  }
  void column_sums(const T* x, std::int64_t rows, std::int64_t cols, float* out) {
    gpu::column_sums(stream_, x, rows, cols, out, f32_.bn_sums(cols));
  }
  void maxpool_forward(const PoolShape& s, const T* x, T* out, std::int32_t* arg) {
    launch(stream_, maxpool_forward_kernel<T>, s.planes * s.oh() * s.ow(), s, x, out, arg);
  }
  void maxpool_backward(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx) {
    launch(stream_, maxpool_backward_kernel<T>, s.planes * s.h * s.w, s, dout, arg, dx);
  }
  // The statistics and gradients summed through the fp32 ops' scratch (GpuOps::bn_sums).
  void batchnorm_forward(const BnShape& s, bool train, const T* x, const float* weight,
                         const float* bias, T* y, float* mean, float* invstd, float* running_mean,
                         float* running_var) {
    gpu::batchnorm_forward(stream_, s, train, x, weight, bias, y, mean, invstd, running_mean,
                           running_var, f32_.bn_sums(s.c));
  }
  void batchnorm_backward(const BnShape& s, const T* x, const float* weight, const float* mean,
                          const float* invstd, const T* dy, T* dx, float* dweight, float* dbias) {
    gpu::batchnorm_backward(stream_, s, x, weight, mean, invstd, dy, dx, dweight, dbias,
                            f32_.bn_sums(s.c));
  }
  // fp16: the gradients unscaled (in place), the update skipped where one is not finite, the
  // scale moved.
  void sgd_momentum(float* p, float* v, float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
    if constexpr (!kLossScaling) {
      f32_.sgd_momentum(p, v, g, n, lr, momentum, weight_decay);
    } else {
      LossScale* ls = scale_.data();
      PB_CUDA(cudaMemsetAsync(&ls->overflow, 0, sizeof ls->overflow, stream_));
      launch(stream_, unscale_kernel, n, g, n, ls);
      launch(stream_, sgd_momentum_unless_overflow_kernel, n, p, v, g, n, lr, momentum,
             weight_decay, ls);
      loss_scale_kernel<<<1, 1, 0, stream_>>>(ls);
      PB_CUDA(cudaGetLastError());
    }
  }
  void copy(const T* x, T* out, std::int64_t n) {
    PB_CUDA(cudaMemcpyAsync(out, x, static_cast<std::size_t>(n) * sizeof(T),
                            cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(float* x, std::int64_t n) { f32_.zero(x, n); }
  void add(const T* a, const T* b, T* out, std::int64_t n) { add_values(stream_, a, b, out, n); }
  void plane_means(const Maps& s, const T* x, T* out) {
    launch(stream_, plane_means_kernel<T>, s.n * s.c, s, x, out);
  }
  void spread_means(const Maps& s, const T* dout, T* dx) {
    launch(stream_, spread_means_kernel<T>, s.size(), s, dout, dx);
  }

 private:
  static constexpr cudaDataType_t kType = std::is_same_v<T, __half> ? CUDA_R_16F : CUDA_R_16BF;
  GemmShape low(GemmShape g) const {
    g.dtype = math_;
    return g;
  }
  // The plan's shape: in this step's 16-bit type, its bias added here.
  ConvShape plan(ConvShape s) const {
    s.dtype = math_, s.bias = false;
    return s;
  }
  // The weights at w (n floats) in T as cuBLAS and cuDNN take them, converted by convert(out)
  // where the held copy is stale. A layer's copy is made on its first use, in the first step
  // (untimed), so a captured step makes none (HeldWeights never replaces a copy).
  template <class Convert>
  const T* held(const float* w, std::int64_t n, Convert&& convert) {
    return held_.get(
        w, n, [](std::int64_t size) { return DeviceBuffer<T>(size); }, convert);
  }
  // n elements of scratch, grown in the first step (untimed; the old buffer freed once the
  // stream is done with it).
  template <class E>
  E* room(DeviceBuffer<E>& b, std::int64_t& have, std::int64_t n) {
    if (n > have) {
      PB_CUDA(cudaStreamSynchronize(stream_));
      b = DeviceBuffer<E>(), have = 0;
      b = DeviceBuffer<E>(n), have = n;
    }
    return b.data();
  }
  const float* floats(const T* x, std::int64_t n) {
    float* f = room(x_f32_, x_floats_, n);
    to_float(x, f, n);
    return f;
  }

  cudaStream_t stream_;
  Dtype math_;
  GpuOps f32_;                         // the fp32 op functions, cuBLAS and cuDNN's plans
  HeldWeights<DeviceBuffer<T>> held_;  // the layers' weights in T (held)
  DeviceBuffer<T> dw_low_;
  DeviceBuffer<float> x_f32_, grad_f32_;
  DeviceBuffer<LossScale> scale_{kLossScaling ? 1 : 0};  // fp16's
  std::int64_t dw_floats_ = 0, x_floats_ = 0, grad_floats_ = 0;
};
// The walk fuses inference only where conv_fused's signature is the one it looks for; the
// memory check counts the GPU's walk with these fusions alone (walk_bytes, Device::gpu).
static_assert(FusesConv<GpuOps>::value && FusesConv<GpuLowOps<__nv_bfloat16>>::value &&
              FusesConv<GpuLowOps<__half>>::value && !FusesRelu<GpuOps>::value &&
              !FusesRelu<GpuLowOps<__nv_bfloat16>>::value && !FusesRelu<GpuLowOps<__half>>::value);
static_assert(!HoldsWeights<GpuOps>::value && HoldsWeights<GpuLowOps<__nv_bfloat16>>::value &&
              HoldsWeights<GpuLowOps<__half>>::value);

// train/gpu/<backend>[_h2d|_graph]: the step over the case's device buffers. With h2d, the batch
// waits in pinned host memory and each step copies it to the device first, on the same stream;
// with graph, run() replays the step captured in prepare().
// Ops: GpuOps (fp32 and tf32) or GpuLowOps (bf16, fp16).
enum class Variant { plain, h2d, graph };
// A test's hook (tests/test_collective_gpu.cpp): PAIRBENCH_TEST_NCCL_REDUCE=1 makes a one-rank
// step (not a graph) average its gradients through NCCL too, an average over one rank that
// changes nothing, so that a machine with one GPU runs the data-parallel step's NCCL calls.
bool nccl_reduce_on_one_rank() {
  const char* v = std::getenv("PAIRBENCH_TEST_NCCL_REDUCE");
  return v && std::string(v) == "1";
}

template <class Ops>
class GpuTrain : public GpuImpl {
 public:
  GpuTrain(const TrainWorkload& w, Backend backend, Variant v)
      : s_(w.train()),
        m_(w.model()),
        h2d_(v == Variant::h2d),
        graph_(v == Variant::graph),
        ops_(stream_, backend, s_.dtype),
        step_(make_step(m_, s_, ops_)),
        x_(s_.batch * m_.input.size()),
        labels_(s_.batch),
        params_(m_.param_count),
        velocity_(m_.param_count),
        state_(m_.state_count) {
    // Over several ranks (data parallel, core/train.hpp): the gradients averaged by NCCL on
    // the step's stream, between the backward pass and the update.
    if (s_.train && !s_.local && (s_.ranks > 1 || (nccl_reduce_on_one_rank() && !graph_)))
      step_->reduce = [this](float* g, std::int64_t n) { nccl_average(g, n, stream_); };
    if (Ops::kLossScaling && step_->reduce)
      throw std::runtime_error("the fp16 step runs on one rank (or with grads=local)");
  }
  void prepare(const Tensors& in) override {
    // This rank's shard of the global batch (all of it on one rank).
    const std::int64_t f = m_.input.size(), first = s_.rank * s_.batch;
    if (at(in, "x").f32().size() < static_cast<std::size_t>((first + s_.batch) * f))
      throw std::runtime_error("the batch holds no shard for rank " + std::to_string(s_.rank));
    const float* x = at(in, "x").f32().data() + first * f;
    const std::int32_t* labels = at(in, "labels").i32().data() + first;
    const std::size_t x_bytes = static_cast<std::size_t>(s_.batch * f) * sizeof(float);
    const std::size_t label_bytes = static_cast<std::size_t>(s_.batch) * sizeof(std::int32_t);
    upload(params_.data(), at(in, "params"));
    upload(velocity_.data(), at(in, "velocity"));
    if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
    if constexpr (HoldsWeights<Ops>::value) ops_.drop_held_weights();  // new parameters
    forwarded_ = false;
    const double before_batch = GpuImpl::transfer_seconds();
    upload(x_.data(), x, x_bytes);
    upload(labels_.data(), labels, label_bytes);
    // What a step copies each time: its batch in (the _h2d steps copy it inside the timed step).
    batch_s_ = h2d_ ? 0 : GpuImpl::transfer_seconds() - before_batch;
    if (step_->reduce) {
      // Over several ranks, what may fail in a first step (cuDNN's plans, its workspace, memory)
      // fails here, before the ranks agree that every one is ready: a rank that failed in run()
      // would leave the others in the gradients' all-reduce. The state it moved is restored.
      step_->forward_backward(x_.data(), labels_.data(), params_.data(), state_.data());
      PB_CUDA(cudaStreamSynchronize(stream_));
      if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
    }
    if constexpr (Ops::kLossScaling) {
      if (s_.train) warm_up_loss_scale(in);
    }
    if (graph_) capture(in);
    if (!h2d_) return;
    pinned_x_ = std::make_unique<PinnedMem>(x_bytes);
    pinned_labels_ = std::make_unique<PinnedMem>(label_bytes);
    std::copy(x, x + s_.batch * f, pinned_x_->as<float>());
    std::copy(labels, labels + s_.batch, pinned_labels_->as<std::int32_t>());
  }
  void run() override {
    if (graph_exec_) {
      PB_CUDA(cudaGraphLaunch(graph_exec_, stream_));
      return;
    }
    if (h2d_) {
      const auto n = static_cast<std::size_t>(s_.batch);
      PB_CUDA(cudaMemcpyAsync(x_.data(), pinned_x_->as<void>(),
                              n * static_cast<std::size_t>(m_.input.size()) * 4,
                              cudaMemcpyHostToDevice, stream_));
      PB_CUDA(cudaMemcpyAsync(labels_.data(), pinned_labels_->as<void>(), n * 4,
                              cudaMemcpyHostToDevice, stream_));
    }
    step();
  }
  // Nothing of the step may still be queued when its buffers and handles go.
  ~GpuTrain() override {
    cudaStreamSynchronize(stream_);
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  }
  Tensors result() override {
    if (!s_.train) {
      const double before = GpuImpl::transfer_seconds();
      Tensors logits = {download("logits", {s_.batch, m_.classes}, step_->logits())};
      logits_s_ = GpuImpl::transfer_seconds() - before;
      return logits;
    }
    if constexpr (Ops::kLossScaling) {  // a skipped step is no step to check
      const LossScale ls = ops_.loss_scale();
      if (ls.overflow != 0)
        throw std::runtime_error("the fp16 step overflowed at loss scale " +
                                 std::to_string(ls.scale) + " and skipped its update");
    }
    const std::int64_t n = m_.param_count;
    Tensors out = {download("loss", {1}, step_->loss()), download("params", {n}, params_.data()),
                   download("velocity", {n}, velocity_.data())};
    if (step_->reduce && !nccl_same_on_every_rank(out[1].f32(), stream_))
      throw std::runtime_error("the ranks hold different parameters after the step");
    if (m_.state_count > 0) out.push_back(download("state", {m_.state_count}, state_.data()));
    return out;
  }
  // A step's or a pass's own copies: its batch in and, for inference, its logits out. Its
  // parameters and state stay on the device from one step to the next, so their uploads (and
  // the check's downloads) are not a step's.
  double transfer_seconds() const override { return batch_s_ + logits_s_; }
  std::string detail() const override {
    const std::string algos = ops_.detail();
    std::string how =
        h2d_ ? "batch (" + std::to_string(s_.batch * (m_.input.size() + 1) * 4) +
                   " B) copied from pinned host memory in each step"
        : graph_ ? "replayed as one CUDA graph of " + std::to_string(graph_nodes_) + " nodes"
                 : "";
    if (step_->reduce)
      how += std::string(how.empty() ? "" : "; ") + "gradients averaged over " +
             std::to_string(s_.ranks) + " rank(s) by NCCL (ncclAvg)";
    const std::string note = math_note(s_.dtype);  // tf32 where the GPU or the override says no
    if (!note.empty()) how += (how.empty() ? "" : "; ") + note;
    if (!scaling_.empty()) how += (how.empty() ? "" : "; ") + scaling_;
    return how.empty() ? algos : algos.empty() ? how : how + "; " + algos;
  }

 private:
  void step() {
    if (s_.train)
      step_->step(x_.data(), labels_.data(), params_.data(), velocity_.data(), state_.data(),
                  m_.param_count);
    else
      step_->forward(x_.data(), params_.data(), state_.data(),
                     forwarded_ ? ModelStep::Params::unchanged : ModelStep::Params::fresh);
    forwarded_ = !s_.train;
  }
  // One step outside the capture (cuDNN's plans and the column buffer are made in a first step,
  // and both synchronize, which a capturing stream may not), its parameters, velocity and state
  // restored; then the step captured and instantiated.
  void capture(const Tensors& in) {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    graph_exec_ = nullptr;
    ops_.fix_cublas_workspace();
    LossScale before;  // fp16: the step outside the capture leaves the loss scale as it found it
    if constexpr (Ops::kLossScaling) before = ops_.loss_scale();
    step();
    PB_CUDA(cudaStreamSynchronize(stream_));
    restore(in);
    if constexpr (Ops::kLossScaling) ops_.set_loss_scale(before);
    cudaGraph_t graph = nullptr;
    PB_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      step();
    } catch (...) {  // end the capture, whatever it holds, before the error goes up
      if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
      throw;
    }
    PB_CUDA(cudaStreamEndCapture(stream_, &graph));
    std::size_t nodes = 0;
    cudaError_t st = cudaGraphGetNodes(graph, nullptr, &nodes);
    if (st == cudaSuccess) st = cudaGraphInstantiate(&graph_exec_, graph, 0);
    cudaGraphDestroy(graph);
    PB_CUDA(st);
    graph_nodes_ = nodes;
  }

  // The parameters, velocity and state as the case gave them (the parameters prepare() gave:
  // inference's held weights stay current).
  void restore(const Tensors& in) {
    upload(params_.data(), at(in, "params"));
    upload(velocity_.data(), at(in, "velocity"));
    if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
  }
  // fp16: the loss scale halved through the steps that overflow at its start (GradScaler's first
  // steps of a run; here untimed), so that the verified and timed steps run with the scale
  // found. Each warm-up step is undone but for its halving: the first clean one leaves the scale
  // as it found it. On one rank (the spec's; several would have to agree on each overflow).
  void warm_up_loss_scale(const Tensors& in) {
    constexpr int kMostSteps = 32;  // 2^16 down to 2^-16
    auto power = [](float scale) { return "2^" + std::to_string(std::lround(std::log2(scale))); };
    const LossScale first = ops_.loss_scale();
    for (int overflowed = 0; overflowed < kMostSteps; ++overflowed) {
      const LossScale before = ops_.loss_scale();
      step();
      const LossScale after = ops_.loss_scale();
      restore(in);
      if (after.overflow != 0) continue;
      LossScale found = before;
      found.overflow = 0;  // the overflow of the step before it, not a step of the scale found
      ops_.set_loss_scale(found);
      scaling_ = "dynamic loss scaling: " + power(before.scale) + " after " +
                 std::to_string(overflowed) + " overflowing warm-up steps (untimed)";
      return;
    }
    throw std::runtime_error("the fp16 step's gradients overflowed at every loss scale from " +
                             power(first.scale) + " down through " + std::to_string(kMostSteps) +
                             " halvings");
  }

  TrainShape s_;
  ModelDesc m_;
  std::string scaling_;  // fp16: the loss scale the warm-up found
  bool h2d_, graph_;
  cudaGraphExec_t graph_exec_ = nullptr;
  std::size_t graph_nodes_ = 0;
  bool forwarded_ = false;             // an inference pass ran on params_ since prepare()
  double batch_s_ = 0, logits_s_ = 0;  // transfer_seconds()'s copies
  Ops ops_;
  std::unique_ptr<ModelStep> step_;
  DeviceBuffer<float> x_;
  DeviceBuffer<std::int32_t> labels_;
  DeviceBuffer<float> params_, velocity_, state_;
  std::unique_ptr<PinnedMem> pinned_x_, pinned_labels_;
};

std::unique_ptr<Impl> make_train(const std::string&, const std::string& name, const Workload& w,
                                 int) {
  const auto& s = static_cast<const TrainWorkload&>(w);
  const std::size_t cut = name.find('_');
  const std::string base = name.substr(0, cut), suffix = cut == name.npos ? "" : name.substr(cut);
  const Variant v = suffix == "_h2d"     ? Variant::h2d
                    : suffix == "_graph" ? Variant::graph
                                         : Variant::plain;
  // fp32 buffers throughout: fp32, or tf32 on the libraries' tensor cores; bf16 or fp16 maps on
  // cuDNN (mixed precision), plain or replayed as a graph
  const Dtype t = s.train().dtype;
  if (t == Dtype::bf16 && base == "cudnn" && v != Variant::h2d)
    return std::make_unique<GpuTrain<GpuLowOps<__nv_bfloat16>>>(s, Backend::cudnn, v);
  if (t == Dtype::fp16 && base == "cudnn" && v != Variant::h2d)
    return std::make_unique<GpuTrain<GpuLowOps<__half>>>(s, Backend::cudnn, v);
  if (t != Dtype::fp32 && !(t == Dtype::tf32 && base != "kernels"))
    throw std::runtime_error("train/gpu/" + name + " runs no " + to_string(t) + " step");
  if (suffix.empty() || v != Variant::plain) {
    if (base == "kernels" && v == Variant::plain)
      return std::make_unique<GpuTrain<GpuOps>>(s, Backend::kernels, v);
    if (base == "cublas") return std::make_unique<GpuTrain<GpuOps>>(s, Backend::cublas, v);
    if (base == "cudnn") return std::make_unique<GpuTrain<GpuOps>>(s, Backend::cudnn, v);
  }
  throw std::runtime_error("unknown GPU train implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("train", make_train);

}  // namespace

}  // namespace pb::gpu
