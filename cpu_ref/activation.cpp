// CPU activations, softmax and the softmax cross-entropy loss, with the functors of
// core/activation.hpp:
//   naive - one thread, scalar: the compiler is told not to vectorize it, so that the benchmark
//           shows what SIMD adds.
//   omp   - OpenMP threads, each on a contiguous share; the functors run on packs of SIMD
//           registers (core/lanes.hpp), exp, tanh and GELU's normal tail included
//           (core/activation.hpp's arithmetic approximations, not library calls); softmax and loss
//           take their row maxima and exp on packs too.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

#include "core/activation.hpp"
#include "cpu_ref/cpu.hpp"

#define PB_SCALAR __attribute__((optimize("no-tree-vectorize")))

namespace pb::cpu {

namespace {

// --- elementwise ----------------------------------------------------------------------------

template <class F>
PB_SCALAR void act_naive(const float* x, const float* dy, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = dy ? F::bwd(x[i], dy[i]) : F::fwd(x[i]);
}

// The registers a pack for the functor F (core/lanes.hpp): kRegs chains side by side for the
// transcendental ones. ReLU and leaky ReLU only stream, and a loop that loads all of a pack's
// registers and then stores them all streams slower than one that loads and stores a register
// at a time (a relu loop on 2^26 floats, 2 threads, median of 25, on this project's Cascade
// Lake VM: 19.0 GB/s a register at a time; 17.6, 16.0, 13.7 in packs of 8, 4, 2). GELU with
// erf keeps more values live than AVX-512's 32 registers hold four at a time (packs of 4 spilled to
// the stack about 190 times in its loops, of 2 about 30): packs of 2 ran its forward at 2^20 floats
// in 185 us against 205 (2 threads, three rounds alternating, the AMX VM of 2026-12-05; 2^26:
// 21.4 against 22.3 ms). GELU with tanh ran slower in packs of 2 (2^20 backward 265 -> 320 us).
template <class F>
constexpr int kPackRegs = lanes::kRegs;
template <>
constexpr int kPackRegs<Relu> = 1;
template <>
constexpr int kPackRegs<LeakyRelu> = 1;
template <>
constexpr int kPackRegs<GeluErf> = 2;

// Inputs are prefetched 8 KiB ahead: the hardware prefetchers alone leave the loops that
// compute between loads waiting on DRAM (at 2^26 floats, 2 threads, median of 21 here: sigmoid
// 16.5 -> 18.1 GB/s, tanh 16.8 -> 18.7, gelu_tanh 16.5 -> 18.7, gelu_erf 14.5 -> 16.2). A plain
// STREAM copy gains nothing from it (20.6 and 20.5 GB/s without and with): it improves the
// overlap, not the bandwidth.
constexpr std::int64_t kPrefetchAhead = 2048;  // floats

// Prefetches each 64-byte line of [p, p + n).
inline void prefetch_lines(const float* p, std::int64_t n) {
  for (std::int64_t k = 0; k < n; k += 16) __builtin_prefetch(p + k, 0, 3);
}

// The SIMD path: elements [begin, end) of one thread, a pack at a time (the functors'
// arithmetic on SIMD registers), the ends as floats. Flattened: the functors' calls are
// inlined into this loop (GCC's limits would leave exp a call taking a pack on the stack).
template <class F>
[[gnu::flatten]] void act_range(const float* x, const float* dy, float* out, std::int64_t begin,
                                std::int64_t end) {
  using P = lanes::PackT<kPackRegs<F>>;
  using lanes::load, lanes::store;
  auto one = [&](std::int64_t i) { out[i] = dy ? F::bwd(x[i], dy[i]) : F::fwd(x[i]); };
  // Floats up to a cache-line boundary of out, so that no store of a register splits a line.
  std::int64_t i = begin;
  for (; i < end && reinterpret_cast<std::uintptr_t>(out + i) % 64 != 0; ++i) one(i);
  for (; i + P::kLanes <= end; i += P::kLanes) {
    if (i + kPrefetchAhead < end) {
      prefetch_lines(x + i + kPrefetchAhead, P::kLanes);
      if (dy) prefetch_lines(dy + i + kPrefetchAhead, P::kLanes);
    }
    store(out + i, dy ? F::bwd(load<P>(x + i), load<P>(dy + i)) : F::fwd(load<P>(x + i)));
  }
  for (; i < end; ++i) one(i);
}

// Each thread takes a contiguous share, in whole packs of the largest size.
template <class F>
void act_omp(const float* x, const float* dy, float* out, std::int64_t n, int threads) {
  constexpr std::int64_t kLanes = lanes::Pack::kLanes;
  const std::int64_t packs = (n + kLanes - 1) / kLanes;
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const std::int64_t begin = std::min(n, packs * t / nt * kLanes);
    const std::int64_t end = std::min(n, packs * (t + 1) / nt * kLanes);
    act_range<F>(x, dy, out, begin, end);
  }
}

}  // namespace

