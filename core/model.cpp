#include "core/model.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/layers.hpp"
#include "core/rng.hpp"

namespace pb {

const char* to_string(LayerKind k) {
  static const char* const names[] = {"conv", "linear",  "batchnorm", "relu", "maxpool",
                                      "add",  "avgpool", "flatten",   "loss"};
  return names[static_cast<int>(k)];
}

int ModelDesc::storage(int tensor) const {
  while (tensor > 0 && layers[tensor - 1].kind == LayerKind::flatten)
    tensor = layers[tensor - 1].in;
  return tensor;
}

ConvShape ModelDesc::conv(const Layer& l, std::int64_t batch, ConvDir dir) const {
  const Dims in = dims(l.in);
  ConvShape s;
  s.dir = dir, s.n = batch, s.c = in.c, s.h = in.h, s.w = in.w;
  s.k = l.k, s.r = s.s = l.r;
  s.stride_h = s.stride_w = l.stride, s.pad_h = s.pad_w = l.pad;
  s.bias = l.bias;
  return s;
}

namespace {
double layer_macs(const ModelDesc& m, const Layer& l) {
  if (l.kind == LayerKind::linear) return static_cast<double>(l.k * m.dims(l.in).size());
  if (l.kind != LayerKind::conv) return 0;
  const ConvShape s = m.conv(l, 1, ConvDir::fwd);
  return static_cast<double>(s.k * s.crs() * s.pq());
}
}  // namespace

double ModelDesc::macs() const {
  double sum = 0;
  for (const Layer& l : layers) sum += layer_macs(*this, l);
  return sum;
}

double ModelDesc::first_layer_macs() const {
  double sum = 0;
  for (const Layer& l : layers)
    if (storage(l.in) == 0) sum += layer_macs(*this, l);
  return sum;
}

double ModelDesc::activations() const {
  double sum = static_cast<double>(input.size());
  for (std::size_t t = 1; t <= layers.size(); ++t)
    if (storage(static_cast<int>(t)) == static_cast<int>(t) &&
        layers[t - 1].kind != LayerKind::loss)
      sum += static_cast<double>(layers[t - 1].out.size());
  return sum;
}

std::vector<Fusion> inference_fusions(const ModelDesc& m, bool convs, bool relus) {
  const std::size_t layers = m.layers.size();
  std::vector<int> readers(layers + 1, 0);
  for (const Layer& l : m.layers) {
    if (l.kind == LayerKind::flatten) continue;  // not a reader: its output is the memory
    ++readers[m.storage(l.in)];
    if (l.kind == LayerKind::add) ++readers[m.storage(l.in2)];
  }
  // Whether layer j + 1 is of `kind` and the only reader of layer j's output.
  auto next_reads_alone = [&](std::size_t j, LayerKind kind) {
    const int t = static_cast<int>(j) + 1;
    if (j + 1 >= layers || m.storage(t) != t || readers[t] != 1) return false;
    const Layer& next = m.layers[j + 1];
    return next.kind == kind && (next.in == t || (kind == LayerKind::add && next.in2 == t));
  };
  std::vector<Fusion> out(layers);
  for (std::size_t i = 0; i < layers; ++i) out[i].last = i;
  for (std::size_t i = 0; i < layers; ++i) {
    Fusion& f = out[i];
    const LayerKind kind = m.layers[i].kind;
    if (kind == LayerKind::conv && convs) {
      if (next_reads_alone(f.last, LayerKind::batchnorm)) f.batchnorm = static_cast<int>(++f.last);
      if (next_reads_alone(f.last, LayerKind::add)) {
        const Layer& add = m.layers[f.last + 1];
        const int other = add.in == static_cast<int>(f.last) + 1 ? add.in2 : add.in;
        if (m.storage(other) <= static_cast<int>(i)) f.residual = other, ++f.last;
      }
    } else if (!((kind == LayerKind::batchnorm || kind == LayerKind::add) && relus)) {
      continue;
    }
    if (next_reads_alone(f.last, LayerKind::relu)) f.relu = true, ++f.last;
    i = f.last;  // the layers taken are not passes of their own
  }
  return out;
}

std::vector<int> inference_buffers(const ModelDesc& m, const std::vector<Fusion>& fusions) {
  struct Pass {
    int writes;
    std::vector<int> reads;
  };
  std::vector<Pass> passes;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const Layer& l = m.layers[i];
    if (l.kind == LayerKind::flatten || l.kind == LayerKind::loss) continue;
    const Fusion& f = fusions[i];
    Pass p{static_cast<int>(f.last) + 1, {m.storage(l.in)}};
    if (l.kind == LayerKind::add) p.reads.push_back(m.storage(l.in2));
    if (f.residual >= 0) p.reads.push_back(m.storage(f.residual));
    passes.push_back(std::move(p));
    i = f.last;
  }
  const int count = static_cast<int>(passes.size());
  std::vector<int> last_read(m.layers.size() + 1, -1);  // per tensor: the last pass reading it
  for (int j = 0; j < count; ++j)
    for (int t : passes[static_cast<std::size_t>(j)].reads)
      last_read[static_cast<std::size_t>(t)] = j;
  last_read[static_cast<std::size_t>(m.storage(m.logits()))] = count;
  std::vector<Life> lives;
  for (int j = 0; j < count; ++j) {
    const int t = passes[static_cast<std::size_t>(j)].writes;
    lives.push_back({j, std::max(last_read[static_cast<std::size_t>(t)], j), m.dims(t).size()});
  }
  const std::vector<int> opener = share_buffers(lives);
  std::vector<int> out(m.layers.size() + 1, -1);
  for (std::size_t j = 0; j < passes.size(); ++j)
    out[static_cast<std::size_t>(passes[j].writes)] =
        passes[static_cast<std::size_t>(opener[j])].writes;
  return out;
}

