// GPU GEMM, from the simplest kernel to the library (row-major, as core/gemm.hpp defines):
//   naive  - one thread per element of C, operands read straight from global memory.
//   tiled  - 64x64 tiles of op(A) and op(B) staged in shared memory, each thread keeping a
//            4x4 block of C in registers: every loaded value is reused 64 times; tiles loaded
//            along each operand's contiguous dimension (coalesced for every transpose) into
//            shared arrays padded by 4 columns (2-way, not 16-way, bank conflicts on stores).
//   cublas - cublasSgemm for fp32; cublasGemmEx on tensor cores for tf32, fp16 and bf16
//            (fp32 accumulation and output).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/gemm.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

__global__ void gemm_naive_kernel(GemmShape s, const float* a, const float* b, float* c) {
  const std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t i = blockIdx.y * static_cast<std::int64_t>(blockDim.y) + threadIdx.y;
  if (i >= s.m || j >= s.n) return;
  float acc = 0;
  for (std::int64_t l = 0; l < s.k; ++l)
    acc += a[op_index(s.ta, i, l, s.lda())] * b[op_index(s.tb, l, j, s.ldb())];
  float& out = c[i * s.n + j];
  out = s.alpha * acc + (s.beta == 0.0f ? 0.0f : s.beta * out);
}

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4, THREADS = (BM / TM) * (BN / TN);

__global__ void __launch_bounds__(THREADS)
    gemm_tiled_kernel(GemmShape s, const float* a, const float* b, float* c) {
  // [l][row] and [l][col]. Rows padded by 4 floats: the 16 values stored along l when the loads
  // walk along l land in 8 banks, twice each, instead of all in one; rows stay 16-byte aligned,
  // so the inner loop still reads 4 floats with one 128-bit load.
  __shared__ float as[BK][BM + 4];
  __shared__ float bs[BK][BN + 4];
  const int tx = threadIdx.x % (BN / TN), ty = threadIdx.x / (BN / TN);
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * BM;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * BN;
  float acc[TM][TN] = {};
  for (std::int64_t k0 = 0; k0 < s.k; k0 += BK) {
    // Edge tiles are padded with zeros by op_load, so the inner loop needs no bounds checks.
    for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
      int r, l;
      tile_element(s.ta, e, BM, BK, &r, &l);
      as[l][r] = op_load(a, s.ta, row0 + r, k0 + l, s.m, s.k, s.lda());
    }
    for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
      int l, col;
      tile_element(s.tb, e, BK, BN, &l, &col);
      bs[l][col] = op_load(b, s.tb, k0 + l, col0 + col, s.k, s.n, s.ldb());
    }
    __syncthreads();
#pragma unroll
    for (int l = 0; l < BK; ++l) {
      float ar[TM], br[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) ar[i] = as[l][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) br[j] = bs[l][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += ar[i] * br[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < TM; ++i) {
    const std::int64_t r = row0 + ty * TM + i;
    for (int j = 0; j < TN; ++j) {
      const std::int64_t col = col0 + tx * TN + j;
      if (r < s.m && col < s.n) {
        float& out = c[r * s.n + col];
        out = s.alpha * acc[i][j] + (s.beta == 0.0f ? 0.0f : s.beta * out);
      }
    }
  }
}

const char* cublas_error(cublasStatus_t st) { return cublasGetStatusString(st); }

#define PB_CUBLAS(call)                                                                   \
  do {                                                                                    \
    cublasStatus_t st_ = (call);                                                          \
    if (st_ != CUBLAS_STATUS_SUCCESS) fail(#call, cublas_error(st_), __FILE__, __LINE__); \
  } while (0)

}  // namespace

// --- the op functions: enqueued on the caller's stream, over the caller's device buffers -------

void gemm_naive(cudaStream_t stream, const GemmShape& s, const float* a, const float* b, float* c) {
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>((s.n + block.x - 1) / block.x),
                  static_cast<unsigned>((s.m + block.y - 1) / block.y));
  if ((s.m + block.y - 1) / block.y > 65535) throw std::runtime_error("m too large for naive");
  gemm_naive_kernel<<<grid, block, 0, stream>>>(s, a, b, c);
  PB_CUDA(cudaGetLastError());
}

void gemm_tiled(cudaStream_t stream, const GemmShape& s, const float* a, const float* b, float* c) {
  const dim3 grid(static_cast<unsigned>((s.n + BN - 1) / BN),
                  static_cast<unsigned>((s.m + BM - 1) / BM));
  if ((s.m + BM - 1) / BM > 65535) throw std::runtime_error("m too large for tiled");
  gemm_tiled_kernel<<<grid, THREADS, 0, stream>>>(s, a, b, c);
  PB_CUDA(cudaGetLastError());
}

void gemm_cublas(cublasHandle_t handle, const GemmShape& s, const void* a, const void* b,
                 float* c) {
  gemm_cublas(handle, s, a, b, c, CUDA_R_32F);
}

