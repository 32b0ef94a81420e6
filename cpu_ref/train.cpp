// The models' training steps on the CPU, composed of the op functions the single-op benchmarks
// time (no second copy of any op): GEMMs through OpenBLAS (`openblas`) or oneDNN's matmul
// plans (`onednn`); the CNN's convolutions through im2col + OpenBLAS (`openblas`) or oneDNN's
// convolution plans (`onednn`); ReLU forward and backward and the softmax cross-entropy loss
// through the OpenMP activation and row functions; max pooling (core/train.hpp); and three
// small ones here: the bias broadcast, the bias gradient (column sums), SGD with momentum.
#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <stdexcept>

#include "core/activation.hpp"
#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

// --- the op functions ---

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

namespace {

// A GEMM through OpenBLAS, or through oneDNN's plan for its shape (built on first use: the
// first step, which the harness runs before timing).
class GemmRunner {
 public:
  explicit GemmRunner(GemmBackend b) : backend_(b) {}
  void operator()(const GemmShape& g, const float* a, const float* b, float* c) {
    if (backend_ == GemmBackend::openblas) return gemm_openblas(g, a, b, c);
    auto& plan = plans_[std::make_tuple(g.m, g.n, g.k, g.ta, g.tb, g.alpha, g.beta, g.dtype)];
    if (!plan) plan = std::make_unique<OnednnMatmul>(g);
    plan->run(a, b, c);
  }

 private:
  GemmBackend backend_;
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, float, float, Dtype>,
           std::unique_ptr<OnednnMatmul>>
      plans_;
};

// A convolution pass through im2col + OpenBLAS, or oneDNN's plan for it (NCHW in and out).
class ConvRunner {
 public:
  ConvRunner(GemmBackend b, int threads) : backend_(b), threads_(threads) {}
  void operator()(const ConvShape& s, const float* in0, const float* in1, const float* bias,
                  float* out, float* db) {
    if (backend_ == GemmBackend::openblas) {
      col_.resize(std::max(col_.size(), static_cast<std::size_t>(s.crs() * s.pq())));
      return conv_im2col(s, in0, in1, bias, out, db, col_.data(), threads_);
    }
    auto& plan =
        plans_[{s.n, s.c, s.h, s.w, s.k, s.r, s.s, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                static_cast<std::int64_t>(s.dir), static_cast<std::int64_t>(s.dtype)}];
    if (!plan) plan = std::make_unique<OnednnConvolution>(s);
    plan->run(in0, in1, bias, out, db);
  }

