// GPU STREAM, the per-element math from core/stream.hpp:
//   cuda       - grid-stride loop over 128-bit (float4) loads and stores, as many blocks as fill
//                every SM once (full_grid); dot reduces per block (warp shuffles), then once
//                more over blocks.
//   sm_limited - the triad on a persistent grid that only K streaming multiprocessors work in
//                (as many blocks each as one holds), taking chunks from a shared counter:
//                throughput against SMs.
#include <vector>

#include "core/stream.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerSm = 8;  // 8 x 256 threads: 2048, the most any SM holds

// Element j of a float4, without pointer arithmetic across its members.
__device__ inline float lane(const float4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

template <StreamKernel K>
__global__ void stream_vec4(const float* a, const float* b, const float* c, float* out,
                            std::int64_t n) {
  const std::int64_t n4 = n / 4;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t v = first; v < n4; v += stride) {
    // float4 registers (16-byte aligned), read element by element; only the arrays the kernel
    // reads are loaded.
    float4 va{}, vb{}, vc{}, vo;
    if (stream_reads(K, 0)) va = reinterpret_cast<const float4*>(a)[v];
    if (stream_reads(K, 1)) vb = reinterpret_cast<const float4*>(b)[v];
    if (stream_reads(K, 2)) vc = reinterpret_cast<const float4*>(c)[v];
    float la[4], lb[4], lc[4], lo[4];  // in registers once unrolled
#pragma unroll
    for (int j = 0; j < 4; ++j) la[j] = lane(va, j), lb[j] = lane(vb, j), lc[j] = lane(vc, j);
#pragma unroll
    for (int j = 0; j < 4; ++j) lo[j] = stream_element(K, la, lb, lc, j);
    vo = make_float4(lo[0], lo[1], lo[2], lo[3]);
    reinterpret_cast<float4*>(out)[v] = vo;
  }
  for (std::int64_t i = 4 * n4 + first; i < n; i += stride) out[i] = stream_element(K, a, b, c, i);
}

// Sum of the block's values, valid in thread 0.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (threadIdx.x < 32)
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// 128-bit loads like the other kernels, then the tail of n % 4 elements.
__global__ void dot_partial(const float* a, const float* b, std::int64_t n, float* partial) {
  float sum = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t v = first; v < n / 4; v += stride) {
    const float4 va = reinterpret_cast<const float4*>(a)[v];
    const float4 vb = reinterpret_cast<const float4*>(b)[v];
#pragma unroll
    for (int j = 0; j < 4; ++j) sum += lane(va, j) * lane(vb, j);  // stream_element's dot term
  }
  for (std::int64_t i = 4 * (n / 4) + first; i < n; i += stride)
    sum += stream_element(StreamKernel::dot, a, b, nullptr, i);
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void dot_final(const float* partial, int count, float* out) {
  float sum = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *out = sum;
}

__device__ unsigned sm_id() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}

constexpr int kMaxSmIds = 1024;  // %smid < %nsmid, at most a few hundred on current GPUs
constexpr std::int64_t kChunk = 16 * kThreads;

struct SmCounters {
  unsigned long long next;  // the first element no block has taken yet
  int ranks_given;          // SMs ranked so far
  unsigned blocks_done;     // blocks finished in this launch
};