TrainBuffers training_buffers(const ModelDesc& m, bool in_place) {
  const std::size_t tensors = m.layers.size() + 1;
  const int last_layer = static_cast<int>(m.layers.size()) - 1;
  std::vector<std::vector<int>> readers(tensors);  // per storage tensor: the layers reading it
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const Layer& l = m.layers[i];
    if (l.kind == LayerKind::flatten) continue;  // not a reader: its output is the memory
    readers[static_cast<std::size_t>(m.storage(l.in))].push_back(static_cast<int>(i));
    if (l.kind == LayerKind::add)
      readers[static_cast<std::size_t>(m.storage(l.in2))].push_back(static_cast<int>(i));
  }
  // A tensor with memory of its own: not the input, a flatten's output or the loss's.
  auto kept = [&](std::size_t t) {
    return t > 0 && m.storage(static_cast<int>(t)) == static_cast<int>(t) &&
           m.layers[t - 1].kind != LayerKind::loss;
  };
  TrainBuffers b;
  b.value.assign(tensors, -1);
  // Per buffer: an in-place ReLU wrote it, and its backward reads its mask from there.
  std::vector<bool> masks(tensors, false);
  for (std::size_t t = 1; t < tensors; ++t) {
    if (!kept(t)) continue;
    const Layer& l = m.layers[t - 1];
    const int u = m.storage(l.in);
    const bool over =
        in_place && u > 0 && readers[static_cast<std::size_t>(u)].size() == 1 &&
        !masks[static_cast<std::size_t>(b.value[static_cast<std::size_t>(u)])] &&
        (l.kind == LayerKind::relu || (l.kind == LayerKind::add && u != m.storage(l.in2)));
    b.value[t] = over ? b.value[static_cast<std::size_t>(u)] : static_cast<int>(t);
    if (over && l.kind == LayerKind::relu) masks[static_cast<std::size_t>(b.value[t])] = true;
  }
  auto needs_value = [&](int i) {
    const LayerKind k = m.layers[static_cast<std::size_t>(i)].kind;
    return k != LayerKind::maxpool && k != LayerKind::add && k != LayerKind::avgpool;
  };
  b.grad.resize(tensors);
  b.in_value.assign(tensors, false);
  for (std::size_t t = 1; t < tensors; ++t) {
    b.grad[t] = static_cast<int>(t);
    const std::vector<int>& r = readers[t];
    if (r.size() > 1) b.accumulated = std::max(b.accumulated, m.dims(static_cast<int>(t)).size());
    b.in_value[t] = static_cast<int>(t) != m.storage(m.logits()) && !r.empty() &&
                    !(b.value[t] > 0 && masks[static_cast<std::size_t>(b.value[t])]) &&
                    std::none_of(r.begin(), r.end() - 1, needs_value);
  }
  for (std::size_t i = m.layers.size(); i-- > 0;) {  // a later layer's choice first
    const Layer& l = m.layers[i];
    const auto in = static_cast<std::size_t>(m.storage(l.in));
    const bool elementwise = l.kind == LayerKind::relu || l.kind == LayerKind::batchnorm ||
                             (l.kind == LayerKind::add && m.storage(l.in2) != static_cast<int>(in));
    if (elementwise && in != 0 && readers[in].size() == 1) b.grad[in] = b.grad[i + 1];
  }
  // The gradients in buffers of their own: each lives in the backward pass (its steps count
  // down the layers) from the backward pass of the last layer reading one of its tensors, which
  // writes it first, to that of the first layer writing one, which reads it last.
  b.grad_buffer.assign(tensors, -1);
  std::vector<int> owners;
  std::vector<Life> lives;
  for (std::size_t o = 1; o < tensors; ++o) {
    if (!kept(o) || b.grad[o] != static_cast<int>(o) || b.in_value[o]) continue;
    int first = static_cast<int>(o) - 1, last = first;  // layers
    std::int64_t elements = 0;
    for (std::size_t t = 1; t < tensors; ++t)
      if (kept(t) && b.grad[t] == static_cast<int>(o)) {
        first = std::min(first, static_cast<int>(t) - 1);
        for (int r : readers[t]) last = std::max(last, r);
        elements = std::max(elements, m.dims(static_cast<int>(t)).size());
      }
    owners.push_back(static_cast<int>(o));
    lives.push_back({last_layer - last, last_layer - first, elements});
  }
  std::vector<std::size_t> order(owners.size());
  for (std::size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t x, std::size_t y) { return lives[x].from < lives[y].from; });
  std::vector<Life> sorted;
  for (std::size_t j : order) sorted.push_back(lives[j]);
  const std::vector<int> opener = in_place ? share_buffers(sorted) : std::vector<int>();
  for (std::size_t j = 0; j < order.size(); ++j) {
    const int o = owners[order[j]];
    b.grad_buffer[static_cast<std::size_t>(o)] =
        in_place ? owners[order[static_cast<std::size_t>(opener[j])]] : o;
  }
  return b;
}

