// GPU activations, softmax and the softmax cross-entropy loss, with the functors of
// core/activation.hpp:
//   naive      - one element (activations) or one row (softmax, loss) per thread.
//   vectorized - grid-stride loops over 128-bit loads and stores; softmax and loss give each
//                row a block, which reduces max and sum with warp shuffles.
#include <vector>

#include "core/activation.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

constexpr int kThreads = 256;

template <class F>
__global__ void act_naive(const float* x, const float* dy, float* out, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = dy ? F::bwd(x[i], dy[i]) : F::fwd(x[i]);
}

template <class F>
__global__ void act_vec4(const float* x, const float* dy, float* out, std::int64_t n) {
  const std::int64_t n4 = n / 4;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t v = first; v < n4; v += stride) {
    const float4 a = reinterpret_cast<const float4*>(x)[v];
    float4 r;
    if (dy) {
      const float4 d = reinterpret_cast<const float4*>(dy)[v];
      r = make_float4(F::bwd(a.x, d.x), F::bwd(a.y, d.y), F::bwd(a.z, d.z), F::bwd(a.w, d.w));
    } else {
      r = make_float4(F::fwd(a.x), F::fwd(a.y), F::fwd(a.z), F::fwd(a.w));
    }
    reinterpret_cast<float4*>(out)[v] = r;
  }
  for (std::int64_t i = 4 * n4 + first; i < n; i += stride)
    out[i] = dy ? F::bwd(x[i], dy[i]) : F::fwd(x[i]);
}

// --- softmax and loss ------------------------------------------------------------------------

// The row's softmax into out (scaled, minus scale at label when label >= 0); returns the
// log-sum-exp. One thread does the whole row.
__device__ float row_softmax_serial(const float* x, std::int64_t cols, float* out,
                                    std::int64_t label, float scale) {
  float m = -approx::kInf;
  for (std::int64_t j = 0; j < cols; ++j) m = fmaxf(m, x[j]);
  double sum = 0;  // by blocks (kRowSumBlock): a long row's float sum stagnates
  for (std::int64_t j0 = 0; j0 < cols; j0 += kRowSumBlock) {
    const std::int64_t end = j0 + kRowSumBlock < cols ? j0 + kRowSumBlock : cols;
    float block = 0;
    for (std::int64_t j = j0; j < end; ++j) block += approx::exp(x[j] - m);
    sum += block;
  }
  if (out) {
    const auto inv = static_cast<float>(scale / sum);
    for (std::int64_t j = 0; j < cols; ++j) out[j] = approx::exp(x[j] - m) * inv;
    if (label >= 0) out[label] -= scale;
  }
  return m + static_cast<float>(log(sum));
}

__global__ void rows_naive_kernel(RowShape s, const float* x, const std::int32_t* labels,
                                  float* out) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= s.rows) return;
  const float* xr = x + r * s.cols;
  if (s.kind == RowOp::loss_fwd) {
    const std::int64_t label = labels[r];
    out[r] = row_softmax_serial(xr, s.cols, nullptr, -1, 1.0f) - xr[label];
    return;
  }
  const std::int64_t label = s.kind == RowOp::loss_bwd ? labels[r] : -1;
  const float scale = s.kind == RowOp::loss_bwd ? 1.0f / static_cast<float>(s.rows) : 1.0f;
  row_softmax_serial(xr, s.cols, out + r * s.cols, label, scale);
}

