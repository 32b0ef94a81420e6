// GPU convolution, from the simplest kernel to the library (NCHW, KCRS, as core/conv.hpp):
//   direct - one thread per output element of the pass (y, dx or dw), its sum read straight
//            from global memory through the index math the CPU's reference uses; db: one block
//            per output channel.
//   im2col - the CPU's im2col algorithm on the GPU: per image, an im2col kernel (col2im for dX)
//            and one cuBLAS sgemm.
//   cudnn  - cuDNN's convolution API: the fastest algorithm as cuDNN times them on this GPU
//            (cudnnFind*, as PyTorch's cudnn.benchmark) among those whose workspace fits
//            (kConvWorkspaceCap, counted by the memory check), true fp32
//            (FMA math) for fp32 and tensor cores for tf32; the case's detail names the
//            algorithm, Find's time for it, the runner-up and each faster one left out (why).
//            Find runs once per shape and layout in a process; later plans reuse its choice.
//            In bf16 and fp16 it runs on NHWC maps and KRSC filters in that type (the training
//            step's mixed-precision plans), the case's operands converted in prepare.
#include <cublas_v2.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/conv.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"
#include "kernels/maps.cuh"

#ifdef PAIRBENCH_HAVE_CUDNN
#include "kernels/cudnn.cuh"
#endif