std::vector<int> share_buffers(const std::vector<Life>& lives) {
  struct Buffer {
    int opener;
    std::int64_t elements;
    int busy_until;  // the last step of its last life
  };
  std::vector<Buffer> buffers;
  std::vector<int> out;
  for (std::size_t j = 0; j < lives.size(); ++j) {
    const Life& life = lives[j];
    const std::int64_t need = life.elements;
    Buffer* best = nullptr;
    for (Buffer& b : buffers) {
      if (b.busy_until >= life.from) continue;
      const bool fits = b.elements >= need;
      if (!best || (fits != (best->elements >= need)
                        ? fits
                        : (fits ? b.elements < best->elements : b.elements > best->elements)))
        best = &b;
    }
    if (!best) best = &buffers.emplace_back(Buffer{static_cast<int>(j), need, life.until});
    best->elements = std::max(best->elements, need);
    best->busy_until = life.until;
    out.push_back(best->opener);
  }
  return out;
}

ModelBuilder::ModelBuilder(std::string name, Dims input) {
  m_.name = std::move(name);
  m_.input = input;
}

void ModelBuilder::fail(const Layer& l, const std::string& why) const {
  throw std::invalid_argument("model " + m_.name + ", layer " +
                              std::to_string(m_.layers.size() + 1) + " (" + to_string(l.kind) +
                              (l.name.empty() ? "" : " " + l.name) + "): " + why);
}