// Reduces v over the block with op (identity: op's neutral value); every thread gets the result.
template <class Op>
__device__ float block_reduce(float v, Op op, float identity) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  for (int off = 16; off > 0; off /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : identity;
    for (int off = 16; off > 0; off /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
    if (threadIdx.x == 0) total = v;
  }
  __syncthreads();
  return total;
}

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// One block per row (grid-stride over rows); 128-bit accesses when a row is a whole number of
// float4s.
__global__ void rows_block(RowShape s, const float* x, const std::int32_t* labels, float* out) {
  const std::int64_t cols = s.cols;
  const bool vec = cols % 4 == 0;
  for (std::int64_t r = blockIdx.x; r < s.rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float m = -approx::kInf;
    if (vec) {
      for (std::int64_t v = threadIdx.x; v < cols / 4; v += kThreads) {
        const float4 a = reinterpret_cast<const float4*>(xr)[v];
        m = fmaxf(m, fmaxf(fmaxf(a.x, a.y), fmaxf(a.z, a.w)));
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < cols; j += kThreads) m = fmaxf(m, xr[j]);
    }
    m = block_reduce(m, Max{}, -approx::kInf);
    float sum = 0;
    for (std::int64_t j = threadIdx.x; j < cols; j += kThreads) sum += approx::exp(xr[j] - m);
    sum = block_reduce(sum, Sum{}, 0.0f);
    if (s.kind == RowOp::loss_fwd) {
      if (threadIdx.x == 0) out[r] = m + logf(sum) - xr[labels[r]];
      continue;
    }
    const bool grad = s.kind == RowOp::loss_bwd;
    const float scale = grad ? 1.0f / static_cast<float>(s.rows) : 1.0f, inv = scale / sum;
    const std::int64_t label = grad ? labels[r] : -1;
    float* o = out + r * cols;
    if (vec) {
      for (std::int64_t v = threadIdx.x; v < cols / 4; v += kThreads) {
        const float4 a = reinterpret_cast<const float4*>(xr)[v];
        float4 y = make_float4(approx::exp(a.x - m) * inv, approx::exp(a.y - m) * inv,
                               approx::exp(a.z - m) * inv, approx::exp(a.w - m) * inv);
        if (label >= 0 && label / 4 == v) (&y.x)[label % 4] -= scale;
        reinterpret_cast<float4*>(o)[v] = y;
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < cols; j += kThreads)
        o[j] = approx::exp(xr[j] - m) * inv - (j == label ? scale : 0.0f);
    }
    __syncthreads();  // the reductions' shared memory is reused by the next row
  }
}

// --- implementations ---------------------------------------------------------------------------

// Blocks for a grid-stride kernel over `items`: one per kThreads items, at most one full wave.
template <class Kernel>
int grid_for(Kernel kernel, std::int64_t items) {
  const std::int64_t most = full_grid(kernel, kThreads);
  const std::int64_t need = (items + kThreads - 1) / kThreads;
  return static_cast<int>(need < most ? (need > 0 ? need : 1) : most);
}

}  // namespace

// --- the op functions: enqueued on the caller's stream, over the caller's device buffers -------

void activation_naive(cudaStream_t stream, Act a, const float* x, const float* dy, float* out,
                      std::int64_t n) {
  if ((n + kThreads - 1) / kThreads > 0x7fffffff)
    throw std::runtime_error("n too large for one thread per element");
  with_activation(a, [&](auto f) {
    const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
    act_naive<decltype(f)><<<blocks, kThreads, 0, stream>>>(x, dy, out, n);
  });
  PB_CUDA(cudaGetLastError());
}

