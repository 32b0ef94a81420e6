// Convolution on the CPU: every implementation and pass against the naive reference on awkward
// shapes (in full) and through the workload's sampled check; the backward passes against
// finite differences of the forward pass; im2col's index math; shapes that cannot be convolved.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "core/conv.hpp"
#include "core/rng.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

ConvShape shape(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t k,
                std::int64_t r, std::int64_t s, std::int64_t stride, std::int64_t pad) {
  ConvShape x;
  x.n = n, x.c = c, x.h = h, x.w = w, x.k = k, x.r = r, x.s = s;
  x.stride_h = x.stride_w = stride;
  x.pad_h = x.pad_w = pad;
  return x;
}

// Stride 2, padding 0, 1 and 3, 1x1 filters (the identity im2col and a strided one), non-square
// inputs and filters, C = 1, N = 1, K not a multiple of 8, a stride that leaves rows unread.
std::vector<ConvShape> awkward() {
  return {shape(2, 3, 9, 7, 5, 3, 3, 2, 1),  shape(1, 1, 8, 8, 3, 3, 3, 1, 0),
          shape(3, 4, 6, 11, 7, 1, 1, 1, 0), shape(2, 6, 8, 7, 9, 1, 1, 2, 0),
          shape(1, 2, 13, 5, 4, 7, 3, 2, 3), shape(2, 5, 10, 12, 13, 2, 4, 3, 1),
          shape(4, 8, 5, 5, 16, 5, 5, 1, 2)};
}

Tensors run(const ImplSpec& spec, const ConvWorkload& w, const Tensors& in, int threads) {
  auto impl = spec.make(w, threads);
  impl->activate();
  impl->prepare(in);
  impl->run();
  return impl->result();
}

class CpuConv : public ::testing::TestWithParam<ConvDir> {};

