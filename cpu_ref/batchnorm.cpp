// Batch normalization (core/batchnorm.hpp) on the CPU:
//   omp    - the loops tuned for the CPU (tuned_batchnorm_forward/backward, which the fp32
//            training steps use too) on the case's threads
//   onednn - oneDNN's batch normalization primitive (OnednnBatchNorm, which the bf16 training
//            step uses too), fp32 NCHW
// core/layers.hpp's plain loops (sums in double at every value) are the reference's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include <map>
#include <tuple>
#include <unordered_map>

#include "core/batchnorm.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

#ifdef PAIRBENCH_HAVE_DNNL
struct OnednnBatchNorm::State {
  struct Plan {
    dnnl::memory::desc maps, stats, mask;  // mask: a fused ReLU's in training (oneDNN's workspace)
    dnnl::primitive fwd, bwd;
    std::string kernel;
  };
  Dtype dtype = Dtype::fp32;
  bool channels_last = false;
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, float, bool, bool>, Plan> plans;
  std::vector<std::uint8_t> unused;  // the dx oneDNN writes when the caller needs none
  std::string kernel;

  // BnShape::relu: the ReLU fused (fuse_norm_relu); in training, forward also writes where the
  // output was positive into the mask (oneDNN's workspace), which backward reads.
  Plan& plan(const BnShape& s, bool train) {
    const auto key = std::make_tuple(s.n, s.c, s.hw, s.eps, train, s.relu);
    Plan& p = plans[key];
    if (p.fwd) return p;
    using md = dnnl::memory::desc;
    using flags = dnnl::normalization_flags;
    auto& eng = onednn::engine();
    p.maps = md({s.n, s.c, s.hw, 1}, onednn::data_type(dtype),
                channels_last ? dnnl::memory::format_tag::nhwc : dnnl::memory::format_tag::nchw);
    p.stats = md({s.c}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::x);
    flags f = flags::use_scale | flags::use_shift;
    if (!train) f |= flags::use_global_stats;
    if (s.relu) f |= flags::fuse_norm_relu;
    try {
      const dnnl::batch_normalization_forward::primitive_desc fwd(
          eng, train ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference,
          p.maps, p.maps, s.eps, f);
      p.fwd = dnnl::batch_normalization_forward(fwd);
      p.kernel = fwd.impl_info_str();
      if (train) {
        p.mask = fwd.workspace_desc();
        p.bwd =
            dnnl::batch_normalization_backward(dnnl::batch_normalization_backward::primitive_desc(
                eng, dnnl::prop_kind::backward, p.maps, p.maps, p.maps, s.eps, f, fwd));
      }
    } catch (const dnnl::error& e) {
      plans.erase(key);
      if (e.status != dnnl_unimplemented) throw;
      throw Unavailable("oneDNN has no " + std::string(to_string(dtype)) +
                        " batch normalization on this CPU (ISA " + onednn::effective_isa() + ")");
    }
    kernel = p.kernel;
    return p;
  }
  static void execute(
      dnnl::primitive& prim,
      std::initializer_list<std::pair<int, std::pair<dnnl::memory::desc, const void*>>> args) {
    std::unordered_map<int, dnnl::memory> mem;
    for (const auto& [arg, buf] : args)  // an empty desc: an argument this pass has not (a mask)
      if (buf.first.get_size() > 0)
        mem[arg] = dnnl::memory(buf.first, onednn::engine(), const_cast<void*>(buf.second));
    prim.execute(onednn::stream(), mem);
    onednn::stream().wait();
  }
};

OnednnBatchNorm::OnednnBatchNorm(Dtype maps, bool channels_last) : st_(std::make_unique<State>()) {
  const std::string why = onednn::unavailable(maps);
  if (!why.empty()) throw Unavailable(why);
  st_->dtype = maps;
  st_->channels_last = channels_last;
}

