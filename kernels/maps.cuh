// What the training step and the convolutions share on the GPU for maps of any element type
// (float, __nv_bfloat16, __half): a grid-stride launch, the maps in the other layout (NCHW and
// NHWC) and converted on the way, a conversion, and rows set to a bias. Internal to each file
// that includes it. (A bias's gradient, column_sums, is in kernels/batchnorm.cu.)
#pragma once

#include <cstdint>

#include "core/layers.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {
namespace {

namespace maps {

constexpr int kThreads = 256;

// The maps in the other layout (Maps::at's two orders), each value converted from X to Y.
template <class X, class Y>
__global__ void relayout_kernel(Maps s, const X* x, Y* out) {
  Maps other = s;
  other.channels_last = !s.channels_last;
  PB_GRID_STRIDE(e, s.size()) {
    const std::int64_t p = e / s.hw, ch = p % s.c, i = p / s.c * s.hw + e % s.hw;
    out[other.at(ch, i)] = from_f32<Y>(to_f32(x[s.at(ch, i)]));
  }
}

template <class X, class Y>
__global__ void convert_kernel(const X* x, Y* out, std::int64_t n) {
  PB_GRID_STRIDE(j, n) { out[j] = from_f32<Y>(to_f32(x[j])); }
}

// Every row set to the bias (a linear layer's output before its GEMM adds to it; a
// convolution's, NHWC: a row a pixel, before cuDNN adds to it).
template <class T>
__global__ void bias_rows_kernel(const float* b, T* out, std::int64_t rows, std::int64_t cols) {
  PB_GRID_STRIDE(i, rows * cols) { out[i] = from_f32<T>(b[i % cols]); }
}

}  // namespace maps

// A grid-stride kernel over `items`, on `stream`: one full wave at most (grid_blocks).
template <class... Params, class... Args>
void launch(cudaStream_t stream, void (*kernel)(Params...), std::int64_t items, Args... args) {
  kernel<<<grid_blocks(kernel, items, maps::kThreads), maps::kThreads, 0, stream>>>(args...);
  PB_CUDA(cudaGetLastError());
}

// out = x in the other layout (s: x's), each value converted from X to Y.
template <class X, class Y>
void relayout(cudaStream_t stream, const Maps& s, const X* x, Y* out) {
  launch(stream, maps::relayout_kernel<X, Y>, s.size(), s, x, out);
}

// out[j] = x[j] converted, j < n.
template <class X, class Y>
void convert(cudaStream_t stream, const X* x, Y* out, std::int64_t n) {
  launch(stream, maps::convert_kernel<X, Y>, n, x, out, n);
}

// Every row of out (rows x cols) set to b.
template <class T>
void bias_rows(cudaStream_t stream, const float* b, T* out, std::int64_t rows, std::int64_t cols) {
  launch(stream, maps::bias_rows_kernel<T>, rows * cols, b, out, rows, cols);
}

}  // namespace
}  // namespace pb::gpu
