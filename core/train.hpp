// The training step of a model (core/model.hpp) as a workload: forward, softmax cross-entropy,
// backward and SGD with momentum, the same model, data and initial weights on every device; or
// inference (forward only). The update is PyTorch's SGD with momentum and weight decay:
//   g += weight_decay p;  v = momentum v + g;  p = p - lr v.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/model.hpp"
#include "core/workload.hpp"

namespace pb {

struct TrainShape {
  std::string model = "mlp";  // a name of model_names()
  std::int64_t batch = 32;
  bool train = true;         // false: inference, the forward pass alone (logits)
  std::int64_t image = 224;  // the models that take an image: its side (a multiple of 4)
  float lr = 0.01f, momentum = 0.9f, weight_decay = 0.0f;
  // fp32; bf16: mixed precision as PyTorch's autocast trains (fp32 master weights, momentum,
  // update, batch norm statistics, loss; the maps and their gradients stored in bf16, the
  // convolutions and GEMMs on bf16 inputs, accumulating in fp32).
  Dtype dtype = Dtype::fp32;
  // Data parallel over `ranks` processes (PyTorch's DDP): `batch` is each rank's, the inputs
  // hold the global batch (ranks x batch samples) and rank r steps on samples [r batch, (r+1)
  // batch). After the backward pass the ranks' gradients are averaged (an all-reduce), so every
  // rank applies the same update; batch norm's statistics stay each rank's own (DDP's default).
  // local: no all-reduce, each rank steps on its own gradients (what N independent devices do:
  // the baseline the data-parallel step's scaling efficiency is measured against).
  int ranks = 1, rank = 0;
  bool local = false;
  // The reference's alone: its batch stands for `replicas` copies of itself (a batch too large
  // for the double-precision reference is made of repeats of one period, which the reference
  // steps on: TrainWorkload::period), so batch norm's unbiased running variance counts them all.
  std::int64_t replicas = 1;
};

// The description of s.model at s.image.
ModelDesc describe_model(const TrainShape& s);

// Batches by suite: quick 32 and 128; standard 1, 8, 32, 128, 512; full the same.
std::vector<std::int64_t> train_suite_batches(int level);

// The weight decay a model trains with unless a shape says otherwise: ResNet-50's recipe's 1e-4
// (torchvision's), 0 for the others.
float default_weight_decay(const std::string& model);

// --shape keys: model (a name of model_names()), batch, pass (train or infer; default train),
// lr, momentum, weight_decay (default_weight_decay); image (the models that take one: a multiple of
// 4 from 8 to 1024, default 224); ranks (the run's: `ranks`, which the shape takes) and
// grads=allreduce (the default) or local (several ranks only).
TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv,
                             int ranks = 1);

// A deterministic, learnable synthetic dataset of `features` per sample: sample i has label
// i's class (a fixed permutation of 0..9 repeating, modulo `classes`) and features 0.5
// prototype[label] + 0.5 noise, prototypes and noise uniform in [-1, 1] from fixed seeds.
// batch_index selects which batch.
void synthetic_batch(std::int64_t features, std::int64_t classes, std::int64_t batch,
                     std::int64_t batch_index, float* x, std::int32_t* labels);

// The reference step in double precision on the CPU: the same walk as every device's step
// (core/train_step.hpp) over double op functions. The mean loss, the logits, the gradients, and
// the parameters, velocity and state after the update (train); the logits alone (infer).
// Over several ranks (s.ranks > 1; x and labels the global batch) it runs every rank's shard in
// turn, the gradients averaged over the shards (none with s.local), and returns rank s.rank's
// loss, logits, gradients and state; without batch norm that is one step on the global batch.
// rounded: every op's result rounded to float, as an fp32 step stores it, and with s.dtype bf16
// every convolution's and GEMM's inputs rounded to bf16, as a bf16 step computes them (the exact
// walk's distance from it is the model's own amplification of that rounding).
// How far a step may be from its reference (compare_step):
struct StepBounds {
  // The relative error, in norm, each tensor's update may have (rounding_bound), and the loss's,
  // relative to |loss| + 1 (rounding_loss_bound).
  double bound = 1e-3, loss_bound = 1e-5;
  // The logits' error allowed, relative to their rms (inference): each logit's within 1e-4; in
  // bf16 their rms error within kRoundingMargin times the rms distance of the reference rounded
  // as bf16 rounds.
  double logits_bound = 1e-4;
  // A low-precision step's: per state tensor, the relative error its change may have
  // (low_precision_state_bounds); its updates are then checked in norm alone.
  std::vector<double> state_bounds;
  // Where a step is checked in norm: how far, in octaves, the reference rounded as the dtype
  // rounds lands from the exact step in any tensor's update norm (norm_spread).
  double norm_spread = 0;
};
struct ReferenceStep {
  double loss = 0;
  std::vector<double> logits, params, velocity, grads, state;
  // An exact training step of a model without batch norm: per parameter, how far its gradient
  // may move when fp32 decides otherwise at the ReLU inputs and max-pooling choices within its
  // summation error of their kink (kinks of them; core/train_ref.cpp); the update may move lr
  // times as far.
  std::vector<double> slack;
  std::int64_t kinks = 0;
  StepBounds bounds;
};
ReferenceStep reference_step(const ModelDesc& m, const TrainShape& s, const float* x,
                             const std::int32_t* labels, const float* params, const float* velocity,
                             const float* state, bool rounded = false);

