// Activations, softmax and loss: the functors against double precision over a dense grid with
// the extremes, backward by finite differences, softmax's invariants, and every CPU
// implementation through its workload's check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <tuple>

#include "core/activation.hpp"
#include "cpu_ref/cpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

testing::Floats run_cpu(const std::vector<ImplSpec>& specs, const std::string& name,
                        const Workload& w, int threads) {
  return testing::run_impl(testing::find_impl(specs, name), w, threads, w.make_inputs());
}

// The two ways the functors run: on floats (the scalar CPU reference and the GPU kernels do
// this) and on SIMD packs (activation/cpu/omp, core/lanes.hpp).
enum class Path { scalar, simd };

// f(x), or dy f'(x) where dy is given, for each x (each s: what the backward is given, x or y).
testing::Floats eval(Path p, Act a, const testing::Floats& xs,
                     const testing::Floats* dy = nullptr) {
  if (p == Path::simd) {
    const ActivationWorkload w({a, dy != nullptr, static_cast<std::int64_t>(xs.size())});
    Tensors inputs{Tensor::of(w.input(), xs)};
    if (dy) inputs.push_back(Tensor::of("dy", *dy));
    return testing::run_impl(testing::find_impl(cpu::activation_impls(), "omp"), w, 2, inputs);
  }
  testing::Floats out(xs.size());
  with_activation(a, [&](auto f) {
    for (std::size_t i = 0; i < xs.size(); ++i)
      out[i] = dy ? decltype(f)::bwd(xs[i], (*dy)[i]) : decltype(f)::fwd(xs[i]);
  });
  return out;
}

// What a training step keeps for the backward of each x: x, or y = f(x) rounded to float for
// the functions whose backward takes the output (sigmoid, tanh).
testing::Floats saved(Act a, const testing::Floats& xs) {
  if (!act_bwd_from_output(a)) return xs;
  testing::Floats ys;
  for (float x : xs) ys.push_back(static_cast<float>(act_ref(a, x)));
  return ys;
}

// One value, taken from the middle of 300 copies: on the SIMD path, from a full pack.
float fwd(Path p, Act a, float x) { return eval(p, a, testing::Floats(300, x))[150]; }
float bwd(Path p, Act a, float x, float dy) {
  const testing::Floats dys(300, dy);
  return eval(p, a, testing::Floats(300, x), &dys)[150];
}

// A dense grid over [-20, 20], every magnitude from the smallest subnormal to FLT_MAX, and the
// special values.
std::vector<float> grid() {
  std::vector<float> xs;
  for (int i = -200000; i <= 200000; ++i) xs.push_back(static_cast<float>(i) * 1e-4f);
  for (double m = 1.4e-45; m < 3.4e38; m *= 1.01) {
    xs.push_back(static_cast<float>(m));
    xs.push_back(static_cast<float>(-m));
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, inf, -inf, FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX,
                  std::numeric_limits<float>::denorm_min()})
    xs.push_back(v);
  return xs;
}

class Functor : public ::testing::TestWithParam<std::tuple<Act, Path>> {
 protected:
  Act a = std::get<0>(GetParam());
  Path path = std::get<1>(GetParam());
};

TEST_P(Functor, ForwardWithinItsStatedErrorEverywhere) {
  const ActTolerance tol = act_tolerance(a);
  const testing::Floats xs = grid(), ys = eval(path, a, xs);
  double worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const float x = xs[i], y = ys[i];
    const double ref = act_ref(a, x);
    ASSERT_FALSE(std::isnan(y)) << to_string(a) << "(" << x << ") is NaN";
    if (std::isinf(ref)) {
      EXPECT_EQ(y, ref) << to_string(a) << "(" << x << ")";
      continue;
    }
    const double e = std::fabs(y - ref) / (std::fabs(ref) + tol.fwd_floor);
    if (e > worst) worst = e, at = x;
  }
  EXPECT_LE(worst, tol.fwd_rel) << to_string(a) << " worst at x = " << at;
}