void OnednnBatchNorm::forward(const BnShape& s, bool train, const void* x, const float* w,
                              const float* b, void* y, float* mean, float* var, float* running_mean,
                              float* running_var, void* relu_mask) {
  State::Plan& p = st_->plan(s, train);
  if (train && s.relu && !relu_mask)
    throw std::invalid_argument("a batch norm with its ReLU in training writes a mask");
  State::execute(p.fwd, {{DNNL_ARG_SRC, {p.maps, x}},
                         {DNNL_ARG_DST, {p.maps, y}},
                         {DNNL_ARG_SCALE, {p.stats, w}},
                         {DNNL_ARG_SHIFT, {p.stats, b}},
                         {DNNL_ARG_MEAN, {p.stats, train ? mean : running_mean}},
                         {DNNL_ARG_VARIANCE, {p.stats, train ? var : running_var}},
                         {DNNL_ARG_WORKSPACE, {p.mask, relu_mask}}});
  if (train)
    for (std::int64_t c = 0; c < s.c; ++c)
      bn_running_at(s, mean[c], var[c], running_mean + c, running_var + c);
}

void OnednnBatchNorm::backward(const BnShape& s, const void* x, const float* w, const float* mean,
                               const float* var, const void* relu_mask, const void* dy, void* dx,
                               float* dw, float* db) {
  State::Plan& p = st_->plan(s, true);
  if (s.relu && !relu_mask)
    throw std::invalid_argument("a batch norm with its ReLU reads its forward pass's mask");
  if (!dx) {
    st_->unused.resize(std::max(st_->unused.size(), p.maps.get_size()));
    dx = st_->unused.data();
  }
  State::execute(p.bwd, {{DNNL_ARG_SRC, {p.maps, x}},
                         {DNNL_ARG_MEAN, {p.stats, mean}},
                         {DNNL_ARG_VARIANCE, {p.stats, var}},
                         {DNNL_ARG_DIFF_DST, {p.maps, dy}},
                         {DNNL_ARG_SCALE, {p.stats, w}},
                         {DNNL_ARG_WORKSPACE, {p.mask, relu_mask}},
                         {DNNL_ARG_DIFF_SRC, {p.maps, dx}},
                         {DNNL_ARG_DIFF_SCALE, {p.stats, dw}},
                         {DNNL_ARG_DIFF_SHIFT, {p.stats, db}}});
}

std::int64_t OnednnBatchNorm::relu_mask_bytes(const BnShape& s) {
  BnShape fused = s;
  fused.relu = true;
  return static_cast<std::int64_t>(st_->plan(fused, true).mask.get_size());
}

std::string OnednnBatchNorm::kernel() const { return st_->kernel; }
#else
struct OnednnBatchNorm::State {};
OnednnBatchNorm::OnednnBatchNorm(Dtype maps, bool) { throw Unavailable(onednn::unavailable(maps)); }
void OnednnBatchNorm::forward(const BnShape&, bool, const void*, const float*, const float*, void*,
                              float*, float*, float*, float*, void*) {}
void OnednnBatchNorm::backward(const BnShape&, const void*, const float*, const float*,
                               const float*, const void*, const void*, void*, float*, float*) {}
std::int64_t OnednnBatchNorm::relu_mask_bytes(const BnShape&) { return 0; }
std::string OnednnBatchNorm::kernel() const { return ""; }
#endif

OnednnBatchNorm::OnednnBatchNorm(OnednnBatchNorm&&) noexcept = default;
OnednnBatchNorm& OnednnBatchNorm::operator=(OnednnBatchNorm&&) noexcept = default;
OnednnBatchNorm::~OnednnBatchNorm() = default;

