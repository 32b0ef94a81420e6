#include "core/activation.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

namespace {
const char* const kActNames[] = {"relu", "leaky_relu", "gelu_tanh", "gelu_erf", "sigmoid", "tanh"};

Check finish(Check c, double worst, const char* what) {
  if (std::isnan(worst)) {
    c.detail = std::string(what) + " has a NaN where the reference has none";
    return c;
  }
  c.max_error = worst;
  c.ok = worst <= c.tolerance;
  if (!c.ok) {
    std::ostringstream os;
    os << what << ": error " << worst << " exceeds tolerance " << c.tolerance;
    c.detail = os.str();
  }
  return c;
}
}  // namespace

const char* to_string(Act a) { return kActNames[static_cast<int>(a)]; }

const std::vector<Act>& all_acts() {
  static const std::vector<Act> all = {Act::relu,     Act::leaky_relu, Act::gelu_tanh,
                                       Act::gelu_erf, Act::sigmoid,    Act::tanh};
  return all;
}

bool parse_act(const std::string& s, Act* out) { return parse_name(all_acts(), s, out); }

double act_ref(Act a, double x) {
  switch (a) {
    case Act::relu:
      return x > 0 ? x : (std::isnan(x) ? x : 0.0);
    case Act::leaky_relu:
      return x > 0 ? x : kLeakySlope * x;
    case Act::gelu_tanh: {
      if (x == -INFINITY) return 0.0;
      // x/2 (1 + tanh(u)) = x sigmoid(2u): the same function, accurate in double for x < 0 too.
      const double u = kGeluK0 * (x + kGeluK1 * x * x * x);
      return x / (1.0 + std::exp(-2.0 * u));
    }
    case Act::gelu_erf:
      return x == -INFINITY ? 0.0 : 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Act::sigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case Act::tanh:
      return std::tanh(x);
  }
  return 0;
}

double act_ref_derivative(Act a, double x) {
  switch (a) {
    case Act::relu:
      return x > 0 ? 1.0 : 0.0;
    case Act::leaky_relu:
      return x > 0 ? 1.0 : kLeakySlope;
    case Act::gelu_tanh: {
      if (std::fabs(x) > 10) return x > 0 ? 1.0 : 0.0;
      const double u = kGeluK0 * (x + kGeluK1 * x * x * x);
      const double s = 1.0 / (1.0 + std::exp(-2.0 * u));
      return s + x * 2.0 * s * (1.0 - s) * kGeluK0 * (1.0 + 3.0 * kGeluK1 * x * x);
    }
    case Act::gelu_erf: {
      if (std::isinf(x)) return x > 0 ? 1.0 : 0.0;
      const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
      return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * pdf;
    }
    case Act::sigmoid: {
      const double s = 1.0 / (1.0 + std::exp(-x));
      return s * (1.0 - s);
    }
    case Act::tanh: {
      const double t = std::tanh(x);
      return 1.0 - t * t;
    }
  }
  return 0;
}

ActTolerance act_tolerance(Act a) {
  // The largest errors measured over tests/test_activation.cpp's grid, rounded up: sigmoid and
  // tanh within a few ulp; GELU's tails lose digits to the rounding of x^3 and x^2 in the
  // exponent (about 1e-5 where |f(x)| < 1e-7), as any float evaluation of the formula does.
  switch (a) {
    case Act::relu:
      return {0.0, 1e-30, 0.0};  // exact
    case Act::leaky_relu:
      return {1.2e-7, 1e-30, 1.2e-7};  // one rounding of slope * x
    case Act::gelu_tanh:
    case Act::gelu_erf:
      return {2e-5, 1e-30, 1e-5};
    case Act::sigmoid:
    case Act::tanh:
      break;
  }
  return {1e-6, 1e-30, 1e-6};
}

bool act_bwd_from_output(Act a) {
  return with_activation(a, [](auto f) { return decltype(f)::kFromOutput; });
}

double act_ref_bwd(Act a, double s) {
  if (a == Act::sigmoid) return s * (1.0 - s);
  if (a == Act::tanh) return (1.0 - s) * (1.0 + s);
  return act_ref_derivative(a, s);
}

// --- activation workload -------------------------------------------------------------------

std::vector<std::int64_t> activation_suite_n(int level) {
  // quick: in L2 and in L3 (it must finish in a minute); standard: every other power of two;
  // full: every power of two.
  if (level == 0) return {1LL << 16, 1LL << 20};
  std::vector<std::int64_t> out;
  for (int p = 16; p <= 26; p += level == 1 ? 2 : 1) out.push_back(1LL << p);
  return out;
}