void gemm_cublas(cublasHandle_t handle, const GemmShape& s, const void* a, const void* b, void* c,
                 cudaDataType_t c_type) {
  if (s.m > INT_MAX || s.n > INT_MAX || s.k > INT_MAX)
    throw std::runtime_error("GEMM dimensions exceed the range of int");
  const ColMajorGemmArgs g = col_major_args(s);
  const cublasOperation_t op1 = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op2 = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  const int ld1 = static_cast<int>(g.ld_first), ld2 = static_cast<int>(g.ld_second),
            ldc = static_cast<int>(g.ldc);
  if (s.dtype == Dtype::fp32 && c_type == CUDA_R_32F) {
    PB_CUBLAS(cublasSgemm(handle, op1, op2, m, n, k, &s.alpha, static_cast<const float*>(b), ld1,
                          static_cast<const float*>(a), ld2, &s.beta, static_cast<float*>(c), ldc));
    return;
  }
  const cudaDataType_t ab = s.dtype == Dtype::fp16   ? CUDA_R_16F
                            : s.dtype == Dtype::bf16 ? CUDA_R_16BF
                                                     : CUDA_R_32F;
  const cublasComputeType_t compute =
      s.dtype == Dtype::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (c_type != CUDA_R_32F && c_type != ab)
    throw std::runtime_error("cuBLAS's GEMM takes C in fp32 or in A's and B's type");
  PB_CUBLAS(cublasGemmEx(handle, op1, op2, m, n, k, &s.alpha, b, ab, ld1, a, ab, ld2, &s.beta, c,
                         c_type, ldc, compute, CUBLAS_GEMM_DEFAULT));
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  PB_CUBLAS(cublasCreate(&h_));
  const cublasStatus_t st = cublasSetStream(h_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) {  // the destructor will not run: release the handle here
    cublasDestroy(h_);
    fail("cublasSetStream", cublas_error(st), __FILE__, __LINE__);
  }
}

CublasHandle::~CublasHandle() { cublasDestroy(h_); }

void CublasHandle::set_workspace(void* p, std::size_t bytes) {
  PB_CUBLAS(cublasSetWorkspace(h_, p, bytes));
}

// --- the implementations: thin adapters over the op functions ---------------------------------

namespace {

// Holds the operands on the device: A and B in the dtype's storage type, C in fp32.
class GpuGemm : public GpuImpl {
 public:
  explicit GpuGemm(const GemmShape& s) : s_(s) {
    if (s.m > INT_MAX || s.n > INT_MAX || s.k > INT_MAX)
      throw std::runtime_error("GEMM dimensions exceed the range of int");
  }
  void prepare(const Tensors& in) override {
    a_ = to_device(at(in, "a").f32());
    b_ = to_device(at(in, "b").f32());
    const Tensor& c = at(in, "c");
    c_ = DeviceMem(c.bytes());
    // C is an input only when beta is not 0 (cuBLAS and the kernels do not read it then).
    if (s_.beta != 0.0f) upload(c_.as<void>(), c);
  }
  Tensors result() override { return {download("c", {s_.m, s_.n}, c_.as<void>())}; }

 protected:
  GemmShape s_;
  DeviceMem a_, b_, c_;

 private:
  template <class T, class Convert>
  DeviceMem upload_as(const std::vector<float>& x, Convert convert) {
    std::vector<T> h(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) h[i] = convert(x[i]);
    DeviceMem d(h.size() * sizeof(T));
    upload(d.as<void>(), h.data(), h.size() * sizeof(T));
    return d;
  }
  DeviceMem to_device(const std::vector<float>& x) {
    switch (s_.dtype) {
      case Dtype::fp16:
        return upload_as<__half>(x, [](float v) { return __float2half(v); });
      case Dtype::bf16:
        return upload_as<__nv_bfloat16>(x, [](float v) { return __float2bfloat16(v); });
      default:
        return upload_as<float>(x, [](float v) { return v; });
    }
  }
};

class NaiveGemm : public GpuGemm {
 public:
  using GpuGemm::GpuGemm;
  void run() override { gemm_naive(stream_, s_, a_.as<float>(), b_.as<float>(), c_.as<float>()); }
};

class TiledGemm : public GpuGemm {
 public:
  using GpuGemm::GpuGemm;
  void run() override { gemm_tiled(stream_, s_, a_.as<float>(), b_.as<float>(), c_.as<float>()); }
};

class CublasGemm : public GpuGemm {
 public:
  explicit CublasGemm(const GemmShape& s)
      : GpuGemm(s), handle_(stream_), note_(math_note(s.dtype)) {}
  std::string detail() const override { return note_; }
  void run() override {
    gemm_cublas(handle_.get(), s_, a_.as<void>(), b_.as<void>(), c_.as<float>());
  }

 private:
  CublasHandle handle_;
  std::string note_;
};

std::unique_ptr<Impl> make_gemm(const std::string&, const std::string& name, const Workload& w,
                                int) {
  const GemmShape& shape = static_cast<const GemmWorkload&>(w).gemm();
  if (name == "naive") return std::make_unique<NaiveGemm>(shape);
  if (name == "tiled") return std::make_unique<TiledGemm>(shape);
  if (name == "cublas") return std::make_unique<CublasGemm>(shape);
  throw std::runtime_error("unknown GPU GEMM implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("gemm", make_gemm);

}  // namespace

}  // namespace pb::gpu