// How far a step's outputs are from an expected step's, in the units verify() uses: the loss
// within expected.loss_bound relative (1e-5 where nothing says more); each parameter tensor's
// update and velocity, and each state tensor's change, within expected.bound relative, in norm; the
// logits within 1e-4 of their rms. The expected step is the reference, or another device's step
// read back with step_of (the GPU's step against the CPU's).
//
// The bound follows from the model's conditioning (rounding_bound): 1e-3, or kRoundingMargin
// times the largest distance of any tensor's update between the exact reference and the
// reference rounded as the step's dtype rounds (every result stored in fp32 and every GEMM summed
// in fp32; in bf16 the convolutions' and GEMMs' inputs rounded to bf16 too), whichever is larger.
// Fifty layers of batch norm, each followed by ReLUs whose kinks single rounding errors cross, move
// ResNet-50's gradients at PyTorch's initialisation by percents between fp32 and double (PyTorch's
// own differ by up to 3.4% at batch 8 on 32x32): no fp32 step can do better, and which elements a
// run's rounding flips is chance, so one rounded run's distance is a scale, not a ceiling (the
// margin). The mlp, the cnn and the reduced resnet stay at 1e-3, beyond their kinks' slack: an
// element of an update may move, on top of the bound, as far as fp32 deciding otherwise at the ReLU
// inputs within its summation error of 0, and at the max-pooling choices as close, can move it
// (ReferenceStep::slack; one such flip moved the mlp's fc2 bias 1.5x the bound at batch 256).
// Above kMostBound (50%) such a bound says nothing (ResNet-50 at batch 1 on 64x64, or batch 4
// on 32x32: its last batch norms see four values a channel), and the step is checked as a bf16
// step is, below, saying so (Check::method): its update norms are not chaotic there (the rounded
// reference's within 2^0.03-2^0.11 of the exact step's, tensor by tensor, at those shapes and batch
// 1 on 48x48). Below kMostBound, a wrong index, sign or layer still fails (errors of order one).
//
// A bf16 step's update cannot be checked so: its rounding, 2^16 times fp32's, crosses so many
// kinks that ResNet-50's gradients at initialisation are chaotic in bf16 (PyTorch's own autocast
// gradients lie 125-128% from float64 in norm, median over the tensors, at batch 8 on 64x64 and
// on 224x224: scripts/torch_conditioning.py --dtype bf16). What a step computes that is not
// chaotic is checked: the loss (rounding_loss_bound, from the reference rounded as bf16 rounds);
// each batch norm's running statistics, i.e. the forward pass's batch statistics, each within
// kRoundingMargin times its own distance in the rounded reference (low_precision_state_bounds);
// and each tensor's update and velocity in norm, within a factor kUpdateNormFactor of the exact
// step's (a lost, doubled or misplaced gradient fails it). The convolutions and GEMMs the step runs
// are verified one by one in bf16 as the conv and gemm cases. A tf32 step (the GPU's tensor cores
// on fp32 maps: products of inputs rounded to 10-bit mantissas, 2^13 times fp32's rounding) is
// checked the same way, against the reference rounded as tf32 rounds. Where the rounded
// reference's own update norms lie beyond kMostNormSpread octaves of the exact step's (a factor
// 1.68, too near the factor 2 a step is allowed to tell a correct step from a wrong one), the
// norms are chance too, and the shape is not verifiable in its dtype and fails saying so: ResNet-50
// at batch 2 on 32x32 in fp32 (its last batch norms see two values a channel: every update's
// norm moves 13x) and in bf16, batch 4 on 32x32 in bf16 (2^1.28), batch 1 on 64x64 in bf16 and
// fp16 (2^1.04, 2^1.15); at batch 8 on 32x32 to 224x224 the rounded reference's bf16 norms lie
// within 2^0.45-2^0.55, and at batch 1 on 224x224 within 2^0.28.
constexpr double kUpdateTolerance = 1e-3, kLossTolerance = 1e-5;
constexpr double kKinkSigmas = 8;  // the kinks' width, in probabilistic error bounds
constexpr double kRoundingMargin = 10;
constexpr double kMostBound = 0.5;
constexpr double kUpdateNormFactor = 2;
constexpr double kMostNormSpread = 0.75;
// The most host memory a reference step may take (TrainWorkload::period): ResNet-50's at batch
// 32 on 224x224 fits (about 13 GB measured), its batch 64 does not.
constexpr double kMostReferenceBytes = 16e9;
std::vector<double> low_precision_state_bounds(const ModelDesc& m, const Tensors& inputs,
                                               const ReferenceStep& exact,
                                               const ReferenceStep& rounded);
