// A model as data: an ordered graph of layers with their shapes, from which its parameter
// layout, its state (batch norm's running statistics), its activation buffers, its FLOP and
// parameter counts and its number of classes all follow. One forward and one backward walk
// (core/train_step.hpp) run any description on any device's op functions, the double-precision
// reference included. Adding a model is one description (a function below) and its name in
// model_names().
//
// Tensors are numbered: 0 is the model's input, and layer i writes tensor i + 1. Every tensor is
// per sample c x h x w, NCHW over the batch; a flat tensor (a linear layer's input or output)
// has h = w = 1. Parameters follow PyTorch's layouts: Conv2d W (k x c x r x s), Linear W (out x
// in), biases (out), BatchNorm2d weight and bias (c).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/conv.hpp"

namespace pb {

enum class LayerKind { conv, linear, batchnorm, relu, maxpool, add, avgpool, flatten, loss };
const char* to_string(LayerKind k);

struct Dims {
  std::int64_t c = 1, h = 1, w = 1;
  std::int64_t size() const { return c * h * w; }
  bool flat() const { return h == 1 && w == 1; }
  bool operator==(const Dims& o) const { return c == o.c && h == o.h && w == o.w; }
};

struct Layer {
  LayerKind kind = LayerKind::relu;
  std::string name;
  int in = 0, in2 = -1;  // the tensors it reads; in2: add's second operand
  // conv: k filters of r x r, stride, pad; linear: k outputs; both: with a bias or not. maxpool:
  // an r x r window, stride, pad.
  std::int64_t k = 0, r = 1, stride = 1, pad = 0;
  bool bias = true;
  float bn_momentum = 0.1f, bn_eps = 1e-5f;  // batch norm: PyTorch's defaults
  Dims out;                                  // what it writes (from the builder)
  // Where its parameters start in the flat vector (weight; bias, or batch norm's beta), and
  // its state (running mean, then running variance); -1 where it has none.
  std::int64_t weight = -1, bias_at = -1, state = -1;
};

// A parameter tensor (or a state tensor) as a slice of the flat vector, and how it starts:
// uniform in +-1/sqrt(fan_in) (a weight, and its bias with the weight's fan-in), ones or zeros.
struct ParamSlice {
  enum class Init { fan_in, ones, zeros };
  std::string name;
  std::int64_t offset, rows, cols;  // rows: the output units; cols: what each sees (1: a bias)
  Init init = Init::fan_in;
  std::int64_t fan_in = 1;
  std::int64_t size() const { return rows * cols; }
};

struct ModelDesc {
  std::string name;
  Dims input;
  std::vector<Layer> layers;       // in order: each reads only tensors written before it
  std::vector<ParamSlice> params;  // in layer order
  std::vector<ParamSlice> state;   // batch norm's running mean and variance, in layer order
  std::int64_t param_count = 0, state_count = 0;
  std::int64_t classes = 0;  // the loss layer's input

