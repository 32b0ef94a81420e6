// Batch normalization on the GPU (core/batchnorm.hpp), the op functions the training step
// composes too (kernels/train.cu):
//   cuda - the statistics (in one pass: sums shifted by each channel's first value, as the CPU's
//          tuned loops) and the parameters' gradients as per-channel sums in double, spread over
//          many blocks that each add theirs into the caller's scratch (NCHW: a block per channel
//          and group of rows of its planes; NHWC: a block per 32 channels and group of rows), so
//          that a warp reads neighbouring values and every SM has work; y and dx grid-stride; the
//          per-element math of core/layers.hpp. The op functions also take a mixed-precision
//          step's bf16 and fp16 maps (the statistics and parameters stay fp32). The same sums
//          give a bias's gradient on NHWC maps (column_sums, the training step's and the
//          16-bit convolutions').
//   cudnn - cuDNN's batch normalization through its legacy API
//           (cudnnBatchNormalizationForwardTraining, ...Backward, ...ForwardInference; PyTorch
//           calls the ...Ex forms of the first two, the same computation given a workspace),
//           spatial mode, on the same NCHW fp32 buffers and saved statistics as cuda.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/batchnorm.hpp"
#include "core/layers.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"
#include "kernels/maps.cuh"

#ifdef PAIRBENCH_HAVE_CUDNN
#include "kernels/cudnn.cuh"
#endif

namespace pb::gpu {

namespace {

constexpr int kThreads = 256;

// y over every element: with the batch's statistics (train) or the running ones. channel_of is
// s's (core/layers.hpp's ChannelOf: no division per value), as in the dx kernel.
template <class T>
__global__ void bn_forward_kernel(BnShape s, ChannelOf channel_of, bool train, const T* x,
                                  const float* weight, const float* bias, T* y, const float* mean,
                                  const float* invstd, const float* running_mean,
                                  const float* running_var) {
  PB_GRID_STRIDE(e, s.n * s.c * s.hw) {
    const std::int64_t ch = channel_of(e);
    const float mu = train ? mean[ch] : running_mean[ch];
    const float is = train ? invstd[ch] : 1.0f / sqrtf(running_var[ch] + s.eps);
    y[e] = from_f32<T>(bn_forward_at(to_f32(x[e]), mu, is, weight[ch], bias[ch]));
  }
}

template <class T>
__global__ void bn_backward_dx_kernel(BnShape s, ChannelOf channel_of, const T* x,
                                      const float* weight, const float* mean, const float* invstd,
                                      const T* dy, const float* dweight, const float* dbias,
                                      T* dx) {
  PB_GRID_STRIDE(e, s.n * s.c * s.hw) {
    const std::int64_t ch = channel_of(e);
    dx[e] = from_f32<T>(bn_backward_at(to_f32(dy[e]), (to_f32(x[e]) - mean[ch]) * invstd[ch],
                                       weight[ch], invstd[ch], dbias[ch], dweight[ch],
                                       static_cast<float>(s.count())));
  }
}

// The same a pack a thread (kernels/gpu_impl.cuh's Pack; in_packs says where): on NHWC maps
// whose channels are a whole number of packs, a pack's values are channels ch0 to ch0 + kSize -
// 1 of one pixel; on NCHW maps whose planes are, they are all of channel ch0. Their per-channel
// coefficients are in coef (bn_coefficients_kernel's, bn_grads_kernel's). y = scale x + shift
// (coef: scale, then shift, c each).
template <class T>
__global__ void bn_forward_pack_kernel(ChannelOf channel_of, std::int64_t packs, const Pack<T>* x,
                                       const float* coef, std::int64_t c, Pack<T>* y) {
  const std::int64_t step = channel_of.m.channels_last ? 1 : 0;  // a pack's next value's channel
  PB_GRID_STRIDE(j, packs) {
    const std::int64_t ch0 = channel_of(j * Pack<T>::kSize);
    const Pack<T> in = x[j];
    Pack<T> out;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) {
      const std::int64_t ch = ch0 + step * k;
      out.v[k] = from_f32<T>(fmaf(to_f32(in.v[k]), coef[ch], coef[c + ch]));
    }
    y[j] = out;
  }
}
// dx = p dy + q (x - mean) + r (coef: p, q, r, then the mean, c each).
template <class T>
__global__ void bn_backward_dx_pack_kernel(ChannelOf channel_of, std::int64_t packs,
                                           const Pack<T>* x, const Pack<T>* dy, const float* coef,
                                           std::int64_t c, Pack<T>* dx) {
  const std::int64_t step = channel_of.m.channels_last ? 1 : 0;
  PB_GRID_STRIDE(j, packs) {
    const std::int64_t ch0 = channel_of(j * Pack<T>::kSize);
    const Pack<T> in = x[j], g = dy[j];
    Pack<T> out;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) {
      const std::int64_t ch = ch0 + step * k;
      out.v[k] =
          from_f32<T>(coef[ch] * to_f32(g.v[k]) +
                      coef[c + ch] * (to_f32(in.v[k]) - coef[3 * c + ch]) + coef[2 * c + ch]);
    }
    dx[j] = out;
  }
}