TEST_P(CpuConv, EveryImplementationMatchesTheReferenceOnAwkwardShapes) {
  for (ConvShape s : awkward()) {
    s.dir = GetParam();
    const ConvWorkload w(s);
    const Tensors in = w.make_inputs();
    const Tensors ref = run(testing::find_impl(cpu::conv_impls(), "naive"), w, in, 1);
    const Check ref_check = w.verify(in, ref);
    EXPECT_TRUE(ref_check.ok) << w.shape().to_string() << ": " << ref_check.detail;
    for (const ImplSpec& spec : cpu::conv_impls()) {
      if (spec.name == "naive") continue;
      if (spec.unavailable && !spec.unavailable(w).empty()) continue;  // oneDNN not built in
      for (int threads : {1, 2}) {
        const Tensors got = run(spec, w, in, threads);
        const Check c = w.verify(in, got);
        EXPECT_TRUE(c.ok) << spec.name << " " << w.shape().to_string() << ": " << c.detail;
        ASSERT_EQ(got.size(), ref.size());
        for (std::size_t j = 0; j < got.size(); ++j) {
          EXPECT_EQ(got[j].name(), ref[j].name());
          EXPECT_EQ(got[j].dims(), ref[j].dims());
          EXPECT_LT(testing::max_rel_diff(got[j].f32(), ref[j].f32()), 1e-4)
              << spec.name << " " << got[j].name() << " " << w.shape().to_string();
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Passes, CpuConv,
                         ::testing::Values(ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// oneDNN with bf16 and fp16 inputs (fp32 outputs), each pass, through the workload's check;
// skipped with the reason on a CPU without the instructions.
class OnednnReducedConv : public ::testing::TestWithParam<Dtype> {};

TEST_P(OnednnReducedConv, EveryPassVerifies) {
  for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
    ConvShape s = shape(2, 16, 14, 14, 32, 3, 3, 1, 1);
    s.dir = d, s.dtype = GetParam();
    const ConvWorkload w(s);
    const ImplSpec spec = testing::find_impl(cpu::conv_impls(), "onednn");
    if (!spec.unavailable(w).empty()) GTEST_SKIP() << spec.unavailable(w);
    const Tensors in = w.make_inputs();
    Tensors got;
    try {
      got = run(spec, w, in, 2);
    } catch (const Unavailable& e) {  // this pass only: the harness lists it as skipped
      std::printf("%s: %s\n", to_string(d), e.what());
      continue;
    }
    const Check c = w.verify(in, got);
    EXPECT_TRUE(c.ok) << w.shape().to_string() << ": " << c.detail;
    got[0].f32()[got[0].f32().size() / 2] += 0.5f;
    EXPECT_FALSE(w.verify(in, got).ok);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, OnednnReducedConv, ::testing::Values(Dtype::bf16, Dtype::fp16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// The oneDNN plan over the caller's NCHW buffers, as a training step calls it: run() loads,
// executes and stores, and the same plan serves a second set of buffers.
TEST(OnednnConvolutionPlan, RunsOnTheCallersBuffers) {
  for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
    ConvShape s = shape(2, 5, 9, 8, 6, 3, 3, 2, 1);
    s.dir = d;
    if (!cpu::onednn::unavailable(s.dtype).empty())
      GTEST_SKIP() << cpu::onednn::unavailable(s.dtype);
    cpu::OnednnConvolution plan(s);
    for (std::uint64_t seed : {3, 4}) {
      const ConvWorkload w(s, seed);
      const Tensors in = w.make_inputs();
      const auto [n0, n1] = conv_operands(d);
      const float* b = d == ConvDir::fwd ? at(in, "b").f32().data() : nullptr;
      Tensors out = conv_outputs(s);
      plan.run(at(in, n0).f32().data(), at(in, n1).f32().data(), b, out[0].f32().data(),
               out.size() > 1 ? out[1].f32().data() : nullptr);
      const Check c = w.verify(in, out);
      EXPECT_TRUE(c.ok) << to_string(d) << " seed " << seed << ": " << c.detail;
    }
  }
}

// Inference's held weights: with hold_weights a plan reorders a source's weights on their first
// use and reuses that copy until drop_held_weights(), each source its own copy (one plan serves
// every layer of its shape); a load without hold_weights reorders what it is given and leaves the
// held copies alone. New values at a held source are not seen: the caller promised none.
TEST(OnednnConvolutionPlan, HoldsEachSourcesWeightsUntilDropped) {
  const ConvShape s = shape(2, 5, 9, 8, 6, 3, 3, 2, 1);
  if (!cpu::onednn::unavailable(s.dtype).empty()) GTEST_SKIP() << cpu::onednn::unavailable(s.dtype);
  const Tensors in = ConvWorkload(s, 3).make_inputs(), other = ConvWorkload(s, 4).make_inputs();
  const std::vector<float>&w1 = at(in, "w").f32(), &w2 = at(other, "w").f32();
  cpu::OnednnConvolution plan(s);
  auto y = [&](cpu::OnednnConvolution& p, const std::vector<float>& w, bool hold) {
    Tensors out = conv_outputs(s);
    p.run(at(in, "x").f32().data(), w.data(), at(in, "b").f32().data(), out[0].f32().data(),
          nullptr, hold);
    return out[0].f32();
  };
  auto plain = [&](const std::vector<float>& w) {
    cpu::OnednnConvolution p(s);
    return y(p, w, false);
  };
  const std::vector<float> y1 = plain(w1), y2 = plain(w2);
  ASSERT_NE(y1, y2);
  std::vector<float> source = w1;
  EXPECT_EQ(y(plan, source, true), y1);
  EXPECT_EQ(y(plan, w2, true), y2);  // another source: its own copy
  EXPECT_EQ(y(plan, w2, false), y2);
  std::copy(w2.begin(), w2.end(), source.begin());  // new values at the held source
  EXPECT_EQ(y(plan, source, true), y1);
  EXPECT_EQ(y(plan, source, false), y2);  // reordered as given ...
  EXPECT_EQ(y(plan, source, true), y1);   // ... and the held copy left alone
  EXPECT_EQ(y(plan, w2, true), y2);
  plan.drop_held_weights();
  EXPECT_EQ(y(plan, source, true), y2);
}

// A layer without a bias (ResNet-50's convolutions): its plan takes no b and gives no db (null
// pointers, never touched), and its y and dw are those of a plan with a bias of zeros.
TEST(OnednnConvolutionPlan, ALayerWithoutABiasTakesNoneAndSumsNone) {
  for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter}) {
    ConvShape with = shape(2, 5, 9, 8, 6, 3, 3, 2, 1);
    with.dir = d;
    if (!cpu::onednn::unavailable(with.dtype).empty())
      GTEST_SKIP() << cpu::onednn::unavailable(with.dtype);
    ConvShape without = with;
    without.bias = false;
    const ConvWorkload w(with, 7);
    const Tensors in = w.make_inputs();
    const auto [n0, n1] = conv_operands(d);
    const std::vector<float> zeros(static_cast<std::size_t>(with.k), 0.0f);
    Tensors a = conv_outputs(with), b = conv_outputs(with);
    cpu::OnednnConvolution(with).run(at(in, n0).f32().data(), at(in, n1).f32().data(), zeros.data(),
                                     a[0].f32().data(), a.size() > 1 ? a[1].f32().data() : nullptr);
    cpu::OnednnConvolution(without).run(at(in, n0).f32().data(), at(in, n1).f32().data(), nullptr,
                                        b[0].f32().data(), nullptr);
    EXPECT_LT(testing::max_rel_diff(b[0].f32(), a[0].f32()), 1e-6) << to_string(d);
  }
}

// L(x, w, b) = sum_i g_i y_i(x, w, b), y computed in double by the forward reference: its
// derivatives by central differences are what bwd_data (dy = g) and bwd_filter give.
TEST(ConvBackward, MatchesFiniteDifferencesOfTheForwardPass) {
  for (ConvShape s : {shape(2, 3, 6, 5, 4, 3, 3, 2, 1), shape(1, 2, 5, 5, 3, 2, 3, 1, 2)}) {
    const std::int64_t ny = s.y_size();
    std::vector<float> x(static_cast<std::size_t>(s.x_size())),
        w(static_cast<std::size_t>(s.w_size())), b(static_cast<std::size_t>(s.k)),
        g(static_cast<std::size_t>(ny));
    Rng rng(5);
    for (auto* v : {&x, &w, &b, &g})
      for (float& e : *v) e = rng.uniform();
    auto loss = [&] {
      ConvShape f = s;
      f.dir = ConvDir::fwd;
      double l = 0;
      for (std::int64_t i = 0; i < ny; ++i)
        l += g[i] * conv_point(f, x.data(), w.data(), b.data(), i).value;
      return l;
    };
    auto central = [&](float& v) {
      const float h = 0.25f, v0 = v;
      v = v0 + h;
      const double up = loss();
      v = v0 - h;
      const double down = loss();
      v = v0;
      return (up - down) / (2.0 * h);  // exact but for rounding: L is linear in each input
    };
    for (const char* impl : {"naive", "im2col"}) {
      const ImplSpec spec = testing::find_impl(cpu::conv_impls(), impl);
      ConvShape d = s;
      d.dir = ConvDir::bwd_data;
      const Tensors dx = run(spec, ConvWorkload(d), {Tensor::of("dy", g), Tensor::of("w", w)}, 2);
      for (std::int64_t i = 0; i < s.x_size(); i += 7)
        EXPECT_NEAR(dx[0].f32()[i], central(x[i]), 1e-4) << impl << " dx[" << i << "]";
      d.dir = ConvDir::bwd_filter;
      const Tensors dw = run(spec, ConvWorkload(d), {Tensor::of("x", x), Tensor::of("dy", g)}, 2);
      for (std::int64_t i = 0; i < s.w_size(); i += 5)
        EXPECT_NEAR(dw[0].f32()[i], central(w[i]), 1e-4) << impl << " dw[" << i << "]";
      for (std::int64_t k = 0; k < s.k; ++k)
        EXPECT_NEAR(dw[1].f32()[k], central(b[k]), 1e-4) << impl << " db[" << k << "]";
    }
  }
}

TEST(ConvIndexMath, Im2colPicksTheInputPixelOrZero) {
  const ConvShape s = shape(1, 2, 4, 5, 1, 3, 2, 2, 1);  // p = 2, q = 3
  ASSERT_EQ(s.p(), 2);
  ASSERT_EQ(s.q(), 3);
  std::vector<float> x(40);
  for (int i = 0; i < 40; ++i) x[i] = static_cast<float>(i + 1);
  // Row c=1, r=2, t=1 (1*6 + 2*2 + 1 = 11), column p=1, q=2 (5): ih = 2-1+2 = 3, iw = 4-1+1 = 4.
  EXPECT_EQ(im2col_value(s, x.data(), 11, 5), x[(1 * 4 + 3) * 5 + 4]);
  // Row c=0, r=0, t=0, column p=0, q=0: ih = iw = -1, padding.
  EXPECT_EQ(im2col_value(s, x.data(), 0, 0), 0.0f);
  std::int64_t ih, iw;
  EXPECT_FALSE(conv_input_pixel(s, 0, 0, 0, 0, &ih, &iw));
  EXPECT_EQ(ih, -1);
  EXPECT_TRUE(conv_input_pixel(s, 1, 1, 1, 1, &ih, &iw));
  EXPECT_EQ(ih, 2);
  EXPECT_EQ(iw, 2);
  EXPECT_TRUE(im2col_is_identity(shape(1, 3, 5, 5, 2, 1, 1, 1, 0)));
  EXPECT_FALSE(im2col_is_identity(shape(1, 3, 5, 5, 2, 1, 1, 2, 0)));
}

// col2im is im2col's adjoint: <im2col(x), C> = <x, col2im(C)> for any x and C, which holds only
// if every (row, column) is summed back into the pixel it was read from.
TEST(ConvIndexMath, Col2imIsTheAdjointOfIm2col) {
  for (const ConvShape& s : awkward()) {
    const std::int64_t img = s.c * s.h * s.w, cols = s.crs() * s.pq();
    std::vector<float> x(static_cast<std::size_t>(img)), c(static_cast<std::size_t>(cols)),
        col(static_cast<std::size_t>(cols)), back(static_cast<std::size_t>(img));
    Rng rng(9);
    for (float& v : x) v = rng.uniform();
    for (float& v : c) v = rng.uniform();
    cpu::im2col_omp(s, x.data(), col.data(), 2);
    cpu::col2im_omp(s, c.data(), back.data(), 2);
    double lhs = 0, rhs = 0;
    for (std::int64_t i = 0; i < cols; ++i) lhs += static_cast<double>(col[i]) * c[i];
    for (std::int64_t i = 0; i < img; ++i) rhs += static_cast<double>(x[i]) * back[i];
    EXPECT_NEAR(lhs, rhs, 1e-4 * (std::fabs(lhs) + 1)) << ConvWorkload(s).shape().to_string();
    for (std::int64_t i = 0; i < cols; ++i)
      ASSERT_EQ(col[i], im2col_value(s, x.data(), i / s.pq(), i % s.pq()));
  }
}

TEST(ConvVerify, CatchesAWrongElementInEitherOutput) {
  ConvShape s = shape(2, 8, 12, 12, 16, 3, 3, 1, 1);
  s.dir = ConvDir::bwd_filter;
  const ConvWorkload w(s);
  const Tensors in = w.make_inputs();
  Tensors out = run(testing::find_impl(cpu::conv_impls(), "im2col"), w, in, 2);
  EXPECT_TRUE(w.verify(in, out).ok);
  EXPECT_EQ(w.outputs(), (std::vector<std::string>{"dw", "db"}));
  Tensors bad_db = out;
  bad_db[1].f32()[3] += 0.5f;
  const Check c = w.verify(in, bad_db);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.detail.find("db[3]"), std::string::npos) << c.detail;
  Tensors bad_dw = out;
  bad_dw[0].f32()[100] *= 1.01f;
  EXPECT_FALSE(w.verify(in, bad_dw).ok);
  EXPECT_FALSE(w.verify(in, {out[0]}).ok);  // db missing

  // Sampling: a large forward shape is checked on a sample, which still finds a wrong row.
  ConvShape big = shape(8, 64, 56, 56, 64, 3, 3, 1, 1);
  const ConvWorkload bw(big);
  const Tensors bin = bw.make_inputs();
  Tensors y = run(testing::find_impl(cpu::conv_impls(), "im2col"), bw, bin, 2);
  EXPECT_TRUE(bw.verify(bin, y).ok);
  for (std::int64_t i = 0; i < 56 * 56; ++i) y[0].f32()[5 * 56 * 56 * 64 + i] += 0.1f;  // a plane
  EXPECT_FALSE(bw.verify(bin, y).ok);
}

// bf16 and fp16 outputs may be rounded once to their dtype (cuDNN's 16-bit convolutions give
// 16-bit maps; fwd, the bias rounded first, as a 16-bit y holds it before cuDNN adds the
// convolution), and no more: the reference's outputs so rounded pass, a few units of the dtype
// off fail (1% in fp16, 3% in bf16), and in fp32 the same rounding to bf16 fails.
TEST(ConvVerify, A16BitOutputMayBeRoundedOnceToItsDtype) {
  for (ConvDir d : {ConvDir::fwd, ConvDir::bwd_data, ConvDir::bwd_filter})
    for (Dtype t : {Dtype::bf16, Dtype::fp16, Dtype::fp32}) {
      ConvShape s = shape(2, 8, 12, 12, 16, 3, 3, 1, 1);
      s.dir = d, s.dtype = t;
      const ConvWorkload w(s);
      const Tensors in = w.make_inputs();
      Tensors out = run(testing::find_impl(cpu::conv_impls(), "naive"), w, in, 1);
      ASSERT_TRUE(w.verify(in, out).ok) << to_string(t);
      const Dtype r = t == Dtype::fp32 ? Dtype::bf16 : t;
      Tensors low = out, off = out;
      std::vector<float>& y = low[0].f32();
      for (std::size_t i = 0; i < y.size(); ++i) {
        const float b = d == ConvDir::fwd ? at(in, "b").f32()[i / s.pq() % s.k] : 0.0f;
        y[i] = round_to(r, round_to(r, b) + (y[i] - b));
      }
      const float by = t == Dtype::bf16 ? 1.03f : 1.01f;
      for (float& v : off[0].f32()) v = round_to(t, v * by);
      const Check c = w.verify(in, low);
      EXPECT_EQ(c.ok, t != Dtype::fp32) << to_string(t) << " " << to_string(d) << ": " << c.detail;
      EXPECT_FALSE(w.verify(in, off).ok) << to_string(t) << " " << to_string(d);
    }
}

TEST(ConvShapeParse, AcceptsKeysAndRejectsBadShapesInOneLine) {
  const ConvShape s = parse_conv_shape({{"batch", "8"},
                                        {"c", "64"},
                                        {"h", "56"},
                                        {"w", "56"},
                                        {"k", "64"},
                                        {"r", "3"},
                                        {"pad", "1"},
                                        {"dir", "bwd_filter"}});
  EXPECT_EQ(s.s, 3);
  EXPECT_EQ(s.p(), 56);
  EXPECT_EQ(s.dir, ConvDir::bwd_filter);
  EXPECT_EQ(ConvWorkload(s).shape().to_string(),
            "dir=bwd_filter,batch=8,c=64,h=56,w=56,k=64,r=3,stride=1,pad=1,dtype=fp32");
  EXPECT_DOUBLE_EQ(ConvWorkload(s).flops(), 2.0 * 8 * 64 * 64 * 9 * 56 * 56);
  EXPECT_DOUBLE_EQ(ConvWorkload(s).items(), 8);
  using KV = std::vector<std::pair<std::string, std::string>>;
  const KV base = {{"batch", "1"}, {"c", "3"}, {"h", "5"}, {"w", "5"}, {"k", "2"}};
  auto with = [&](KV extra) {
    KV kv = base;
    kv.insert(kv.end(), extra.begin(), extra.end());
    return kv;
  };
  for (const KV& bad : {with({{"r", "9"}}),                       // larger than the input
                        with({{"r", "8"}, {"pad", "1"}}),         // larger than the padded input
                        with({{"r", "3"}, {"stride", "0"}}),      // stride 0
                        with({{"r", "0"}}),                       // zero size
                        with({{"r", "-3"}}),                      // negative size
                        with({{"r", "3"}, {"pad", "-1"}}),        // negative padding
                        with({{"r", "3"}, {"dir", "sideways"}}),  // unknown pass
                        with({{"r", "3"}, {"dilation", "2"}}),    // unknown key
                        with({}),                                 // r missing
                        with({{"r", "1"}, {"c", "1048576"}, {"k", "1048576"}, {"h", "1048576"}})})
    try {
      parse_conv_shape(bad);
      ADD_FAILURE() << "accepted a bad shape";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  EXPECT_THROW(ConvWorkload(shape(1, 1, 2, 2, 1, 3, 3, 1, 0)), std::invalid_argument);
}

TEST(ConvShapeParse, DescribedInOnePhraseForErrors) {  // as the GPU step's plan errors name it
  ConvShape s = shape(256, 3, 224, 224, 64, 7, 7, 2, 3);
  s.dtype = Dtype::bf16;
  EXPECT_EQ(describe(s), "fwd bf16 256x3x224x224 * 64x3x7x7, stride 2, pad 3");
  s.dir = ConvDir::bwd_filter, s.stride_w = 1, s.pad_w = 0;
  EXPECT_EQ(describe(s), "bwd_filter bf16 256x3x224x224 * 64x3x7x7, stride 2x1, pad 3x0");
}

TEST(ConvSuite, ResNetLayersAtEachBatch) {
  const auto quick = conv_suite(ConvDir::fwd, 0), standard = conv_suite(ConvDir::fwd, 1);
  EXPECT_EQ(quick.size(), 7u);  // four layers at 1 and 8, conv1 at 1 only
  int at32 = 0;
  for (const ConvShape& s : standard) {
    EXPECT_TRUE(conv_shape_problem(s).empty());
    at32 += s.n == 32;
  }
  EXPECT_EQ(at32, 4);
  EXPECT_GT(standard.size(), quick.size());
}

}  // namespace
}  // namespace pb
