// The full training step of a model: forward, softmax cross-entropy, backward and SGD with
// momentum, the same model, data and initial weights on every device; or inference (forward
// only). The model today: an MLP 784-1024-1024-10 with ReLU (MNIST-shaped). Its parameters are
// one flat fp32 vector (mlp_params() gives each tensor's slice), row-major, PyTorch's Linear
// layout: W (out x in), b (out). The update is PyTorch's SGD with momentum:
//   v = momentum v + g;  p = p - lr v.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/workload.hpp"

namespace pb {

struct TrainShape {
  std::int64_t batch = 32;
  bool train = true;  // false: inference, the forward pass alone (logits)
  float lr = 0.01f, momentum = 0.9f;
};

// The MLP's sizes and its parameter tensors as slices of the flat vector.
struct Mlp {
  static constexpr std::int64_t in = 784, hidden = 1024, classes = 10;
  struct Slice {
    const char* name;
    std::int64_t offset, rows, cols;  // a bias has cols = 1
  };
  static const std::vector<Slice>& params();  // w1, b1, w2, b2, w3, b3
  static std::int64_t param_count();
  // Layer l (0, 1, 2): its fan-in and fan-out, and where its W and b start.
  static std::int64_t fan_in(int l) { return l == 0 ? in : hidden; }
  static std::int64_t fan_out(int l) { return l == 2 ? classes : hidden; }
  static std::int64_t w_offset(int l) { return params()[2 * l].offset; }
  static std::int64_t b_offset(int l) { return params()[2 * l + 1].offset; }
  // Multiply-adds of one sample's forward pass.
  static double macs() {
    return static_cast<double>(in * hidden + hidden * hidden + hidden * classes);
  }
};

// Batches by suite: quick 32 and 128; standard 1, 8, 32, 128, 512; full the same.
std::vector<std::int64_t> train_suite_batches(int level);

// --shape keys: model (mlp), batch, pass (train or infer; default train), lr, momentum.
TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv);

// A deterministic, learnable synthetic dataset: sample i has label i's class (a fixed
// permutation of 0..9 repeating) and features 0.5 prototype[label] + 0.5 noise, prototypes and
// noise uniform in [-1, 1] from fixed seeds. batch_index selects which batch.
void synthetic_batch(std::int64_t batch, std::int64_t batch_index, float* x, std::int32_t* labels);
// The initial parameters (uniform in +-1/sqrt(fan_in), PyTorch's Linear default) and a
// velocity as after some steps (uniform in +-1e-3, so the first step checks the momentum).
std::vector<float> mlp_initial_params();
std::vector<float> mlp_initial_velocity();

// The reference step in double precision on the CPU: the mean loss, the logits and the
// updated parameters (and velocity).
struct MlpStep {
  double loss = 0;
  std::vector<double> logits, params, velocity, grads;
};
MlpStep mlp_reference_step(const TrainShape& s, const float* x, const std::int32_t* labels,
                           const float* params, const float* velocity);

class TrainWorkload : public Workload {
 public:
  explicit TrainWorkload(TrainShape s) : s_(s) {}
  const TrainShape& train() const { return s_; }
  std::string op() const override { return "train"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  // train: the forward GEMMs, the weight gradients and the activation gradients of layers 2
  // and 3 (none for the input): 2 batch (3 macs - 784 x 1024); infer: 2 batch macs.
  double flops() const override;
  double min_bytes() const override;  // parameters, velocity, gradients and the batch, once
  double items() const override { return static_cast<double>(s_.batch); }
  Metric metric() const override { return Metric::samples; }
  Role role() const override { return s_.train ? Role::training : Role::none; }
  double host_bytes() const override;
  double device_bytes() const override;
  // x (batch x 784), labels (int32), params, velocity.
  Tensors make_inputs() const override;
  // train: loss (1), params and velocity after the step; infer: logits (batch x 10).
  std::vector<std::string> outputs() const override;
  // Against mlp_reference_step: the loss within 1e-5 relative; each parameter tensor's update
  // (the difference from its value before) within 1e-3 of lr x the rms of its gradient; the
  // logits within 1e-4 of their rms.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  TrainShape s_;
};

}  // namespace pb