void activation_vectorized(cudaStream_t stream, Act a, const float* x, const float* dy, float* out,
                           std::int64_t n) {
  // float4 loads and stores need 16-byte aligned pointers: cudaMalloc's always are, a pointer
  // into a buffer at an offset may not be; such a call takes a value a thread.
  auto aligned = [](const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  if (!aligned(x) || !aligned(dy) || !aligned(out))
    return activation_naive(stream, a, x, dy, out, n);
  with_activation(a, [&](auto f) {
    using F = decltype(f);
    act_vec4<F><<<grid_for(act_vec4<F>, n / 4), kThreads, 0, stream>>>(x, dy, out, n);
  });
  PB_CUDA(cudaGetLastError());
}

void rows_naive(cudaStream_t stream, const RowShape& s, const float* x, const std::int32_t* labels,
                float* out) {
  const auto blocks = static_cast<unsigned>((s.rows + kThreads - 1) / kThreads);
  rows_naive_kernel<<<blocks, kThreads, 0, stream>>>(s, x, labels, out);
  PB_CUDA(cudaGetLastError());
}

void rows_vectorized(cudaStream_t stream, const RowShape& s, const float* x,
                     const std::int32_t* labels, float* out) {
  // One block per row, at most one full wave (grid_for counts kThreads items a block).
  rows_block<<<grid_for(rows_block, s.rows * kThreads), kThreads, 0, stream>>>(s, x, labels, out);
  PB_CUDA(cudaGetLastError());
}

// --- the implementations: thin adapters over the op functions ---------------------------------

namespace {

class GpuActivation : public GpuImpl {
 public:
  GpuActivation(const ActivationShape& s, bool naive) : s_(s), naive_(naive) {
    const std::size_t bytes = static_cast<std::size_t>(s_.n) * sizeof(float);
    x_ = DeviceMem(bytes);
    out_ = DeviceMem(bytes);
    if (s_.backward) dy_ = DeviceMem(bytes);
    if (naive_ && (s_.n + kThreads - 1) / kThreads > 0x7fffffff)
      throw std::runtime_error("n too large for one thread per element");
  }
  void prepare(const Tensors& in) override {
    upload(x_.as<void>(), at(in, ActivationWorkload(s_).input()));  // x, or y for bwd from y
    if (s_.backward) upload(dy_.as<void>(), at(in, "dy"));
  }
  void run() override {
    const float* dy = s_.backward ? dy_.as<float>() : nullptr;
    if (naive_)
      activation_naive(stream_, s_.act, x_.as<float>(), dy, out_.as<float>(), s_.n);
    else
      activation_vectorized(stream_, s_.act, x_.as<float>(), dy, out_.as<float>(), s_.n);
  }
  Tensors result() override {
    return {download(ActivationWorkload(s_).outputs()[0], {s_.n}, out_.as<void>())};
  }

 private:
  ActivationShape s_;
  bool naive_;
  DeviceMem x_, dy_, out_;
};

class GpuRows : public GpuImpl {
 public:
  GpuRows(const RowShape& s, bool naive) : s_(s), naive_(naive) {
    x_ = DeviceMem(static_cast<std::size_t>(s_.rows * s_.cols) * sizeof(float));
    labels_ = DeviceMem(static_cast<std::size_t>(s_.rows) * sizeof(std::int32_t));
    out_ = DeviceMem(static_cast<std::size_t>(RowWorkload(s_).output_size()) * sizeof(float));
  }
  void prepare(const Tensors& in) override {
    upload(x_.as<void>(), at(in, "x"));
    if (s_.kind != RowOp::softmax) upload(labels_.as<void>(), at(in, "labels"));
  }
  void run() override {
    const std::int32_t* labels = labels_.as<std::int32_t>();
    if (naive_)
      rows_naive(stream_, s_, x_.as<float>(), labels, out_.as<float>());
    else
      rows_vectorized(stream_, s_, x_.as<float>(), labels, out_.as<float>());
  }
  Tensors result() override {
    const RowWorkload w(s_);
    return {download(w.outputs()[0], {w.output_size()}, out_.as<void>())};
  }

 private:
  RowShape s_;
  bool naive_;
  DeviceMem x_, labels_, out_;
};

std::unique_ptr<Impl> make_activation(const std::string& op, const std::string& name,
                                      const Workload& w, int) {
  if (name != "naive" && name != "vectorized")
    throw std::runtime_error("unknown GPU " + op + " implementation: " + name);
  const bool naive = name == "naive";
  if (op == "activation")
    return std::make_unique<GpuActivation>(static_cast<const ActivationWorkload&>(w).activation(),
                                           naive);
  return std::make_unique<GpuRows>(static_cast<const RowWorkload&>(w).rows(), naive);
}

[[maybe_unused]] const bool registered = register_factory("activation", make_activation) &&
                                         register_factory("softmax", make_activation) &&
                                         register_factory("loss", make_activation);

}  // namespace

}  // namespace pb::gpu