int ModelBuilder::push(Layer l) {
  const int tensors = static_cast<int>(m_.layers.size()) + 1;
  auto check = [&](int t) {
    if (t < 0 || t >= tensors)
      fail(l, "reads tensor " + std::to_string(t) + ", which is not written before it");
  };
  check(l.in);
  if (l.kind == LayerKind::add) check(l.in2);
  if (!m_.layers.empty() && m_.layers.back().kind == LayerKind::loss)
    fail(l, "comes after the loss, which must be last");
  const Dims in = m_.dims(l.in);
  auto param = [&](std::string name, std::int64_t rows, std::int64_t cols, ParamSlice::Init init,
                   std::int64_t fan_in) {
    m_.params.push_back({l.name + "." + name, m_.param_count, rows, cols, init, fan_in});
    m_.param_count += rows * cols;
    return m_.params.back().offset;
  };
  switch (l.kind) {
    case LayerKind::conv: {
      const ConvShape s = m_.conv(l, 1, ConvDir::fwd);
      if (l.k < 1 || l.r < 1 || l.stride < 1 || l.pad < 0)
        fail(l, "needs k, r and stride of at least 1 and pad of at least 0");
      if (!conv_shape_problem(s).empty()) fail(l, conv_shape_problem(s));
      l.out = {l.k, s.p(), s.q()};
      l.weight = param("w", l.k, s.crs(), ParamSlice::Init::fan_in, s.crs());
      if (l.bias) l.bias_at = param("b", l.k, 1, ParamSlice::Init::fan_in, s.crs());
      break;
    }
    case LayerKind::linear:
      if (!in.flat())
        fail(l, "needs a flat input, not " + std::to_string(in.c) + "x" + std::to_string(in.h) +
                    "x" + std::to_string(in.w) + " (flatten or pool first)");
      if (l.k < 1) fail(l, "needs at least one output");
      l.out = {l.k, 1, 1};
      l.weight = param("w", l.k, in.c, ParamSlice::Init::fan_in, in.c);
      if (l.bias) l.bias_at = param("b", l.k, 1, ParamSlice::Init::fan_in, in.c);
      break;
    case LayerKind::batchnorm:
      l.out = in;
      l.weight = param("weight", in.c, 1, ParamSlice::Init::ones, 1);
      l.bias_at = param("bias", in.c, 1, ParamSlice::Init::zeros, 1);
      l.state = m_.state_count;
      m_.state.push_back({l.name + ".running_mean", l.state, in.c, 1, ParamSlice::Init::zeros, 1});
      m_.state.push_back(
          {l.name + ".running_var", l.state + in.c, in.c, 1, ParamSlice::Init::ones, 1});
      m_.state_count += 2 * in.c;
      break;
    case LayerKind::relu:
      l.out = in;
      break;
    case LayerKind::maxpool: {
      if (l.r < 1 || l.stride < 1 || l.pad < 0 || 2 * l.pad > l.r)
        fail(l, "needs a window and stride of at least 1 and padding from 0 to half the window");
      const PoolShape s{1, in.h, in.w, l.r, l.stride, l.pad};
      if (in.h + 2 * l.pad < l.r || in.w + 2 * l.pad < l.r)
        fail(l, "its " + std::to_string(l.r) + "x" + std::to_string(l.r) +
                    " window is larger than the padded " + std::to_string(in.h) + "x" +
                    std::to_string(in.w) + " input");
      l.out = {in.c, s.oh(), s.ow()};
      break;
    }
    case LayerKind::add:
      if (!(m_.dims(l.in2) == in)) fail(l, "adds two tensors of different shapes");
      l.out = in;
      break;
    case LayerKind::avgpool:
      l.out = {in.c, 1, 1};
      break;
    case LayerKind::flatten:
      l.out = {in.size(), 1, 1};
      break;
    case LayerKind::loss:
      if (!in.flat() || in.c < 2) fail(l, "needs flat logits of at least 2 classes");
      l.out = {1, 1, 1};
      m_.classes = in.c;
      break;
  }
  m_.layers.push_back(std::move(l));
  return static_cast<int>(m_.layers.size());
}

