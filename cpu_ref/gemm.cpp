// CPU GEMM, from the reference to the library:
//   naive    - one thread, the textbook triple loop with double accumulation: the reference.
//   omp      - packs cache-sized blocks of op(A) and op(B), then a register-blocked micro-kernel
//              whose inner loop the compiler vectorizes; OpenMP over row blocks.
//   openblas - cblas_sgemm: hand-written assembly kernels for this CPU's ISA.
//   onednn   - oneDNN's matmul (JIT-generated kernels for this CPU, AMX tiles where usable), for
//              fp32 and for bf16/fp16 inputs with fp32 accumulation and output.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "core/gemm.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

// --- the op functions: C = alpha op(A) op(B) + beta C over the caller's buffers ---------------

void gemm_naive(const GemmShape& s, const float* a, const float* b, float* c) {
  for (std::int64_t i = 0; i < s.m; ++i) {
    for (std::int64_t j = 0; j < s.n; ++j) {
      double acc = 0;
      for (std::int64_t l = 0; l < s.k; ++l)
        acc += static_cast<double>(a[op_index(s.ta, i, l, s.lda())]) *
               b[op_index(s.tb, l, j, s.ldb())];
      float& out = c[i * s.n + j];
      out = static_cast<float>(s.alpha * acc + (s.beta == 0.0f ? 0.0 : s.beta * out));
    }
  }
}

namespace {

// Block sizes: a KC x NC panel of op(B) stays in L2/L3, an MC x KC block of op(A) per thread
// in L2, and an MR x NR tile of C in vector registers (4 x 64 floats = 16 AVX-512 registers).
constexpr std::int64_t MC = 64, KC = 256, NC = 512, MR = 4, NR = 64;

std::int64_t round_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }

// C[0:MR][0:NR] += alpha * Ap[0:MR][0:kc] * Bp[0:kc][0:NR], with Ap row stride kc and Bp row
// stride nc; only the first rows x cols of the tile are written back.
inline void micro_kernel(const float* ap, const float* bp, std::int64_t kc, std::int64_t nc,
                         float alpha, float* c, std::int64_t ldc, std::int64_t rows,
                         std::int64_t cols) {
  float acc[MR][NR] = {};
  for (std::int64_t l = 0; l < kc; ++l) {
    const float* b = bp + l * nc;
    for (std::int64_t r = 0; r < MR; ++r) {
      const float a = ap[r * kc + l];
#pragma omp simd
      for (std::int64_t j = 0; j < NR; ++j) acc[r][j] += a * b[j];
    }
  }
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j) c[r * ldc + j] += alpha * acc[r][j];
}

}  // namespace

void gemm_omp(const GemmShape& s, const float* a, const float* b, float* c, int threads,
              std::vector<float>& panel) {
  const std::int64_t m = s.m, n = s.n, k = s.k;
  // Packed panels are padded with zeros to whole micro-tiles.
  panel.assign(static_cast<std::size_t>(KC * round_up(std::min(NC, n), NR)), 0.0f);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < m; ++i) {
    float* ci = c + i * n;
    for (std::int64_t j = 0; j < n; ++j) ci[j] = s.beta == 0.0f ? 0.0f : s.beta * ci[j];
  }
  for (std::int64_t jc = 0; jc < n; jc += NC) {
    const std::int64_t nc = std::min(NC, n - jc), ncp = round_up(nc, NR);
    for (std::int64_t pc = 0; pc < k; pc += KC) {
      const std::int64_t kc = std::min(KC, k - pc);
#pragma omp parallel for num_threads(threads) schedule(static)
      for (std::int64_t l = 0; l < kc; ++l)
        for (std::int64_t j = 0; j < ncp; ++j)
          panel[l * ncp + j] = op_load(b, s.tb, pc + l, jc + j, k, n, s.ldb());
#pragma omp parallel num_threads(threads)
      {
        std::vector<float> ap(static_cast<std::size_t>(MC * KC));
#pragma omp for schedule(dynamic)
        for (std::int64_t ic = 0; ic < m; ic += MC) {
          const std::int64_t mc = std::min(MC, m - ic), mcp = round_up(mc, MR);
          for (std::int64_t i = 0; i < mcp; ++i)
            for (std::int64_t l = 0; l < kc; ++l)
              ap[i * kc + l] = op_load(a, s.ta, ic + i, pc + l, m, k, s.lda());
          for (std::int64_t jr = 0; jr < nc; jr += NR)
            for (std::int64_t ir = 0; ir < mc; ir += MR)
              micro_kernel(&ap[ir * kc], &panel[jr], kc, ncp, s.alpha, c + (ic + ir) * n + jc + jr,
                           n, std::min(MR, mc - ir), std::min(NR, nc - jr));
        }
      }
    }
  }
}