namespace {

constexpr std::int64_t kBlockRows = 32;  // rows summed in float before the sums go into double

// Two sums per channel over the rows of NHWC maps: f(e, a, b) adds the terms of the row at
// element e into a[0..c) and b[0..c). Each thread sums blocks of rows in float, adds each block
// into its sums in double, and the threads' sums are added: sums[0..2c).
template <class F>
void nhwc_sums(const Maps& s, double* sums, int threads, F f) {
  const std::int64_t c = s.c, rows = s.count();
  std::fill(sums, sums + 2 * c, 0.0);
#pragma omp parallel num_threads(threads)
  {
    std::vector<double> mine(static_cast<std::size_t>(2 * c), 0.0);
    std::vector<float> block(static_cast<std::size_t>(2 * c));
#pragma omp for schedule(static)
    for (std::int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
      std::fill(block.begin(), block.end(), 0.0f);
      for (std::int64_t row = r0; row < std::min(rows, r0 + kBlockRows); ++row)
        f(row * c, block.data(), block.data() + c);
      for (std::int64_t j = 0; j < 2 * c; ++j) mine[j] += block[j];
    }
#pragma omp critical
    for (std::int64_t j = 0; j < 2 * c; ++j) sums[j] += mine[j];
  }
}

// Channel ch's statistics from its sums of d = x - k and of d^2 over m values (k its first
// value): mean and invstd kept for the backward pass, the running statistics moved.
void statistics_at(const BnShape& s, std::int64_t ch, float k, double sum_d, double sum_d2,
                   float* mean, float* invstd, float* running_mean, float* running_var) {
  double mu = 0, var = 0;
  bn_shifted_stats_at(k, sum_d, sum_d2, static_cast<double>(s.count()), &mu, &var);
  mean[ch] = static_cast<float>(mu);
  invstd[ch] = static_cast<float>(1 / std::sqrt(var + double(s.eps)));
  bn_running_at(s, mean[ch], static_cast<float>(var), running_mean + ch, running_var + ch);
}

// Channel ch's dbias and dweight from its sums of dy and dy (x - mean), and its dx terms.
BnDxTerms backward_at(const BnShape& s, std::int64_t ch, const float* weight, const float* invstd,
                      double sum_dy, double sum_dy_xc, float* dweight, float* dbias) {
  const double db = sum_dy, dw = sum_dy_xc * invstd[ch];
  dbias[ch] = static_cast<float>(db), dweight[ch] = static_cast<float>(dw);
  return bn_dx_terms_at(weight[ch], invstd[ch], db, dw, static_cast<double>(s.count()));
}

// NCHW: over channel ch, the sums of u = a - ka and of u (b - kb), in float over blocks of values
// of a plane (vectorized) and then in double.
constexpr std::int64_t kBlockValues = 512;
void nchw_sums(const Maps& s, std::int64_t ch, const float* a, float ka, const float* b, float kb,
               double* sum_u, double* sum_uv) {
  *sum_u = *sum_uv = 0;
  for (std::int64_t image = 0; image < s.n; ++image) {
    const std::int64_t plane = (image * s.c + ch) * s.hw;
    for (std::int64_t i0 = 0; i0 < s.hw; i0 += kBlockValues) {
      const float* __restrict pa = a + plane + i0;
      const float* __restrict pb = b + plane + i0;
      const std::int64_t len = std::min(s.hw - i0, kBlockValues);
      float su = 0, suv = 0;
#pragma omp simd reduction(+ : su, suv)
      for (std::int64_t i = 0; i < len; ++i) {
        const float u = pa[i] - ka;
        su += u, suv += u * (pb[i] - kb);
      }
      *sum_u += su, *sum_uv += suv;
    }
  }
}

// y = max(scale x + shift, floor) per channel over NHWC maps.
void nhwc_affine(const Maps& s, const float* x, const float* scale, const float* shift, float floor,
                 float* y, int threads) {
  const std::int64_t c = s.c;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t row = 0; row < s.count(); ++row) {
    const float* __restrict in = x + row * c;
    float* __restrict out = y + row * c;
    for (std::int64_t ch = 0; ch < c; ++ch)
      out[ch] = std::max(scale[ch] * in[ch] + shift[ch], floor);
  }
}

}  // namespace