ActivationShape parse_activation_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  ActivationShape s;
  bool have_fn = false, have_n = false;
  for (const auto& [key, v] : kv) {
    if (key == "fn") {
      if (!parse_act(v, &s.act))
        throw std::invalid_argument(
            "fn=" + v + " is not one of relu, leaky_relu, gelu_tanh, gelu_erf, sigmoid, tanh");
      have_fn = true;
    } else if (key == "dir") {
      if (v != "fwd" && v != "bwd") throw std::invalid_argument("dir=" + v + " is not fwd or bwd");
      s.backward = v == "bwd";
    } else if (key == "n") {
      s.n = parse_count(key, v, 1LL << 40);
      have_n = true;
    } else {
      throw std::invalid_argument("activation has no shape key '" + key + "' (keys: fn, dir, n)");
    }
  }
  if (!have_fn || !have_n) throw std::invalid_argument("an activation shape needs fn and n");
  return s;
}

Shape ActivationWorkload::shape() const {
  Shape sh;
  sh.add("fn", to_string(s_.act));
  sh.add("dir", s_.backward ? "bwd" : "fwd");
  sh.add("n", s_.n);
  sh.add("dtype", "fp32");
  return sh;
}

double ActivationWorkload::flops() const {
  // Nominal FLOPs per element, counting exp as ~10: what the roofline places these ops by.
  static const double fwd[] = {1, 2, 20, 30, 14, 16}, bwd[] = {1, 2, 30, 40, 3, 4};
  const int i = static_cast<int>(s_.act);
  return (s_.backward ? bwd[i] : fwd[i]) * static_cast<double>(s_.n);
}

double ActivationWorkload::min_bytes() const {
  return (s_.backward ? 12.0 : 8.0) * static_cast<double>(s_.n);
}

Tensors ActivationWorkload::make_inputs() const {
  Rng rng(static_cast<std::uint64_t>(s_.n) * 31 + static_cast<std::uint64_t>(s_.act));
  Tensors in{Tensor(input(), {s_.n})};
  for (float& v : in[0].f32()) v = 8.0f * rng.uniform();
  if (input() == "y")
    for (float& v : in[0].f32()) v = static_cast<float>(act_ref(s_.act, v));
  if (s_.backward) {
    in.emplace_back("dy", std::vector<std::int64_t>{s_.n});
    for (float& v : in[1].f32()) v = rng.uniform();
  }
  return in;
}

Check ActivationWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check c;
  const ActTolerance tol = act_tolerance(s_.act);
  c.tolerance = s_.backward ? tol.bwd_rel : tol.fwd_rel;
  const float* out = output_f32(outs, outputs()[0], s_.n, c);
  if (!out) return c;
  const float* x = at(in, input()).f32().data();  // x, or y for a backward from the output
  const float* dys = s_.backward ? at(in, "dy").f32().data() : nullptr;
  // In parallel: the double-precision reference costs far more than the work it checks.
  double worst = 0;
  bool nan = false;
#pragma omp parallel for reduction(max : worst) reduction(|| : nan) schedule(static)
  for (std::int64_t i = 0; i < s_.n; ++i) {
    const double xi = x[i];
    double e;
    if (s_.backward) {
      const double dy = dys[i], d = act_ref_bwd(s_.act, xi);
      e = std::fabs(out[i] - dy * d) / (std::fabs(dy) * (std::fabs(d) + 0.01) + 1e-30);
    } else {
      const double ref = act_ref(s_.act, xi);
      e = std::fabs(out[i] - ref) / (std::fabs(ref) + tol.fwd_floor + 1e-300);
    }
    if (std::isnan(e))
      nan = true;
    else
      worst = std::max(worst, e);
  }
  if (nan) worst = NAN;
  return finish(c, worst, to_string(s_.act));
}

// --- softmax and loss ----------------------------------------------------------------------

std::vector<RowShape> row_suite(RowOp kind, int level) {
  std::vector<RowShape> out;
  for (std::int64_t n : activation_suite_n(level)) out.push_back({kind, n / 1024, 1024});
  return out;
}

