// The MLP's training step on the CPU, composed of the op functions the single-op benchmarks
// time (no second copy of any op): GEMMs through OpenBLAS (`openblas`) or oneDNN's matmul
// plans (`onednn`), ReLU forward and backward and the softmax cross-entropy loss through the
// OpenMP activation and row functions, and three small ones here: the bias broadcast, the
// bias gradient (column sums) and SGD with momentum.
#include <algorithm>
#include <functional>
#include <map>
#include <stdexcept>

#include "core/activation.hpp"
#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

// --- the op functions
// -----------------------------------------------------------------------------

void bias_rows(const float* b, float* out, std::int64_t rows, std::int64_t cols, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < rows; ++i) std::copy(b, b + cols, out + i * cols);
}

void column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t j = 0; j < cols; ++j) {
    float sum = 0;
    for (std::int64_t i = 0; i < rows; ++i) sum += x[i * cols + j];
    out[j] = sum;
  }
}

void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                  int threads) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
  for (std::int64_t j = 0; j < n; ++j) {
    v[j] = momentum * v[j] + g[j];
    p[j] -= lr * v[j];
  }
}

MlpCpuStep::MlpCpuStep(const TrainShape& s, GemmBackend backend, int threads)
    : s_(s), backend_(backend), threads_(threads) {
  const std::int64_t B = s.batch, H = Mlp::hidden, C = Mlp::classes;
  for (auto* v : {&z0_, &a1_, &z1_, &a2_, &da_}) v->resize(static_cast<std::size_t>(B * H));
  logits_.resize(static_cast<std::size_t>(B * C));
  dlogits_.resize(logits_.size());
  losses_.resize(static_cast<std::size_t>(B));
  tmp_.resize(static_cast<std::size_t>(C * threads));
  grads_.resize(static_cast<std::size_t>(Mlp::param_count()));
}

MlpCpuStep::~MlpCpuStep() = default;

void MlpCpuStep::gemm(const GemmShape& g, const float* a, const float* b, float* c) {
  if (backend_ == GemmBackend::openblas) return gemm_openblas(g, a, b, c);
  const auto key = std::make_tuple(g.m, g.n, g.k, g.ta, g.tb, g.beta);
  auto& plan = plans_[key];
  if (!plan) plan = std::make_unique<OnednnMatmul>(g);  // once per shape: the first step
  plan->run(a, b, c);
}

void MlpCpuStep::forward(const float* x, const float* params) {
  const std::int64_t B = s_.batch;
  const float* in = x;
  float* z[3] = {z0_.data(), z1_.data(), logits_.data()};
  float* act[2] = {a1_.data(), a2_.data()};
  for (int l = 0; l < 3; ++l) {  // z = a W^T + b, then ReLU but for the logits
    const std::int64_t fi = Mlp::fan_in(l), fo = Mlp::fan_out(l);
    bias_rows(params + Mlp::b_offset(l), z[l], B, fo, threads_);
    GemmShape g;
    g.m = B, g.n = fo, g.k = fi, g.tb = true, g.beta = 1;
    gemm(g, in, params + Mlp::w_offset(l), z[l]);
    if (l == 2) break;
    activation_omp(Act::relu, z[l], nullptr, act[l], B * fo, threads_);
    in = act[l];
  }
}

float MlpCpuStep::step(const float* x, const std::int32_t* labels, float* params, float* velocity) {
  const std::int64_t B = s_.batch, C = Mlp::classes;
  forward(x, params);
  // The mean loss, and its gradient (softmax - onehot) / B.
  rows_omp({RowOp::loss_fwd, B, C}, logits_.data(), labels, losses_.data(), tmp_.data(), threads_);
  double loss = 0;
  for (float v : losses_) loss += v;
  rows_omp({RowOp::loss_bwd, B, C}, logits_.data(), labels, dlogits_.data(), tmp_.data(), threads_);
  // Backward: dW = dz^T a, db = column sums of dz, da = dz W, dz = relu'(z) da.
  const float* a[3] = {x, a1_.data(), a2_.data()};
  const float* pre[2] = {z0_.data(), z1_.data()};  // the ReLUs' inputs
  float* dz = dlogits_.data();
  for (int l = 2; l >= 0; --l) {
    const std::int64_t fi = Mlp::fan_in(l), fo = Mlp::fan_out(l);
    GemmShape gw;
    gw.m = fo, gw.n = fi, gw.k = B, gw.ta = true;
    gemm(gw, dz, a[l], grads_.data() + Mlp::w_offset(l));
    column_sums(dz, B, fo, grads_.data() + Mlp::b_offset(l), threads_);
    if (l == 0) break;
    GemmShape gd;
    gd.m = B, gd.n = fi, gd.k = fo;
    gemm(gd, dz, params + Mlp::w_offset(l), da_.data());
    float* next = l == 2 ? z1_.data() : z0_.data();  // dz of the layer below, over its z
    activation_omp(Act::relu, pre[l - 1], da_.data(), next, B * fi, threads_);
    dz = next;
  }
  sgd_momentum(params, velocity, grads_.data(), Mlp::param_count(), s_.lr, s_.momentum, threads_);
  return static_cast<float>(loss / static_cast<double>(B));
}

// --- the implementations
// --------------------------------------------------------------------------

namespace {

class TrainCpu : public CpuImpl {
 public:
  TrainCpu(const TrainShape& s, GemmBackend backend, int threads)
      : CpuImpl(threads), s_(s), step_(s, backend, threads) {}
  void prepare(const Tensors& in) override {
    x_ = at(in, "x").f32();
    labels_ = at(in, "labels").i32();
    params_ = at(in, "params").f32();
    velocity_ = at(in, "velocity").f32();
  }
  void run() override {
    if (s_.train)
      loss_ = step_.step(x_.data(), labels_.data(), params_.data(), velocity_.data());
    else
      step_.forward(x_.data(), params_.data());
  }
  Tensors result() override {
    if (!s_.train) {
      Tensor logits("logits", {s_.batch, Mlp::classes});
      logits.f32() = step_.logits();
      return {logits};
    }
    return {Tensor::of("loss", std::vector<float>{loss_}), Tensor::of("params", params_),
            Tensor::of("velocity", velocity_)};
  }

 private:
  TrainShape s_;
  MlpCpuStep step_;
  std::vector<float> x_, params_, velocity_;
  std::vector<std::int32_t> labels_;
  float loss_ = 0;
};

ImplSpec spec(const char* name, GemmBackend backend) {
  ImplSpec sp;
  sp.op = "train";
  sp.name = name;
  sp.device = Device::cpu;
  sp.sweeps_units = true;  // runs on the cores (--threads), not in the thread sweep
  sp.library = name;
  sp.supports = [](const Workload&) { return true; };
  sp.make = [backend](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<TrainCpu>(static_cast<const TrainWorkload&>(w).train(), backend,
                                      threads);
  };
  return sp;
}

}  // namespace

std::vector<ImplSpec> train_impls() {
  ImplSpec with_onednn = spec("onednn", GemmBackend::onednn);
  with_onednn.unavailable = [](const Workload&) { return onednn::unavailable(Dtype::fp32); };
  return {spec("openblas", GemmBackend::openblas), with_onednn};
}

}  // namespace pb::cpu