void tuned_batchnorm_forward(const BnShape& s, bool train, const float* x, const float* weight,
                             const float* bias, float* y, float* mean, float* invstd,
                             float* running_mean, float* running_var, int threads) {
  const std::int64_t c = s.c;
  const float floor = s.relu ? 0.0f : -std::numeric_limits<float>::infinity();
  if (!s.channels_last) {  // a channel a thread: its sums, then its y while it is in cache
#pragma omp parallel for num_threads(threads) schedule(static)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      if (train) {
        const float k = x[s.at(ch, 0)];
        double sum_d = 0, sum_d2 = 0;
        nchw_sums(s, ch, x, k, x, k, &sum_d, &sum_d2);
        statistics_at(s, ch, k, sum_d, sum_d2, mean, invstd, running_mean, running_var);
      }
      float scale = 0, shift = 0;
      bn_scale_shift_at(train, s.eps, weight[ch], bias[ch], train ? mean[ch] : 0.0f,
                        train ? invstd[ch] : 0.0f, running_mean[ch], running_var[ch], &scale,
                        &shift);
      for (std::int64_t image = 0; image < s.n; ++image) {
        const std::int64_t plane = (image * c + ch) * s.hw;
        const float* __restrict in = x + plane;
        float* __restrict out = y + plane;
#pragma omp simd
        for (std::int64_t i = 0; i < s.hw; ++i) {  // std::max(v, floor) (NaN passes), vectorized
          const float v = scale * in[i] + shift;
          out[i] = v < floor ? floor : v;
        }
      }
    }
    return;
  }
  std::vector<float> scale(static_cast<std::size_t>(c)), shift(scale.size());
  if (train) {
    // Sums of x - k and (x - k)^2, k each channel's first value (near its mean: no cancellation).
    const float* k = x;
    std::vector<double> sums(static_cast<std::size_t>(2 * c));
    nhwc_sums(s, sums.data(), threads,
              [&](std::int64_t e, float* __restrict a, float* __restrict b) {
                const float* __restrict row = x + e;
                for (std::int64_t ch = 0; ch < c; ++ch) {
                  const float d = row[ch] - k[ch];
                  a[ch] += d, b[ch] += d * d;
                }
              });
    for (std::int64_t ch = 0; ch < c; ++ch)
      statistics_at(s, ch, k[ch], sums[ch], sums[c + ch], mean, invstd, running_mean, running_var);
  }
  for (std::int64_t ch = 0; ch < c; ++ch)
    bn_scale_shift_at(train, s.eps, weight[ch], bias[ch], train ? mean[ch] : 0.0f,
                      train ? invstd[ch] : 0.0f, running_mean[ch], running_var[ch], &scale[ch],
                      &shift[ch]);
  nhwc_affine(s, x, scale.data(), shift.data(), floor, y, threads);
}

void tuned_batchnorm_backward(const BnShape& s, const float* x, const float* weight,
                              const float* mean, const float* invstd, const float* dy, float* dx,
                              float* dweight, float* dbias, int threads) {
  const std::int64_t c = s.c;
  if (!s.channels_last) {  // a channel a thread: its sums, then its dx while it is in cache
#pragma omp parallel for num_threads(threads) schedule(static)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const float mu = mean[ch];
      double sum_dy = 0, sum_dy_xc = 0;
      nchw_sums(s, ch, dy, 0.0f, x, mu, &sum_dy, &sum_dy_xc);
      const BnDxTerms t = backward_at(s, ch, weight, invstd, sum_dy, sum_dy_xc, dweight, dbias);
      if (!dx) continue;
      for (std::int64_t image = 0; image < s.n; ++image) {
        const std::int64_t plane = (image * c + ch) * s.hw;
        const float *g = dy + plane, *in = x + plane;  // dx may be either (in-place gradients)
        float* out = dx + plane;
#pragma omp simd
        for (std::int64_t i = 0; i < s.hw; ++i) out[i] = t.p * g[i] + t.q * (in[i] - mu) + t.r;
      }
    }
    return;
  }
  std::vector<double> sums(static_cast<std::size_t>(2 * c));
  nhwc_sums(s, sums.data(), threads, [&](std::int64_t e, float* __restrict a, float* __restrict b) {
    const float* __restrict g = dy + e;
    const float* __restrict in = x + e;
    for (std::int64_t ch = 0; ch < c; ++ch) a[ch] += g[ch], b[ch] += g[ch] * (in[ch] - mean[ch]);
  });
  std::vector<float> p(static_cast<std::size_t>(c)), q(p.size()), r(p.size());
  for (std::int64_t ch = 0; ch < c; ++ch) {
    const BnDxTerms t = backward_at(s, ch, weight, invstd, sums[ch], sums[c + ch], dweight, dbias);
    p[ch] = t.p, q[ch] = t.q, r[ch] = t.r;
  }
  if (!dx) return;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t row = 0; row < s.count(); ++row) {
    const float *g = dy + row * c, *in = x + row * c;  // dx may be either (in-place gradients)
    float* out = dx + row * c;
#pragma omp simd
    for (std::int64_t ch = 0; ch < c; ++ch)
      out[ch] = p[ch] * g[ch] + q[ch] * (in[ch] - mean[ch]) + r[ch];
  }
}

