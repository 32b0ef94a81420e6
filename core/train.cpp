#include "core/train.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

const std::vector<ParamSlice>& Mlp::params() {
  static const std::vector<ParamSlice> slices = [] {
    std::vector<ParamSlice> s;
    std::int64_t at = 0;
    const char* names[3][2] = {{"w1", "b1"}, {"w2", "b2"}, {"w3", "b3"}};
    for (int l = 0; l < 3; ++l) {
      s.push_back({names[l][0], at, fan_out(l), fan_in(l)});
      at += fan_out(l) * fan_in(l);
      s.push_back({names[l][1], at, fan_out(l), 1});
      at += fan_out(l);
    }
    return s;
  }();
  return slices;
}

std::int64_t Mlp::param_count() {
  const Slice& last = params().back();
  return last.offset + last.rows * last.cols;
}

const char* to_string(Model m) {
  return m == Model::mlp ? "mlp" : m == Model::cnn ? "cnn" : "resnet";
}

const std::vector<ParamSlice>& Cnn::params() {
  static const std::vector<ParamSlice> slices = {
      {"conv1.w", 0, c1, channels * 9},
      {"conv1.b", c1 * channels * 9, c1, 1},
      {"conv2.w", c1 * channels * 9 + c1, c2, c1 * 9},
      {"conv2.b", c1 * channels * 9 + c1 + c2 * c1 * 9, c2, 1},
      {"fc.w", c1 * channels * 9 + c1 + c2 * c1 * 9 + c2, classes, flat},
      {"fc.b", c1 * channels * 9 + c1 + c2 * c1 * 9 + c2 + classes * flat, classes, 1}};
  return slices;
}

std::int64_t Cnn::param_count() {
  const ParamSlice& last = params().back();
  return last.offset + last.rows * last.cols;
}

ConvShape Cnn::conv(int l, std::int64_t batch, ConvDir dir) {
  ConvShape s;
  s.dir = dir, s.n = batch, s.c = l == 0 ? channels : c1, s.k = l == 0 ? c1 : c2;
  s.h = s.w = l == 0 ? size : size / 2;
  s.r = s.s = 3, s.pad_h = s.pad_w = 1;
  return s;
}

double Cnn::macs() {
  return static_cast<double>(c1 * channels * 9 * size * size +
                             c2 * c1 * 9 * (size / 2) * (size / 2) + classes * flat);
}

const std::vector<ParamSlice>& Resnet::params() {
  static const std::vector<ParamSlice> slices = [] {
    std::vector<ParamSlice> out;
    std::int64_t at = 0;
    auto add = [&](const char* name, std::int64_t rows, std::int64_t cols) {
      out.push_back({name, at, rows, cols});
      at += rows * cols;
    };
    static const char* names[blocks][6] = {
        {"block1.w1", "block1.b1", "block1.w2", "block1.b2", "block1.w3", "block1.b3"},
        {"block2.w1", "block2.b1", "block2.w2", "block2.b2", "block2.w3", "block2.b3"}};
    for (int c = 0; c < convs; ++c) {
      const ConvShape k = conv(c, 1, 8, ConvDir::fwd);
      add(c == 0 ? "stem.w" : names[(c - 1) / 3][2 * ((c - 1) % 3)], k.k, k.c * k.r * k.s);
      add(c == 0 ? "stem.b" : names[(c - 1) / 3][2 * ((c - 1) % 3) + 1], k.k, 1);
    }
    add("fc.w", classes, width);
    add("fc.b", classes, 1);
    return out;
  }();
  return slices;
}

std::int64_t Resnet::param_count() {
  const ParamSlice& last = params().back();
  return last.offset + last.rows * last.cols;
}