double rounding_bound(const ModelDesc& m, const TrainShape& s, const Tensors& inputs,
                      const ReferenceStep& exact, const ReferenceStep& rounded);
// The loss's the same way: 1e-5, or kRoundingMargin times the rounded reference's distance
// from the exact one, relative to |loss| + 1.
double rounding_loss_bound(const ReferenceStep& exact, const ReferenceStep& rounded);
// The most octaves (|log2| of the ratio) by which the rounded reference's update or velocity of
// any parameter tensor is longer or shorter than the exact step's (StepBounds::norm_spread).
double norm_spread(const ModelDesc& m, const Tensors& inputs, const ReferenceStep& exact,
                   const ReferenceStep& rounded);
Check compare_step(const ModelDesc& m, const TrainShape& s, const Tensors& inputs,
                   const ReferenceStep& expected, const Tensors& outputs);
Check compare_step(const ModelDesc& m, const TrainShape& s, const Tensors& inputs,
                   const ReferenceStep& expected, const StepBounds& bounds, const Tensors& outputs);
ReferenceStep step_of(const TrainShape& s, const Tensors& outputs);

class TrainWorkload : public Workload {
 public:
  // The model of s.model, or one given (a test's own description, named in the shape).
  explicit TrainWorkload(TrainShape s, std::shared_ptr<const ModelDesc> model = nullptr);
  const TrainShape& train() const { return s_; }
  const ModelDesc& model() const { return *m_; }
  std::string op() const override { return "train"; }
  Shape shape() const override;
  Dtype dtype() const override { return s_.dtype; }
  // train: the forward GEMMs and convolutions, the weight gradients and the input gradients
  // of every layer but those reading the input: 2 batch (3 macs - first-layer macs); infer:
  // 2 batch macs. Over several ranks the work, the bytes and the samples are every rank's
  // together (the global batch's); the all-reduce is not counted.
  double flops() const override;
  double min_bytes() const override;  // parameters, velocity, gradients and the batch, once
  double items() const override { return static_cast<double>(s_.batch * s_.ranks); }
  Metric metric() const override { return Metric::samples; }
  double gradient_bytes() const override {
    return s_.train ? 4.0 * static_cast<double>(m_->param_count) : 0.0;
  }
  Role role() const override { return s_.train ? Role::training : Role::none; }
  double host_bytes(Device device) const override;
  double device_bytes() const override;
  // x (ranks x batch rows of features: the global batch), labels (int32), params, velocity;
  // state where the model has one. A batch of more than period() samples repeats its first
  // period() samples.
  Tensors make_inputs() const override;
  // The samples the batch is made of: all of the global batch, or, where the double-precision
  // reference of it would take more than kMostReferenceBytes, the largest divisor of the batch
  // whose reference does not (one rank). On a batch of repeats the exact step is the step on one
  // period: the loss is the same mean, every batch statistic the same (the unbiased running
  // variance aside, which TrainShape::replicas corrects), so every gradient is the same. The
  // reference steps on one period; the implementation on the whole batch, at its full cost.
  std::int64_t period() const;
  // train: loss (1), params and velocity after the step, and state where there is one; infer:
  // logits (batch x classes).
  std::vector<std::string> outputs() const override;
  // compare_step against reference_step, which runs once per workload's inputs (ReferenceMemo).
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;
  void prepare_reference(const Tensors& inputs) const override { reference(inputs); }
  // The double-precision reference step's convolutions and GEMMs run through cblas_dgemm.
  bool verifies_through_openblas() const override { return true; }

 private:
  TrainShape s_;
  std::shared_ptr<const ModelDesc> m_;
  // The bounds for these inputs; exact_ then holds the exact reference step.
  const StepBounds& reference(const Tensors& inputs) const;
  ReferenceMemo<StepBounds> bounds_;
  // The exact reference step, shared with the workloads of the same step in another dtype
  // (fp32's and bf16's cases of one ResNet-50 shape compute it once).
  mutable std::shared_ptr<const ReferenceStep> exact_;
};

}  // namespace pb
