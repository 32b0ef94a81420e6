// What every GPU implementation shares: status checks, device memory, the case's stream,
// CUDA-event timing, L2 flush and timed host<->device copies.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/activation.hpp"
#include "core/conv.hpp"
#include "core/gemm.hpp"
#include "core/layers.hpp"
#include "core/stream.hpp"
#include "core/workload.hpp"
#include "kernels/gpu.hpp"

namespace pb::gpu {

[[noreturn]] void fail(const char* what, const char* detail, const char* file, int line);

// Inside libpairbench_gpu.so: what the loader's probe(), make_impl() and sticky_error() call.
const DeviceInfo& device_info();
std::unique_ptr<Impl> make_device_impl(const std::string& op, const std::string& name,
                                       const Workload& w, int units);
std::string device_sticky_error();
// The GPU this process uses (select_device before the first probe; 0 by default).
int device_ordinal();
void device_select(int ordinal);
// NCCL (kernels/collective.cu): as gpu.hpp's nccl_load, nccl_unique_id and nccl_init.
std::string device_nccl_load();
std::string device_nccl_unique_id();
std::string device_nccl_init(const std::string& id, int ranks, int rank);
// Over the run's NCCL communicator, on `stream`: g[0..n) averaged over the ranks, in place (a
// data-parallel step's gradients); and whether every rank holds the same bits of v (a hash's
// maximum over the ranks, compared with its own). Both throw without a communicator.
void nccl_average(float* g, std::int64_t n, cudaStream_t stream);
bool nccl_same_on_every_rank(const std::vector<float>& v, cudaStream_t stream);

#define PB_CUDA(call)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) ::pb::gpu::fail(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)

// Owns one device allocation.
class DeviceMem {
 public:
  DeviceMem() = default;
  explicit DeviceMem(std::size_t bytes) {  // none for 0 bytes (a workspace nobody needs)
    if (bytes > 0) PB_CUDA(cudaMalloc(&p_, bytes));
  }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  DeviceMem(DeviceMem&& o) noexcept { std::swap(p_, o.p_); }
  DeviceMem& operator=(DeviceMem&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~DeviceMem() { cudaFree(p_); }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

class GpuImpl : public Impl {
 public:
  GpuImpl();
  ~GpuImpl() override;
  std::unique_ptr<Timer> make_timer() override;
  void flush_cache() override;
  double transfer_seconds() const override { return transfer_s_; }

 protected:
  // Copies on the case's stream, waits, and adds the copy's time to transfer_seconds().
  void upload(void* dst, const void* src, std::size_t bytes);
  void download(void* dst, const void* src, std::size_t bytes);
  void upload(void* dst, const Tensor& t) { upload(dst, t.data(), t.bytes()); }
  // The f32 elements at src as a host tensor called `name` of shape `dims`.
  Tensor download(std::string name, std::vector<std::int64_t> dims, const void* src) {
    Tensor t(std::move(name), std::move(dims));
    download(t.f32().data(), src, t.bytes());
    return t;
  }
  // Throws if the last launch failed.
  static void check_launch();
  cudaStream_t stream_ = nullptr;

 private:
  void timed_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
  double transfer_s_ = 0;
  bool hold_stream_ = true;  // whether this case's timers hold its stream (make_timer)
  DeviceMem flush_buf_;
  std::size_t flush_bytes_ = 0;
};

// A map value as float, and a float as a map value (rounded to nearest even): a step's maps are
// float, or bf16 and fp16 in mixed precision.
__host__ __device__ inline float to_f32(float v) { return v; }
__host__ __device__ inline float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__host__ __device__ inline float to_f32(__half v) { return __half2float(v); }
template <class T>
__host__ __device__ inline T from_f32(float v);
template <>
__host__ __device__ inline float from_f32<float>(float v) {
  return v;
}
template <>
__host__ __device__ inline __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__host__ __device__ inline __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}

// The grid that fills every SM once for this kernel: SMs x the blocks of `threads` threads that
// one SM holds at once, which the kernel's registers and shared memory decide (ptxas gives some
// kernels 33-48 registers, and consumer SMs hold fewer threads than data-center ones), so a
// grid-stride kernel runs in one full wave and no thin second one.
// Asked once per kernel and block size (kept out of the timed region's host time).
template <class Kernel>
int full_grid(Kernel kernel, int threads) {
  static std::map<std::pair<const void*, int>, int> known;
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), threads);
  if (!known.count(key)) {
    int per_sm = 0;
    PB_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
    known[key] = device_info().sms * (per_sm > 0 ? per_sm : 1);
  }
  return known[key];
}

// Grid-stride loops over `count` items: the grid fills the device once (grid_blocks).
#define PB_GRID_STRIDE(i, count)                                                          \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; \
       i < (count); i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