ConvShape Resnet::conv(int c, std::int64_t batch, std::int64_t image, ConvDir dir) {
  ConvShape s;
  s.dir = dir, s.n = batch;
  if (c == 0) {  // the stem
    s.c = channels, s.k = width, s.h = s.w = image, s.r = s.s = 7;
    s.stride_h = s.stride_w = 2, s.pad_h = s.pad_w = 3;
    return s;
  }
  const int j = (c - 1) % 3;  // 1x1 in, 3x3, 1x1 out
  s.c = j == 0 ? width : mid, s.k = j == 2 ? width : mid, s.h = s.w = image / 4;
  s.r = s.s = j == 1 ? 3 : 1;
  s.pad_h = s.pad_w = j == 1 ? 1 : 0;
  return s;
}

double Resnet::macs(std::int64_t image) {
  double m = static_cast<double>(classes * width);
  for (int c = 0; c < convs; ++c) {
    const ConvShape k = conv(c, 1, image, ConvDir::fwd);
    m += static_cast<double>(k.k * k.crs() * k.pq());
  }
  return m;
}

std::int64_t input_features(const TrainShape& s) {
  return s.model == Model::mlp   ? Mlp::in
         : s.model == Model::cnn ? Cnn::in
                                 : Resnet::channels * s.image * s.image;
}
const std::vector<ParamSlice>& model_params(Model m) {
  return m == Model::mlp ? Mlp::params() : m == Model::cnn ? Cnn::params() : Resnet::params();
}
std::int64_t model_param_count(Model m) {
  const ParamSlice& last = model_params(m).back();
  return last.offset + last.rows * last.cols;
}
double model_macs(const TrainShape& s) {
  return s.model == Model::mlp   ? Mlp::macs()
         : s.model == Model::cnn ? Cnn::macs()
                                 : Resnet::macs(s.image);
}
double first_layer_macs(const TrainShape& s) {
  if (s.model == Model::mlp) return static_cast<double>(Mlp::in * Mlp::hidden);
  const ConvShape k = s.model == Model::cnn ? Cnn::conv(0, 1, ConvDir::fwd)
                                            : Resnet::conv(0, 1, s.image, ConvDir::fwd);
  return static_cast<double>(k.k * k.crs() * k.pq());
}

template <class T>
void maxpool2_forward(std::int64_t planes, std::int64_t h, std::int64_t w, const T* x, T* out,
                      std::int32_t* arg) {
  const std::int64_t oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < planes; ++p)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        const std::int64_t o = (p * oh + i) * ow + j;
        out[o] = maxpool2_at(w, x + p * h * w, i, j, arg + o);
      }
}

// A scatter of each gradient to its maximum on the CPU: 2.7x faster here than a gather over the
// inputs through maxpool2_grad_at (what the GPU's threads do, one input each).
template <class T>
void maxpool2_backward(std::int64_t planes, std::int64_t h, std::int64_t w, const T* dout,
                       const std::int32_t* arg, T* dx) {
  const std::int64_t per_out = (h / 2) * (w / 2);
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < planes; ++p) {
    std::fill(dx + p * h * w, dx + (p + 1) * h * w, T(0));
    for (std::int64_t o = 0; o < per_out; ++o)
      dx[p * h * w + arg[p * per_out + o]] = dout[p * per_out + o];
  }
}

template void maxpool2_forward<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                      float*, std::int32_t*);
template void maxpool2_forward<double>(std::int64_t, std::int64_t, std::int64_t, const double*,
                                       double*, std::int32_t*);
template void maxpool2_backward<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                       const std::int32_t*, float*);
template void maxpool2_backward<double>(std::int64_t, std::int64_t, std::int64_t, const double*,
                                        const std::int32_t*, double*);

std::vector<std::int64_t> train_suite_batches(int level) {
  if (level == 0) return {32, 128};
  return {1, 8, 32, 128, 512};
}

TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  TrainShape s;
  bool has_batch = false, has_image = false;
  for (const auto& [k, v] : kv) {
    if (k == "model") {
      if (v != "mlp" && v != "cnn" && v != "resnet")
        throw std::invalid_argument("model=" + v + " is not one of mlp, cnn, resnet");
      s.model = v == "mlp" ? Model::mlp : v == "cnn" ? Model::cnn : Model::resnet;
    } else if (k == "image") {
      s.image = parse_count(k, v, 1024), has_image = true;
      if (s.image < 8 || s.image % 4 != 0)
        throw std::invalid_argument("image=" + v + " is not a multiple of 4 from 8 to 1024");
    } else if (k == "batch") {
      s.batch = parse_count(k, v, 1 << 20), has_batch = true;
    } else if (k == "pass") {
      if (v != "train" && v != "infer")
        throw std::invalid_argument("pass=" + v + " is not one of train, infer");
      s.train = v == "train";
    } else if (k == "lr") {
      s.lr = parse_finite(k, v);
    } else if (k == "momentum") {
      s.momentum = parse_finite(k, v);
    } else {
      throw std::invalid_argument("unknown train shape key '" + k +
                                  "' (model, batch, pass, lr, momentum, image)");
    }
  }
  if (!has_batch) throw std::invalid_argument("train shape needs batch=");
  if (has_image && s.model != Model::resnet)
    throw std::invalid_argument(
        "image= is for model=resnet (the MLP and the CNN have fixed inputs)");
  return s;
}

void synthetic_batch(std::int64_t features, std::int64_t batch, std::int64_t batch_index, float* x,
                     std::int32_t* labels) {
  Rng proto_rng(1234 + static_cast<std::uint64_t>(features));
  std::vector<float> prototypes(static_cast<std::size_t>(10 * features));
  for (float& v : prototypes) v = proto_rng.uniform();
  static const int order[10] = {3, 7, 0, 9, 1, 5, 8, 2, 6, 4};
  Rng rng(0x5EED0000u + static_cast<std::uint64_t>(batch_index));
  for (std::int64_t i = 0; i < batch; ++i) {
    const int label = order[(batch_index * batch + i) % 10];
    labels[i] = label;
    const float* proto = prototypes.data() + label * features;
    for (std::int64_t j = 0; j < features; ++j)
      x[i * features + j] = 0.5f * proto[j] + 0.5f * rng.uniform();
  }
}

std::vector<float> initial_params(Model m) {
  Rng rng(42);
  std::vector<float> p(static_cast<std::size_t>(model_param_count(m)));
  const auto& slices = model_params(m);
  for (std::size_t t = 0; t + 1 < slices.size(); t += 2) {  // a weight, then its bias
    const float bound = 1.0f / std::sqrt(static_cast<float>(slices[t].cols));
    const std::int64_t end = slices[t + 1].offset + slices[t + 1].rows;
    for (std::int64_t i = slices[t].offset; i < end; ++i) p[i] = bound * rng.uniform();
  }
  return p;
}

std::vector<float> initial_velocity(Model m) {
  Rng rng(43);
  std::vector<float> v(static_cast<std::size_t>(model_param_count(m)));
  for (float& e : v) e = 1e-3f * rng.uniform();
  return v;
}

namespace {

// out = a W^T + b over a batch (a: B x fi, W: fo x fi), and its backward: dW += dz^T a,
// db += column sums of dz, and da = dz W when da is given.
void linear(std::int64_t B, std::int64_t fi, std::int64_t fo, const std::vector<double>& a,
            const float* w, const float* b, std::vector<double>& out) {
  out.assign(static_cast<std::size_t>(B * fo), 0.0);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t o = 0; o < fo; ++o) {
      double acc = b[o];
      for (std::int64_t k = 0; k < fi; ++k) acc += a[i * fi + k] * w[o * fi + k];
      out[i * fo + o] = acc;
    }
}

void linear_backward(std::int64_t B, std::int64_t fi, std::int64_t fo, const std::vector<double>& a,
                     const float* w, const std::vector<double>& dz, double* gw, double* gb,
                     std::vector<double>* da) {
#pragma omp parallel for schedule(static)
  for (std::int64_t o = 0; o < fo; ++o)
    for (std::int64_t i = 0; i < B; ++i) {
      const double d = dz[i * fo + o];
      gb[o] += d;
      for (std::int64_t k = 0; k < fi; ++k) gw[o * fi + k] += d * a[i * fi + k];
    }
  if (!da) return;
  da->assign(static_cast<std::size_t>(B * fi), 0.0);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t o = 0; o < fo; ++o)
      for (std::int64_t k = 0; k < fi; ++k) (*da)[i * fi + k] += dz[i * fo + o] * w[o * fi + k];
}