void gemm_openblas(const GemmShape& s, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(s.m), static_cast<blasint>(s.n), static_cast<blasint>(s.k),
              s.alpha, a, static_cast<blasint>(s.lda()), b, static_cast<blasint>(s.ldb()), s.beta,
              c, static_cast<blasint>(s.ldc()));
}

// --- oneDNN's matmul as a plan: built once for a shape, run on the caller's buffers ------------

#ifdef PAIRBENCH_HAVE_DNNL
// The row-major operands as oneDNN sees them: op(A) is m x k, op(B) k x n, a transposed operand
// a different stride, not a copy. Memory objects are made once and pointed at the caller's
// buffers on each run (set_data_handle: no allocation, no copy).
struct OnednnMatmul::State {
  dnnl::matmul matmul;
  dnnl::memory a, b, c, a_f32, b_f32;  // a_f32/b_f32: fp32 views for conversions
  std::unordered_map<int, dnnl::memory> args;
  std::string kernel;
};

OnednnMatmul::OnednnMatmul(const GemmShape& s) : s_(s), st_(std::make_unique<State>()) {
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  auto& eng = onednn::engine();
  const dt t = onednn::data_type(s.dtype);
  const dims a_dims = {s.m, s.k}, b_dims = {s.k, s.n};
  const dims a_strides = s.ta ? dims{1, s.m} : dims{s.k, 1};
  const dims b_strides = s.tb ? dims{1, s.k} : dims{s.n, 1};
  const dnnl::memory::desc c_md({s.m, s.n}, dt::f32, dims{s.n, 1});
  const dnnl::memory::desc a_md(a_dims, t, a_strides), b_md(b_dims, t, b_strides);
  dnnl::primitive_attr attr;
  if (s.alpha != 1.0f) attr.set_scales_mask(DNNL_ARG_SRC, 0);
  if (s.beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(s.beta);  // C = alpha * A B + beta * C
    attr.set_post_ops(po);
  }
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(eng, a_md, b_md, c_md, attr);
  } catch (const dnnl::error& e) {
    if (e.status != dnnl_unimplemented) throw;
    throw Unavailable(std::string("oneDNN has no ") + to_string(s.dtype) +
                      " matmul for this CPU (ISA " + onednn::effective_isa() + ")");
  }
  st_->kernel = pd.impl_info_str();
  st_->matmul = dnnl::matmul(pd);
  st_->a = dnnl::memory(a_md, eng, DNNL_MEMORY_NONE);
  st_->b = dnnl::memory(b_md, eng, DNNL_MEMORY_NONE);
  st_->c = dnnl::memory(c_md, eng, DNNL_MEMORY_NONE);
  st_->a_f32 = dnnl::memory({a_dims, dt::f32, a_strides}, eng, DNNL_MEMORY_NONE);
  st_->b_f32 = dnnl::memory({b_dims, dt::f32, b_strides}, eng, DNNL_MEMORY_NONE);
  st_->args = {{DNNL_ARG_SRC, st_->a}, {DNNL_ARG_WEIGHTS, st_->b}, {DNNL_ARG_DST, st_->c}};
  if (s.alpha != 1.0f) {
    dnnl::memory scale({{1}, dt::f32, {1}}, eng);
    *static_cast<float*>(scale.get_data_handle()) = s.alpha;
    st_->args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC] = scale;
  }
}

OnednnMatmul::~OnednnMatmul() = default;

void OnednnMatmul::run(const void* a, const void* b, float* c) {
  st_->a.set_data_handle(const_cast<void*>(a));
  st_->b.set_data_handle(const_cast<void*>(b));
  st_->c.set_data_handle(c);
  st_->matmul.execute(onednn::stream(), st_->args);
  onednn::stream().wait();
}

std::string OnednnMatmul::kernel() const { return st_->kernel; }

std::vector<std::uint16_t> OnednnMatmul::storage(bool first, const std::vector<float>& x) const {
  if (s_.dtype == Dtype::fp32) return {};
  std::vector<std::uint16_t> out(x.size());
  convert(first, x.data(), out.data());
  return out;
}