 private:
  GemmBackend backend_;
  int threads_;
  std::vector<float> col_;
  std::map<std::array<std::int64_t, 13>, std::unique_ptr<OnednnConvolution>> plans_;  // by shape
};

// The mean loss over the logits (B x 10), and its gradient dlogits = (softmax - onehot) / B.
float loss_and_gradient(std::int64_t B, const float* logits, const std::int32_t* labels,
                        float* losses, float* dlogits, float* tmp, int threads) {
  rows_omp({RowOp::loss_fwd, B, 10}, logits, labels, losses, tmp, threads);
  double loss = 0;
  for (std::int64_t i = 0; i < B; ++i) loss += losses[i];
  rows_omp({RowOp::loss_bwd, B, 10}, logits, labels, dlogits, tmp, threads);
  return static_cast<float>(loss / static_cast<double>(B));
}

// A linear layer z = a W^T + b (a: B x fi, W: fo x fi), and its backward pass: dW = dz^T a,
// db = column sums of dz, and da = dz W where da is given.
void linear(GemmRunner& gemm, std::int64_t B, std::int64_t fi, std::int64_t fo, const float* a,
            const float* w, const float* b, float* z, int threads) {
  bias_rows(b, z, B, fo, threads);
  GemmShape g;
  g.m = B, g.n = fo, g.k = fi, g.tb = true, g.beta = 1;
  gemm(g, a, w, z);
}

void linear_backward(GemmRunner& gemm, std::int64_t B, std::int64_t fi, std::int64_t fo,
                     const float* a, const float* w, const float* dz, float* gw, float* gb,
                     float* da, int threads) {
  GemmShape gwt;
  gwt.m = fo, gwt.n = fi, gwt.k = B, gwt.ta = true;
  gemm(gwt, dz, a, gw);
  column_sums(dz, B, fo, gb, threads);
  if (!da) return;
  GemmShape gd;
  gd.m = B, gd.n = fi, gd.k = fo;
  gemm(gd, dz, w, da);
}

class MlpCpuStep : public ModelStep {
 public:
  MlpCpuStep(const TrainShape& s, GemmBackend backend, int threads)
      : s_(s), gemm_(backend), threads_(threads) {
    const std::int64_t B = s.batch, H = Mlp::hidden, C = Mlp::classes;
    for (auto* v : {&z0_, &a1_, &z1_, &a2_, &da_}) v->resize(static_cast<std::size_t>(B * H));
    logits_.resize(static_cast<std::size_t>(B * C));
    dlogits_.resize(logits_.size());
    losses_.resize(static_cast<std::size_t>(B));
    tmp_.resize(static_cast<std::size_t>(C * threads));
    grads_.resize(static_cast<std::size_t>(Mlp::param_count()));
  }
  void forward(const float* x, const float* params) override {
    const std::int64_t B = s_.batch;
    const float* in = x;
    float* z[3] = {z0_.data(), z1_.data(), logits_.data()};
    float* act[2] = {a1_.data(), a2_.data()};
    for (int l = 0; l < 3; ++l) {  // z = a W^T + b, then ReLU but for the logits
      linear(gemm_, B, Mlp::fan_in(l), Mlp::fan_out(l), in, params + Mlp::w_offset(l),
             params + Mlp::b_offset(l), z[l], threads_);
      if (l == 2) break;
      activation_omp(Act::relu, z[l], nullptr, act[l], B * Mlp::fan_out(l), threads_);
      in = act[l];
    }
  }
  float step(const float* x, const std::int32_t* labels, float* params, float* velocity) override {
    const std::int64_t B = s_.batch;
    forward(x, params);
    const float loss = loss_and_gradient(B, logits_.data(), labels, losses_.data(), dlogits_.data(),
                                         tmp_.data(), threads_);
    // Backward: the dz of the layer below is relu'(its z) (dz W), written over its z.
    const float* a[3] = {x, a1_.data(), a2_.data()};
    float* below[2] = {z0_.data(), z1_.data()};
    const float* dz = dlogits_.data();
    for (int l = 2; l >= 0; --l) {
      linear_backward(gemm_, B, Mlp::fan_in(l), Mlp::fan_out(l), a[l], params + Mlp::w_offset(l),
                      dz, grads_.data() + Mlp::w_offset(l), grads_.data() + Mlp::b_offset(l),
                      l > 0 ? da_.data() : nullptr, threads_);
      if (l == 0) break;
      float* next = below[l - 1];
      activation_omp(Act::relu, next, da_.data(), next, B * Mlp::fan_in(l), threads_);
      dz = next;
    }
    sgd_momentum(params, velocity, grads_.data(), Mlp::param_count(), s_.lr, s_.momentum, threads_);
    return loss;
  }
  const std::vector<float>& logits() const override { return logits_; }