  Dims dims(int tensor) const { return tensor == 0 ? input : layers[tensor - 1].out; }
  // The tensor whose memory tensor t shares (a flatten's output is its input's); t otherwise.
  int storage(int tensor) const;
  int logits() const { return layers.back().in; }
  // A convolution layer's shape at this batch, in pass dir.
  ConvShape conv(const Layer& l, std::int64_t batch, ConvDir dir) const;
  double macs() const;              // one sample's forward pass
  double first_layer_macs() const;  // of which those of layers reading the input (no dx)
  // Per sample: the elements of every tensor a step keeps (each storage once).
  double activations() const;
};

// Inference's fusions: the layers a device computes in the pass of an earlier layer, so that the
// maps between them are never written (core/train_step.hpp's FusesConv and FusesRelu). Each
// taken layer is the only reader of the tensor before it (a flatten's output counts as its
// input). With `convs`, a convolution takes, in this order and each optional, a batch norm
// (inference's: the running statistics, a per-channel scale and shift), an add whose other
// operand was written before the convolution (the residual), and a ReLU. With `relus`, a batch
// norm or an add that no convolution took takes a ReLU.
struct Fusion {
  std::size_t last = 0;  // the last layer computed in this layer's pass (its own index: none)
  int batchnorm = -1;    // a convolution's batch norm layer, or -1
  int residual = -1;     // a convolution's residual (the tensor added), or -1
  bool relu = false;     // the pass ends with a ReLU
};
// One per layer (a taken layer's own entry is unused).
std::vector<Fusion> inference_fusions(const ModelDesc& m, bool convs, bool relus);

// Inference's buffers: a map is needed only until the last pass that reads it has run (the
// logits until the caller reads them after the last pass), so maps whose lives do not overlap
// share one buffer. The passes are the forward walk's under `fusions` (inference_fusions): each
// writes the output of its last layer and reads its first layer's inputs and its residual. A
// pass's map takes a buffer that no live map holds, not one the pass reads: the smallest that
// holds it, else the largest (grown to it), else a new one. Per tensor, the tensor whose buffer
// it uses (its own where it owns one), or -1 where no pass writes it: the model's input, a
// flatten's output (its input's memory), a map a pass takes, the loss's output.
std::vector<int> inference_buffers(const ModelDesc& m, const std::vector<Fusion>& fusions);

// A training walk's buffers (core/train_step.hpp's Walk), per tensor. With `in_place` (every
// device's walk; the reference's keeps every map and gradient at an address of its own):
// - a map is written over the one map before it where that map's one reader is this layer and
//   no backward pass reads it after this layer's: a ReLU's input (its backward takes the mask
//   from its output) and an add's first operand (an add's backward reads no value), as
//   PyTorch's in-place ReLU and `out += identity`, but not over an in-place ReLU's output;
// - a gradient that takes no map's buffer takes one that gradients whose lives in the backward
//   pass do not overlap share (share_buffers), from its first write to the backward pass of its
//   tensor's layer.
// Everywhere, a ReLU or a batch norm that is its input's one reader writes the input's gradient
// over its output's, elementwise, and an add's first operand's gradient, which equals its
// output's, is its output's (grad); a gradient takes its own map's buffer (in_value) when no
// reader but the last (whose backward runs first and reads its input before it writes the
// input's gradient) needs the value in its backward pass (a max pool, an add or an average pool
// needs none), and no in-place ReLU's backward reads its mask there. The logits' gradient takes no
// map's: the loss's gradient is computed from them.
struct TrainBuffers {
  std::vector<int> value;        // the tensor whose buffer holds its map (-1: none of its own)
  std::vector<int> grad;         // the tensor whose gradient buffer its gradient uses
  std::vector<bool> in_value;    // its gradient (where grad is itself) is in its map's buffer
  std::vector<int> grad_buffer;  // (grad is itself, not in_value) whose gradient buffer it takes
  std::int64_t accumulated = 0;  // per sample: the largest tensor with more than one reader
};
TrainBuffers training_buffers(const ModelDesc& m, bool in_place);

// Buffers shared by values whose lives do not overlap. A life holds its buffer from step `from`
// to step `until`, both included, and needs `elements`; lives come in order of `from`. Each takes
// a buffer that no live value holds: the smallest that holds it, else the largest (grown to it),
// else a new one. Per life: the index of the life that took its buffer first (its own: new).
struct Life {
  int from = 0, until = 0;
  std::int64_t elements = 0;
};
std::vector<int> share_buffers(const std::vector<Life>& lives);

// Builds a description, layer by layer, each call returning the tensor it writes; build()
// checks the whole. Every shape that does not chain is a std::invalid_argument naming the model
// and the layer: a convolution's filter larger than its padded input, a linear layer on a
// tensor that is not flat, odd maps into a max pool, an add of two shapes, a loss that is not
// last or over a tensor that is not flat, a tensor that does not exist.
class ModelBuilder {
 public:
  ModelBuilder(std::string name, Dims input);
  int conv(int in, std::int64_t k, std::int64_t r, std::int64_t stride = 1, std::int64_t pad = 0,
           bool bias = true, std::string name = "");
  int linear(int in, std::int64_t k, bool bias = true, std::string name = "");
  int batchnorm(int in, std::string name = "");
  int relu(int in);
  int maxpool(int in, std::int64_t k = 2, std::int64_t stride = 2, std::int64_t pad = 0);
  int add(int a, int b);
  int avgpool(int in);  // global average pooling: c x h x w -> c
  int flatten(int in);
  void loss(int logits);  // softmax cross-entropy over the classes
  ModelDesc build();

 private:
  int push(Layer l);
  [[noreturn]] void fail(const Layer& l, const std::string& why) const;
  ModelDesc m_;
};

// The models by name: mlp, cnn, resnet. `image` is the input's side for the models that take
// one (resnet), ignored by the others. Throws std::invalid_argument for an unknown name.
ModelDesc describe_model(const std::string& name, std::int64_t image);
const std::vector<std::string>& model_names();
bool model_takes_image(const std::string& name);

// The initial parameters (PyTorch's defaults: weights and biases uniform in +-1/sqrt(fan_in),
// batch norm's weight 1 and bias 0), a velocity as after some steps (uniform in +-1e-3, so the
// first step checks the momentum), and the initial state (running means 0, variances 1).
std::vector<float> initial_params(const ModelDesc& m);
std::vector<float> initial_velocity(const ModelDesc& m);
std::vector<float> initial_state(const ModelDesc& m);

}  // namespace pb