void activation_naive(Act a, const float* x, const float* dy, float* out, std::int64_t n) {
  with_activation(a, [&](auto f) { act_naive<decltype(f)>(x, dy, out, n); });
}

void activation_omp(Act a, const float* x, const float* dy, float* out, std::int64_t n,
                    int threads) {
  with_activation(a, [&](auto f) { act_omp<decltype(f)>(x, dy, out, n, threads); });
}

namespace {

class CpuActivation : public CpuImpl {
 public:
  CpuActivation(const ActivationShape& s, bool naive, int threads)
      : CpuImpl(threads), s_(s), naive_(naive) {}
  void prepare(const Tensors& in) override {
    x_ = at(in, ActivationWorkload(s_).input()).f32();  // x, or y for a backward from y
    if (s_.backward) dy_ = at(in, "dy").f32();
    out_ = Tensor(ActivationWorkload(s_).outputs()[0], {s_.n});
  }
  void run() override {
    const float* dy = s_.backward ? dy_.data() : nullptr;
    float* out = out_.f32().data();
    if (naive_)
      activation_naive(s_.act, x_.data(), dy, out, s_.n);
    else
      activation_omp(s_.act, x_.data(), dy, out, s_.n, threads_);
  }
  Tensors result() override { return {out_}; }

 private:
  ActivationShape s_;
  bool naive_;
  std::vector<float> x_, dy_;
  Tensor out_;
};

// --- softmax and loss: one row at a time ----------------------------------------------------

// The largest of x[j < cols] (NaNs skipped, as std::max skips them), on packs: GCC's own
// vectorization of this max reduction ran at 4.4 cycles per float here.
[[gnu::flatten]] float row_max(const float* x, std::int64_t cols) {
  using P = lanes::Pack;
  P acc(-approx::kInf);
  std::int64_t j = 0;
  for (; j + P::kLanes <= cols; j += P::kLanes) {
    const P v = lanes::load<P>(x + j);
    acc = lanes::select(acc < v, v, acc);
  }
  float m = lanes::reduce(acc, [](auto a, auto b) { return a < b ? b : a; });
  for (; j < cols; ++j) m = std::max(m, x[j]);
  return m;
}

// out[j] = exp(x[j] - m) for j < cols; returns their sum. exp on packs, as the activations.
[[gnu::flatten]] float exp_and_sum(const float* x, float m, std::int64_t cols, float* out) {
  using P = lanes::Pack;
  P acc(0.0f);
  std::int64_t j = 0;
  for (; j + P::kLanes <= cols; j += P::kLanes) {
    const P e = approx::exp(lanes::load<P>(x + j) - m);
    lanes::store(out + j, e);
    acc = acc + e;
  }
  float sum = lanes::reduce(acc, std::plus<>{});
  for (; j < cols; ++j) sum += (out[j] = approx::exp(x[j] - m));
  return sum;
}

// out = softmax(x) (or, for the loss gradient, (softmax(x) - onehot(label)) * scale); returns
// log(sum exp(x - max)) + max, the row's log-sum-exp.
template <bool Simd>
float row_softmax(const float* x, std::int64_t cols, float* out, std::int64_t label, float scale) {
  float m = -approx::kInf;
  double sum = 0;
  if (Simd) {
    m = row_max(x, cols);
  } else {
    for (std::int64_t j = 0; j < cols; ++j) m = std::max(m, x[j]);
  }
  for (std::int64_t j0 = 0; j0 < cols; j0 += kRowSumBlock) {  // a pack's lanes too
    const std::int64_t end = std::min(cols, j0 + kRowSumBlock);
    float block = 0;
    if (Simd) {
      block = exp_and_sum(x + j0, m, end - j0, out + j0);
    } else {
      for (std::int64_t j = j0; j < end; ++j) block += (out[j] = approx::exp(x[j] - m));
    }
    sum += block;
  }
  const auto inv = static_cast<float>(scale / sum);
  if (Simd) {
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) out[j] *= inv;
  } else {
    for (std::int64_t j = 0; j < cols; ++j) out[j] *= inv;
  }
  if (label >= 0) out[label] -= scale;
  return m + static_cast<float>(std::log(sum));
}