// Against the reference backward of what the backward is given (x, or the float y).
TEST_P(Functor, BackwardWithinItsStatedErrorEverywhere) {
  const ActTolerance tol = act_tolerance(a);
  const testing::Floats xs = saved(a, grid()), ones(xs.size(), 1.0f), ds = eval(path, a, xs, &ones);
  double worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const float x = xs[i], d = ds[i];
    ASSERT_TRUE(std::isfinite(d)) << to_string(a) << "'(" << x << ") = " << d;
    const double ref = act_ref_bwd(a, x);
    const double e = std::fabs(d - ref) / (std::fabs(ref) + 0.01);
    if (e > worst) worst = e, at = x;
  }
  EXPECT_LE(worst, tol.bwd_rel) << to_string(a) << " worst at x = " << at;
  EXPECT_EQ(bwd(path, a, 1.5f, 0.0f), 0.0f);
  EXPECT_FLOAT_EQ(bwd(path, a, 1.5f, -2.0f), -2.0f * bwd(path, a, 1.5f, 1.0f));
}

TEST_P(Functor, PropagatesNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(fwd(path, a, nan)));
  EXPECT_TRUE(std::isnan(bwd(path, a, nan, 1.0f)));
}

// Every copy of 300: which values run as floats (the ends) and which in packs depends on where
// the output happens to be aligned, so one copy would test one path by chance. (sigmoid(inf) in
// packs of 8 had been 0.99999994: an AVX2 reciprocal estimate's error.)
TEST_P(Functor, LimitsAtInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  const bool bounded = a == Act::sigmoid || a == Act::tanh;
  for (float y : eval(path, a, testing::Floats(300, inf)))
    ASSERT_EQ(y, bounded ? 1.0f : inf) << to_string(a) << "(inf)";
  for (float y : eval(path, a, testing::Floats(300, -inf)))
    ASSERT_EQ(y, a == Act::tanh         ? -1.0f
                 : a == Act::leaky_relu ? -inf
                                        : 0.0f)
        << to_string(a) << "(-inf)";
}

TEST_P(Functor, BackwardMatchesFiniteDifferencesOfTheReference) {
  testing::Floats xs, fds;
  for (double x = -6.0; x <= 6.0; x += 0.0137) {
    if (std::fabs(x) < 1e-3 && (a == Act::relu || a == Act::leaky_relu)) continue;  // the kink
    const double h = 1e-5;
    xs.push_back(static_cast<float>(x));
    fds.push_back(static_cast<float>((act_ref(a, x + h) - act_ref(a, x - h)) / (2 * h)));
  }
  const testing::Floats ones(xs.size(), 1.0f), ds = eval(path, a, saved(a, xs), &ones);
  for (std::size_t i = 0; i < xs.size(); ++i)
    EXPECT_NEAR(ds[i], fds[i], 1e-5 * (1 + std::fabs(fds[i]))) << to_string(a) << " at " << xs[i];
}

// Sigmoid's and tanh's backward take y = f(x), as autograd keeps it: their reference in y is the
// derivative in x, and their workload gives y (in f's range); the others take x.
TEST(ActivationBackward, SigmoidAndTanhTakeTheOutput) {
  for (Act a : all_acts()) {
    const bool from_y = a == Act::sigmoid || a == Act::tanh;
    EXPECT_EQ(act_bwd_from_output(a), from_y) << to_string(a);
    for (double x = -9.0; x <= 9.0; x += 0.37) {
      const double s = from_y ? act_ref(a, x) : x;
      EXPECT_NEAR(act_ref_bwd(a, s), act_ref_derivative(a, x), 1e-14) << to_string(a) << " " << x;
    }
    const ActivationWorkload w({a, true, 1000}), fwd({a, false, 1000});
    EXPECT_EQ(w.input(), from_y ? "y" : "x");
    EXPECT_EQ(fwd.input(), "x");
    const testing::Floats s = at(w.make_inputs(), w.input()).f32();
    const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
    // In f's range, and spanning most of it: x in [-8, 8] gives y within e^-8 of its ends.
    const float bottom = a == Act::sigmoid ? 0.0f : a == Act::tanh ? -1.0f : -8.0f;
    const float top = from_y ? 1.0f : 8.0f;
    EXPECT_GE(*lo, bottom) << to_string(a);
    EXPECT_LE(*hi, top) << to_string(a);
    EXPECT_GT(*hi - *lo, 0.99f * (top - bottom)) << to_string(a);
  }
}