std::vector<double> relu(std::vector<double> z) {
  for (double& v : z) v = std::max(v, 0.0);
  return z;
}

// dz = da where z > 0, else 0.
void relu_backward(const std::vector<double>& z, std::vector<double>& da) {
  for (std::size_t j = 0; j < da.size(); ++j) da[j] *= z[j] > 0 ? 1.0 : 0.0;
}

// A convolution pass in double, every output point through conv_*_terms.
std::vector<double> conv(const ConvShape& s, const double* in0, const void* in1, const float* b) {
  const std::int64_t count = s.dir == ConvDir::fwd        ? s.y_size()
                             : s.dir == ConvDir::bwd_data ? s.x_size()
                                                          : s.w_size();
  std::vector<double> out(static_cast<std::size_t>(count));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) {
    DoubleSum sum;
    if (s.dir == ConvDir::fwd)
      conv_fwd_terms(s, in0, static_cast<const float*>(in1), b, i, sum);
    else if (s.dir == ConvDir::bwd_data)
      conv_bwd_data_terms(s, in0, static_cast<const float*>(in1), i, sum);
    else
      conv_bwd_filter_terms(s, in0, static_cast<const double*>(in1), i, sum);
    out[i] = sum.value;
  }
  return out;
}

// The forward pass's values the backward pass reads, per model.
struct Tape {
  std::vector<std::vector<double>> a, z;  // MLP: layer inputs and pre-activations
  // CNN: x, the conv outputs (z1, z2), the pooled maps (p1, p2) and the pools' choices.
  std::vector<double> x, z1, p1, z2, p2;
  std::vector<std::int32_t> arg1, arg2;
  // Resnet: the stem's z (z1) and pool (arg1); each block's input a[b] (a[blocks]: the last
  // output), its convolutions' pre-activations and outputs (bz[b][j], bu[b][j]; bz[b][2] the
  // sum before the last ReLU), and the pooled features g.
  std::vector<std::vector<double>> a_res;
  std::vector<std::array<std::vector<double>, 3>> bz, bu;
  std::vector<double> g;
  std::vector<double> logits;
};

void mlp_forward(std::int64_t B, const float* x, const float* params, Tape& t) {
  t.a.assign(4, {});
  t.z.assign(3, {});
  t.a[0].assign(x, x + B * Mlp::in);
  for (int l = 0; l < 3; ++l) {
    linear(B, Mlp::fan_in(l), Mlp::fan_out(l), t.a[l], params + Mlp::w_offset(l),
           params + Mlp::b_offset(l), t.z[l]);
    t.a[l + 1] = l < 2 ? relu(t.z[l]) : t.z[l];
  }
  t.logits = t.a[3];
}

void mlp_backward(std::int64_t B, const Tape& t, const float* params, std::vector<double> dz,
                  double* grads) {
  for (int l = 2; l >= 0; --l) {
    std::vector<double> da;
    linear_backward(B, Mlp::fan_in(l), Mlp::fan_out(l), t.a[l], params + Mlp::w_offset(l), dz,
                    grads + Mlp::w_offset(l), grads + Mlp::b_offset(l), l > 0 ? &da : nullptr);
    if (l == 0) break;
    relu_backward(t.z[l - 1], da);
    dz = std::move(da);
  }
}

