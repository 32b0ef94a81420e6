#include "core/train.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

const std::vector<Mlp::Slice>& Mlp::params() {
  static const std::vector<Slice> slices = [] {
    std::vector<Slice> s;
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

std::vector<std::int64_t> train_suite_batches(int level) {
  if (level == 0) return {32, 128};
  return {1, 8, 32, 128, 512};
}

TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  TrainShape s;
  bool has_batch = false;
  for (const auto& [k, v] : kv) {
    if (k == "model") {
      if (v != "mlp") throw std::invalid_argument("model=" + v + " is not one of mlp");
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

void synthetic_batch(std::int64_t batch, std::int64_t batch_index, float* x, std::int32_t* labels) {
  static const std::vector<float> prototypes = [] {
    Rng rng(1234);
    std::vector<float> p(static_cast<std::size_t>(Mlp::classes * Mlp::in));
    for (float& v : p) v = rng.uniform();
    return p;
  }();
  static const int order[10] = {3, 7, 0, 9, 1, 5, 8, 2, 6, 4};
  Rng rng(0x5EED0000u + static_cast<std::uint64_t>(batch_index));
  for (std::int64_t i = 0; i < batch; ++i) {
    const int label = order[(batch_index * batch + i) % 10];
    labels[i] = label;
    const float* proto = prototypes.data() + label * Mlp::in;
    for (std::int64_t j = 0; j < Mlp::in; ++j)
      x[i * Mlp::in + j] = 0.5f * proto[j] + 0.5f * rng.uniform();
  }
}

std::vector<float> mlp_initial_params() {
  Rng rng(42);
  std::vector<float> p(static_cast<std::size_t>(Mlp::param_count()));
  for (int l = 0; l < 3; ++l) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(Mlp::fan_in(l)));
    const std::int64_t end = Mlp::b_offset(l) + Mlp::fan_out(l);
    for (std::int64_t i = Mlp::w_offset(l); i < end; ++i) p[i] = bound * rng.uniform();
  }
  return p;
}

std::vector<float> mlp_initial_velocity() {
  Rng rng(43);
  std::vector<float> v(static_cast<std::size_t>(Mlp::param_count()));
  for (float& e : v) e = 1e-3f * rng.uniform();
  return v;
}

MlpStep mlp_reference_step(const TrainShape& s, const float* x, const std::int32_t* labels,
                           const float* params, const float* velocity) {
  const std::int64_t B = s.batch;
  MlpStep out;
  // Forward: a[0] = x; z[l] = a[l] W_l^T + b_l; a[l+1] = relu(z[l]) (the last layer: logits).
  std::vector<std::vector<double>> a(4), z(3);
  a[0].assign(x, x + B * Mlp::in);
  for (int l = 0; l < 3; ++l) {
    const std::int64_t fi = Mlp::fan_in(l), fo = Mlp::fan_out(l);
    const float* w = params + Mlp::w_offset(l);
    const float* b = params + Mlp::b_offset(l);
    z[l].assign(static_cast<std::size_t>(B * fo), 0.0);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < B; ++i)
      for (std::int64_t o = 0; o < fo; ++o) {
        double acc = b[o];
        for (std::int64_t k = 0; k < fi; ++k) acc += a[l][i * fi + k] * w[o * fi + k];
        z[l][i * fo + o] = acc;
      }
    a[l + 1] = z[l];
    if (l < 2)
      for (double& v : a[l + 1]) v = std::max(v, 0.0);
  }
  out.logits = a[3];
  if (!s.train) return out;
  // Loss and its gradient: (softmax - onehot) / B.
  const std::int64_t C = Mlp::classes;
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
  // Backward, layer by layer: dW = dz^T a, db = column sums of dz, da = dz W, dz = da relu'(z).
  out.grads.assign(static_cast<std::size_t>(Mlp::param_count()), 0.0);
  for (int l = 2; l >= 0; --l) {
    const std::int64_t fi = Mlp::fan_in(l), fo = Mlp::fan_out(l);
    const float* w = params + Mlp::w_offset(l);
    double* gw = &out.grads[Mlp::w_offset(l)];
    double* gb = &out.grads[Mlp::b_offset(l)];
#pragma omp parallel for schedule(static)
    for (std::int64_t o = 0; o < fo; ++o)
      for (std::int64_t i = 0; i < B; ++i) {
        const double d = dz[i * fo + o];
        gb[o] += d;
        for (std::int64_t k = 0; k < fi; ++k) gw[o * fi + k] += d * a[l][i * fi + k];
      }
    if (l == 0) break;
    std::vector<double> da(static_cast<std::size_t>(B * fi), 0.0);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < B; ++i)
      for (std::int64_t o = 0; o < fo; ++o)
        for (std::int64_t k = 0; k < fi; ++k) da[i * fi + k] += dz[i * fo + o] * w[o * fi + k];
    for (std::size_t j = 0; j < da.size(); ++j) da[j] *= z[l - 1][j] > 0 ? 1.0 : 0.0;
    dz = std::move(da);
  }
  // SGD with momentum.
  const std::int64_t P = Mlp::param_count();
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
  sh.add("model", "mlp");
  sh.add("pass", s_.train ? "train" : "infer");
  sh.add("batch", s_.batch);
  sh.add("dtype", "fp32");
  return sh;
}