INSTANTIATE_TEST_SUITE_P(All, Functor,
                         ::testing::Combine(::testing::ValuesIn(all_acts()),
                                            ::testing::Values(Path::scalar, Path::simd)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) == Path::simd ? "_simd" : "_scalar");
                         });

TEST(Approx, ExpAcrossTheFloatRange) {
  EXPECT_EQ(approx::exp(0.0f), 1.0f);
  EXPECT_EQ(approx::exp(89.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(approx::exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_LT(approx::exp(88.72f), FLT_MAX);  // just below ln(FLT_MAX): finite
  for (float x = -86.0f; x < 88.7f; x += 0.001f) {
    const double ref = std::exp(static_cast<double>(x));
    ASSERT_LE(std::fabs(approx::exp(x) - ref) / ref, 2.5 * unit_roundoff(Dtype::fp32)) << x;
  }
  for (float x = -100.0f; x < -87.0f; x += 0.01f) EXPECT_LT(approx::exp(x), 2.4e-38f);
}

// v 2^n on both paths: exact over the normal range; at n = -126 and below (times_pow2_clamped)
// 0 or the exact subnormal (AVX-512's scalef keeps subnormals, the bit construction flushes them);
// 2^128 reachable from v < 1.
TEST(Approx, TimesPow2) {
  using P = lanes::Pack;
  auto last = [](const P& p) {
    float out[P::kLanes];
    lanes::store(out, p);
    return out[P::kLanes - 1];
  };
  for (float n = -125.0f; n <= 127.0f; n += 1.0f)
    for (float v : {0.75f, 1.0f, 1.5f, -1.25f}) {
      const float want = std::ldexp(v, static_cast<int>(n));
      ASSERT_EQ(lanes::times_pow2(v, n), want) << v << " 2^" << n;
      ASSERT_EQ(last(lanes::times_pow2(P(v), P(n))), want) << v << " 2^" << n;
      ASSERT_EQ(lanes::times_pow2_clamped(v, n), want) << v << " 2^" << n;
      ASSERT_EQ(last(lanes::times_pow2_clamped(P(v), P(n))), want) << v << " 2^" << n;
    }
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(lanes::times_pow2(0.75f, 128.0f), std::ldexp(0.75f, 128));  // finite: 1.5 2^127
  EXPECT_EQ(last(lanes::times_pow2(P(0.75f), P(128.0f))), std::ldexp(0.75f, 128));
  EXPECT_EQ(lanes::times_pow2(1.5f, 128.0f), inf);
  EXPECT_EQ(last(lanes::times_pow2(P(1.5f), P(128.0f))), inf);
  EXPECT_EQ(lanes::times_pow2(1.0f, -126.0f), 0.0f);
  for (float n : {-126.0f, -140.0f, -300.0f, -1e6f}) {
    EXPECT_EQ(lanes::times_pow2_clamped(1.0f, n), 0.0f) << n;
    const float p = last(lanes::times_pow2_clamped(P(1.0f), P(n)));
    EXPECT_TRUE(p == 0.0f || p == std::ldexp(1.0f, static_cast<int>(n))) << n << ": " << p;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(lanes::times_pow2_clamped(nan, 3.0f)));
  EXPECT_TRUE(std::isnan(last(lanes::times_pow2_clamped(P(nan), P(3.0f)))));
}

// GELU's Phi(-x) = normal_tail_factor(x) e^(-x^2 / 2) within its fit's stated error (7.5e-7)
// plus the rounding of x^2 in the exponent and a few roundings, up to x = 12.7 (Phi(-x) 1e-37).
TEST(Approx, NormalTailWithinItsFit) {
  double worst = 0;
  float at = 0;
  for (float x = 0.0f; x <= 12.7f; x += 1e-3f) {
    const float tail = approx::times_exp(approx::normal_tail_factor(x), -0.5f * (x * x));
    const double ref = 0.5 * std::erfc(x / std::sqrt(2.0));
    const double bound = 7.5e-7 + 6e-8 * 0.5 * x * x + 4 * unit_roundoff(Dtype::fp32);
    const double e = std::fabs(tail / ref - 1) / bound;
    if (e > worst) worst = e, at = x;
  }
  EXPECT_LE(worst, 1.0) << "at x = " << at;
}

// --- workloads and the CPU implementations ---------------------------------------------------

TEST(ActivationCpu, EveryFunctionAndDirectionVerifies) {
  for (Act a : all_acts())
    for (bool backward : {false, true})
      for (std::int64_t n : {1, 17, 100003})
        for (const char* impl : {"naive", "omp"}) {
          const ActivationWorkload w({a, backward, n});
          const Check c =
              testing::verify(w, w.make_inputs(), run_cpu(cpu::activation_impls(), impl, w, 2));
          EXPECT_TRUE(c.ok) << impl << " " << to_string(a) << (backward ? " bwd" : " fwd")
                            << " n=" << n << ": " << c.detail;
        }
}

TEST(ActivationVerify, CatchesAWrongElement) {
  const ActivationWorkload w({Act::gelu_erf, false, 1000});
  const auto in = w.make_inputs();
  testing::Floats y = run_cpu(cpu::activation_impls(), "omp", w, 1);
  EXPECT_TRUE(testing::verify(w, in, y).ok);
  y[500] *= 1.001f;
  EXPECT_FALSE(testing::verify(w, in, y).ok);
}

TEST(ActivationModel, BytesAndSizes) {
  EXPECT_DOUBLE_EQ(ActivationWorkload({Act::relu, false, 10}).min_bytes(), 80);
  EXPECT_DOUBLE_EQ(ActivationWorkload({Act::relu, true, 10}).min_bytes(), 120);
  const auto sizes = activation_suite_n(1);
  EXPECT_EQ(sizes.front(), 1 << 16);
  EXPECT_EQ(sizes.back(), 1 << 26);
  EXPECT_THROW(parse_activation_shape({{"fn", "swish"}, {"n", "4"}}), std::invalid_argument);
  EXPECT_THROW(parse_activation_shape({{"fn", "relu"}, {"n", "0"}}), std::invalid_argument);
  EXPECT_THROW(parse_activation_shape({{"fn", "relu"}, {"n", "4"}, {"dir", "up"}}),
               std::invalid_argument);
}

TEST(RowsCpu, SoftmaxAndLossVerifyOnAwkwardShapes) {
  for (RowOp k : {RowOp::softmax, RowOp::loss_fwd, RowOp::loss_bwd})
    for (auto [rows, cols] :
         {std::pair<std::int64_t, std::int64_t>{1, 1}, {3, 7}, {5, 1000}, {64, 1023}})
      for (const char* impl : {"naive", "omp"}) {
        const RowWorkload w({k, rows, cols});
        const char* op = k == RowOp::softmax ? "softmax" : "loss";
        const Check c =
            testing::verify(w, w.make_inputs(), run_cpu(cpu::row_impls(op), impl, w, 2));
        EXPECT_TRUE(c.ok) << impl << " " << w.shape().to_string() << ": " << c.detail;
      }
}

// A row of 2^20 columns: a float sum of it stagnates (0.15% off, serially), which the check
// caught in the naive loop and would in a pack's lanes at 2^24; the sum goes by blocks.
TEST(RowsCpu, LongRowsVerify) {
  for (RowOp k : {RowOp::softmax, RowOp::loss_fwd, RowOp::loss_bwd})
    for (const char* impl : {"naive", "omp"}) {
      const RowWorkload w({k, 1, 1 << 20});
      const char* op = k == RowOp::softmax ? "softmax" : "loss";
      const Check c = testing::verify(w, w.make_inputs(), run_cpu(cpu::row_impls(op), impl, w, 2));
      EXPECT_TRUE(c.ok) << impl << " " << w.shape().to_string() << ": " << c.detail;
    }
}

class SoftmaxRows : public ::testing::TestWithParam<const char*> {};

TEST_P(SoftmaxRows, SumToOneAndStayFiniteAtHugeLogits) {
  const RowWorkload w({RowOp::softmax, 4, 6});
  Tensors in = {Tensor::of(
      "x",
      testing::Floats{1e4f,  -1e4f, 0,     3,     1e4f,  -5,     // two maxima far above the rest
                      -1e4f, -1e4f, -1e4f, -1e4f, -1e4f, -1e4f,  // all equal, hugely negative
                      0,     0,     0,     0,     0,     0,     88, 89, -104, 1e4f, -1e4f, 50})};
  for (const auto& spec : cpu::row_impls("softmax")) {
    if (spec.name != GetParam()) continue;
    auto impl = spec.make(w, 2);
    impl->activate();
    impl->prepare(in);
    impl->run();
    const testing::Floats y = at(impl->result(), "y").f32();
    for (int r = 0; r < 4; ++r) {
      double sum = 0;
      for (int j = 0; j < 6; ++j) {
        ASSERT_TRUE(std::isfinite(y[r * 6 + j]));
        sum += y[r * 6 + j];
      }
      EXPECT_NEAR(sum, 1.0, 1e-6) << "row " << r;
    }
    EXPECT_FLOAT_EQ(y[0], 0.5f);
    EXPECT_FLOAT_EQ(y[6], 1.0f / 6);
    EXPECT_TRUE(testing::verify(w, in, y).ok);
  }
}

INSTANTIATE_TEST_SUITE_P(Impls, SoftmaxRows, ::testing::Values("naive", "omp"));

TEST(Loss, GradientIsSoftmaxMinusOneHotOverRows) {
  const RowWorkload fwd_w({RowOp::loss_fwd, 2, 3}), bwd_w({RowOp::loss_bwd, 2, 3});
  const Tensors in = {Tensor::of("x", testing::Floats{0, 0, 0, 1e4f, 0, 0}),
                      Tensor::of("labels", std::vector<std::int32_t>{2, 0})};
  auto run = [&](const RowWorkload& w) {
    auto impl = cpu::row_impls("loss")[1].make(w, 1);
    impl->prepare(in);
    impl->run();
    return impl->result().at(0).f32();
  };
  const testing::Floats loss = run(fwd_w), grad = run(bwd_w);
  EXPECT_NEAR(loss[0], std::log(3.0), 1e-6);  // uniform over 3 classes
  EXPECT_NEAR(loss[1], 0.0, 1e-6);            // label 0 holds all the mass
  EXPECT_NEAR(grad[2], (1.0 / 3 - 1) / 2, 1e-7);
  EXPECT_NEAR(grad[0], (1.0 / 3) / 2, 1e-7);
  EXPECT_NEAR(grad[3], 0.0, 1e-7);
  EXPECT_TRUE(testing::verify(bwd_w, in, grad).ok);
  EXPECT_THROW(parse_row_shape(RowOp::loss_fwd, {{"rows", "2"}}), std::invalid_argument);
  EXPECT_THROW(parse_row_shape(RowOp::softmax, {{"rows", "2"}, {"cols", "0"}}),
               std::invalid_argument);
}

}  // namespace
}  // namespace pb