void cnn_forward(std::int64_t B, const float* x, const float* params, Tape& t) {
  const auto& ps = Cnn::params();
  t.x.assign(x, x + B * Cnn::in);
  t.z1 =
      conv(Cnn::conv(0, B, ConvDir::fwd), t.x.data(), params + ps[0].offset, params + ps[1].offset);
  const std::vector<double> r1 = relu(t.z1);
  t.p1.resize(r1.size() / 4);
  t.arg1.resize(t.p1.size());
  maxpool2_forward(B * Cnn::c1, Cnn::size, Cnn::size, r1.data(), t.p1.data(), t.arg1.data());
  t.z2 = conv(Cnn::conv(1, B, ConvDir::fwd), t.p1.data(), params + ps[2].offset,
              params + ps[3].offset);
  const std::vector<double> r2 = relu(t.z2);
  t.p2.resize(r2.size() / 4);
  t.arg2.resize(t.p2.size());
  maxpool2_forward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, r2.data(), t.p2.data(),
                   t.arg2.data());
  linear(B, Cnn::flat, Cnn::classes, t.p2, params + ps[4].offset, params + ps[5].offset, t.logits);
}

const float* conv_w(const float* params, int c) { return params + Resnet::params()[2 * c].offset; }
const float* conv_b(const float* params, int c) {
  return params + Resnet::params()[2 * c + 1].offset;
}

void resnet_forward(const TrainShape& s, const float* x, const float* params, Tape& t) {
  const std::int64_t B = s.batch, S = s.image, Q2 = (S / 4) * (S / 4);
  const auto& ps = Resnet::params();
  t.x.assign(x, x + B * input_features(s));
  t.z1 =
      conv(Resnet::conv(0, B, S, ConvDir::fwd), t.x.data(), conv_w(params, 0), conv_b(params, 0));
  const std::vector<double> r = relu(t.z1);
  t.a_res.assign(Resnet::blocks + 1, std::vector<double>(r.size() / 4));
  t.arg1.resize(r.size() / 4);
  maxpool2_forward(B * Resnet::width, S / 2, S / 2, r.data(), t.a_res[0].data(), t.arg1.data());
  t.bz.assign(Resnet::blocks, {});
  t.bu.assign(Resnet::blocks, {});
  for (int b = 0; b < Resnet::blocks; ++b) {
    const double* in = t.a_res[b].data();
    for (int j = 0; j < 3; ++j) {
      const int c = 1 + 3 * b + j;
      t.bz[b][j] =
          conv(Resnet::conv(c, B, S, ConvDir::fwd), in, conv_w(params, c), conv_b(params, c));
      if (j == 2)  // the block's input added back
        for (std::size_t i = 0; i < t.bz[b][j].size(); ++i) t.bz[b][j][i] += t.a_res[b][i];
      t.bu[b][j] = relu(t.bz[b][j]);
      in = t.bu[b][j].data();
    }
    t.a_res[b + 1] = t.bu[b][2];
  }
  t.g.assign(static_cast<std::size_t>(B * Resnet::width), 0.0);
  for (std::size_t p = 0; p < t.g.size(); ++p) {
    for (std::int64_t i = 0; i < Q2; ++i) t.g[p] += t.a_res[Resnet::blocks][p * Q2 + i];
    t.g[p] /= static_cast<double>(Q2);
  }
  const int fc = 2 * Resnet::convs;
  linear(B, Resnet::width, Resnet::classes, t.g, params + ps[fc].offset, params + ps[fc + 1].offset,
         t.logits);
}

// A convolution's weight and bias gradients from its input and dz.
void conv_grads(const ConvShape& f, const double* in, const std::vector<double>& dz, double* gw,
                double* gb) {
  const std::vector<double> dw = conv(f, in, dz.data(), nullptr);
  std::copy(dw.begin(), dw.end(), gw);
  for (std::int64_t k = 0; k < f.k; ++k) {
    DoubleSum sum;
    conv_bias_grad_terms(f, dz.data(), k, sum);
    gb[k] = sum.value;
  }
}