// Blocks of `threads` for a grid-stride kernel over `items`: one per `threads` items, at most
// one full wave.
template <class Kernel>
unsigned grid_blocks(Kernel kernel, std::int64_t items, int threads) {
  const std::int64_t most = full_grid(kernel, threads);
  const std::int64_t need = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(need, most)));
}

// A pack: 16 bytes of values of T (8 of bf16 or fp16, 4 of float), one 16-byte load or store.
// The training step's per-value kernels (the 16-bit step's ReLU; the residual add, batch norm's
// y and dx) take a pack a thread where the count and every pointer allow it (packable), else a
// value a thread: one value a thread cost about fifty instructions a value (bn_forward_kernel's
// sm_90 SASS), so that they were bound by issuing instructions, not by memory.
template <class T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};
template <class T, class... P>
bool packable(std::int64_t n, const P*... p) {
  return n % Pack<T>::kSize == 0 && ((reinterpret_cast<std::uintptr_t>(p) % 16 == 0) && ...);
}
template <class T>
const Pack<T>* packs(const T* p) {
  return reinterpret_cast<const Pack<T>*>(p);
}
template <class T>
Pack<T>* packs(T* p) {
  return reinterpret_cast<Pack<T>*>(p);
}

// --- Op functions: enqueued on the caller's stream over the caller's device buffers, owning
// nothing; the implementations adapt them, and a training step composes them (kernels/<op>.cu).
// GEMM (core/gemm.hpp), fp32: one thread per element of C; 64x64 shared-memory tiles.
void gemm_naive(cudaStream_t stream, const GemmShape& s, const float* a, const float* b, float* c);
void gemm_tiled(cudaStream_t stream, const GemmShape& s, const float* a, const float* b, float* c);
// cuBLAS on the handle's stream: A and B in s.dtype's storage type (float for fp32 and tf32,
// __half, __nv_bfloat16), C in fp32.
void gemm_cublas(cublasHandle_t handle, const GemmShape& s, const void* a, const void* b, float* c);
// The same with C in c_type: CUDA_R_32F, or (fp16 and bf16) A's and B's own type.
void gemm_cublas(cublasHandle_t handle, const GemmShape& s, const void* a, const void* b, void* c,
                 cudaDataType_t c_type);
// STREAM (core/stream.hpp) over device arrays a, b, c of n floats: the kernel's output array
// written with 128-bit stores; dot into *sum, through `partial` (SMs x 8 floats of scratch).
void stream_cuda(cudaStream_t stream, StreamKernel k, float* a, float* b, float* c, std::int64_t n,
                 float* partial, float* sum);
// Convolution (core/conv.hpp), fp32, the pass s.dir says (in0, in1, b, out, db as
// cpu::conv_naive takes them): one thread per output element; im2col (col: crs x pq floats)
// and cuBLAS per image, on the handle's stream (which must be `stream`); db alone.
void conv_direct(cudaStream_t stream, const ConvShape& s, const float* in0, const float* in1,
                 const float* b, float* out, float* db);
void conv_im2col(cudaStream_t stream, cublasHandle_t handle, const ConvShape& s, const float* in0,
                 const float* in1, const float* b, float* out, float* db, float* col);
void conv_bias_grad(cudaStream_t stream, const ConvShape& s, const float* dy, float* db);
// out[c] = scale x the sum of channel c of x (n x k channels x pq values), one block a channel:
// the bias gradient of a convolution (conv_bias_grad), or a mean (n 1, k 1).
void channel_sums(cudaStream_t stream, const float* x, std::int64_t n, std::int64_t k,
                  std::int64_t pq, float* out, float scale = 1.0f);
// A convolution plan's whole shape and layout: what tells one cuDNN plan from another.
using ConvPlanKey = std::array<std::int64_t, 15>;
inline ConvPlanKey conv_plan_key(const ConvShape& s, bool channels_last) {
  return {s.n,
          s.c,
          s.h,
          s.w,
          s.k,
          s.r,
          s.s,
          s.stride_h,
          s.stride_w,
          s.pad_h,
          s.pad_w,
          static_cast<std::int64_t>(s.dir),
          static_cast<std::int64_t>(s.dtype),
          s.bias,
          channels_last};
}

// cuDNN's convolution of one shape and pass, planned once and run on any buffers of that shape
// (in0, in1, b, out, db as conv_direct takes them), on `stream`: the fastest algorithm as
// cuDNN times them (cudnnFind*) among those whose workspace fits kConvWorkspaceCap
// (core/conv.hpp); true fp32 (FMA math) for fp32, tensor cores allowed for tf32. Throws where
// cuDNN is not built in. NCHW maps and KCRS filters in float, or (channels_last) NHWC maps and
// KRSC filters, in float or in s.dtype's 16-bit type (bf16, fp16; fp32 accumulation, tensor
// cores). The bias (fp32, where s.bias) is cuDNN's in float alone: a 16-bit plan takes none (its
// caller puts it in y and runs with accumulate).
class CudnnConvolution {
 public:
  CudnnConvolution(cudaStream_t stream, const ConvShape& s, bool channels_last = false);
  CudnnConvolution(const CudnnConvolution&) = delete;
  CudnnConvolution& operator=(const CudnnConvolution&) = delete;
  ~CudnnConvolution();
  // workspace: workspace_bytes() of device memory, the caller's (plans run one after another
  // on one stream may share one). in0, in1 and out in the plan's element type. accumulate: out
  // += the result (cuDNN's beta 1; a 16-bit plan's caller puts the bias there first).
  void run(const void* in0, const void* in1, const float* b, void* out, float* db, void* workspace,
           bool accumulate = false);
  std::size_t workspace_bytes() const;
  std::string detail() const;  // the algorithm, its math and workspace