// Two sums per channel over the maps, into sums[ch] and sums[c + ch] (zeroed first): each
// thread sums its terms in double, a block's threads' sums are added in shared memory, and each
// block adds its own to sums (double atomics). Term: term(e, ch) is value e's pair.
// NHWC maps (channels_last), where a block a channel would use 2 or 4 bytes of every 2c or 4c
// it reads: blocks of 32 channels (a warp reads 32 neighbouring values) by kRowGroups groups of
// rows, each thread down its channel's rows.
constexpr int kRowGroups = 8;  // tests/test_batchnorm.cpp replays nchw_sums_kernel with it

template <class Term>
__global__ void nhwc_sums_kernel(BnShape s, Term term, double* sums) {
  __shared__ double part[2][kRowGroups][32];
  const std::int64_t ch = blockIdx.x * 32 + threadIdx.x, rows = s.count();
  double a = 0, b = 0;
  if (ch < s.c)
    for (std::int64_t r = blockIdx.y * kRowGroups + threadIdx.y; r < rows;
         r += static_cast<std::int64_t>(gridDim.y) * kRowGroups) {
      const double2 t = term(r * s.c + ch, ch);
      a += t.x, b += t.y;
    }
  part[0][threadIdx.y][threadIdx.x] = a, part[1][threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0 || ch >= s.c) return;
  for (int i = 1; i < kRowGroups; ++i) a += part[0][i][threadIdx.x], b += part[1][i][threadIdx.x];
  if (a != 0) atomicAdd(sums + ch, a);  // a term that is zero throughout is left alone
  if (b != 0) atomicAdd(sums + s.c + ch, b);
}

// NCHW maps: blocks of one channel by kRowGroups warps, each warp along rows of the channel's
// planes (Maps::piece_at: up to 1024 contiguous values of a plane, 32 neighbouring values a
// read), the rows spread over the warps and the blocks of the channel.
template <class Term>
__global__ void nchw_sums_kernel(BnShape s, Term term, double* sums) {
  __shared__ double part[2][kRowGroups][32];
  const std::int64_t ch = blockIdx.x, rows = s.piece_rows();
  double a = 0, b = 0;
  for (std::int64_t r = blockIdx.y * kRowGroups + threadIdx.y; r < rows;
       r += static_cast<std::int64_t>(gridDim.y) * kRowGroups) {
    std::int64_t len = 0;
    const std::int64_t first = s.piece_at(ch, r, &len);
    for (std::int64_t j = threadIdx.x; j < len; j += 32) {
      const double2 t = term(first + j, ch);
      a += t.x, b += t.y;
    }
  }
  part[0][threadIdx.y][threadIdx.x] = a, part[1][threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0) return;
  for (int i = 1; i < kRowGroups; ++i) a += part[0][i][threadIdx.x], b += part[1][i][threadIdx.x];
  for (int lane = 16; lane > 0; lane /= 2) {  // the warp's 32 sums into lane 0's
    a += __shfl_down_sync(0xffffffffu, a, lane);
    b += __shfl_down_sync(0xffffffffu, b, lane);
  }
  if (threadIdx.x != 0) return;
  if (a != 0) atomicAdd(sums + ch, a);
  if (b != 0) atomicAdd(sums + s.c + ch, b);
}

// The terms: the values' distances from their channel's first value, d = x - k, and d^2 (the
// statistics in one pass: core/layers.hpp's bn_shifted_stats_at); a gradient's dy and dy xhat
// (dbias and dweight).
template <class T>
struct ShiftedTerms {
  const T* x;
  Maps m;
  __device__ double2 operator()(std::int64_t e, std::int64_t ch) const {
    const double d = static_cast<double>(to_f32(x[e])) - to_f32(x[m.at(ch, 0)]);
    return {d, d * d};
  }
};
template <class T>
struct GradientTerms {
  const T *x, *dy;
  const float *mean, *invstd;
  __device__ double2 operator()(std::int64_t e, std::int64_t ch) const {
    const float g = to_f32(dy[e]);  // each term in float, as core/layers.hpp's loops'
    return {g, g * (to_f32(x[e]) - mean[ch]) * invstd[ch]};
  }
};