namespace pb::gpu {

namespace {

constexpr int kThreads = 256;

struct FloatSum {
  float value = 0;
  __device__ void add(float t) { value += t; }
  __device__ void add(float a, float b) { value = fmaf(a, b, value); }
};

__global__ void conv_direct_kernel(ConvShape s, const float* in0, const float* in1, const float* b,
                                   float* out, std::int64_t count) {
  PB_GRID_STRIDE(i, count) {
    FloatSum sum;
    conv_terms(s, in0, in1, b, i, sum);
    out[i] = sum.value;
  }
}

// out[k]: one block per channel, a tree reduction in shared memory.
__global__ void channel_sums_kernel(const float* x, std::int64_t n, std::int64_t k, std::int64_t pq,
                                    float* out, float scale) {
  __shared__ float part[kThreads];
  const std::int64_t c = blockIdx.x, total = n * pq;
  float sum = 0;
  for (std::int64_t j = threadIdx.x; j < total; j += blockDim.x)
    sum += x[(j / pq * k + c) * pq + j % pq];
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[c] = scale * part[0];
}

__global__ void im2col_kernel(ConvShape s, const float* x, float* col) {
  const std::int64_t pq = s.pq();
  PB_GRID_STRIDE(i, s.crs() * pq) { col[i] = im2col_value(s, x, i / pq, i % pq); }
}

__global__ void col2im_kernel(ConvShape s, const float* col, float* x) {
  PB_GRID_STRIDE(i, s.c * s.h * s.w) {
    x[i] = col2im_value(s, col, i / (s.h * s.w), i / s.w % s.h, i % s.w);
  }
}

// One image's y (k x pq) set to the bias, before the GEMM adds W col to it.
__global__ void fill_bias_kernel(ConvShape s, const float* b, float* y) {
  const std::int64_t pq = s.pq();
  PB_GRID_STRIDE(i, s.k * pq) { y[i] = b[i / pq]; }
}

std::int64_t output_count(const ConvShape& s) {
  return s.dir == ConvDir::fwd ? s.y_size() : s.dir == ConvDir::bwd_data ? s.x_size() : s.w_size();
}

}  // namespace

// --- the op functions: enqueued on the caller's stream, over the caller's device buffers -------

void channel_sums(cudaStream_t stream, const float* x, std::int64_t n, std::int64_t k,
                  std::int64_t pq, float* out, float scale) {
  channel_sums_kernel<<<static_cast<unsigned>(k), kThreads, 0, stream>>>(x, n, k, pq, out, scale);
  PB_CUDA(cudaGetLastError());
}

void conv_bias_grad(cudaStream_t stream, const ConvShape& s, const float* dy, float* db) {
  channel_sums(stream, dy, s.n, s.k, s.pq(), db);
}

void conv_direct(cudaStream_t stream, const ConvShape& s, const float* in0, const float* in1,
                 const float* b, float* out, float* db) {
  static const int blocks = full_grid(conv_direct_kernel, kThreads);
  conv_direct_kernel<<<blocks, kThreads, 0, stream>>>(s, in0, in1, b, out, output_count(s));
  PB_CUDA(cudaGetLastError());
  if (s.dir == ConvDir::bwd_filter) conv_bias_grad(stream, s, in1, db);
}

void conv_im2col(cudaStream_t stream, cublasHandle_t handle, const ConvShape& s, const float* in0,
                 const float* in1, const float* b, float* out, float* db, float* col) {
  static const int im2col_blocks = full_grid(im2col_kernel, kThreads);
  static const int col2im_blocks = full_grid(col2im_kernel, kThreads);
  static const int bias_blocks = full_grid(fill_bias_kernel, kThreads);
  const std::int64_t pq = s.pq(), crs = s.crs(), x_img = s.c * s.h * s.w, y_img = s.k * pq;
  const bool identity = im2col_is_identity(s);  // then the image is its own column matrix
  GemmShape g;
  g.dtype = s.dtype == Dtype::tf32 ? Dtype::tf32 : Dtype::fp32;  // fp32 maps either way
  switch (s.dir) {
    case ConvDir::fwd:  // y_n = b + W (k x crs) col_n (crs x pq)
      g.m = s.k, g.n = pq, g.k = crs, g.beta = 1;
      for (std::int64_t n = 0; n < s.n; ++n) {
        const float* x = in0 + n * x_img;
        float* y = out + n * y_img;
        fill_bias_kernel<<<bias_blocks, kThreads, 0, stream>>>(s, b, y);
        if (!identity) im2col_kernel<<<im2col_blocks, kThreads, 0, stream>>>(s, x, col);
        PB_CUDA(cudaGetLastError());
        gemm_cublas(handle, g, in1, identity ? x : col, y);
      }
      break;
    case ConvDir::bwd_data:  // col_n = W^T (crs x k) dy_n (k x pq); dx_n = col2im(col_n)
      g.m = crs, g.n = pq, g.k = s.k, g.ta = true;
      for (std::int64_t n = 0; n < s.n; ++n) {
        float* dx = out + n * x_img;
        gemm_cublas(handle, g, in1, in0 + n * y_img, identity ? dx : col);
        if (!identity) col2im_kernel<<<col2im_blocks, kThreads, 0, stream>>>(s, col, dx);
        PB_CUDA(cudaGetLastError());
      }
      break;
    case ConvDir::bwd_filter:  // dW += dy_n (k x pq) col_n^T (pq x crs); db = sum of dy
      g.m = s.k, g.n = crs, g.k = pq, g.tb = true;
      for (std::int64_t n = 0; n < s.n; ++n) {
        const float* x = in0 + n * x_img;
        if (!identity) im2col_kernel<<<im2col_blocks, kThreads, 0, stream>>>(s, x, col);
        PB_CUDA(cudaGetLastError());
        g.beta = n == 0 ? 0.0f : 1.0f;
        gemm_cublas(handle, g, in1 + n * y_img, identity ? x : col, out);
      }
      conv_bias_grad(stream, s, in1, db);
      break;
  }
}

// --- the implementations: thin adapters over the op functions ---------------------------------

namespace {

// The pass's operands on the device (in0, in1, and b for fwd, as core/conv.hpp names them) and
// its outputs (out, and db for bwd_filter).
class GpuConv : public GpuImpl {
 public:
  explicit GpuConv(const ConvShape& s) : s_(s) {
    if (s.x_size() > INT_MAX || s.y_size() > INT_MAX || s.w_size() > INT_MAX)
      throw std::runtime_error("conv tensors of 2^31 elements or more are not supported");
  }
  void prepare(const Tensors& in) override {
    const auto [name0, name1] = conv_operands(s_.dir);
    in0_ = to_device(at(in, name0));
    in1_ = to_device(at(in, name1));
    if (s_.dir == ConvDir::fwd) b_ = to_device(at(in, "b"));
    outputs_ = conv_outputs(s_);
    out_ = DeviceMem(outputs_[0].bytes());
    if (outputs_.size() > 1) db_ = DeviceMem(outputs_[1].bytes());
  }
  Tensors result() override {
    Tensors r;
    const DeviceMem* mem[2] = {&out_, &db_};
    for (std::size_t j = 0; j < outputs_.size(); ++j)
      r.push_back(download(outputs_[j].name(), outputs_[j].dims(), mem[j]->as<void>()));
    return r;
  }

