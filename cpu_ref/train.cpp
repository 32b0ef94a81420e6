// The training step on the CPU: core/train_step.hpp's walk over the CPU's op functions, the ones
// the single-op benchmarks time (no second copy of any op): GEMMs through OpenBLAS (`openblas`)
// or oneDNN's matmul plans (`onednn`); convolutions through im2col + OpenBLAS (`openblas`) or
// oneDNN's convolution plans (`onednn`); ReLU forward and backward and the softmax cross-entropy
// loss through the OpenMP activation and row functions; max pooling, batch normalization and
// global average pooling (core/layers.hpp); and the small ones here: the bias broadcast, the bias
// gradient (column sums), SGD, the residual add.
#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <stdexcept>

#include "core/activation.hpp"
#include "core/train.hpp"
#include "core/train_step.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

namespace {

// A GEMM through OpenBLAS, or through oneDNN's plan for its shape (built on first use: the
// first step, which the harness runs before timing). In bf16 the operands are converted to it
// first (the model's GEMMs are its small linear layers).
class GemmRunner {
 public:
  GemmRunner(TrainBackend b, Dtype t) : backend_(b), dtype_(t) {}
  void operator()(GemmShape g, const float* a, const float* b, float* c) {
    if (backend_ == TrainBackend::openblas) return gemm_openblas(g, a, b, c);
    g.dtype = dtype_;
    auto& plan = plans_[std::make_tuple(g.m, g.n, g.k, g.ta, g.tb, g.alpha, g.beta, g.dtype)];
    if (!plan) plan = std::make_unique<OnednnMatmul>(g);
    if (g.dtype == Dtype::fp32) return plan->run(a, b, c);
    low_a_.resize(std::max(low_a_.size(), static_cast<std::size_t>(g.m * g.k)));
    low_b_.resize(std::max(low_b_.size(), static_cast<std::size_t>(g.k * g.n)));
    plan->convert(true, a, low_a_.data());
    plan->convert(false, b, low_b_.data());
    plan->run(low_a_.data(), low_b_.data(), c);
  }

 private:
  TrainBackend backend_;
  Dtype dtype_;
  std::vector<std::uint16_t> low_a_, low_b_;  // the operands in bf16
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, float, float, Dtype>,
           std::unique_ptr<OnednnMatmul>>
      plans_;
};

// A convolution pass through im2col + OpenBLAS (NCHW in and out), or oneDNN's plan for it (NHWC
// in and out: oneDNN's fp32 convolutions read and write NHWC maps where they lie, with no
// reorder; in bf16 the plan converts its inputs and returns fp32).
class ConvRunner {
 public:
  ConvRunner(TrainBackend b, int threads, Dtype t) : backend_(b), threads_(threads), dtype_(t) {}
  void operator()(ConvShape s, const float* in0, const float* in1, const float* bias, float* out,
                  float* db) {
    s.dtype = dtype_;
    if (backend_ == TrainBackend::openblas) {
      col_.resize(std::max(col_.size(), static_cast<std::size_t>(s.crs() * s.pq())));
      return conv_im2col(s, in0, in1, bias, out, db, col_.data(), threads_);
    }
    auto& plan =
        plans_[{s.n, s.c, s.h, s.w, s.k, s.r, s.s, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                static_cast<std::int64_t>(s.dir), static_cast<std::int64_t>(s.dtype)}];
    if (!plan) plan = std::make_unique<OnednnConvolution>(s, true);
    plan->run(in0, in1, bias, out, db);
  }

 private:
  TrainBackend backend_;
  int threads_;
  Dtype dtype_;
  std::vector<float> col_;
  std::map<std::array<std::int64_t, 13>, std::unique_ptr<OnednnConvolution>> plans_;  // by shape
};

// The CPU's backend for core/train_step.hpp: host vectors and the OpenMP, OpenBLAS and oneDNN
// op functions, on `threads` threads. With oneDNN the maps stay NHWC between layers, and the
// convolutions and GEMMs compute in the step's dtype (fp32 or bf16).
class CpuOps : public HostOps<float> {
 public:
  CpuOps(TrainBackend backend, int threads, Dtype t)
      : channels_last_(backend == TrainBackend::onednn),
        gemm_(backend, t),
        conv_(backend, threads, t),
        threads_(threads),
        tmp_(static_cast<std::size_t>(10 * threads)) {}
  bool channels_last() const { return channels_last_; }
  void relayout(const Maps& s, const float* x, float* out) { pb::relayout(s, x, out); }
  void gemm(const GemmShape& g, const float* a, const float* b, float* c) { gemm_(g, a, b, c); }
  void conv(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
            float* db) {
    conv_(s, in0, in1, b, out, db);
  }
  void relu(const float* z, const float* dy, float* out, std::int64_t n) {
    activation_omp(Act::relu, z, dy, out, n, threads_);
  }
  void rows(const RowShape& s, const float* x, const std::int32_t* labels, float* out) {
    tmp_.resize(std::max(tmp_.size(), static_cast<std::size_t>(s.cols * threads_)));
    rows_omp(s, x, labels, out, tmp_.data(), threads_);
  }
  void mean(const float* x, std::int64_t n, float* out) {
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += x[i];
    *out = static_cast<float>(sum / static_cast<double>(n));
  }
  void bias_rows(const float* b, float* out, std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t i = 0; i < rows; ++i) std::copy(b, b + cols, out + i * cols);
  }
  void column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* out) {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < cols; ++j) {
      float sum = 0;
      for (std::int64_t i = 0; i < rows; ++i) sum += x[i * cols + j];
      out[j] = sum;
    }
  }
  void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j)
      sgd_momentum_at(p[j], v[j], g[j], lr, momentum, weight_decay);
  }
  void add(const float* a, const float* b, float* out, std::int64_t n) {
#pragma omp parallel for simd num_threads(threads_) schedule(static)
    for (std::int64_t j = 0; j < n; ++j) out[j] = a[j] + b[j];
  }

 private:
  bool channels_last_;
  GemmRunner gemm_;
  ConvRunner conv_;
  int threads_;
  std::vector<float> tmp_;  // the row functions' scratch: a row's floats a thread
};