template <bool Simd>
void rows_run(const RowShape& s, const float* x, const std::int32_t* labels, float* out,
              float* tmp_row, std::int64_t r) {
  const std::int64_t cols = s.cols;
  const float* xr = x + r * cols;
  switch (s.kind) {
    case RowOp::softmax:
      row_softmax<Simd>(xr, cols, out + r * cols, -1, 1.0f);
      break;
    case RowOp::loss_bwd:
      row_softmax<Simd>(xr, cols, out + r * cols, labels[r], 1.0f / static_cast<float>(s.rows));
      break;
    case RowOp::loss_fwd: {
      out[r] = row_softmax<Simd>(xr, cols, tmp_row, -1, 1.0f) - xr[labels[r]];
      break;
    }
  }
}

}  // namespace

PB_SCALAR void rows_naive(const RowShape& s, const float* x, const std::int32_t* labels, float* out,
                          float* tmp) {
  for (std::int64_t r = 0; r < s.rows; ++r) rows_run<false>(s, x, labels, out, tmp, r);
}

void rows_omp(const RowShape& s, const float* x, const std::int32_t* labels, float* out, float* tmp,
              int threads) {
#pragma omp parallel num_threads(threads)
  {
    float* row_tmp = tmp + s.cols * omp_get_thread_num();
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < s.rows; ++r) {
      // The row after next (8 KiB ahead at 1024 columns, as the elementwise loops).
      if (r + 2 < s.rows) prefetch_lines(x + (r + 2) * s.cols, s.cols);
      rows_run<true>(s, x, labels, out, row_tmp, r);
    }
  }
}

namespace {

class CpuRows : public CpuImpl {
 public:
  CpuRows(const RowShape& s, bool naive, int threads) : CpuImpl(threads), s_(s), naive_(naive) {}
  void prepare(const Tensors& in) override {
    const RowWorkload w(s_);
    x_ = at(in, "x").f32();
    if (s_.kind != RowOp::softmax) labels_ = at(in, "labels").i32();
    out_ = Tensor(w.outputs()[0], {w.output_size()});
    tmp_.assign(static_cast<std::size_t>(s_.cols * threads_), 0.0f);
  }
  void run() override {
    float* out = out_.f32().data();
    if (naive_)
      rows_naive(s_, x_.data(), labels_.data(), out, tmp_.data());
    else
      rows_omp(s_, x_.data(), labels_.data(), out, tmp_.data(), threads_);
  }
  Tensors result() override { return {out_}; }

 private:
  RowShape s_;
  bool naive_;
  std::vector<float> x_, tmp_;
  std::vector<std::int32_t> labels_;
  Tensor out_;
};

ImplSpec spec(const std::string& op, const char* name, bool naive) {
  ImplSpec sp;
  sp.op = op;
  sp.name = name;
  sp.device = Device::cpu;
  sp.threaded = !naive;
  // The scalar reference stops at 2e7 nominal FLOPs in the suites: 2^24 ReLUs, 2^18 GELUs.
  sp.max_flops = naive ? 2e7 : 0;
  sp.supports = [](const Workload&) { return true; };
  sp.make = [naive, op](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    if (op == "activation")
      return std::make_unique<CpuActivation>(static_cast<const ActivationWorkload&>(w).activation(),
                                             naive, naive ? 1 : threads);
    return std::make_unique<CpuRows>(static_cast<const RowWorkload&>(w).rows(), naive,
                                     naive ? 1 : threads);
  };
  return sp;
}
}  // namespace

std::vector<ImplSpec> activation_impls() {
  return {spec("activation", "naive", true), spec("activation", "omp", false)};
}

std::vector<ImplSpec> row_impls(const std::string& op) {
  return {spec(op, "naive", true), spec(op, "omp", false)};
}

}  // namespace pb::cpu