namespace {
Layer layer(LayerKind kind, int in, std::string name = "") {
  Layer l;
  l.kind = kind, l.in = in, l.name = std::move(name);
  return l;
}
}  // namespace

int ModelBuilder::conv(int in, std::int64_t k, std::int64_t r, std::int64_t stride,
                       std::int64_t pad, bool bias, std::string name) {
  Layer l = layer(LayerKind::conv, in, std::move(name));
  l.k = k, l.r = r, l.stride = stride, l.pad = pad, l.bias = bias;
  return push(std::move(l));
}
int ModelBuilder::linear(int in, std::int64_t k, bool bias, std::string name) {
  Layer l = layer(LayerKind::linear, in, std::move(name));
  l.k = k, l.bias = bias;
  return push(std::move(l));
}
int ModelBuilder::batchnorm(int in, std::string name) {
  return push(layer(LayerKind::batchnorm, in, std::move(name)));
}
int ModelBuilder::relu(int in) { return push(layer(LayerKind::relu, in)); }
int ModelBuilder::maxpool(int in, std::int64_t k, std::int64_t stride, std::int64_t pad) {
  Layer l = layer(LayerKind::maxpool, in);
  l.r = k, l.stride = stride, l.pad = pad;
  return push(std::move(l));
}
int ModelBuilder::add(int a, int b) {
  Layer l = layer(LayerKind::add, a);
  l.in2 = b;
  return push(std::move(l));
}
int ModelBuilder::avgpool(int in) { return push(layer(LayerKind::avgpool, in)); }
int ModelBuilder::flatten(int in) { return push(layer(LayerKind::flatten, in)); }
void ModelBuilder::loss(int logits) { push(layer(LayerKind::loss, logits)); }

ModelDesc ModelBuilder::build() {
  if (m_.layers.empty() || m_.layers.back().kind != LayerKind::loss)
    throw std::invalid_argument("model " + m_.name + " does not end in a loss");
  if (m_.param_count == 0) throw std::invalid_argument("model " + m_.name + " has no parameters");
  return m_;
}

// --- the models ---------------------------------------------------------------------------------