void OnednnMatmul::convert(bool first, const float* x, std::uint16_t* out) const {
  if (s_.dtype == Dtype::fp32) return;
  dnnl::memory& f32 = first ? st_->a_f32 : st_->b_f32;
  const dnnl::memory::desc md = (first ? st_->a : st_->b).get_desc();
  f32.set_data_handle(const_cast<float*>(x));
  dnnl::memory dst(md, onednn::engine(), out);
  dnnl::reorder(f32, dst).execute(onednn::stream(), f32, dst);
  onednn::stream().wait();
}
#else
struct OnednnMatmul::State {};
OnednnMatmul::OnednnMatmul(const GemmShape& s) : s_(s) {
  throw Unavailable(onednn::unavailable(s.dtype));
}
OnednnMatmul::~OnednnMatmul() = default;
void OnednnMatmul::run(const void*, const void*, float*) {}
std::string OnednnMatmul::kernel() const { return ""; }
std::vector<std::uint16_t> OnednnMatmul::storage(bool, const std::vector<float>&) const {
  return {};
}
void OnednnMatmul::convert(bool, const float*, std::uint16_t*) const {}
#endif

// --- the implementations: thin adapters over the op functions ----------------------------------

namespace {

// Holds the operands the way every CPU implementation needs them.
class CpuGemm : public CpuImpl {
 public:
  CpuGemm(const GemmWorkload& w, int threads) : CpuImpl(threads), s_(w.gemm()) {}
  void prepare(const Tensors& in) override {
    a_ = at(in, "a").f32();
    b_ = at(in, "b").f32();
    c_ = at(in, "c");
  }
  Tensors result() override { return {c_}; }

 protected:
  float* c() { return c_.f32().data(); }

  GemmShape s_;
  std::vector<float> a_, b_;
  Tensor c_;  // C before, the output after
};

class NaiveGemm : public CpuGemm {
 public:
  using CpuGemm::CpuGemm;
  void run() override { gemm_naive(s_, a_.data(), b_.data(), c()); }
};

class OmpGemm : public CpuGemm {
 public:
  using CpuGemm::CpuGemm;
  void run() override { gemm_omp(s_, a_.data(), b_.data(), c(), threads_, panel_); }

 private:
  std::vector<float> panel_;
};

class OpenblasGemm : public CpuGemm {
 public:
  using CpuGemm::CpuGemm;
  void run() override { gemm_openblas(s_, a_.data(), b_.data(), c()); }
};

// oneDNN's matmul over the same buffers: the implementation holds the plan, and bf16/fp16
// inputs converted once, in prepare (the values are already representable, so exactly).
class OnednnGemm : public CpuGemm {
 public:
  using CpuGemm::CpuGemm;
  void prepare(const Tensors& in) override {
    CpuGemm::prepare(in);
    plan_ = std::make_unique<OnednnMatmul>(s_);
    a_in_ = plan_->storage(true, a_), b_in_ = plan_->storage(false, b_);
  }
  void run() override {
    plan_->run(a_in_.empty() ? static_cast<const void*>(a_.data()) : a_in_.data(),
               b_in_.empty() ? static_cast<const void*>(b_.data()) : b_in_.data(), c());
  }
  std::string detail() const override { return plan_ ? plan_->kernel() : ""; }

 private:
  std::unique_ptr<OnednnMatmul> plan_;
  std::vector<std::uint16_t> a_in_, b_in_;  // bf16/fp16 storage; empty for fp32
};

}  // namespace

std::vector<ImplSpec> gemm_impls() {
  ImplSpec onednn = cpu_spec<OnednnGemm, GemmWorkload>("gemm", "onednn", true, 0, "onednn");
  onednn.supports = [](const Workload& w) { return w.dtype() != Dtype::tf32; };
  onednn.unavailable = [](const Workload& w) { return onednn::unavailable(w.dtype()); };
  // The naive loop stops at 512^3 in the suites (1024^3 took 7 s an iteration on two cores).
  return {cpu_spec<NaiveGemm, GemmWorkload>("gemm", "naive", false, 3e8),
          cpu_spec<OmpGemm, GemmWorkload>("gemm", "omp", true, 0),
          cpu_spec<OpenblasGemm, GemmWorkload>("gemm", "openblas", true, 0, "openblas"), onednn};
}

}  // namespace pb::cpu