 protected:
  DeviceMem to_device(const Tensor& t) {
    DeviceMem d(t.bytes());
    upload(d.as<void>(), t);
    return d;
  }

  ConvShape s_;
  DeviceMem in0_, in1_, b_, out_, db_;
  Tensors outputs_;  // their names and shapes
};

class DirectConv : public GpuConv {
 public:
  using GpuConv::GpuConv;
  void run() override {
    conv_direct(stream_, s_, in0_.as<float>(), in1_.as<float>(), b_.as<float>(), out_.as<float>(),
                db_.as<float>());
  }
};

class Im2colConv : public GpuConv {
 public:
  explicit Im2colConv(const ConvShape& s)
      : GpuConv(s), handle_(stream_), col_(static_cast<std::size_t>(s.crs() * s.pq()) * 4) {}
  void run() override {
    conv_im2col(stream_, handle_.get(), s_, in0_.as<float>(), in1_.as<float>(), b_.as<float>(),
                out_.as<float>(), db_.as<float>(), col_.as<float>());
  }
  std::string detail() const override { return math_note(s_.dtype); }  // tf32 where it is not

 private:
  CublasHandle handle_;
  DeviceMem col_;  // one image's column matrix
};

}  // namespace

#ifdef PAIRBENCH_HAVE_CUDNN
// The names of cuDNN's convolution algorithms (beside kernels/cudnn.cuh's shared helpers).
namespace cudnn_detail {

inline const char* fwd_algo_name(int a) {
  static const char* names[] = {
      "implicit_gemm", "implicit_precomp_gemm", "gemm", "direct", "fft", "fft_tiling",
      "winograd",      "winograd_nonfused"};
  return a >= 0 && a < 8 ? names[a] : "unknown";
}
inline const char* bwd_data_algo_name(int a) {
  static const char* names[] = {"algo_0",     "algo_1",   "fft",
                                "fft_tiling", "winograd", "winograd_nonfused"};
  return a >= 0 && a < 6 ? names[a] : "unknown";
}
inline const char* bwd_filter_algo_name(int a) {
  static const char* names[] = {
      "algo_0", "algo_1", "fft", "algo_3", "winograd", "winograd_nonfused", "fft_tiling"};
  return a >= 0 && a < 7 ? names[a] : "unknown";
}

}  // namespace cudnn_detail
#endif

#ifdef PAIRBENCH_HAVE_CUDNN
// The plan's cuDNN objects: its handle on the caller's stream, the descriptors, the chosen
// algorithm and its workspace.
using namespace cudnn_detail;

// What Find chose for a plan, kept for the process: a later plan of the same shape and layout
// (the graph step's beside the plain step's, a later case's) runs the same algorithm without
// timing every algorithm again (Find runs each, seconds a step at batch 256), and two
// implementations of one step then differ in nothing cuDNN chose. The key holds no device: a
// process uses one GPU. A search in which some algorithm could not get its memory (legacy Find
// allocates its own) is not kept: a later plan, with more memory free, searches again.
namespace {
struct FoundAlgorithm {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  std::size_t workspace_bytes = 0;
  std::string search;
};
std::map<ConvPlanKey, FoundAlgorithm>& found_algorithms() {
  static std::map<ConvPlanKey, FoundAlgorithm> found;
  return found;
}
std::mutex& found_algorithms_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

struct CudnnConvolution::State {
  ConvShape s;
  CudnnObject<cudnnHandle_t, cudnnDestroy> handle;
  CudnnObject<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor> x, y, b;
  CudnnObject<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor> w;
  CudnnObject<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor> conv;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  std::size_t workspace_bytes = 0;
  std::string detail;