RowShape parse_row_shape(RowOp kind, const std::vector<std::pair<std::string, std::string>>& kv) {
  RowShape s;
  s.kind = kind;
  bool have_rows = false, have_cols = false;
  for (const auto& [key, v] : kv) {
    if (key == "rows")
      s.rows = parse_count(key, v, 1LL << 31), have_rows = true;
    else if (key == "cols")
      s.cols = parse_count(key, v, 1LL << 24), have_cols = true;
    else if (key == "dir" && kind != RowOp::softmax) {
      if (v != "fwd" && v != "bwd") throw std::invalid_argument("dir=" + v + " is not fwd or bwd");
      s.kind = v == "fwd" ? RowOp::loss_fwd : RowOp::loss_bwd;
    } else {
      throw std::invalid_argument(std::string(kind == RowOp::softmax ? "softmax" : "loss") +
                                  " has no shape key '" + key + "' (keys: rows, cols" +
                                  (kind == RowOp::softmax ? ")" : ", dir)"));
    }
  }
  if (!have_rows || !have_cols) throw std::invalid_argument("a row shape needs rows and cols");
  return s;
}

Shape RowWorkload::shape() const {
  Shape sh;
  if (s_.kind != RowOp::softmax) sh.add("dir", s_.kind == RowOp::loss_fwd ? "fwd" : "bwd");
  sh.add("rows", s_.rows);
  sh.add("cols", s_.cols);
  sh.add("dtype", "fp32");
  return sh;
}

double RowWorkload::flops() const { return 15.0 * elements(); }  // exp ~10, max, sum, divide

double RowWorkload::min_bytes() const {
  const double rows = static_cast<double>(s_.rows);
  switch (s_.kind) {
    case RowOp::softmax:
      return 8.0 * elements();
    case RowOp::loss_fwd:
      return 4.0 * elements() + 8.0 * rows;  // logits, labels, losses
    case RowOp::loss_bwd:
      return 8.0 * elements() + 4.0 * rows;  // logits, labels, gradient
  }
  return 0;
}

double RowWorkload::write_allocate_bytes() const {
  return 4.0 * static_cast<double>(output_size());
}

Tensors RowWorkload::make_inputs() const {
  Rng rng(static_cast<std::uint64_t>(s_.rows * 131 + s_.cols));
  Tensors in{Tensor("x", {s_.rows, s_.cols})};
  for (float& v : in[0].f32()) v = 8.0f * rng.uniform();
  if (s_.kind != RowOp::softmax) {
    in.emplace_back("labels", std::vector<std::int64_t>{s_.rows}, Elem::i32);
    for (std::int32_t& v : in[1].i32())
      v = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(s_.cols));
  }
  return in;
}

std::vector<std::string> RowWorkload::outputs() const {
  return {s_.kind == RowOp::softmax ? "y" : s_.kind == RowOp::loss_fwd ? "loss" : "dx"};
}

Check RowWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check c;
  const float* out = output_f32(outs, outputs()[0], output_size(), c);
  if (!out) return c;
  const float* xs = at(in, "x").f32().data();
  const std::int32_t* labels = s_.kind == RowOp::softmax ? nullptr : at(in, "labels").i32().data();
  const std::int64_t cols = s_.cols;
  // exp's few ulp, and the row sum's rounding, which grows like sqrt(cols) (serial order).
  c.tolerance = s_.kind == RowOp::loss_fwd ? 1e-5
                                           : 4.0 * unit_roundoff(Dtype::fp32) *
                                                 (4.0 + std::sqrt(static_cast<double>(cols)));
  double worst = 0;
  bool nan = false;
#pragma omp parallel reduction(max : worst) reduction(|| : nan)
  {
    std::vector<double> p(static_cast<std::size_t>(cols));
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < s_.rows; ++r) {
      const float* x = xs + r * cols;
      const double m = *std::max_element(x, x + cols);
      double sum = 0;
      for (std::int64_t j = 0; j < cols; ++j) sum += (p[j] = std::exp(x[j] - m));
      for (double& v : p) v /= sum;
      auto note = [&](double e) {
        if (std::isnan(e))
          nan = true;
        else
          worst = std::max(worst, e);
      };
      if (s_.kind == RowOp::loss_fwd) {
        const std::int64_t label = labels[r];
        const double loss = m + std::log(sum) - x[label];
        note(std::fabs(out[r] - loss) /
             (std::fabs(loss) + std::log(static_cast<double>(cols)) + 1.0));
        continue;
      }
      const double pmax = *std::max_element(p.begin(), p.end());
      for (std::int64_t j = 0; j < cols; ++j) {
        double ref = p[j], scale = 1.0;
        if (s_.kind == RowOp::loss_bwd) {
          ref = (p[j] - (j == labels[r] ? 1.0 : 0.0)) / s_.rows;
          scale = 1.0 / s_.rows;
        }
        note(std::fabs(out[r * cols + j] - ref) / (std::fabs(ref) + 1e-7 * pmax * scale + 1e-30));
      }
    }
  }
  if (nan) worst = NAN;
  return finish(c, worst, op().c_str());
}

}  // namespace pb