namespace {

// The case's inputs as both implementations take them, and its outputs.
class BatchNormCase : public CpuImpl {
 public:
  BatchNormCase(const BatchNormWorkload& w, int threads)
      : CpuImpl(threads), s_(w.bn()), m_(w.bn().maps()) {}

  void prepare(const Tensors& in) override {
    auto take = [&](const char* name) { return at(in, name).f32(); };
    x_ = take("x"), w_ = take("weight"), b_ = take("bias");
    rm_ = take("running_mean"), rv_ = take("running_var");
    const auto c = static_cast<std::size_t>(m_.c), size = static_cast<std::size_t>(m_.size());
    mean_.assign(c, 0), var_.assign(c, 0), out_.assign(size, 0), dw_.assign(c, 0), db_.assign(c, 0);
    if (s_.dir == BnDir::bwd) dy_ = take("dy"), mean_ = take("mean"), var_ = take("var");
  }

  Tensors result() override {
    if (s_.dir == BnDir::bwd)
      return {Tensor::of("dx", out_), Tensor::of("dweight", dw_), Tensor::of("dbias", db_)};
    if (s_.dir == BnDir::infer) return {Tensor::of("y", out_)};
    return {Tensor::of("y", out_), Tensor::of("running_mean", rm_), Tensor::of("running_var", rv_)};
  }

 protected:
  BatchNormShape s_;
  BnShape m_;
  std::vector<float> x_, w_, b_, rm_, rv_, dy_, mean_, var_, out_, dw_, db_;
};

class OmpBatchNorm : public BatchNormCase {
 public:
  using BatchNormCase::BatchNormCase;
  void prepare(const Tensors& in) override {
    BatchNormCase::prepare(in);
    invstd_.resize(var_.size());
    if (s_.dir == BnDir::bwd)
      for (std::size_t c = 0; c < var_.size(); ++c) invstd_[c] = 1.0f / std::sqrt(var_[c] + m_.eps);
  }
  void run() override {
    if (s_.dir == BnDir::bwd)
      tuned_batchnorm_backward(m_, x_.data(), w_.data(), mean_.data(), invstd_.data(), dy_.data(),
                               out_.data(), dw_.data(), db_.data(), threads_);
    else
      tuned_batchnorm_forward(m_, s_.dir == BnDir::fwd, x_.data(), w_.data(), b_.data(),
                              out_.data(), mean_.data(), invstd_.data(), rm_.data(), rv_.data(),
                              threads_);
  }

 private:
  std::vector<float> invstd_;
};

class OnednnBatchNormCase : public BatchNormCase {
 public:
  OnednnBatchNormCase(const BatchNormWorkload& w, int threads)
      : BatchNormCase(w, threads), bn_(Dtype::fp32, false) {}
  void run() override {
    if (s_.dir == BnDir::bwd)
      bn_.backward(m_, x_.data(), w_.data(), mean_.data(), var_.data(), nullptr, dy_.data(),
                   out_.data(), dw_.data(), db_.data());
    else
      bn_.forward(m_, s_.dir == BnDir::fwd, x_.data(), w_.data(), b_.data(), out_.data(),
                  mean_.data(), var_.data(), rm_.data(), rv_.data());
  }
  std::string detail() const override { return bn_.kernel(); }

 private:
  OnednnBatchNorm bn_;
};

}  // namespace

std::vector<ImplSpec> batchnorm_impls() {
  ImplSpec onednn =
      cpu_spec<OnednnBatchNormCase, BatchNormWorkload>("batchnorm", "onednn", true, 0, "onednn");
  onednn.unavailable = [](const Workload& w) { return onednn::unavailable(w.dtype()); };
  return {cpu_spec<OmpBatchNorm, BatchNormWorkload>("batchnorm", "omp", true, 0), onednn};
}

}  // namespace pb::cpu
