// Activations, softmax and the softmax cross-entropy loss: the per-element math, once, for the
// host and the device, and the workloads that measure them.
//
// exp, tanh and the normal tail (for GELU) are computed by the approximations below, built from +,
// *, division (lanes::div*) and a power-of-two scaling (std::exp is a library call, one value at a
// time), as templates on the lane type (core/lanes.hpp): the CPU runs them on SIMD packs, the GPU
// and the scalar reference on floats, the same arithmetic. Their accuracy is stated by
// act_tolerance() and tested in tests/test_activation.cpp against double precision over a dense
// grid with the extremes (+-inf, large |x|, denormals, NaN).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/hd.hpp"
#include "core/lanes.hpp"
#include "core/workload.hpp"

namespace pb {

namespace approx {

constexpr float kInf = __builtin_huge_valf();

// e^x = 2^n (1 + q), q = e^r - 1: Cody-Waite reduction x = n ln2 + r with n rounded by the
// 1.5 * 2^23 trick (lanes::kRoundToInt), and Cephes' degree-5 polynomial for e^r. x must be in
// [-2^21, 88.8] (NaN passes); exp's callers clamp it. Returns q, and n (an integer, as a float)
// in n_out. (No struct of two packs: GCC copies one through memory in halves.)
template <class V>
HD V exp_reduced(const V& xc, V& n_out) {
  const V n = (xc * 1.44269504088896341f + lanes::kRoundToInt) - lanes::kRoundToInt;
  V r = lanes::fma(n, V(-0.693359375f), xc);  // exact: the constant has 9 bits, |n| < 2^22
  r = lanes::fma(n, V(2.12194440e-4f), r);
  V p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  n_out = n;
  return p * r * r + r;
}

// a e^x = a (1 + q) 2^n, for x in [-2^21, 88.8] where a e^x is finite or overflows: results
// below 2^-125 are subnormal or 0 (lanes::times_pow2_clamped).
template <class V>
HD V times_exp(const V& a, const V& x) {
  V n;
  const V q = exp_reduced<V>(x, n);
  return lanes::times_pow2_clamped(lanes::fma(a, q, a), n);
}

// e^x for x in [-87.5, 88.8] (callers that know their range skip exp's clamps): overflows to inf
// above ln(FLT_MAX); n is at least -126, so no clamp on it (one operation fewer than times_exp
// where the power of two is built from bits).
template <class V>
HD V exp_in_range(const V& x) {
  V n;
  const V q = exp_reduced<V>(x, n);
  return lanes::times_pow2(1.0f + q, n);
}

// e^x for every float. NaN propagates. No branches on x.
template <class V>
HD V exp(const V& x) {
  return exp_in_range<V>(lanes::at_most(lanes::at_least(x, -87.5f), 88.8f));
}

// expm1(x) = e^x - 1, accurate near 0 (no cancellation when |x| < ln2 / 2): 2^n - 1 is kept
// apart. For x below 88; e^-20 - 1 = -1 in float, so x is clamped there.
template <class V>
HD V expm1_near(V x) {
  V n;
  const V q = exp_reduced<V>(lanes::at_least(x, -20.0f), n);
  const V scale = lanes::times_pow2(V(1.0f), n);  // 2^n, n in [-29, 127]
  return (scale - 1.0f) + scale * q;
}

// tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)), with the sign of x: one expm1, one division.
template <class V>
HD V tanh(V x) {
  const V e = expm1_near<V>(-2.0f * lanes::abs(x));
  return lanes::copysign(lanes::div_in_range(-e, 2.0f + e), x);
}

// The normal distribution's tail Phi(-x) = erfc(x / sqrt 2) / 2 for x in [0, 20] is
// normal_tail_factor(x) e^(-x^2 / 2), split so that GELU's forward and backward share the exp:
// the factor is t Q(t), t = 1 / (1 + 0.36 x), Q a degree-6 polynomial fitted to
// erfcx(x / sqrt 2) / (2 t) by scripts/fit_normal_tail.py (erfcx(z) = e^(z^2) erfc(z), smooth: t
// follows its 1/z tail). Q's relative error in float is 7.5e-7 for x up to 12.7 (beyond,
// x Phi(-x) < 1e-35) and 5e-5 up to 23; the rounding of x^2 in the exponent adds up to
// 6e-8 x^2 / 2 (4e-6 at x = 12).
template <class V>
HD V normal_tail_factor(const V& x) {
  const V t = lanes::div_in_range(V(1.0f), lanes::fma(x, V(0.36f), V(1.0f)));
  return t *
         (1.437250376e-01f +
          t * (1.416047066e-01f +
               t * (1.406341493e-01f +
                    t * (2.404884063e-02f + t * (1.845856458e-01f + t * (-1.824374944e-01f +
                                                                         t * 4.783937708e-02f))))));
}

}  // namespace approx

enum class Act { relu, leaky_relu, gelu_tanh, gelu_erf, sigmoid, tanh };

constexpr float kLeakySlope = 0.01f;
constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK1 = 0.044715f;

// The functors: fwd(x) = f(x); bwd(s, dy) = dy f'(x), for a lane type V (core/lanes.hpp), where
// s is what a training step keeps for the backward pass, as PyTorch's autograd keeps it: x, or,
// for the functors with kFromOutput (sigmoid and tanh, whose derivatives are functions of their
// outputs), y = f(x). NaN in x (or y) gives NaN.
struct Relu {
  static constexpr bool kFromOutput = false;
  template <class V>
  HD static V fwd(V x) {
    return lanes::at_least(x, 0.0f);  // NaN passes
  }
  template <class V>
  HD static V bwd(V x, V dy) {
    return lanes::select(x > 0.0f, dy, lanes::select(x == x, V(0.0f), x));
  }
};

struct LeakyRelu {
  static constexpr bool kFromOutput = false;
  template <class V>
  HD static V fwd(V x) {
    return lanes::select(x > 0.0f, x, kLeakySlope * x);
  }
  template <class V>
  HD static V bwd(V x, V dy) {
    return lanes::select(x > 0.0f, dy, lanes::select(x == x, kLeakySlope * dy, x));
  }
};

// From the output: 1 - y is exact where y >= 1/2 (Sterbenz), so y (1 - y) is within two
// roundings of the derivative at the y it is given; what y's own rounding costs where y is near 1
// is the saved output's, as in any framework.
struct Sigmoid {
  static constexpr bool kFromOutput = true;
  template <class V>
  HD static V fwd(V x) {
    return lanes::div(V(1.0f), 1.0f + approx::exp<V>(-x));
  }
  template <class V>
  HD static V bwd(V y, V dy) {
    return dy * (y * (1.0f - y));
  }
};

// From the output: 1 - y^2 as (1 - y)(1 + y), each factor exact where it is small (Sterbenz).
struct Tanh {
  static constexpr bool kFromOutput = true;
  template <class V>
  HD static V fwd(V x) {
    return approx::tanh<V>(x);
  }
  template <class V>
  HD static V bwd(V y, V dy) {
    return dy * ((1.0f - y) * (1.0f + y));
  }
};

// Clamps x to [lo, hi]; NaN passes through. The GELUs are flat beyond a few units (1 or 0 to
// float precision), so clamping there gives their limits at +-inf without a special case (and
// without branches on x, which keeps the loops vectorizable).
template <class V>
HD V clamp(const V& x, float lo, float hi) {
  return lanes::at_most(lanes::at_least(x, lo), hi);
}

// GELU, tanh approximation: x/2 (1 + tanh(u)) = x sigmoid(2u), u = k0 (x + k1 x^3); the
// sigmoid form keeps its relative accuracy for negative x.
struct GeluTanh {
  static constexpr bool kFromOutput = false;
  template <class V>
  HD static V fwd(V x_in) {
    const V x = lanes::at_least(x_in, -20.0f);  // gelu(x < -20) is -0 in float
    const V u = kGeluK0 * (x + kGeluK1 * x * x * x);
    return lanes::div(x, 1.0f + approx::exp<V>(-2.0f * u));
  }
  template <class V>
  HD static V bwd(V x_in, V dy) {
    const V x = clamp(x_in, -10.0f, 10.0f);  // beyond, the derivative is 0 or 1 in float
    const V u = kGeluK0 * (x + kGeluK1 * x * x * x);
    const V q = approx::exp<V>(-2.0f * u),
            s = lanes::div_in_range(V(1.0f), 1.0f + q);                         // q < e^88: finite
    const V ds = 2.0f * q * s * s * kGeluK0 * (1.0f + 3.0f * kGeluK1 * x * x);  // s' = q s^2
    return dy * (s + x * ds);
  }
};

// GELU, exact: x Phi(x) = relu(x) - |x| Phi(-|x|) (Phi(-|x|) <= 1/2: no cancellation, no
// choice between sides).
struct GeluErf {
  static constexpr bool kFromOutput = false;
  template <class V>
  HD static V fwd(V x) {
    const V ax = lanes::at_most(lanes::abs(x), 20.0f);  // beyond, |x| Phi(-|x|) is 0 in float
    const V tail = approx::times_exp(approx::normal_tail_factor(ax), -0.5f * (ax * ax));
    return lanes::fma(-ax, tail, lanes::at_least(x, 0.0f));  // NaN passes
  }
  // f'(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi): with
  // g = Phi(-|x|) - |x| phi(x) = (normal_tail_factor(|x|) - |x| / sqrt(2 pi)) e^(-x^2 / 2), f' is
  // g for x < 0 and 1 - g otherwise. One exp for both terms.
  template <class V>
  HD static V bwd(V x, V dy) {
    const V ax = lanes::at_most(lanes::abs(x), 13.0f);  // beyond, f' is 0 or 1 in float
    const V w = lanes::fma(ax, V(-0.3989422804014327f), approx::normal_tail_factor(ax));
    const V g = approx::times_exp(w, -0.5f * (ax * ax));
    return dy * lanes::select(x < 0.0f, g, 1.0f - g);
  }
};

// Calls f(Functor{}) for the activation a, on the host: lets loops and kernels be written once,
// as templates on the functor.
template <class F>
decltype(auto) with_activation(Act a, F&& f) {
  switch (a) {
    case Act::relu:
      return f(Relu{});
    case Act::leaky_relu:
      return f(LeakyRelu{});
    case Act::gelu_tanh:
      return f(GeluTanh{});
    case Act::gelu_erf:
      return f(GeluErf{});
    case Act::sigmoid:
      return f(Sigmoid{});
    case Act::tanh:
      break;
  }
  return f(Tanh{});
}

const char* to_string(Act a);
bool parse_act(const std::string& s, Act* out);
const std::vector<Act>& all_acts();

// The reference: f(x) and f'(x) in double precision from the C library.
double act_ref(Act a, double x);
double act_ref_derivative(Act a, double x);

// Whether a's backward takes the output y = f(x) (sigmoid, tanh) rather than x: the functor's
// kFromOutput.
bool act_bwd_from_output(Act a);
// The reference backward for what the backward is given, s (x, or y where act_bwd_from_output):
// f'(x) = act_ref_derivative(x), y (1 - y) for sigmoid, 1 - y^2 for tanh, in double.
double act_ref_bwd(Act a, double s);

// Stated accuracy of the float functors, relative to |f(x)| + floor (fwd) or to
// |dy| (|f'(x)| + 0.01) (bwd), over all floats; verified on a dense grid by the tests.
struct ActTolerance {
  double fwd_rel, fwd_floor, bwd_rel;
};
ActTolerance act_tolerance(Act a);

// --- Workloads ----------------------------------------------------------------------------

struct ActivationShape {
  Act act = Act::relu;
  bool backward = false;
  std::int64_t n = 0;
};

// Sizes by suite: 2^16 (in L2) to 2^26 (DRAM) elements; quick: 2^16 and 2^20.
std::vector<std::int64_t> activation_suite_n(int level);
ActivationShape parse_activation_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class ActivationWorkload : public Workload {
 public:
  explicit ActivationWorkload(ActivationShape s) : s_(s) {}
  const ActivationShape& activation() const { return s_; }
  std::string op() const override { return "activation"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  double flops() const override;
  double min_bytes() const override;  // fwd: read x, write y; bwd: read x and dy, write dx
  double write_allocate_bytes() const override { return 4.0 * static_cast<double>(s_.n); }
  bool bandwidth_bound() const override { return true; }
  double host_bytes(Device) const override { return 4.0 * 7.0 * static_cast<double>(s_.n); }
  double device_bytes() const override { return 4.0 * 3.0 * static_cast<double>(s_.n); }
  // fwd: x in [-8, 8]; bwd: dy, and what the backward is given (input()): x, or y = f(x)
  // rounded to float from the double reference, for x in [-8, 8].
  Tensors make_inputs() const override;
  std::string input() const { return s_.backward && act_bwd_from_output(s_.act) ? "y" : "x"; }
  std::vector<std::string> outputs() const override { return {s_.backward ? "dx" : "y"}; }
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  ActivationShape s_;
};

// Row-wise softmax (fwd), or the softmax cross-entropy loss of logits against integer labels:
// fwd gives each row's loss, bwd the gradient of the mean loss, (softmax - onehot) / rows.
enum class RowOp { softmax, loss_fwd, loss_bwd };

struct RowShape {
  RowOp kind = RowOp::softmax;
  std::int64_t rows = 0, cols = 0;
};

// A row's sum of exponentials goes in float over blocks of this many columns, then in double,
// where one thread or lane sums a row serially (the CPU's loops, the GPU's naive kernel): a float
// sum of a long row stagnates (at 2^20 columns a serial one was 0.15% off, its terms of e^-8 to
// 1 each rounded to the ulp of a sum near 10^5); blocked, a row of up to 2^24 columns stays
// within the check's bound. A suite's row of 1024 is one block.
constexpr std::int64_t kRowSumBlock = 16384;

std::vector<RowShape> row_suite(RowOp kind, int level);  // cols 1024; 2^16.. elements
RowShape parse_row_shape(RowOp kind, const std::vector<std::pair<std::string, std::string>>& kv);

class RowWorkload : public Workload {
 public:
  explicit RowWorkload(RowShape s) : s_(s) {}
  const RowShape& rows() const { return s_; }
  std::string op() const override { return s_.kind == RowOp::softmax ? "softmax" : "loss"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  double flops() const override;
  double min_bytes() const override;
  double write_allocate_bytes() const override;
  bool bandwidth_bound() const override { return true; }
  double host_bytes(Device) const override { return 4.0 * 6.0 * elements(); }
  double device_bytes() const override { return 4.0 * 2.5 * elements(); }
  // x: the logits (rows x cols, in [-8, 8]); labels (int32, one per row) for the loss.
  Tensors make_inputs() const override;
  // softmax: y; loss fwd: loss (one per row); loss bwd: dx.
  std::vector<std::string> outputs() const override;
  // Against double precision: softmax and the gradient within 4 (4 + sqrt(cols)) roundoffs of
  // each element (relative, floor 1e-7 of the row's largest), the loss within 1e-5 relative to
  // |loss| + log(cols) + 1.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;
  double elements() const { return static_cast<double>(s_.rows) * static_cast<double>(s_.cols); }
  std::int64_t output_size() const {
    return s_.kind == RowOp::loss_fwd ? s_.rows : s_.rows * s_.cols;
  }

 private:
  RowShape s_;
};

}  // namespace pb