void cnn_backward(std::int64_t B, const Tape& t, const float* params,
                  const std::vector<double>& dlogits, double* grads) {
  const auto& ps = Cnn::params();
  std::vector<double> dp2;
  linear_backward(B, Cnn::flat, Cnn::classes, t.p2, params + ps[4].offset, dlogits,
                  grads + ps[4].offset, grads + ps[5].offset, &dp2);
  std::vector<double> dz2(t.z2.size());
  maxpool2_backward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, dp2.data(), t.arg2.data(),
                    dz2.data());
  relu_backward(t.z2, dz2);
  conv_grads(Cnn::conv(1, B, ConvDir::bwd_filter), t.p1.data(), dz2, grads + ps[2].offset,
             grads + ps[3].offset);
  const std::vector<double> dp1 =
      conv(Cnn::conv(1, B, ConvDir::bwd_data), dz2.data(), params + ps[2].offset, nullptr);
  std::vector<double> dz1(t.z1.size());
  maxpool2_backward(B * Cnn::c1, Cnn::size, Cnn::size, dp1.data(), t.arg1.data(), dz1.data());
  relu_backward(t.z1, dz1);
  conv_grads(Cnn::conv(0, B, ConvDir::bwd_filter), t.x.data(), dz1, grads + ps[0].offset,
             grads + ps[1].offset);
}

void resnet_backward(const TrainShape& s, const Tape& t, const float* params,
                     const std::vector<double>& dlogits, double* grads) {
  const std::int64_t B = s.batch, S = s.image, Q2 = (S / 4) * (S / 4);
  const auto& ps = Resnet::params();
  const int fc = 2 * Resnet::convs;
  std::vector<double> dg;
  linear_backward(B, Resnet::width, Resnet::classes, t.g, params + ps[fc].offset, dlogits,
                  grads + ps[fc].offset, grads + ps[fc + 1].offset, &dg);
  std::vector<double> da(t.a_res[Resnet::blocks].size());  // the average pool spreads dg
  for (std::size_t i = 0; i < da.size(); ++i)
    da[i] = dg[i / static_cast<std::size_t>(Q2)] / static_cast<double>(Q2);
  for (int b = Resnet::blocks - 1; b >= 0; --b) {
    std::vector<double> d = da;  // through the last ReLU: the sum's gradient
    relu_backward(t.bz[b][2], d);
    const std::vector<double> dsum = d;
    for (int j = 2; j >= 0; --j) {
      const int c = 1 + 3 * b + j;
      const double* in = j == 0 ? t.a_res[b].data() : t.bu[b][j - 1].data();
      conv_grads(Resnet::conv(c, B, S, ConvDir::bwd_filter), in, d, grads + ps[2 * c].offset,
                 grads + ps[2 * c + 1].offset);
      d = conv(Resnet::conv(c, B, S, ConvDir::bwd_data), d.data(), conv_w(params, c), nullptr);
      if (j > 0) relu_backward(t.bz[b][j - 1], d);
    }
    for (std::size_t i = 0; i < da.size(); ++i) da[i] = dsum[i] + d[i];  // plus the identity's
  }
  std::vector<double> dz(t.z1.size());
  maxpool2_backward(B * Resnet::width, S / 2, S / 2, da.data(), t.arg1.data(), dz.data());
  relu_backward(t.z1, dz);
  conv_grads(Resnet::conv(0, B, S, ConvDir::bwd_filter), t.x.data(), dz, grads + ps[0].offset,
             grads + ps[1].offset);
}

}  // namespace