// A column's values (column_sums: the columns as the channels of NHWC maps); no second sum.
template <class T>
struct ValueTerms {
  const T* x;
  __device__ double2 operator()(std::int64_t e, std::int64_t) const { return {to_f32(x[e]), 0.0}; }
};

// Every term of the maps added into sums (which the caller zeroed), about 32 blocks of 256
// threads an SM in all.
template <class Term>
void per_channel_sums(cudaStream_t stream, const BnShape& s, Term term, double* sums) {
  if (!s.channels_last) {  // each block's row groups at least one row (up to 1024 values)
    const std::int64_t want =
        std::max<std::int64_t>(1, 32 * device_info().sms / std::max<std::int64_t>(1, s.c));
    const std::int64_t most =
        std::max<std::int64_t>(1, (s.piece_rows() + kRowGroups - 1) / kRowGroups);
    const auto down = static_cast<unsigned>(std::min<std::int64_t>({want, most, 65535}));
    nchw_sums_kernel<<<dim3(static_cast<unsigned>(s.c), down), dim3(32, kRowGroups), 0, stream>>>(
        s, term, sums);
    PB_CUDA(cudaGetLastError());
    return;
  }
  const unsigned across = static_cast<unsigned>((s.c + 31) / 32);
  // Each row group at least 8 rows.
  const std::int64_t want = std::max<std::int64_t>(1, 32 * device_info().sms / across);
  const std::int64_t most = std::max<std::int64_t>(1, s.count() / (8 * kRowGroups));
  const auto down = static_cast<unsigned>(std::min<std::int64_t>({want, most, 65535}));
  nhwc_sums_kernel<<<dim3(across, down), dim3(32, kRowGroups), 0, stream>>>(s, term, sums);
  PB_CUDA(cudaGetLastError());
}

// column_sums of few rows: one block a column, its threads down the rows, then a tree in shared
// memory (kThreads a power of two). One launch; its reads are a value every `cols`.
template <class T>
__global__ void column_sums_kernel(const T* x, std::int64_t rows, std::int64_t cols, float* out) {
  __shared__ float part[kThreads];
  const std::int64_t j = blockIdx.x;
  float sum = 0;
  for (std::int64_t i = threadIdx.x; i < rows; i += blockDim.x) sum += to_f32(x[i * cols + j]);
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[j] = part[0];
}

__global__ void sums_to_floats_kernel(const double* sums, std::int64_t n, float* out) {
  PB_GRID_STRIDE(j, n) { out[j] = static_cast<float>(sums[j]); }
}

// The statistics from ShiftedTerms' sums, invstd, and the running statistics moved: a thread a
// channel.
template <class T>
__global__ void bn_stats_kernel(BnShape s, const T* x, const double* sums, float* mean,
                                float* invstd, float* running_mean, float* running_var) {
  PB_GRID_STRIDE(ch, s.c) {
    double mu_d = 0, var_d = 0;
    bn_shifted_stats_at(to_f32(x[s.at(ch, 0)]), sums[ch], sums[s.c + ch],
                        static_cast<double>(s.count()), &mu_d, &var_d);
    const auto mu = static_cast<float>(mu_d), var = static_cast<float>(var_d);
    mean[ch] = mu;
    invstd[ch] = 1.0f / sqrtf(var + s.eps);
    bn_running_at(s, mu, var, running_mean + ch, running_var + ch);
  }
}

// The forward pass's scale and shift per channel (core/layers.hpp's bn_scale_shift_at) into
// coef, for bn_forward_pack_kernel: a thread a channel.
__global__ void bn_coefficients_kernel(BnShape s, bool train, const float* weight,
                                       const float* bias, const float* mean, const float* invstd,
                                       const float* running_mean, const float* running_var,
                                       float* coef) {
  PB_GRID_STRIDE(ch, s.c) {
    bn_scale_shift_at(train, s.eps, weight[ch], bias[ch], train ? mean[ch] : 0.0f,
                      train ? invstd[ch] : 0.0f, running_mean[ch], running_var[ch], coef + ch,
                      coef + s.c + ch);
  }
}