// A step that owns its backend (made before the step, which allocates through it).
struct OwnsCpuOps {
  CpuOps ops;
};
class CpuModelStep : private OwnsCpuOps, public WalkStep<CpuOps> {
 public:
  CpuModelStep(const ModelDesc& m, const TrainShape& s, TrainBackend backend, int threads)
      : OwnsCpuOps{CpuOps(backend, threads, s.dtype)}, WalkStep<CpuOps>(m, s, ops) {}
};

}  // namespace

std::unique_ptr<ModelStep> make_model_step(const ModelDesc& m, const TrainShape& s,
                                           TrainBackend backend, int threads) {
  if (backend == TrainBackend::openblas && s.dtype != Dtype::fp32)
    throw std::invalid_argument(std::string("the OpenBLAS step runs fp32 only, not ") +
                                to_string(s.dtype));
  return std::make_unique<CpuModelStep>(m, s, backend, threads);
}

// --- the implementations ---

namespace {

class TrainCpu : public CpuImpl {
 public:
  TrainCpu(const TrainWorkload& w, TrainBackend backend, int threads)
      : CpuImpl(threads), w_(w), step_(make_model_step(w.model(), w.train(), backend, threads)) {}
  void prepare(const Tensors& in) override {
    x_ = at(in, "x").f32();
    labels_ = at(in, "labels").i32();
    params_ = at(in, "params").f32();
    velocity_ = at(in, "velocity").f32();
    if (const Tensor* state = find(in, "state")) state_ = state->f32();
  }
  void run() override {
    if (w_.train().train)
      step_->step(x_.data(), labels_.data(), params_.data(), velocity_.data(), state_.data(),
                  w_.model().param_count);
    else
      step_->forward(x_.data(), params_.data(), state_.data());
  }
  Tensors result() override {
    const std::int64_t batch = w_.train().batch, classes = w_.model().classes;
    if (!w_.train().train) {
      Tensor logits("logits", {batch, classes});
      std::copy(step_->logits(), step_->logits() + logits.f32().size(), logits.f32().begin());
      return {logits};
    }
    Tensors out = {Tensor::of("loss", std::vector<float>{*step_->loss()}),
                   Tensor::of("params", params_), Tensor::of("velocity", velocity_)};
    if (!state_.empty()) out.push_back(Tensor::of("state", state_));
    return out;
  }

 private:
  const TrainWorkload& w_;
  std::unique_ptr<ModelStep> step_;
  std::vector<float> x_, params_, velocity_, state_;
  std::vector<std::int32_t> labels_;
};

ImplSpec spec(const char* name, TrainBackend backend) {
  ImplSpec sp;
  sp.op = "train";
  sp.name = name;
  sp.device = Device::cpu;
  sp.threaded = true;  // on the cores (--threads); no model is a sweep shape
  sp.library = name;
  sp.supports = [](const Workload& w) { return w.dtype() == Dtype::fp32; };
  sp.make = [backend](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<TrainCpu>(static_cast<const TrainWorkload&>(w), backend, threads);
  };
  return sp;
}

}  // namespace

std::vector<ImplSpec> train_impls() {
  ImplSpec with_onednn = spec("onednn", TrainBackend::onednn);
  with_onednn.supports = [](const Workload& w) {
    return w.dtype() == Dtype::fp32 || w.dtype() == Dtype::bf16;
  };
  with_onednn.unavailable = [](const Workload& w) { return onednn::unavailable(w.dtype()); };
  ImplSpec with_openblas = spec("openblas", TrainBackend::openblas);
  // The suites leave out its steps above ResNet-50's at batch 8 on 224x224 (194 GFLOP): the
  // im2col path's cost shows there, and at batch 32 its step is the suite's slowest case.
  with_openblas.max_flops = 2.5e11;
  return {with_openblas, with_onednn};
}

}  // namespace pb::cpu
