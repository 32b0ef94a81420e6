// The full training step of a model: forward, softmax cross-entropy, backward and SGD with
// momentum, the same model, data and initial weights on every device; or inference (forward
// only). The models: an MLP 784-1024-1024-10 with ReLU (MNIST-shaped), and a CNN on 3x32x32
// inputs (CIFAR-shaped): conv 3->32 3x3 pad 1, ReLU, maxpool 2, conv 32->64 3x3 pad 1, ReLU,
// maxpool 2, linear 4096->10; and, in the full suite, an ImageNet-sized model (Resnet below). A
// model's parameters are one flat fp32 vector (model_params()
// gives each tensor's slice) in PyTorch's layouts: Linear W (out x in), Conv2d W (k x c x r x s),
// b (out). The update is PyTorch's SGD with momentum:
//   v = momentum v + g;  p = p - lr v.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/conv.hpp"
#include "core/hd.hpp"
#include "core/workload.hpp"

namespace pb {

enum class Model { mlp, cnn, resnet };
const char* to_string(Model m);

struct TrainShape {
  Model model = Model::mlp;
  std::int64_t batch = 32;
  bool train = true;         // false: inference, the forward pass alone (logits)
  std::int64_t image = 224;  // resnet: its inputs are 3 x image x image (a multiple of 4)
  float lr = 0.01f, momentum = 0.9f;
};

// A parameter tensor as a slice of the flat vector.
struct ParamSlice {
  const char* name;
  std::int64_t offset, rows, cols;  // rows: the output units; cols: what each sees (1: a bias)
};

// The MLP's sizes and its parameter tensors.
struct Mlp {
  static constexpr std::int64_t in = 784, hidden = 1024, classes = 10;
  using Slice = ParamSlice;
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

// The CNN's sizes, its convolutions and its parameter tensors.
struct Cnn {
  static constexpr std::int64_t channels = 3, size = 32, c1 = 32, c2 = 64, classes = 10;
  static constexpr std::int64_t in = channels * size * size;          // 3072 features
  static constexpr std::int64_t flat = c2 * (size / 4) * (size / 4);  // 4096, after two pools
  static const std::vector<ParamSlice>& params();  // conv1.w, conv1.b, conv2.w, conv2.b, fc.w, fc.b
  static std::int64_t param_count();
  // Convolution l (0, 1) at this batch, in pass dir: 3->32 on 32x32, 32->64 on 16x16, 3x3 pad 1.
  static ConvShape conv(int l, std::int64_t batch, ConvDir dir);
  static double macs();  // one sample's forward pass
};

// The ImageNet-sized model: ResNet's stem and bottleneck blocks (without batch norm) on
// 3 x image x image inputs (224 in the full suite): conv 3->64 7x7 stride 2 pad 3, ReLU,
// maxpool 2; two bottleneck blocks at image/4 (1x1 64->32, ReLU, 3x3 32->32 pad 1, ReLU,
// 1x1 32->64, plus the block's input, ReLU); global average pooling; linear 64->10. At 224,
// 0.20 GMAC per image forward, a twentieth of ResNet-50's 4.1.
struct Resnet {
  static constexpr std::int64_t channels = 3, width = 64, mid = 32, blocks = 2, classes = 10;
  static constexpr int convs = 1 + 3 * blocks;  // the stem, then each block's three
  // stem.w, stem.b, then each block's w1, b1, w2, b2, w3, b3, then fc.w, fc.b: convolution c's
  // weight is params()[2c], its bias params()[2c + 1]; the linear layer's are 2 convs, + 1.
  static const std::vector<ParamSlice>& params();
  static std::int64_t param_count();
  // Convolution c (0 the stem; 1 + 3 b + j block b's j-th) at this batch and image size.
  static ConvShape conv(int c, std::int64_t batch, std::int64_t image, ConvDir dir);
  static double macs(std::int64_t image);  // one sample's forward pass
};

// What a model's step needs to know of it, whichever it is.
std::int64_t input_features(const TrainShape& s);  // per sample: 784, 3072 or 3 image^2
const std::vector<ParamSlice>& model_params(Model m);
std::int64_t model_param_count(Model m);
double model_macs(const TrainShape& s);        // one sample's forward pass
double first_layer_macs(const TrainShape& s);  // of which the first layer's (no input gradient)

// 2x2 max pooling, stride 2, over `planes` maps of h x w (h, w even). Output o (of planes x h/2 x
// w/2): the maximum of its window, and in *arg the maximum's index within its plane (the first
// of equals, in window order). Backward routes each gradient to its window's maximum: input
// element e gets its window's gradient where it is that maximum, zero elsewhere (windows do not
// overlap, so each input has one). The window's math is one for the reference (double), the
// CPU's step (float) and the GPU's kernels; the GPU's backward gathers through maxpool2_grad_at,
// the CPU's scatters through arg (the tests hold them equal).
// The window at output row i, column j of a plane of h x w (x and arg: the plane's own).
template <class T>
HD inline T maxpool2_at(std::int64_t w, const T* x, std::int64_t i, std::int64_t j,
                        std::int32_t* arg) {
  std::int64_t best = (2 * i) * w + 2 * j;
  for (std::int64_t r = 0; r < 2; ++r)
    for (std::int64_t s = 0; s < 2; ++s) {
      const std::int64_t at = (2 * i + r) * w + 2 * j + s;
      if (x[at] > x[best]) best = at;
    }
  *arg = static_cast<std::int32_t>(best);
  return x[best];
}
// The gradient of input row r, column c of a plane of h x w (dout and arg: the plane's own).
template <class T>
HD inline T maxpool2_grad_at(std::int64_t w, const T* dout, const std::int32_t* arg, std::int64_t r,
                             std::int64_t c) {
  const std::int64_t o = r / 2 * (w / 2) + c / 2;
  return arg[o] == r * w + c ? dout[o] : T(0);
}
// Over all outputs (forward) or all inputs (backward), on the CPU's threads; core/train.cpp
// instantiates both for float and double.
template <class T>
void maxpool2_forward(std::int64_t planes, std::int64_t h, std::int64_t w, const T* x, T* out,
                      std::int32_t* arg);
template <class T>
void maxpool2_backward(std::int64_t planes, std::int64_t h, std::int64_t w, const T* dout,
                       const std::int32_t* arg, T* dx);

// SGD with momentum for one parameter, PyTorch's form: v = momentum v + g; p -= lr v.
HD inline void sgd_momentum_at(float& p, float& v, float g, float lr, float momentum) {
  v = momentum * v + g;
  p -= lr * v;
}

// Batches by suite: quick 32 and 128; standard 1, 8, 32, 128, 512; full the same.
std::vector<std::int64_t> train_suite_batches(int level);

// --shape keys: model (mlp, cnn, resnet), batch, pass (train or infer; default train), lr,
// momentum; image (resnet only: a multiple of 4 from 8 to 1024, default 224).
TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv);

// A deterministic, learnable synthetic dataset of `features` per sample: sample i has label
// i's class (a fixed permutation of 0..9 repeating) and features 0.5 prototype[label] + 0.5
// noise, prototypes and noise uniform in [-1, 1] from fixed seeds. batch_index selects which
// batch.
void synthetic_batch(std::int64_t features, std::int64_t batch, std::int64_t batch_index, float* x,
                     std::int32_t* labels);
// The initial parameters (uniform in +-1/sqrt(fan_in), PyTorch's Linear and Conv2d default) and
// a velocity as after some steps (uniform in +-1e-3, so the first step checks the momentum).
std::vector<float> initial_params(Model m);
std::vector<float> initial_velocity(Model m);

// The reference step in double precision on the CPU: the mean loss, the logits and the
// updated parameters (and velocity).
struct ReferenceStep {
  double loss = 0;
  std::vector<double> logits, params, velocity, grads;
};
ReferenceStep reference_step(const TrainShape& s, const float* x, const std::int32_t* labels,
                             const float* params, const float* velocity);

// How far a step's outputs are from an expected step's, in the units verify() uses: the loss
// within 1e-5 relative; each parameter tensor's update and velocity within 1e-3 relative, in
// norm; the logits within 1e-4 of their rms. The expected step is the reference, or another
// device's step read back with step_of (the GPU's step against the CPU's).
Check compare_step(const TrainShape& s, const Tensors& inputs, const ReferenceStep& expected,
                   const Tensors& outputs);
ReferenceStep step_of(const TrainShape& s, const Tensors& outputs);

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
  // Floats of one sample's activations, about: what the memory checks count per sample.
  double activations() const;
  // x (batch x 784 or 3072), labels (int32), params, velocity.
  Tensors make_inputs() const override;
  // train: loss (1), params and velocity after the step; infer: logits (batch x 10).
  std::vector<std::string> outputs() const override;
  // compare_step against reference_step.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  TrainShape s_;
};

}  // namespace pb