// Ranks SMs in the order their first block arrives; blocks on SMs ranked >= max_sms leave at
// once, the rest take chunks of the arrays from counters->next until none is left. The last
// block to finish resets the ranks and counters for the next launch (so no memset sits in the
// timed region; prepare() sets them once).
__global__ void triad_on_sms(const float* b, const float* c, float* a, std::int64_t n, int max_sms,
                             int* sm_rank, SmCounters* counters) {
  __shared__ int active;
  __shared__ long long chunk;
  if (threadIdx.x == 0) {
    const unsigned s = sm_id() % kMaxSmIds;
    int rank = atomicCAS(&sm_rank[s], -1, -2);  // -1 unranked, -2 being ranked
    if (rank == -1) {
      rank = atomicAdd(&counters->ranks_given, 1);
      atomicExch(&sm_rank[s], rank);
    } else {
      while ((rank = atomicAdd(&sm_rank[s], 0)) == -2) {
      }  // the block ranking this SM is resident beside us: it finishes
    }
    active = rank < max_sms;
  }
  __syncthreads();
  while (active) {
    if (threadIdx.x == 0) chunk = static_cast<long long>(atomicAdd(&counters->next, kChunk));
    __syncthreads();
    const std::int64_t start = chunk;
    __syncthreads();
    if (start >= n) break;  // the same for every thread of the block
    const std::int64_t end = start + kChunk < n ? start + kChunk : n;
    for (std::int64_t i = start + threadIdx.x; i < end; i += kThreads)
      a[i] = stream_element(StreamKernel::triad, a, b, c, i);
  }
  __shared__ bool last;
  if (threadIdx.x == 0) {
    __threadfence();  // this block's use of the counters comes before its count
    last = atomicAdd(&counters->blocks_done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();  // acquire: the other blocks' counts come before the reset
  for (int i = threadIdx.x; i < kMaxSmIds; i += blockDim.x) sm_rank[i] = -1;
  if (threadIdx.x == 0) *counters = SmCounters{0, 0, 0};
}

template <StreamKernel K>
void launch(cudaStream_t stream, const float* a, const float* b, const float* c, float* out,
            std::int64_t n) {
  static const int blocks = full_grid(stream_vec4<K>, kThreads);
  stream_vec4<K><<<blocks, kThreads, 0, stream>>>(a, b, c, out, n);
}

}  // namespace

// --- the op function: enqueued on the caller's stream, over the caller's device buffers --------

void stream_cuda(cudaStream_t stream, StreamKernel k, float* a, float* b, float* c, std::int64_t n,
                 float* partial, float* sum) {
  switch (k) {
    case StreamKernel::copy:
      launch<StreamKernel::copy>(stream, a, b, c, c, n);
      break;
    case StreamKernel::scale:
      launch<StreamKernel::scale>(stream, a, b, c, b, n);
      break;
    case StreamKernel::add:
      launch<StreamKernel::add>(stream, a, b, c, c, n);
      break;
    case StreamKernel::triad:
      launch<StreamKernel::triad>(stream, a, b, c, a, n);
      break;
    case StreamKernel::dot: {
      static const int blocks = full_grid(dot_partial, kThreads);  // <= SMs x 8 partials
      dot_partial<<<blocks, kThreads, 0, stream>>>(a, b, n, partial);
      PB_CUDA(cudaGetLastError());
      dot_final<<<1, kThreads, 0, stream>>>(partial, blocks, sum);
    } break;
  }
  PB_CUDA(cudaGetLastError());
}

// --- the implementations: thin adapters over the op function ------------------------------------

namespace {

class GpuStream : public GpuImpl {
 public:
  GpuStream(const StreamShape& s, int sms) : s_(s), sms_(sms) {
    if (sms_ > device_info().sms) throw std::runtime_error("more SMs requested than the GPU has");
    const std::size_t bytes = static_cast<std::size_t>(s_.n) * sizeof(float);
    for (auto& x : x_) x = DeviceMem(bytes);
    partial_ =
        DeviceMem(static_cast<std::size_t>(device_info().sms) * kMaxBlocksPerSm * sizeof(float));
    sum_ = DeviceMem(sizeof(float));
    sm_rank_ = DeviceMem(kMaxSmIds * sizeof(int));
    counters_ = DeviceMem(sizeof(SmCounters));
  }

  void prepare(const Tensors& in) override {
    for (int j = 0; j < 3; ++j)  // what the kernel reads; its output is written whole
      if (stream_reads(s_.kernel, j))
        upload(x_[j].as<void>(), at(in, std::string(1, static_cast<char>('a' + j))));
    if (sms_ > 0) {  // the SM sweep's ranks (-1: unranked) and counters; each launch resets them
      PB_CUDA(cudaMemsetAsync(sm_rank_.as<void>(), 0xFF, kMaxSmIds * sizeof(int), stream_));
      PB_CUDA(cudaMemsetAsync(counters_.as<void>(), 0, sizeof(SmCounters), stream_));
      PB_CUDA(cudaStreamSynchronize(stream_));
    }
  }

  void run() override {
    float* w[3] = {x_[0].as<float>(), x_[1].as<float>(), x_[2].as<float>()};
    const std::int64_t n = s_.n;
    if (sms_ > 0) {  // the SM sweep
      static const int blocks = full_grid(triad_on_sms, kThreads);
      triad_on_sms<<<blocks, kThreads, 0, stream_>>>(w[1], w[2], w[0], n, sms_, sm_rank_.as<int>(),
                                                     counters_.as<SmCounters>());
      check_launch();
      return;
    }
    stream_cuda(stream_, s_.kernel, w[0], w[1], w[2], n, partial_.as<float>(), sum_.as<float>());
  }

  Tensors result() override {
    const int out = stream_output(s_.kernel);
    return {download(StreamWorkload(s_).outputs()[0], {out < 0 ? 1 : s_.n},
                     out < 0 ? sum_.as<void>() : x_[out].as<void>())};
  }

 private:
  StreamShape s_;
  int sms_;
  DeviceMem x_[3], partial_, sum_, sm_rank_, counters_;
};

std::unique_ptr<Impl> make_stream(const std::string&, const std::string& name, const Workload& w,
                                  int sms) {
  const StreamShape& s = static_cast<const StreamWorkload&>(w).stream();
  if (name == "cuda") return std::make_unique<GpuStream>(s, 0);
  if (name == "sm_limited") {
    if (sms < 1) throw std::runtime_error("sm_limited needs a number of SMs");
    if (s.kernel != StreamKernel::triad) throw std::runtime_error("sm_limited runs the triad only");
    return std::make_unique<GpuStream>(s, sms);
  }
  throw std::runtime_error("unknown GPU stream implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("stream", make_stream);

}  // namespace

}  // namespace pb::gpu