ReferenceStep reference_step(const TrainShape& s, const float* x, const std::int32_t* labels,
                             const float* params, const float* velocity) {
  const std::int64_t B = s.batch;
  ReferenceStep out;
  Tape t;
  if (s.model == Model::mlp)
    mlp_forward(B, x, params, t);
  else if (s.model == Model::cnn)
    cnn_forward(B, x, params, t);
  else
    resnet_forward(s, x, params, t);
  out.logits = t.logits;
  if (!s.train) return out;
  // The mean loss and its gradient, (softmax - onehot) / B.
  const std::int64_t C = 10;
  std::vector<double> dz(static_cast<std::size_t>(B * C));
  for (std::int64_t i = 0; i < B; ++i) {
    const double* r = &out.logits[i * C];
    const double m = *std::max_element(r, r + C);
    double sum = 0;
    for (std::int64_t j = 0; j < C; ++j) sum += std::exp(r[j] - m);
    out.loss += (m + std::log(sum) - r[labels[i]]) / static_cast<double>(B);
    for (std::int64_t j = 0; j < C; ++j)
      dz[i * C + j] = (std::exp(r[j] - m) / sum - (j == labels[i] ? 1.0 : 0.0)) / B;
  }
  const std::int64_t P = model_param_count(s.model);
  out.grads.assign(static_cast<std::size_t>(P), 0.0);
  if (s.model == Model::mlp)
    mlp_backward(B, t, params, dz, out.grads.data());
  else if (s.model == Model::cnn)
    cnn_backward(B, t, params, dz, out.grads.data());
  else
    resnet_backward(s, t, params, dz, out.grads.data());
  // SGD with momentum.
  out.params.resize(static_cast<std::size_t>(P));
  out.velocity.resize(static_cast<std::size_t>(P));
  for (std::int64_t j = 0; j < P; ++j) {
    out.velocity[j] = static_cast<double>(s.momentum) * velocity[j] + out.grads[j];
    out.params[j] = params[j] - static_cast<double>(s.lr) * out.velocity[j];
  }
  return out;
}

Shape TrainWorkload::shape() const {
  Shape sh;
  sh.add("model", to_string(s_.model));
  sh.add("pass", s_.train ? "train" : "infer");
  sh.add("batch", s_.batch);
  if (s_.model == Model::resnet) sh.add("image", s_.image);
  sh.add("dtype", "fp32");
  return sh;
}

double TrainWorkload::flops() const {
  const double b = static_cast<double>(s_.batch);
  const double macs = model_macs(s_);
  if (!s_.train) return 2.0 * b * macs;
  return 2.0 * b * (3.0 * macs - first_layer_macs(s_));  // no gradient of the input
}

double TrainWorkload::min_bytes() const {
  const double p = static_cast<double>(model_param_count(s_.model)),
               b = static_cast<double>(s_.batch);
  const double batch_bytes = 4.0 * b * static_cast<double>(input_features(s_) + 1);
  return s_.train ? 4.0 * 5.0 * p + batch_bytes : 4.0 * p + batch_bytes;  // p, v, g
}

double TrainWorkload::activations() const {
  switch (s_.model) {
    case Model::mlp:
      return static_cast<double>(Mlp::in + 3 * Mlp::hidden);
    case Model::cnn:
      return static_cast<double>(Cnn::in + 3 * Cnn::c1 * Cnn::size * Cnn::size);
    case Model::resnet:  // x, the stem's 3 maps, then per block 4 of mid and 2 of width, scratch
      break;
  }
  const double q = static_cast<double>(s_.image * s_.image) / 16;
  return static_cast<double>(input_features(s_)) + 3 * Resnet::width * 4 * q +
         Resnet::blocks * (4 * Resnet::mid + 2 * Resnet::width) * q +
         (2 * Resnet::mid + 3 * Resnet::width) * q;
}

double TrainWorkload::host_bytes() const {
  const double p = static_cast<double>(model_param_count(s_.model)),
               b = static_cast<double>(s_.batch);
  // Inputs, an implementation's copies and state (params, velocity, gradients, activations),
  // outputs; the double-precision reference's activations and parameters.
  return 4.0 * (8.0 * p + 12.0 * b * activations()) + 8.0 * 4.0 * p;
}

double TrainWorkload::device_bytes() const {
  const double p = static_cast<double>(model_param_count(s_.model)),
               b = static_cast<double>(s_.batch);
  return 4.0 * (3.0 * p + 3.0 * b * activations());
}

Tensors TrainWorkload::make_inputs() const {
  const std::int64_t f = input_features(s_);
  Tensor x("x", {s_.batch, f}), labels("labels", {s_.batch}, Elem::i32);
  synthetic_batch(f, s_.batch, 0, x.f32().data(), labels.i32().data());
  return {x, labels, Tensor::of("params", initial_params(s_.model)),
          Tensor::of("velocity", initial_velocity(s_.model))};
}