 private:
  TrainShape s_;
  GemmRunner gemm_;
  int threads_;
  std::vector<float> z0_, a1_, z1_, a2_, logits_, dlogits_, da_, losses_, tmp_, grads_;
};

// conv 3->32, ReLU, pool; conv 32->64, ReLU, pool; linear 4096->10 (core/train.hpp).
class CnnCpuStep : public ModelStep {
 public:
  CnnCpuStep(const TrainShape& s, GemmBackend backend, int threads)
      : s_(s), gemm_(backend), conv_(backend, threads), threads_(threads) {
    const std::int64_t B = s.batch, n1 = B * Cnn::c1 * Cnn::size * Cnn::size;
    z1_.resize(static_cast<std::size_t>(n1));
    r1_.resize(z1_.size());
    p1_.resize(z1_.size() / 4);
    arg1_.resize(p1_.size());
    z2_.resize(z1_.size() / 2);  // 64 channels on 16x16: half of 32 on 32x32
    r2_.resize(z2_.size());
    p2_.resize(z2_.size() / 4);
    arg2_.resize(p2_.size());
    logits_.resize(static_cast<std::size_t>(B * Cnn::classes));
    dlogits_.resize(logits_.size());
    losses_.resize(static_cast<std::size_t>(B));
    tmp_.resize(static_cast<std::size_t>(Cnn::classes * threads));
    grads_.resize(static_cast<std::size_t>(Cnn::param_count()));
  }
  void forward(const float* x, const float* params) override {
    const std::int64_t B = s_.batch;
    const auto& ps = Cnn::params();
    conv_(Cnn::conv(0, B, ConvDir::fwd), x, params + ps[0].offset, params + ps[1].offset,
          z1_.data(), nullptr);
    relu(z1_, r1_);
    maxpool2_forward(B * Cnn::c1, Cnn::size, Cnn::size, r1_.data(), p1_.data(), arg1_.data());
    conv_(Cnn::conv(1, B, ConvDir::fwd), p1_.data(), params + ps[2].offset, params + ps[3].offset,
          z2_.data(), nullptr);
    relu(z2_, r2_);
    maxpool2_forward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, r2_.data(), p2_.data(),
                     arg2_.data());
    linear(gemm_, B, Cnn::flat, Cnn::classes, p2_.data(), params + ps[4].offset,
           params + ps[5].offset, logits_.data(), threads_);
  }
  float step(const float* x, const std::int32_t* labels, float* params, float* velocity) override {
    const std::int64_t B = s_.batch;
    const auto& ps = Cnn::params();
    forward(x, params);
    const float loss = loss_and_gradient(B, logits_.data(), labels, losses_.data(), dlogits_.data(),
                                         tmp_.data(), threads_);
    float* g = grads_.data();
    // The linear layer; its input's gradient dp2 goes into p2's buffer once dW is taken.
    linear_backward(gemm_, B, Cnn::flat, Cnn::classes, p2_.data(), params + ps[4].offset,
                    dlogits_.data(), g + ps[4].offset, g + ps[5].offset, nullptr, threads_);
    GemmShape gd;
    gd.m = B, gd.n = Cnn::flat, gd.k = Cnn::classes;
    gemm_(gd, dlogits_.data(), params + ps[4].offset, p2_.data());
    // Pool 2 and ReLU 2 backward into r2's buffer, conv 2's gradients, and dp1 into p1's.
    maxpool2_backward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, p2_.data(), arg2_.data(),
                      r2_.data());
    relu_backward(z2_, r2_);
    conv_(Cnn::conv(1, B, ConvDir::bwd_filter), p1_.data(), r2_.data(), nullptr, g + ps[2].offset,
          g + ps[3].offset);
    conv_(Cnn::conv(1, B, ConvDir::bwd_data), r2_.data(), params + ps[2].offset, nullptr,
          p1_.data(), nullptr);
    // Pool 1 and ReLU 1 backward into r1's buffer, then conv 1's gradients.
    maxpool2_backward(B * Cnn::c1, Cnn::size, Cnn::size, p1_.data(), arg1_.data(), r1_.data());
    relu_backward(z1_, r1_);
    conv_(Cnn::conv(0, B, ConvDir::bwd_filter), x, r1_.data(), nullptr, g + ps[0].offset,
          g + ps[1].offset);
    sgd_momentum(params, velocity, g, Cnn::param_count(), s_.lr, s_.momentum, threads_);
    return loss;
  }
  const std::vector<float>& logits() const override { return logits_; }

 private:
  void relu(const std::vector<float>& z, std::vector<float>& out) {
    activation_omp(Act::relu, z.data(), nullptr, out.data(), static_cast<std::int64_t>(z.size()),
                   threads_);
  }
  // d (the gradient of relu(z)) becomes the gradient of z, in place.
  void relu_backward(const std::vector<float>& z, std::vector<float>& d) {
    activation_omp(Act::relu, z.data(), d.data(), d.data(), static_cast<std::int64_t>(z.size()),
                   threads_);
  }

  TrainShape s_;
  GemmRunner gemm_;
  ConvRunner conv_;
  int threads_;
  std::vector<float> z1_, r1_, p1_, z2_, r2_, p2_, logits_, dlogits_, losses_, tmp_, grads_;
  std::vector<std::int32_t> arg1_, arg2_;
};

}  // namespace

std::unique_ptr<ModelStep> make_model_step(const TrainShape& s, GemmBackend backend, int threads) {
  if (s.model == Model::mlp) return std::make_unique<MlpCpuStep>(s, backend, threads);
  return std::make_unique<CnnCpuStep>(s, backend, threads);
}

// --- the implementations ---

namespace {

class TrainCpu : public CpuImpl {
 public:
  TrainCpu(const TrainShape& s, GemmBackend backend, int threads)
      : CpuImpl(threads), s_(s), step_(make_model_step(s, backend, threads)) {}
  void prepare(const Tensors& in) override {
    x_ = at(in, "x").f32();
    labels_ = at(in, "labels").i32();
    params_ = at(in, "params").f32();
    velocity_ = at(in, "velocity").f32();
  }
  void run() override {
    if (s_.train)
      loss_ = step_->step(x_.data(), labels_.data(), params_.data(), velocity_.data());
    else
      step_->forward(x_.data(), params_.data());
  }
  Tensors result() override {
    if (!s_.train) {
      Tensor logits("logits", {s_.batch, 10});
      logits.f32() = step_->logits();
      return {logits};
    }
    return {Tensor::of("loss", std::vector<float>{loss_}), Tensor::of("params", params_),
            Tensor::of("velocity", velocity_)};
  }

 private:
  TrainShape s_;
  std::unique_ptr<ModelStep> step_;
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