 private:
  struct State;  // cuDNN's objects (kernels/conv.cu)
  std::unique_ptr<State> st_;
};
// Activations (core/activation.hpp): out = f(x), or with dy the gradient dy f'(x) from x (or
// from y = f(x) for sigmoid and tanh, passed as x), over n floats: one thread per element;
// grid-stride over 128-bit loads and stores.
void activation_naive(cudaStream_t stream, Act a, const float* x, const float* dy, float* out,
                      std::int64_t n);
void activation_vectorized(cudaStream_t stream, Act a, const float* x, const float* dy, float* out,
                           std::int64_t n);
// Softmax and the softmax cross-entropy loss, row by row (RowShape): one thread per row; one
// block per row, reducing with warp shuffles.
void rows_naive(cudaStream_t stream, const RowShape& s, const float* x, const std::int32_t* labels,
                float* out);
void rows_vectorized(cudaStream_t stream, const RowShape& s, const float* x,
                     const std::int32_t* labels, float* out);

// Batch normalization (core/layers.hpp's semantics, as cpu batchnorm_forward/backward take
// its buffers), maps NCHW or NHWC in T (float, __nv_bfloat16 or __half), the parameters and
// statistics fp32: the statistics and the parameters' gradients as per-channel sums in double,
// over many blocks that add theirs into `sums` (scratch of 4 c doubles, the caller's: the sums,
// then per-channel coefficients); y and dx grid-stride, in packs where the maps' channels (NHWC)
// or planes (NCHW) are a whole number of packs. dx may be null (no input gradient).
template <class T>
void batchnorm_forward(cudaStream_t stream, const BnShape& s, bool train, const T* x,
                       const float* weight, const float* bias, T* y, float* mean, float* invstd,
                       float* running_mean, float* running_var, double* sums);
template <class T>
void batchnorm_backward(cudaStream_t stream, const BnShape& s, const T* x, const float* weight,
                        const float* mean, const float* invstd, const T* dy, T* dx, float* dweight,
                        float* dbias, double* sums);
// out[j] = the sum of column j of x (rows x cols, row-major: a bias's gradient; a linear layer's
// over the batch's rows, a convolution's on NHWC maps over n p q rows of k channels). Few rows:
// one block a column. Many (a convolution's pixels): the columns as the channels of NHWC maps,
// through batch norm's per-channel sums, where a warp reads 32 neighbouring values and the rows
// spread over the device (a block a column would read a value every cols elements, on cols
// blocks). sums: scratch of 2 cols doubles, the caller's.
template <class T>
void column_sums(cudaStream_t stream, const T* x, std::int64_t rows, std::int64_t cols, float* out,
                 double* sums);

// Each op's file registers its factory when the library loads, so make_device_impl() knows no
// op by name: `const bool registered = register_factory("gemm", make_gemm);`.
using Factory = std::unique_ptr<Impl> (*)(const std::string& op, const std::string& name,
                                          const Workload& w, int units);
bool register_factory(const std::string& op, Factory make);

// What gpu_math_note() says of dtype t on this device, with NVIDIA_TF32_OVERRIDE as it is set.
inline std::string math_note(Dtype t) {
  const char* v = std::getenv("NVIDIA_TF32_OVERRIDE");
  return gpu_math_note(t, device_info().cc_major, device_info().cc_minor, v ? v : "");
}

// Owns a cuBLAS handle whose work goes to `stream` (kernels/gemm.cu).
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle();
  cublasHandle_t get() const { return h_; }
  // cuBLAS's workspace in the caller's device memory (cublasSetWorkspace), not its own pool.
  void set_workspace(void* p, std::size_t bytes);

 private:
  cublasHandle_t h_ = nullptr;
};

// Owns pinned (page-locked) host memory.
class PinnedMem {
 public:
  explicit PinnedMem(std::size_t bytes) { PB_CUDA(cudaMallocHost(&p_, bytes)); }
  PinnedMem(const PinnedMem&) = delete;
  PinnedMem& operator=(const PinnedMem&) = delete;
  ~PinnedMem() { cudaFreeHost(p_); }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

}  // namespace pb::gpu