std::vector<std::string> TrainWorkload::outputs() const {
  if (!s_.train) return {"logits"};
  return {"loss", "params", "velocity"};
}

Check TrainWorkload::verify(const Tensors& in, const Tensors& outs) const {
  return compare_step(
      s_, in,
      reference_step(s_, at(in, "x").f32().data(), at(in, "labels").i32().data(),
                     at(in, "params").f32().data(), at(in, "velocity").f32().data()),
      outs);
}

ReferenceStep step_of(const TrainShape& s, const Tensors& outs) {
  ReferenceStep r;
  auto doubles = [&](const char* name) {
    const std::vector<float>& v = at(outs, name).f32();
    return std::vector<double>(v.begin(), v.end());
  };
  if (!s.train) {
    r.logits = doubles("logits");
    return r;
  }
  r.loss = at(outs, "loss").f32().at(0);
  r.params = doubles("params");
  r.velocity = doubles("velocity");
  return r;
}

Check compare_step(const TrainShape& s, const Tensors& in, const ReferenceStep& ref,
                   const Tensors& outs) {
  Check chk;
  std::ostringstream why;
  double worst = 0;
  auto note = [&](double e, const std::string& what) {
    if (!(e <= worst)) {  // keeps a NaN
      worst = e;
      why.str("");
      why << what;
    }
  };
  if (!s.train) {
    chk.tolerance = 1e-4;
    const float* logits = output_f32(outs, "logits", s.batch * 10, chk);
    if (!logits) return chk;
    double rms = 0;
    for (double v : ref.logits) rms += v * v;
    rms = std::sqrt(rms / static_cast<double>(ref.logits.size())) + 1e-30;
    for (std::size_t i = 0; i < ref.logits.size(); ++i)
      note(std::fabs(logits[i] - ref.logits[i]) / rms, "logits[" + std::to_string(i) + "]");
  } else {
    // In units of the tolerance, so that one number covers the loss and every tensor.
    chk.tolerance = 1.0;
    const std::int64_t P = model_param_count(s.model);
    const float* loss = output_f32(outs, "loss", 1, chk);
    const float* params = output_f32(outs, "params", P, chk);
    const float* velocity = output_f32(outs, "velocity", P, chk);
    if (!loss || !params || !velocity) return chk;
    note(std::fabs(*loss - ref.loss) / (1e-5 * (std::fabs(ref.loss) + 1.0)), "loss");
    // Per tensor, the update and the velocity in norm: a few of the thousands of ReLUs and
    // pooling windows with inputs within rounding of their kink may decide otherwise in fp32
    // than in double, which moves single elements by a sample's term but the tensor by little.
    for (const ParamSlice& sl : model_params(s.model)) {
      double dp = 0, rp = 0, dv = 0, rv = 0;
      for (std::int64_t j = sl.offset; j < sl.offset + sl.rows * sl.cols; ++j) {
        const double before = at(in, "params").f32()[j];
        dp += (params[j] - ref.params[j]) * (params[j] - ref.params[j]);
        rp += (ref.params[j] - before) * (ref.params[j] - before);
        dv += (velocity[j] - ref.velocity[j]) * (velocity[j] - ref.velocity[j]);
        rv += ref.velocity[j] * ref.velocity[j];
      }
      note(std::max(std::sqrt(dp / (rp + 1e-300)), std::sqrt(dv / (rv + 1e-300))) / 1e-3,
           std::string("the update of ") + sl.name);
    }
  }
  if (std::isnan(worst)) {
    chk.detail = "the result is not finite (" + why.str() + ")";
    return chk;
  }
  chk.max_error = worst;
  chk.ok = worst <= chk.tolerance;
  if (!chk.ok) {
    std::ostringstream os;
    os << why.str() << " is off by " << worst << " of its tolerance"
       << (s.train ? "" : " (relative to the logits' rms)");
    chk.detail = os.str();
  }
  return chk;
}

}  // namespace pb