double TrainWorkload::flops() const {
  const double b = static_cast<double>(s_.batch);
  if (!s_.train) return 2.0 * b * Mlp::macs();
  return 2.0 * b * (3.0 * Mlp::macs() - static_cast<double>(Mlp::in * Mlp::hidden));
}

double TrainWorkload::min_bytes() const {
  const double p = static_cast<double>(Mlp::param_count()), b = static_cast<double>(s_.batch);
  const double batch_bytes = 4.0 * b * (Mlp::in + 1);
  return s_.train ? 4.0 * 5.0 * p + batch_bytes : 4.0 * p + batch_bytes;  // p, v, g
}

double TrainWorkload::host_bytes() const {
  const double p = static_cast<double>(Mlp::param_count()), b = static_cast<double>(s_.batch);
  // Inputs, an implementation's copies and state (params, velocity, gradients, activations),
  // outputs; the double-precision reference's activations and parameters.
  return 4.0 * (8.0 * p + 12.0 * b * (Mlp::in + 3 * Mlp::hidden)) + 8.0 * 4.0 * p;
}

double TrainWorkload::device_bytes() const {
  const double p = static_cast<double>(Mlp::param_count()), b = static_cast<double>(s_.batch);
  return 4.0 * (3.0 * p + b * (Mlp::in + 6 * Mlp::hidden + 3 * Mlp::classes + 1));
}

Tensors TrainWorkload::make_inputs() const {
  Tensor x("x", {s_.batch, Mlp::in}), labels("labels", {s_.batch}, Elem::i32);
  synthetic_batch(s_.batch, 0, x.f32().data(), labels.i32().data());
  return {x, labels, Tensor::of("params", mlp_initial_params()),
          Tensor::of("velocity", mlp_initial_velocity())};
}

std::vector<std::string> TrainWorkload::outputs() const {
  if (!s_.train) return {"logits"};
  return {"loss", "params", "velocity"};
}

Check TrainWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check chk;
  const MlpStep ref =
      mlp_reference_step(s_, at(in, "x").f32().data(), at(in, "labels").i32().data(),
                         at(in, "params").f32().data(), at(in, "velocity").f32().data());
  const double u = unit_roundoff(Dtype::fp32);
  std::ostringstream why;
  double worst = 0;
  auto note = [&](double e, const std::string& what) {
    if (!(e <= worst)) {  // keeps a NaN
      worst = e;
      why.str("");
      why << what;
    }
  };
  if (!s_.train) {
    chk.tolerance = 1e-4;
    const float* logits = output_f32(outs, "logits", s_.batch * Mlp::classes, chk);
    if (!logits) return chk;
    double rms = 0;
    for (double v : ref.logits) rms += v * v;
    rms = std::sqrt(rms / static_cast<double>(ref.logits.size())) + 1e-30;
    for (std::size_t i = 0; i < ref.logits.size(); ++i)
      note(std::fabs(logits[i] - ref.logits[i]) / rms, "logits[" + std::to_string(i) + "]");
  } else {
    // In units of the tolerance, so that one number covers the loss and every tensor.
    chk.tolerance = 1.0;
    const std::int64_t P = Mlp::param_count();
    const float* loss = output_f32(outs, "loss", 1, chk);
    const float* params = output_f32(outs, "params", P, chk);
    const float* velocity = output_f32(outs, "velocity", P, chk);
    if (!loss || !params || !velocity) return chk;
    note(std::fabs(*loss - ref.loss) / (1e-5 * (std::fabs(ref.loss) + 1.0)), "loss");
    for (const Mlp::Slice& sl : Mlp::params()) {
      const std::int64_t n = sl.rows * sl.cols;
      double g2 = 0;
      for (std::int64_t j = 0; j < n; ++j)
        g2 += ref.grads[sl.offset + j] * ref.grads[sl.offset + j];
      const double g_rms = std::sqrt(g2 / static_cast<double>(n));
      for (std::int64_t j = sl.offset; j < sl.offset + n; ++j) {
        const double pe = std::fabs(params[j] - ref.params[j]) /
                          (1e-3 * s_.lr * g_rms + 4.0 * u * std::fabs(ref.params[j]) + 1e-30);
        const double ve = std::fabs(velocity[j] - ref.velocity[j]) /
                          (1e-3 * g_rms + 4.0 * u * std::fabs(ref.velocity[j]) + 1e-30);
        note(std::max(pe, ve), std::string(sl.name) + "[" + std::to_string(j - sl.offset) + "]");
      }
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
       << (s_.train ? "" : " (relative to the logits' rms)");
    chk.detail = os.str();
  }
  return chk;
}

}  // namespace pb