// dbias and dweight from the sums, and where coef is given, the dx terms for
// bn_backward_dx_pack_kernel (core/layers.hpp's bn_dx_terms_at) and the mean: a thread a channel.
__global__ void bn_grads_kernel(BnShape s, const double* sums, const float* weight,
                                const float* mean, const float* invstd, float* dweight,
                                float* dbias, float* coef) {
  const std::int64_t c = s.c;
  PB_GRID_STRIDE(ch, c) {
    dbias[ch] = static_cast<float>(sums[ch]);
    dweight[ch] = static_cast<float>(sums[c + ch]);
    if (!coef) continue;
    const BnDxTerms t = bn_dx_terms_at(weight[ch], invstd[ch], sums[ch], sums[c + ch],
                                       static_cast<double>(s.count()));
    coef[ch] = t.p, coef[c + ch] = t.q, coef[2 * c + ch] = t.r, coef[3 * c + ch] = mean[ch];
  }
}

// Whether the per-value passes take packs: NHWC maps whose channels are a whole number of packs,
// or NCHW maps whose planes are, every buffer aligned to one.
template <class T, class... P>
bool in_packs(const BnShape& s, const P*... p) {
  return (s.channels_last ? s.c : s.hw) % Pack<T>::kSize == 0 && packable<T>(s.size(), p...);
}

}  // namespace

template <class T>
void batchnorm_forward(cudaStream_t stream, const BnShape& s, bool train, const T* x,
                       const float* weight, const float* bias, T* y, float* mean, float* invstd,
                       float* running_mean, float* running_var, double* sums) {
  if (train) {  // the statistics in one pass over x
    PB_CUDA(cudaMemsetAsync(sums, 0, 2 * static_cast<std::size_t>(s.c) * sizeof(double), stream));
    per_channel_sums(stream, s, ShiftedTerms<T>{x, s}, sums);
    bn_stats_kernel<T><<<grid_blocks(bn_stats_kernel<T>, s.c, kThreads), kThreads, 0, stream>>>(
        s, x, sums, mean, invstd, running_mean, running_var);
    PB_CUDA(cudaGetLastError());
  }
  if (in_packs<T>(s, x, y)) {
    float* coef = reinterpret_cast<float*>(sums + 2 * s.c);
    bn_coefficients_kernel<<<grid_blocks(bn_coefficients_kernel, s.c, kThreads), kThreads, 0,
                             stream>>>(s, train, weight, bias, mean, invstd, running_mean,
                                       running_var, coef);
    PB_CUDA(cudaGetLastError());
    const std::int64_t n = s.size() / Pack<T>::kSize;
    launch(stream, bn_forward_pack_kernel<T>, n, ChannelOf(s), n, packs(x), coef, s.c, packs(y));
    return;
  }
  bn_forward_kernel<T>
      <<<grid_blocks(bn_forward_kernel<T>, s.size(), kThreads), kThreads, 0, stream>>>(
          s, ChannelOf(s), train, x, weight, bias, y, mean, invstd, running_mean, running_var);
  PB_CUDA(cudaGetLastError());
}

template <class T>
void batchnorm_backward(cudaStream_t stream, const BnShape& s, const T* x, const float* weight,
                        const float* mean, const float* invstd, const T* dy, T* dx, float* dweight,
                        float* dbias, double* sums) {
  PB_CUDA(cudaMemsetAsync(sums, 0, 2 * static_cast<std::size_t>(s.c) * sizeof(double), stream));
  per_channel_sums(stream, s, GradientTerms<T>{x, dy, mean, invstd}, sums);
  float* coef =
      dx && in_packs<T>(s, x, dy, dx) ? reinterpret_cast<float*>(sums + 2 * s.c) : nullptr;
  bn_grads_kernel<<<grid_blocks(bn_grads_kernel, s.c, kThreads), kThreads, 0, stream>>>(
      s, sums, weight, mean, invstd, dweight, dbias, coef);
  PB_CUDA(cudaGetLastError());
  if (!dx) return;
  if (coef) {
    const std::int64_t n = s.size() / Pack<T>::kSize;
    launch(stream, bn_backward_dx_pack_kernel<T>, n, ChannelOf(s), n, packs(x), packs(dy), coef,
           s.c, packs(dx));
    return;
  }
  bn_backward_dx_kernel<T>
      <<<grid_blocks(bn_backward_dx_kernel<T>, s.size(), kThreads), kThreads, 0, stream>>>(
          s, ChannelOf(s), x, weight, mean, invstd, dy, dweight, dbias, dx);
  PB_CUDA(cudaGetLastError());
}