namespace {

// An MLP 784-1024-1024-10 with ReLU, on MNIST-shaped inputs.
ModelDesc mlp() {
  ModelBuilder b("mlp", {784, 1, 1});
  int t = b.relu(b.linear(0, 1024, true, "fc1"));
  t = b.relu(b.linear(t, 1024, true, "fc2"));
  b.loss(b.linear(t, 10, true, "fc3"));
  return b.build();
}

// A CNN on CIFAR-shaped inputs: conv 3->32 3x3 pad 1, ReLU, maxpool; conv 32->64 3x3 pad 1,
// ReLU, maxpool; linear 4096->10.
ModelDesc cnn() {
  ModelBuilder b("cnn", {3, 32, 32});
  int t = b.maxpool(b.relu(b.conv(0, 32, 3, 1, 1, true, "conv1")));
  t = b.maxpool(b.relu(b.conv(t, 64, 3, 1, 1, true, "conv2")));
  b.loss(b.linear(b.flatten(t), 10, true, "fc"));
  return b.build();
}

// The ImageNet-sized model of the full suite: ResNet's stem and two bottleneck blocks without
// batch norm on 3 x image x image inputs: conv 3->64 7x7 stride 2 pad 3, ReLU, maxpool; two
// blocks at image/4 (1x1 64->32, ReLU, 3x3 32->32 pad 1, ReLU, 1x1 32->64, plus the block's
// input, ReLU); global average pooling; linear 64->10. At 224, 0.20 GMAC per image forward, a
// twentieth of ResNet-50's 4.1.
ModelDesc resnet(std::int64_t image) {
  ModelBuilder b("resnet", {3, image, image});
  int a = b.maxpool(b.relu(b.conv(0, 64, 7, 2, 3, true, "stem")));
  for (int blk = 1; blk <= 2; ++blk) {
    const std::string n = "block" + std::to_string(blk) + ".conv";
    int t = b.relu(b.conv(a, 32, 1, 1, 0, true, n + "1"));
    t = b.relu(b.conv(t, 32, 3, 1, 1, true, n + "2"));
    a = b.relu(b.add(b.conv(t, 64, 1, 1, 0, true, n + "3"), a));
  }
  b.loss(b.linear(b.avgpool(a), 10, true, "fc"));
  return b.build();
}

// ResNet-50 v1.5 as torchvision builds it: conv 7x7 stride 2 pad 3, batch norm, ReLU, max pool
// 3x3 stride 2 pad 1; four stages of 3, 4, 6 and 3 bottlenecks (1x1, 3x3 carrying the stage's
// stride, 1x1 to four times the width, each convolution without bias and followed by batch
// norm; the first block of a stage projects its input with a 1x1 convolution and batch norm);
// global average pooling; linear 2048->1000. Its layers in torchvision's order and names, so its
// parameters lie as its state_dict's do: 25,557,032 of them.
ModelDesc resnet50(std::int64_t image) {
  ModelBuilder b("resnet50", {3, image, image});
  auto conv_bn = [&b](int in, std::int64_t k, std::int64_t r, std::int64_t stride,
                      const std::string& conv, const std::string& bn) {
    return b.batchnorm(b.conv(in, k, r, stride, r / 2, false, conv), bn);
  };
  int a = b.maxpool(b.relu(conv_bn(0, 64, 7, 2, "conv1", "bn1")), 3, 2, 1);
  const int blocks[4] = {3, 4, 6, 3};
  for (int stage = 0; stage < 4; ++stage) {
    const std::int64_t width = 64 << stage;
    for (int i = 0; i < blocks[stage]; ++i) {
      const std::string n = "layer" + std::to_string(stage + 1) + "." + std::to_string(i) + ".";
      const std::int64_t stride = stage > 0 && i == 0 ? 2 : 1;
      int t = b.relu(conv_bn(a, width, 1, 1, n + "conv1", n + "bn1"));
      t = b.relu(conv_bn(t, width, 3, stride, n + "conv2", n + "bn2"));
      t = conv_bn(t, 4 * width, 1, 1, n + "conv3", n + "bn3");
      const int shortcut =
          i == 0 ? conv_bn(a, 4 * width, 1, stride, n + "downsample.0", n + "downsample.1") : a;
      a = b.relu(b.add(t, shortcut));
    }
  }
  b.loss(b.linear(b.avgpool(a), 1000, true, "fc"));
  return b.build();
}

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"mlp", "cnn", "resnet", "resnet50"};
  return names;
}

bool model_takes_image(const std::string& name) { return name == "resnet" || name == "resnet50"; }

ModelDesc describe_model(const std::string& name, std::int64_t image) {
  if (name == "mlp") return mlp();
  if (name == "cnn") return cnn();
  if (name == "resnet") return resnet(image);
  if (name == "resnet50") return resnet50(image);
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("model=" + name + " is not one of " + known);
}

namespace {
std::vector<float> initial(const std::vector<ParamSlice>& slices, std::int64_t count) {
  Rng rng(42);
  std::vector<float> p(static_cast<std::size_t>(count));
  for (const ParamSlice& sl : slices) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(sl.fan_in));
    for (std::int64_t i = sl.offset; i < sl.offset + sl.size(); ++i)
      p[i] = sl.init == ParamSlice::Init::fan_in ? bound * rng.uniform()
             : sl.init == ParamSlice::Init::ones ? 1.0f
                                                 : 0.0f;
  }
  return p;
}
}  // namespace

std::vector<float> initial_params(const ModelDesc& m) { return initial(m.params, m.param_count); }
std::vector<float> initial_state(const ModelDesc& m) { return initial(m.state, m.state_count); }

std::vector<float> initial_velocity(const ModelDesc& m) {
  Rng rng(43);
  std::vector<float> v(static_cast<std::size_t>(m.param_count));
  for (float& e : v) e = 1e-3f * rng.uniform();
  return v;
}

}  // namespace pb
