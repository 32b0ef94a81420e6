#include "core/train.hpp"

#include <algorithm>
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

const char* to_string(Model m) { return m == Model::mlp ? "mlp" : "cnn"; }

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

std::int64_t input_features(Model m) { return m == Model::mlp ? Mlp::in : Cnn::in; }
const std::vector<ParamSlice>& model_params(Model m) {
  return m == Model::mlp ? Mlp::params() : Cnn::params();
}
std::int64_t model_param_count(Model m) {
  return m == Model::mlp ? Mlp::param_count() : Cnn::param_count();
}
double model_macs(Model m) { return m == Model::mlp ? Mlp::macs() : Cnn::macs(); }

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
  bool has_batch = false;
  for (const auto& [k, v] : kv) {
    if (k == "model") {
      if (v != "mlp" && v != "cnn")
        throw std::invalid_argument("model=" + v + " is not one of mlp, cnn");
      s.model = v == "mlp" ? Model::mlp : Model::cnn;
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
                                  "' (model, batch, pass, lr, momentum)");
    }
  }
  if (!has_batch) throw std::invalid_argument("train shape needs batch=");
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

}  // namespace

ReferenceStep reference_step(const TrainShape& s, const float* x, const std::int32_t* labels,
                             const float* params, const float* velocity) {
  const std::int64_t B = s.batch;
  ReferenceStep out;
  Tape t;
  if (s.model == Model::mlp)
    mlp_forward(B, x, params, t);
  else
    cnn_forward(B, x, params, t);
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
  else
    cnn_backward(B, t, params, dz, out.grads.data());
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
  sh.add("dtype", "fp32");
  return sh;
}

double TrainWorkload::flops() const {
  const double b = static_cast<double>(s_.batch);
  const double macs = model_macs(s_.model);
  if (!s_.train) return 2.0 * b * macs;
  // The first layer computes no gradient of its input.
  const double first =
      s_.model == Model::mlp
          ? static_cast<double>(Mlp::in * Mlp::hidden)
          : static_cast<double>(Cnn::c1 * Cnn::channels * 9 * Cnn::size * Cnn::size);
  return 2.0 * b * (3.0 * macs - first);
}

double TrainWorkload::min_bytes() const {
  const double p = static_cast<double>(model_param_count(s_.model)),
               b = static_cast<double>(s_.batch);
  const double batch_bytes = 4.0 * b * static_cast<double>(input_features(s_.model) + 1);
  return s_.train ? 4.0 * 5.0 * p + batch_bytes : 4.0 * p + batch_bytes;  // p, v, g
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
  const std::int64_t f = input_features(s_.model);
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