// Up to this many rows (a linear layer's batch), column_sums_kernel's one launch costs less than
// the two more that the per-channel sums take (an estimate: 16 strided reads a thread, against
// about 5 us of launches; not yet measured on a GPU).
constexpr std::int64_t kFewRows = 4096;

template <class T>
void column_sums(cudaStream_t stream, const T* x, std::int64_t rows, std::int64_t cols, float* out,
                 double* sums) {
  if (rows <= kFewRows) {
    column_sums_kernel<T><<<static_cast<unsigned>(cols), kThreads, 0, stream>>>(x, rows, cols, out);
    PB_CUDA(cudaGetLastError());
    return;
  }
  BnShape s;  // a row a pixel, a column a channel
  s.n = rows, s.c = cols, s.channels_last = true;
  PB_CUDA(cudaMemsetAsync(sums, 0, 2 * static_cast<std::size_t>(cols) * sizeof(double), stream));
  per_channel_sums(stream, s, ValueTerms<T>{x}, sums);
  launch(stream, sums_to_floats_kernel, cols, static_cast<const double*>(sums), cols, out);
}

#define PB_BATCHNORM(T)                                                                          \
  template void batchnorm_forward<T>(cudaStream_t, const BnShape&, bool, const T*, const float*, \
                                     const float*, T*, float*, float*, float*, float*, double*); \
  template void batchnorm_backward<T>(cudaStream_t, const BnShape&, const T*, const float*,      \
                                      const float*, const float*, const T*, T*, float*, float*,  \
                                      double*);                                                  \
  template void column_sums<T>(cudaStream_t, const T*, std::int64_t, std::int64_t, float*, double*);
PB_BATCHNORM(float)
PB_BATCHNORM(__nv_bfloat16)
PB_BATCHNORM(__half)
#undef PB_BATCHNORM

namespace {

class GpuBatchNorm : public GpuImpl {
 public:
  explicit GpuBatchNorm(const BatchNormShape& s) : s_(s), m_(s.maps()) {
    const auto maps = static_cast<std::size_t>(m_.size()) * sizeof(float),
               c = static_cast<std::size_t>(m_.c) * sizeof(float);
    x_ = DeviceMem(maps), out_ = DeviceMem(maps);
    if (s_.dir == BnDir::bwd) dy_ = DeviceMem(maps);
    for (DeviceMem* v : {&w_, &b_, &rm_, &rv_, &mean_, &invstd_, &dw_, &db_}) *v = DeviceMem(c);
    sums_ = DeviceMem(4 * static_cast<std::size_t>(m_.c) * sizeof(double));
  }
  void prepare(const Tensors& in) override {
    upload(x_.as<void>(), at(in, "x"));
    upload(w_.as<void>(), at(in, "weight"));
    upload(b_.as<void>(), at(in, "bias"));
    upload(rm_.as<void>(), at(in, "running_mean"));
    upload(rv_.as<void>(), at(in, "running_var"));
    if (s_.dir != BnDir::bwd) return;
    upload(dy_.as<void>(), at(in, "dy"));
    upload(mean_.as<void>(), at(in, "mean"));
    // The forward pass keeps invstd, as the training step's does; the case is given var.
    std::vector<float> invstd = at(in, "var").f32();
    for (float& v : invstd) v = 1.0f / std::sqrt(v + m_.eps);
    upload(invstd_.as<void>(), Tensor::of("invstd", invstd));
  }
  void run() override {
    if (s_.dir == BnDir::bwd)
      batchnorm_backward(stream_, m_, x_.as<float>(), w_.as<float>(), mean_.as<float>(),
                         invstd_.as<float>(), dy_.as<float>(), out_.as<float>(), dw_.as<float>(),
                         db_.as<float>(), sums_.as<double>());
    else
      batchnorm_forward(stream_, m_, s_.dir == BnDir::fwd, x_.as<float>(), w_.as<float>(),
                        b_.as<float>(), out_.as<float>(), mean_.as<float>(), invstd_.as<float>(),
                        rm_.as<float>(), rv_.as<float>(), sums_.as<double>());
  }
  Tensors result() override {
    const std::vector<std::int64_t> maps = {s_.batch, s_.c, s_.h, s_.w}, c = {s_.c};
    if (s_.dir == BnDir::bwd)
      return {download("dx", maps, out_.as<void>()), download("dweight", c, dw_.as<void>()),
              download("dbias", c, db_.as<void>())};
    if (s_.dir == BnDir::infer) return {download("y", maps, out_.as<void>())};
    return {download("y", maps, out_.as<void>()), download("running_mean", c, rm_.as<void>()),
            download("running_var", c, rv_.as<void>())};
  }