  // How many algorithms Find could not time for want of memory.
  int unallocated = 0;

  // Find's ranking as the case's detail gives it: the runner-up among the algorithms allowed,
  // and each faster one that was left out, with why.
  std::string search;

  // The fastest algorithm (cuDNN's Find ranks them by the time it measured) that ran, fits
  // the workspace cap and, for fp32, uses no tensor cores (below fp32, no FFT or Winograd
  // transform). With the heuristics' first choice, the resnet step at batch 1 on an H100 was
  // 3.7x slower than with im2col + cuBLAS (2.4x slower than with Find's).
  template <class Perf>
  const Perf* pick(const Perf* perf, int returned, cudnnMathType_t math, const char* (*name)(int)) {
    auto timed = [&](const Perf& a) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s %.3f ms", name(static_cast<int>(a.algo)),
                    static_cast<double>(a.time));
      return std::string(buf);
    };
    const Perf *chosen = nullptr, *runner_up = nullptr;
    std::string left_out;
    auto transforms = [](const std::string& algo) {
      return algo.find("fft") != std::string::npos || algo.find("winograd") != std::string::npos;
    };
    for (int i = 0; i < returned && !runner_up; ++i) {
      const Perf& a = perf[i];
      if (a.status != CUDNN_STATUS_SUCCESS) continue;
      std::string why;
      if (a.memory > kConvWorkspaceCap)
        why = "workspace " + std::to_string(a.memory >> 20) + " MiB over the cap";
      // DEFAULT math would let cuDNN use TF32 tensor cores again: fp32 takes FMA entries only.
      else if (math == CUDNN_FMA_MATH && a.mathType != CUDNN_FMA_MATH)
        why = "tensor-op math, not fp32";
      // tf32 allows tensor cores, not fp32 data converted down to fp16
      else if (a.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        why = "converts its data to fp16";
      // An FFT or Winograd algorithm multiplies transformed operands, which tensor-op math may
      // round to tf32 or 16 bits: an error of the precision's unit on each product, where the
      // check's bound (ConvWorkload::tolerance) holds only the sums' rounding, as the inputs are
      // exact in the dtype. fp32 takes them (FMA math: the transforms stay fp32).
      else if (math != CUDNN_FMA_MATH && transforms(name(static_cast<int>(a.algo))))
        why = "transformed operands in tensor-op math";
      if (!why.empty()) {
        if (!chosen) left_out += (left_out.empty() ? "" : ", ") + timed(a) + " (" + why + ")";
        continue;
      }
      (chosen ? runner_up : chosen) = &a;
    }
    if (!chosen) {
      std::string returned_all;  // every entry Find returned, with its status, math and memory
      for (int i = 0; i < returned; ++i)
        returned_all += (i ? ", " : "") + timed(perf[i]) + " " +
                        cudnnGetErrorString(perf[i].status) + " math " +
                        std::to_string(static_cast<int>(perf[i].mathType)) + " workspace " +
                        std::to_string(perf[i].memory >> 20) + " MiB";
      throw std::runtime_error(
          "cuDNN's Find kept no algorithm for this convolution (the workspace cap " +
          std::to_string(kConvWorkspaceCap >> 20) + " MiB; fp32 takes FMA math only; below fp32 " +
          "no FFT, Winograd or fp16 conversion): it returned " + std::to_string(returned) +
          (returned ? ": " + returned_all : std::string()));
    }
    PB_CUDNN(cudnnSetConvolutionMathType(conv.get(), chosen->mathType));
    workspace_bytes = chosen->memory;
    search = "Find: " + timed(*chosen) +
             (runner_up ? ", runner-up " + timed(*runner_up) : ", no runner-up") +
             (left_out.empty() ? "" : "; faster but left out: " + left_out);
    unallocated = 0;
    for (int i = 0; i < returned; ++i)
      unallocated += perf[i].status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ||
                     perf[i].status == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    if (unallocated > 0)
      search +=
          "; " + std::to_string(unallocated) + " not timed: Find could not allocate their memory";
    return chosen;
  }
  void choose_algorithm(cudnnMathType_t math, const ConvPlanKey& key) {
    std::lock_guard<std::mutex> lock(found_algorithms_mutex());
    auto seen = found_algorithms().find(key);
    if (seen != found_algorithms().end()) {
      reuse(seen->second);
    } else {
      find(math);
      cudnnMathType_t chosen = CUDNN_DEFAULT_MATH;
      PB_CUDNN(cudnnGetConvolutionMathType(conv.get(), &chosen));
      const int algo = s.dir == ConvDir::fwd        ? static_cast<int>(fwd)
                       : s.dir == ConvDir::bwd_data ? static_cast<int>(bwd_data)
                                                    : static_cast<int>(bwd_filter);
      if (unallocated == 0) found_algorithms()[key] = {algo, chosen, workspace_bytes, search};
    }
    const std::string name = s.dir == ConvDir::fwd        ? fwd_algo_name(fwd)
                             : s.dir == ConvDir::bwd_data ? bwd_data_algo_name(bwd_data)
                                                          : bwd_filter_algo_name(bwd_filter);
    cudnnMathType_t used = CUDNN_DEFAULT_MATH;
    PB_CUDNN(cudnnGetConvolutionMathType(conv.get(), &used));
    detail = "cudnn " + std::to_string(cudnnGetVersion()) + ": " + name +
             (used == CUDNN_FMA_MATH ? ", fma math" : ", tensor-op math allowed") + ", workspace " +
             std::to_string(workspace_bytes) + " B; " + search;
    const std::string note = math_note(s.dtype);
    if (!note.empty()) detail += "; " + note;
  }
  // An earlier plan's choice, for this one's descriptors.
  void reuse(const FoundAlgorithm& f) {
    switch (s.dir) {
      case ConvDir::fwd:
        fwd = static_cast<cudnnConvolutionFwdAlgo_t>(f.algo);
        break;
      case ConvDir::bwd_data:
        bwd_data = static_cast<cudnnConvolutionBwdDataAlgo_t>(f.algo);
        break;
      case ConvDir::bwd_filter:
        bwd_filter = static_cast<cudnnConvolutionBwdFilterAlgo_t>(f.algo);
        break;
    }
    PB_CUDNN(cudnnSetConvolutionMathType(conv.get(), f.math));
    workspace_bytes = f.workspace_bytes;
    search = f.search + " (an earlier plan's search in this run)";
  }
  // cuDNN's Find, timing every algorithm for this convolution; pick() keeps the fastest allowed.
  // Its list has room for as many entries as cuDNN says it may return (MaxCount: each algorithm
  // once per math type this device runs it in, more than the enum's ALGO_COUNT). Find allocates
  // its own buffers: one it could not allocate (an algorithm counted in `unallocated`) may leave
  // cudaErrorMemoryAllocation as the runtime's last error, which the next launch's check would
  // report as that launch's failure; it is cleared before anything else can throw.
  void find(cudnnMathType_t math) {
    switch (s.dir) {
      case ConvDir::fwd:
        fwd = find_pass<cudnnConvolutionFwdAlgoPerf_t>(
            math, fwd_algo_name, cudnnGetConvolutionForwardAlgorithmMaxCount,
            "cudnnFindConvolutionForwardAlgorithm", [&](int most, int* returned, auto* perf) {
              return cudnnFindConvolutionForwardAlgorithm(
                  handle.get(), x.get(), w.get(), conv.get(), y.get(), most, returned, perf);
            });
        break;
      case ConvDir::bwd_data:
        bwd_data = find_pass<cudnnConvolutionBwdDataAlgoPerf_t>(
            math, bwd_data_algo_name, cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
            "cudnnFindConvolutionBackwardDataAlgorithm", [&](int most, int* returned, auto* perf) {
              return cudnnFindConvolutionBackwardDataAlgorithm(
                  handle.get(), w.get(), y.get(), conv.get(), x.get(), most, returned, perf);
            });
        break;
      case ConvDir::bwd_filter:
        bwd_filter = find_pass<cudnnConvolutionBwdFilterAlgoPerf_t>(
            math, bwd_filter_algo_name, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
            "cudnnFindConvolutionBackwardFilterAlgorithm",
            [&](int most, int* returned, auto* perf) {
              return cudnnFindConvolutionBackwardFilterAlgorithm(
                  handle.get(), x.get(), y.get(), conv.get(), w.get(), most, returned, perf);
            });
        break;
    }
  }
  // One pass's Find (find_in: the pass's cudnnFind* on this plan's descriptors), then pick().
  template <class Perf, class FindIn>
  decltype(Perf::algo) find_pass(cudnnMathType_t math, const char* (*name)(int),
                                 cudnnStatus_t (*max_count)(cudnnHandle_t, int*), const char* what,
                                 FindIn find_in) {
    int most = 0, returned = 0;
    PB_CUDNN(max_count(handle.get(), &most));
    std::vector<Perf> perf(static_cast<std::size_t>(std::max(most, 1)));
    const cudnnStatus_t st = find_in(most, &returned, perf.data());
    (void)cudaGetLastError();
    if (st != CUDNN_STATUS_SUCCESS)
      fail(what, cudnn_detail::cudnn_error(st).c_str(), __FILE__, __LINE__);
    return pick(perf.data(), returned, math, name)->algo;
  }
};

CudnnConvolution::CudnnConvolution(cudaStream_t stream, const ConvShape& s, bool channels_last)
    : st_(std::make_unique<State>()) {
  State& t = *st_;
  t.s = s;
  const bool low = s.dtype == Dtype::bf16 || s.dtype == Dtype::fp16;
  if (low && s.bias)
    throw std::runtime_error("a 16-bit cuDNN plan takes no bias (its caller puts it in y first)");
  const cudnnDataType_t data = s.dtype == Dtype::bf16   ? CUDNN_DATA_BFLOAT16
                               : s.dtype == Dtype::fp16 ? CUDNN_DATA_HALF
                                                        : CUDNN_DATA_FLOAT;
  const cudnnTensorFormat_t format = channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  PB_CUDNN(cudnnCreate(t.handle.out()));
  PB_CUDNN(cudnnSetStream(t.handle.get(), stream));
  const int n = static_cast<int>(s.n), c = static_cast<int>(s.c), h = static_cast<int>(s.h),
            w = static_cast<int>(s.w), k = static_cast<int>(s.k), p = static_cast<int>(s.p()),
            q = static_cast<int>(s.q());
  PB_CUDNN(cudnnCreateTensorDescriptor(t.x.out()));
  PB_CUDNN(cudnnSetTensor4dDescriptor(t.x.get(), format, data, n, c, h, w));
  PB_CUDNN(cudnnCreateTensorDescriptor(t.y.out()));
  PB_CUDNN(cudnnSetTensor4dDescriptor(t.y.get(), format, data, n, k, p, q));
  PB_CUDNN(cudnnCreateTensorDescriptor(t.b.out()));
  PB_CUDNN(cudnnSetTensor4dDescriptor(t.b.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, k, 1, 1));
  PB_CUDNN(cudnnCreateFilterDescriptor(t.w.out()));
  PB_CUDNN(cudnnSetFilter4dDescriptor(t.w.get(), data, format, k, c, static_cast<int>(s.r),
                                      static_cast<int>(s.s)));
  PB_CUDNN(cudnnCreateConvolutionDescriptor(t.conv.out()));
  PB_CUDNN(cudnnSetConvolution2dDescriptor(t.conv.get(), static_cast<int>(s.pad_h),
                                           static_cast<int>(s.pad_w), static_cast<int>(s.stride_h),
                                           static_cast<int>(s.stride_w), 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  // fp32 is fp32: cuDNN would otherwise run TF32 tensor cores on Ampere and later. bf16 and
  // fp16 accumulate in fp32 (the descriptor's compute type) on tensor cores.
  const cudnnMathType_t math = s.dtype == Dtype::fp32 ? CUDNN_FMA_MATH
                               : low                  ? CUDNN_TENSOR_OP_MATH
                                                      : CUDNN_DEFAULT_MATH;
  PB_CUDNN(cudnnSetConvolutionMathType(t.conv.get(), math));
  int on = 0, oc = 0, op = 0, oq = 0;  // cuDNN's own output size must be ours
  PB_CUDNN(cudnnGetConvolution2dForwardOutputDim(t.conv.get(), t.x.get(), t.w.get(), &on, &oc, &op,
                                                 &oq));
  if (on != n || oc != k || op != p || oq != q)
    throw std::runtime_error("cuDNN's output size differs from the workload's");
  // Find times the convolution alone (run() adds the bias and sums its gradient apart): a layer
  // with a bias and one without share a search.
  ConvShape searched = s;
  searched.bias = false;
  t.choose_algorithm(math, conv_plan_key(searched, channels_last));
}

CudnnConvolution::~CudnnConvolution() = default;

std::string CudnnConvolution::detail() const { return st_->detail; }
std::size_t CudnnConvolution::workspace_bytes() const { return st_->workspace_bytes; }

void CudnnConvolution::run(const void* in0, const void* in1, const float* b, void* out, float* db,
                           void* ws, bool accumulate) {
  State& t = *st_;
  const float one = 1, zero = 0;
  const float* beta = accumulate ? &one : &zero;
  switch (t.s.dir) {
    case ConvDir::fwd:
      PB_CUDNN(cudnnConvolutionForward(t.handle.get(), &one, t.x.get(), in0, t.w.get(), in1,
                                       t.conv.get(), t.fwd, ws, t.workspace_bytes, beta, t.y.get(),
                                       out));
      if (t.s.bias)
        PB_CUDNN(cudnnAddTensor(t.handle.get(), &one, t.b.get(), b, &one, t.y.get(), out));
      break;
    case ConvDir::bwd_data:
      PB_CUDNN(cudnnConvolutionBackwardData(t.handle.get(), &one, t.w.get(), in1, t.y.get(), in0,
                                            t.conv.get(), t.bwd_data, ws, t.workspace_bytes, beta,
                                            t.x.get(), out));
      break;
    case ConvDir::bwd_filter:
      PB_CUDNN(cudnnConvolutionBackwardFilter(t.handle.get(), &one, t.x.get(), in0, t.y.get(), in1,
                                              t.conv.get(), t.bwd_filter, ws, t.workspace_bytes,
                                              beta, t.w.get(), out));
      if (t.s.bias)
        PB_CUDNN(cudnnConvolutionBackwardBias(t.handle.get(), &one, t.y.get(), in1, &zero,
                                              t.b.get(), db));
      break;
  }
}
#else
struct CudnnConvolution::State {};
CudnnConvolution::CudnnConvolution(cudaStream_t, const ConvShape&, bool) {
  throw std::runtime_error(cudnn_unavailable());
}
CudnnConvolution::~CudnnConvolution() = default;
std::string CudnnConvolution::detail() const { return ""; }
std::size_t CudnnConvolution::workspace_bytes() const { return 0; }
void CudnnConvolution::run(const void*, const void*, const float*, void*, float*, void*, bool) {}
#endif

namespace {

// conv/gpu/cudnn: the plan over the case's buffers.
class CudnnConv : public GpuConv {
 public:
  explicit CudnnConv(const ConvShape& s)
      : GpuConv(s), plan_(stream_, s), workspace_(plan_.workspace_bytes()) {}
  std::string detail() const override { return plan_.detail(); }
  void run() override {
    plan_.run(in0_.as<float>(), in1_.as<float>(), b_.as<float>(), out_.as<float>(), db_.as<float>(),
              workspace_.as<void>());
  }

 private:
  CudnnConvolution plan_;
  DeviceMem workspace_;
};

// conv/gpu/cudnn in bf16 and fp16: the plan on NHWC maps and KRSC filters in T (tensor cores,
// fp32 accumulation, T out), as the mixed-precision training step runs its convolutions. The
// case's fp32 NCHW operands are converted and relayouted in prepare, and the output back in
// result(), outside the timed region (as oneDNN's reorders on the CPU); the bias (fwd: put in y
// first, cuDNN adding the convolution to it) and its gradient (bwd_filter, in fp32) are
// computed in run(), by the project's kernels.
template <class T>
class CudnnLowConv : public GpuConv {
 public:
  explicit CudnnLowConv(const ConvShape& s)
      : GpuConv(s),
        plan_(stream_, unbiased(s), true),
        workspace_(plan_.workspace_bytes()),
        sums_(2 * static_cast<std::size_t>(s.k) * sizeof(double)) {}
  void prepare(const Tensors& in) override {
    GpuConv::prepare(in);
    lo0_ = to_low(in0_, operand(0)), lo1_ = to_low(in1_, operand(1));
    lo_out_ = DeviceMem(static_cast<std::size_t>(output().size()) * sizeof(T));
    PB_CUDA(cudaStreamSynchronize(stream_));
  }
  void run() override {
    // fwd: the bias first in y (rounded to T there), which cuDNN adds the
    // convolution to.
    const bool fwd = s_.dir == ConvDir::fwd;
    if (fwd) bias_rows(stream_, b_.as<float>(), lo_out_.as<T>(), s_.n * s_.pq(), s_.k);
    plan_.run(lo0_.as<T>(), lo1_.as<T>(), nullptr, lo_out_.as<T>(), nullptr, workspace_.as<void>(),
              fwd);
    if (s_.dir == ConvDir::bwd_filter)  // dy (NHWC): n p q rows of k channels
      column_sums(stream_, lo1_.as<T>(), s_.n * s_.pq(), s_.k, db_.as<float>(), sums_.as<double>());
  }
  Tensors result() override {
    Maps back = output();
    back.channels_last = true;
    relayout(stream_, back, lo_out_.as<T>(), out_.as<float>());
    return GpuConv::result();  // on the same stream, after the relayout
  }
  std::string detail() const override {
    return plan_.detail() + "; NHWC maps and KRSC filters in " + to_string(s_.dtype) +
           ", the output too (converted in prepare and result, untimed)";
  }

 private:
  static ConvShape unbiased(ConvShape s) {
    s.bias = false;  // added by run()
    return s;
  }
  // The operands and the output as maps (NCHW, KCRS: a filter bank is k "images" of c
  // channels).
  Maps x_maps() const { return {s_.n, s_.c, s_.h * s_.w, false}; }
  Maps y_maps() const { return {s_.n, s_.k, s_.pq(), false}; }
  Maps w_maps() const { return {s_.k, s_.c, s_.r * s_.s, false}; }
  Maps operand(int which) const {
    switch (s_.dir) {
      case ConvDir::fwd:
        return which == 0 ? x_maps() : w_maps();
      case ConvDir::bwd_data:
        return which == 0 ? y_maps() : w_maps();
      default:
        return which == 0 ? x_maps() : y_maps();
    }
  }
  Maps output() const {
    return s_.dir == ConvDir::fwd ? y_maps() : s_.dir == ConvDir::bwd_data ? x_maps() : w_maps();
  }
  DeviceMem to_low(const DeviceMem& f32, const Maps& m) {
    DeviceMem d(static_cast<std::size_t>(m.size()) * sizeof(T));
    relayout(stream_, m, f32.as<float>(), d.as<T>());
    return d;
  }

  CudnnConvolution plan_;
  DeviceMem workspace_, lo0_, lo1_, lo_out_;
  DeviceMem sums_;  // column_sums' scratch
};

std::unique_ptr<Impl> make_conv(const std::string&, const std::string& name, const Workload& w,
                                int) {
  const ConvShape& s = static_cast<const ConvWorkload&>(w).conv();
  if (name == "direct") return std::make_unique<DirectConv>(s);
  if (name == "im2col") return std::make_unique<Im2colConv>(s);
  if (name == "cudnn" && s.dtype == Dtype::bf16)
    return std::make_unique<CudnnLowConv<__nv_bfloat16>>(s);
  if (name == "cudnn" && s.dtype == Dtype::fp16) return std::make_unique<CudnnLowConv<__half>>(s);
  if (name == "cudnn") return std::make_unique<CudnnConv>(s);
  throw std::runtime_error("unknown GPU conv implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("conv", make_conv);

}  // namespace

}  // namespace pb::gpu