 protected:
  BatchNormShape s_;
  BnShape m_;
  // out_: y, or dx. mean_ and invstd_: the batch's statistics (the forward pass's, or the case's
  // saved ones for the backward pass).
  DeviceMem x_, dy_, out_, w_, b_, rm_, rv_, mean_, invstd_, dw_, db_, sums_;  // sums_: 4c doubles
};

#ifdef PAIRBENCH_HAVE_CUDNN
using namespace cudnn_detail;

// cuDNN's batch normalization on GpuBatchNorm's buffers: the same inputs, outputs and saved
// statistics. cuDNN's exponential average factor is the momentum, and its running variance
// takes the batch's unbiased variance, as PyTorch's; its "saved inverse variance" is
// 1/sqrt(var + eps), the invstd the cuda kernels keep.
class CudnnBatchNorm : public GpuBatchNorm {
 public:
  explicit CudnnBatchNorm(const BatchNormShape& s) : GpuBatchNorm(s) {
    PB_CUDNN(cudnnCreate(handle_.out()));
    PB_CUDNN(cudnnSetStream(handle_.get(), stream_));
    PB_CUDNN(cudnnCreateTensorDescriptor(maps_.out()));
    PB_CUDNN(cudnnSetTensor4dDescriptor(maps_.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                        static_cast<int>(s.batch), static_cast<int>(s.c),
                                        static_cast<int>(s.h), static_cast<int>(s.w)));
    PB_CUDNN(cudnnCreateTensorDescriptor(channels_.out()));
    PB_CUDNN(cudnnDeriveBNTensorDescriptor(channels_.get(), maps_.get(), kMode));
  }
  void run() override {
    const float one = 1, zero = 0;
    const cudnnTensorDescriptor_t maps = maps_.get(), channels = channels_.get();
    switch (s_.dir) {
      case BnDir::fwd:
        PB_CUDNN(cudnnBatchNormalizationForwardTraining(
            handle_.get(), kMode, &one, &zero, maps, x_.as<float>(), maps, out_.as<float>(),
            channels, w_.as<float>(), b_.as<float>(), m_.momentum, rm_.as<float>(), rv_.as<float>(),
            m_.eps, mean_.as<float>(), invstd_.as<float>()));
        break;
      case BnDir::bwd:
        PB_CUDNN(cudnnBatchNormalizationBackward(
            handle_.get(), kMode, &one, &zero, &one, &zero, maps, x_.as<float>(), maps,
            dy_.as<float>(), maps, out_.as<float>(), channels, w_.as<float>(), dw_.as<float>(),
            db_.as<float>(), m_.eps, mean_.as<float>(), invstd_.as<float>()));
        break;
      case BnDir::infer:
        PB_CUDNN(cudnnBatchNormalizationForwardInference(
            handle_.get(), kMode, &one, &zero, maps, x_.as<float>(), maps, out_.as<float>(),
            channels, w_.as<float>(), b_.as<float>(), rm_.as<float>(), rv_.as<float>(), m_.eps));
        break;
    }
  }
  std::string detail() const override { return "cuDNN, spatial mode, NCHW fp32"; }

 private:
  static constexpr cudnnBatchNormMode_t kMode = CUDNN_BATCHNORM_SPATIAL;
  CudnnObject<cudnnHandle_t, cudnnDestroy> handle_;
  CudnnObject<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor> maps_, channels_;
};
#endif

std::unique_ptr<Impl> make_batchnorm(const std::string& op, const std::string& name,
                                     const Workload& w, int) {
  const BatchNormShape& s = static_cast<const BatchNormWorkload&>(w).bn();
  if (name == "cuda") return std::make_unique<GpuBatchNorm>(s);
#ifdef PAIRBENCH_HAVE_CUDNN
  if (name == "cudnn") return std::make_unique<CudnnBatchNorm>(s);
#else
  if (name == "cudnn") throw std::runtime_error(cudnn_unavailable());
#endif
  throw std::runtime_error("unknown GPU " + op + " implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("batchnorm", make_batchnorm);

}  // namespace

}  // namespace pb::gpu
