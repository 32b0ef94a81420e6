// The training steps of the models (core/model.hpp: the MLP, the CNN and resnet on 16x16 images,
// and a small model this file defines) on the CPU: the double-precision reference's gradients
// against finite differences of its loss, every layer kind; each CPU backend's step against the
// reference step through the workload's check, each of the step's three parts against the
// reference's, and one backend's step against another's through compare_step; the loss falling
// over fresh batches and over repeated steps of one; the checks catching a wrong update or state;
// max pooling and batch normalization; bad shapes and bad descriptions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <numeric>
#include <tuple>

#include "core/collective.hpp"
#include "core/held_weights.hpp"
#include "core/rng.hpp"
#include "core/train.hpp"
#include "core/train_step.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

// The models by name, "small" the one above; resnet on 16x16 images keeps the reference fast.
ModelDesc model_named(const std::string& name) {
  return name == "small" ? testing::small_model() : describe_model(name, 16);
}

// f(backend, outputs) for each CPU backend that runs w's dtype here, after one run on `in`.
template <class F>
void each_cpu_step(const TrainWorkload& w, const Tensors& in, F f) {
  const Dtype t = w.train().dtype;
  for (const char* backend : {"openblas", "onednn"}) {
    const bool dnn = std::string(backend) == "onednn";
    if ((dnn && !cpu::onednn::unavailable(t).empty()) || (!dnn && t != Dtype::fp32)) continue;
    auto impl = testing::find_impl(cpu::train_impls(), backend).make(w, 2);
    impl->activate();
    impl->prepare(in);
    impl->run();
    f(backend, impl->result());
  }
}

TrainShape shape_of(const ModelDesc& m, std::int64_t batch, bool train = true) {
  TrainShape s;
  s.model = m.name, s.batch = batch, s.train = train, s.image = 16;
  return s;
}

class Reference : public ::testing::TestWithParam<const char*> {};

TEST_P(Reference, GradientsMatchFiniteDifferencesInEveryLayer) {
  const ModelDesc m = model_named(GetParam());
  const TrainShape s = shape_of(m, 3);
  const std::int64_t f = m.input.size();
  std::vector<float> x(static_cast<std::size_t>(s.batch * f));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  synthetic_batch(f, m.classes, s.batch, 0, x.data(), labels.data());
  std::vector<float> p = initial_params(m);
  const std::vector<float> v(p.size(), 0.0f), state = initial_state(m);
  const ReferenceStep ref =
      reference_step(m, s, x.data(), labels.data(), p.data(), v.data(), state.data());
  // The mean loss from the reference's logits, in double (of the training pass: batch norm
  // normalizes with the batch's statistics).
  auto loss = [&] {
    const ReferenceStep r =
        reference_step(m, s, x.data(), labels.data(), p.data(), v.data(), state.data());
    double l = 0;
    for (std::int64_t i = 0; i < s.batch; ++i) {
      const double* z = &r.logits[i * 10];
      const double mx = *std::max_element(z, z + 10);
      double sum = 0;
      for (int j = 0; j < 10; ++j) sum += std::exp(z[j] - mx);
      l += (mx + std::log(sum) - z[labels[i]]) / static_cast<double>(s.batch);
    }
    return l;
  };
  EXPECT_NEAR(loss(), ref.loss, 1e-12);
  for (const ParamSlice& sl : m.params) {
    const std::int64_t n = sl.size();
    for (std::int64_t t = 0; t < 6; ++t) {
      const std::int64_t j = sl.offset + (t * 7919) % n;
      // A small step: the models have hundreds of ReLUs and pooling windows per sample, and a
      // step of 1e-4 on a first-layer weight of the MLP already moves some second-layer unit
      // across its kink (the CNN's pools flip their choice at larger steps still). The loss is
      // in double, so a step of a few dozen float ulps still gives ten digits.
      const float p0 = p[j], h = 2e-7f;
      p[j] = p0 + h;
      const double up = loss(), p_up = p[j];
      p[j] = p0 - h;
      const double down = loss(), p_down = p[j];
      p[j] = p0;
      const double fd = (up - down) / (p_up - p_down);  // the step the floats actually took
      EXPECT_NEAR(ref.grads[j], fd, 1e-4 * std::fabs(fd) + 1e-9)
          << sl.name << "[" << j - sl.offset << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Reference, ::testing::Values("mlp", "cnn", "resnet", "small"),
                         [](const auto& info) { return std::string(info.param); });

cpu::TrainBackend backend_named(const std::string& name) {
  return name == "onednn" ? cpu::TrainBackend::onednn : cpu::TrainBackend::openblas;
}

using BackendModel = std::tuple<const char*, const char*>;
class CpuTrain : public ::testing::TestWithParam<BackendModel> {
 protected:
  const char* backend() const { return std::get<0>(GetParam()); }
  std::string model() const { return std::get<1>(GetParam()); }
  bool without_onednn() const {
    return std::string(backend()) == "onednn" && !cpu::onednn::unavailable(Dtype::fp32).empty();
  }
};

TEST_P(CpuTrain, OneStepEqualsTheReferenceStep) {
  const ImplSpec spec = testing::find_impl(cpu::train_impls(), backend());
  for (std::int64_t b : {1, 3, 32})
    for (bool train : {true, false}) {
      const TrainWorkload w = testing::train_workload(model(), b, train);
      if (spec.unavailable && !spec.unavailable(w).empty()) GTEST_SKIP() << spec.unavailable(w);
      const Tensors in = w.make_inputs();
      auto impl = spec.make(w, 2);
      impl->activate();
      impl->prepare(in);
      impl->run();
      Tensors out = impl->result();
      const Check c = w.verify(in, out);
      EXPECT_TRUE(c.ok) << backend() << " " << w.shape().to_string() << ": " << c.detail;
      if (!train) continue;
      // The third parameter tensor updated by 1% more than it should be (the check is per
      // tensor, in norm: 1e-3), and the fourth's largest velocity wrong by its size.
      const ParamSlice w2 = w.model().params[2], b2 = w.model().params[3];
      Tensors bad = out;
      for (std::int64_t j = w2.offset; j < w2.offset + w2.size(); ++j) {
        const float before = at(in, "params").f32()[j];
        bad[1].f32()[j] = before + 1.01f * (out[1].f32()[j] - before);
      }
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
      bad = out;
      float* v = bad[2].f32().data() + b2.offset;
      *std::max_element(v, v + b2.size(),
                        [](float a, float b) { return std::fabs(a) < std::fabs(b); }) *= 2.0f;
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
      bad = out;
      bad[0].f32()[0] *= 1.001f;  // the loss
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
      if (w.model().state_count == 0) continue;
      bad = out;  // a running variance moved by 1% more than it should be
      const ParamSlice var = w.model().state[1];
      for (std::int64_t j = var.offset; j < var.offset + var.size(); ++j) {
        const float before = at(in, "state").f32()[j];
        bad[3].f32()[j] = before + 1.01f * (out[3].f32()[j] - before);
      }
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
    }
}

// The step's three parts, each held to the reference's: forward and backward (the gradients),
// the reduction (called once, on the flat gradient buffer), the update.
TEST_P(CpuTrain, EachPartOfTheStepEqualsTheReferences) {
  if (without_onednn()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  const TrainWorkload w = testing::train_workload(model(), 4);
  const ModelDesc& m = w.model();
  Tensors in = w.make_inputs();
  std::vector<float>& p = in[2].f32();
  std::vector<float>& v = in[3].f32();
  std::vector<float> state = initial_state(m), state_before = state;
  const ReferenceStep ref = reference_step(m, w.train(), in[0].f32().data(), in[1].i32().data(),
                                           p.data(), v.data(), state.data());
  auto step = cpu::make_model_step(m, w.train(), backend_named(backend()), 2);
  auto near = [](const float* got, const std::vector<double>& want, const ParamSlice& sl) {
    double d = 0, r = 0;
    for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j)
      d += (got[j] - want[j]) * (got[j] - want[j]), r += want[j] * want[j];
    return std::sqrt(d / (r + 1e-300));
  };
  step->forward_backward(in[0].f32().data(), in[1].i32().data(), p.data(), state.data());
  EXPECT_NEAR(*step->loss(), ref.loss, 1e-5 * ref.loss);
  for (const ParamSlice& sl : m.params)
    EXPECT_LT(near(step->grads(), ref.grads, sl), 1e-4) << "the gradient of " << sl.name;
  for (const ParamSlice& sl : m.state)
    EXPECT_LT(near(state.data(), ref.state, sl), 1e-5) << sl.name;
  if (!m.state.empty()) {
    EXPECT_NE(state, state_before);  // the running statistics moved
  }
  int calls = 0;
  step->reduce = [&](float* g, std::int64_t n) {
    ++calls;
    EXPECT_EQ(g, step->grads());
    EXPECT_EQ(n, m.param_count);
  };
  step->reduce(step->grads(), m.param_count);
  step->update(p.data(), v.data());
  EXPECT_EQ(calls, 1);
  for (const ParamSlice& sl : m.params) {
    EXPECT_LT(near(p.data(), ref.params, sl), 1e-5) << "the parameters " << sl.name;
    EXPECT_LT(near(v.data(), ref.velocity, sl), 1e-4) << "the velocity of " << sl.name;
  }
}

TEST_P(CpuTrain, TheLossFallsOverFreshBatches) {
  if (without_onednn()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  // Batch 32 (the learning tests' shape), a fresh batch each step.
  const TrainWorkload w = testing::train_workload(model(), 32);
  const ModelDesc& m = w.model();
  const TrainShape& s = w.train();
  auto step = cpu::make_model_step(m, s, backend_named(backend()), 2);
  std::vector<float> p = initial_params(m), v(p.size(), 0.0f), state = initial_state(m);
  const std::int64_t f = m.input.size();
  std::vector<float> x(static_cast<std::size_t>(s.batch * f));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  float first = 0, last = 0;
  const int steps = s.model == "resnet" || s.model == "small" ? 200 : 50;  // these learn slower
  for (int i = 0; i < steps; ++i) {
    synthetic_batch(f, m.classes, s.batch, i, x.data(), labels.data());  // a new batch each step
    step->step(x.data(), labels.data(), p.data(), v.data(), state.data(), m.param_count);
    const float loss = *step->loss();
    ASSERT_TRUE(std::isfinite(loss)) << "step " << i;
    if (i == 0) first = loss;
    last = loss;
  }
  EXPECT_NEAR(first, std::log(10.0), 0.3);  // about uniform over 10 classes at the start
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

INSTANTIATE_TEST_SUITE_P(BackendsAndModels, CpuTrain,
                         ::testing::Combine(::testing::Values("openblas", "onednn"),
                                            ::testing::Values("mlp", "cnn", "resnet", "small")),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" +
                                  std::get<1>(info.param);
                         });

TEST(MaxPool, PicksTheFirstMaximumAndRoutesItsGradient) {
  const float x[16] = {1, 5, 2, 2,  //
                       3, 4, 2, 0,  //
                       0, 0, 9, 8,  //
                       0, 0, 7, 9};
  float y[4];
  std::int32_t arg[4];
  const PoolShape s{1, 4, 4, 2, 2, 0};
  maxpool_forward<float>(s, x, y, arg);
  EXPECT_EQ(std::vector<float>(y, y + 4), (std::vector<float>{5, 2, 0, 9}));
  EXPECT_EQ(std::vector<std::int32_t>(arg, arg + 4), (std::vector<std::int32_t>{1, 2, 8, 10}));
  const float dy[4] = {1, 2, 3, 4};
  float dx[16];
  maxpool_backward<float>(s, dy, arg, dx);
  EXPECT_EQ(dx[1], 1);
  EXPECT_EQ(dx[2], 2);
  EXPECT_EQ(dx[8], 3);
  EXPECT_EQ(dx[10], 4);
  EXPECT_EQ(dx[15], 0);  // the other 9 of the window's tie lost to the first
}

// What the GPU's test asks of every GPU backend, asked of the CPU's steps (the same sequence of
// calls): 80 updates on one batch, from the initial velocity, take the loss under a quarter.
TEST_P(CpuTrain, TheLossFallsOverRepeatedStepsOnOneBatch) {
  if (without_onednn()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  const TrainWorkload w = testing::train_workload(model(), 32);
  const Tensors in = w.make_inputs();
  auto impl = testing::find_impl(cpu::train_impls(), backend()).make(w, 2);
  impl->activate();
  impl->prepare(in);
  impl->run();
  const float first = at(impl->result(), "loss").f32()[0];
  for (int i = 0; i < 80; ++i) impl->run();
  const float last = at(impl->result(), "loss").f32()[0];
  EXPECT_NEAR(first, std::log(10.0), 0.3);
  EXPECT_LT(last, 0.25f * first) << "first " << first << ", last " << last;
}

// Several planes, each window shape the models use (2x2 stride 2; ResNet-50's 3x3 stride 2 pad
// 1, whose windows overlap) and two more, on odd and even maps: each output is its window's
// first maximum, and each input's gradient the sum of those of the windows whose maximum it is
// (the GPU's kernels run the same functions; its gather equals the CPU's scatter).
TEST(MaxPool, EveryPlaneAndWindowAgainstBruteForce) {
  for (const PoolShape& s :
       {PoolShape{3, 6, 10, 2, 2, 0}, PoolShape{3, 7, 10, 3, 2, 1}, PoolShape{2, 8, 8, 3, 2, 1},
        PoolShape{2, 5, 6, 3, 1, 1}, PoolShape{2, 5, 7, 2, 1, 0}}) {
    const std::int64_t hw = s.h * s.w, oh = s.oh(), ow = s.ow();
    std::vector<float> x(static_cast<std::size_t>(s.planes * hw)), dx(x.size());
    std::vector<float> y(static_cast<std::size_t>(s.planes * oh * ow)), dy(y.size());
    std::vector<std::int32_t> arg(y.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 61);
    for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(i + 1);
    maxpool_forward(s, x.data(), y.data(), arg.data());
    maxpool_backward(s, dy.data(), arg.data(), dx.data());
    std::vector<float> want_dx(x.size(), 0.0f);
    for (std::int64_t p = 0; p < s.planes; ++p)
      for (std::int64_t i = 0; i < oh; ++i)
        for (std::int64_t j = 0; j < ow; ++j) {
          const std::int64_t o = (p * oh + i) * ow + j;
          std::int64_t best = -1;
          for (std::int64_t r = i * s.stride - s.pad; r < i * s.stride - s.pad + s.k; ++r)
            for (std::int64_t c = j * s.stride - s.pad; c < j * s.stride - s.pad + s.k; ++c)
              if (r >= 0 && r < s.h && c >= 0 && c < s.w &&
                  (best < 0 || x[p * hw + r * s.w + c] > x[p * hw + best]))
                best = r * s.w + c;
          EXPECT_EQ(y[o], x[p * hw + best]) << o;
          EXPECT_EQ(arg[o], best) << o;
          want_dx[p * hw + best] += dy[o];
        }
    EXPECT_EQ(dx, want_dx) << s.k << "x" << s.k << " stride " << s.stride;
    for (std::int64_t p = 0; p < s.planes; ++p)  // the GPU's gather, one input at a time
      for (std::int64_t r = 0; r < s.h; ++r)
        for (std::int64_t c = 0; c < s.w; ++c)
          EXPECT_EQ(maxpool_grad_at(s, dy.data() + p * oh * ow, arg.data() + p * oh * ow, r, c),
                    want_dx[p * hw + r * s.w + c]);
  }
}

// The bf16 step pools its bf16 maps as they are: the outputs and choices of the fp32 loops over
// the same values (ties and negative values among them), and gradients that are the fp32 loops'
// float sums, rounded once.
TEST(Layouts, Bf16PoolingIsTheFp32PoolingOfTheSameValues) {
  const std::int64_t n = 2, c = 19, h = 9, w = 8, hw = h * w;
  std::vector<float> x(static_cast<std::size_t>(n * c * hw));
  std::vector<cpu::Bf16> xb(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    xb[i] = cpu::to_bf16(static_cast<float>((i * 7919) % 61) / 7 - 4);
    x[i] = cpu::from_bf16(xb[i]);
  }
  for (PoolShape s :
       {PoolShape{n * c, h, w, 3, 2, 1, c, true}, PoolShape{n * c, h, w, 2, 2, 0, c, true}}) {
    const auto outs = static_cast<std::size_t>(s.planes * s.oh() * s.ow());
    std::vector<float> y(outs), dy(outs), dx(x.size());
    std::vector<cpu::Bf16> yb(outs), dyb(outs), dxb(x.size());
    std::vector<std::int32_t> arg(outs), argb(outs);
    for (std::size_t i = 0; i < outs; ++i) {
      dyb[i] = cpu::to_bf16(static_cast<float>(i % 23) * 0.37f - 3);
      dy[i] = cpu::from_bf16(dyb[i]);
    }
    maxpool_forward(s, x.data(), y.data(), arg.data());
    maxpool_backward(s, dy.data(), arg.data(), dx.data());
    maxpool_forward_bf16(s, xb.data(), yb.data(), argb.data());
    maxpool_backward_bf16(s, dyb.data(), argb.data(), dxb.data());
    EXPECT_EQ(argb, arg) << s.k << "x" << s.k;
    for (std::size_t i = 0; i < outs; ++i) ASSERT_EQ(cpu::from_bf16(yb[i]), y[i]) << i;
    for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(dxb[i], cpu::to_bf16(dx[i])) << i;
  }
  PoolShape nchw{n * c, h, w, 3, 2, 1, c, false};
  std::vector<cpu::Bf16> out(xb.size());
  std::vector<std::int32_t> arg(xb.size());
  EXPECT_THROW(maxpool_forward_bf16(nchw, xb.data(), out.data(), arg.data()),
               std::invalid_argument);
}

// The CPU's oneDNN step keeps maps NHWC (core/train_step.hpp): max pooling, batch norm and
// global average pooling in NHWC give what they give in NCHW, relayouted (pooling and routing
// exactly; batch norm's double sums, added in another order, within float rounding).
TEST(Layouts, PoolingAndBatchNormAgreeInNchwAndNhwc) {
  const std::int64_t n = 3, c = 5, h = 7, w = 6, hw = h * w;
  const Maps first{n, c, hw, false}, last{n, c, hw, true};
  std::vector<float> x(static_cast<std::size_t>(first.size())), x_last(x.size()), back(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 61) / 7 - 4;
  relayout(first, x.data(), x_last.data());
  relayout(last, x_last.data(), back.data());
  EXPECT_EQ(back, x);
  EXPECT_EQ(x_last[1], x[hw]);  // pixel 0 of channel 1 follows channel 0's
  // The NHWC result, relayouted to NCHW.
  auto nchw = [&](const std::vector<float>& v, std::int64_t pixels) {
    std::vector<float> out(v.size());
    relayout(Maps{n, c, pixels, true}, v.data(), out.data());
    return out;
  };
  // The GPU's kernels (kernels/train.cu): a thread a value, placed by locate(), through
  // maxpool_at and maxpool_grad_at: the outputs, choices and gradients of the CPU's loops.
  auto as_the_gpu = [&](const PoolShape& s, const std::vector<float>& in,
                        const std::vector<float>& y, const std::vector<std::int32_t>& arg,
                        const std::vector<float>& dy, const std::vector<float>& dx) {
    const std::int64_t per_out = s.oh() * s.ow();
    for (std::int64_t o = 0; o < s.planes * per_out; ++o) {
      std::int64_t p = 0, pixel = 0;
      s.locate(o, per_out, &p, &pixel);
      ASSERT_EQ(s.plane(p, per_out) + pixel * s.step(), o);
      std::int32_t a = -1;
      EXPECT_EQ(maxpool_at(s, in.data() + s.plane(p, hw), pixel / s.ow(), pixel % s.ow(), &a),
                y[static_cast<std::size_t>(o)]);
      EXPECT_EQ(a, arg[static_cast<std::size_t>(o)]);
    }
    for (std::int64_t e = 0; e < s.planes * hw; ++e) {
      std::int64_t p = 0, pixel = 0;
      s.locate(e, hw, &p, &pixel);
      ASSERT_EQ(s.plane(p, hw) + pixel * s.step(), e);
      const std::int64_t first_out = s.plane(p, per_out);
      EXPECT_EQ(
          maxpool_grad_at(s, dy.data() + first_out, arg.data() + first_out, pixel / w, pixel % w),
          dx[static_cast<std::size_t>(e)]);
    }
  };
  for (PoolShape s : {PoolShape{n * c, h, w, 3, 2, 1, c}, PoolShape{n * c, h, w, 2, 2, 0, c}}) {
    const std::int64_t outs = s.planes * s.oh() * s.ow();
    std::vector<float> y(static_cast<std::size_t>(outs)), y_last(y.size()), dx(x.size()),
        dx_last(x.size()), dy(y.size()), dy_last(y.size());
    std::vector<std::int32_t> arg(y.size()), arg_last(y.size());
    for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(i + 1);
    relayout(Maps{n, c, s.oh() * s.ow(), false}, dy.data(), dy_last.data());
    maxpool_forward(s, x.data(), y.data(), arg.data());
    maxpool_backward(s, dy.data(), arg.data(), dx.data());
    s.channels_last = true;
    maxpool_forward(s, x_last.data(), y_last.data(), arg_last.data());
    maxpool_backward(s, dy_last.data(), arg_last.data(), dx_last.data());
    EXPECT_EQ(nchw(y_last, s.oh() * s.ow()), y) << s.k << "x" << s.k;
    EXPECT_EQ(nchw(dx_last, hw), dx) << s.k << "x" << s.k;
    as_the_gpu(s, x_last, y_last, arg_last, dy_last, dx_last);
    s.channels_last = false;
    as_the_gpu(s, x, y, arg, dy, dx);
  }
  std::vector<float> means(static_cast<std::size_t>(n * c)), means_last(means.size());
  plane_means(first, x.data(), means.data());
  plane_means(last, x_last.data(), means_last.data());
  EXPECT_EQ(means_last, means);
  std::vector<float> spread(x.size()), spread_last(x.size());
  spread_means(first, means.data(), spread.data());
  spread_means(last, means.data(), spread_last.data());
  EXPECT_EQ(nchw(spread_last, hw), spread);
  for (std::int64_t i = 0; i < first.size(); ++i) {  // the GPU's: a value a thread, by map()
    const auto at = static_cast<std::size_t>(i);
    EXPECT_FLOAT_EQ(spread[at], means[static_cast<std::size_t>(first.map(i))] / hw);
    EXPECT_FLOAT_EQ(spread_last[at], means[static_cast<std::size_t>(last.map(i))] / hw);
  }

  BnShape bn, bn_last;
  static_cast<Maps&>(bn) = first, static_cast<Maps&>(bn_last) = last;
  std::vector<float> weight(c), bias(c), running(2 * c, 1.0f), running_last(running);
  for (std::int64_t ch = 0; ch < c; ++ch) weight[ch] = 0.5f + 0.1f * ch, bias[ch] = 0.2f * ch;
  std::vector<float> y(x.size()), y_last(x.size()), stats(2 * c), stats_last(2 * c);
  batchnorm_forward(bn, true, x.data(), weight.data(), bias.data(), y.data(), stats.data(),
                    stats.data() + c, running.data(), running.data() + c);
  batchnorm_forward(bn_last, true, x_last.data(), weight.data(), bias.data(), y_last.data(),
                    stats_last.data(), stats_last.data() + c, running_last.data(),
                    running_last.data() + c);
  auto near = [](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-6 * (1 + std::fabs(want[i]))) << what << "[" << i << "]";
  };
  near(stats_last, stats, "mean, invstd");
  near(running_last, running, "running statistics");
  near(nchw(y_last, hw), y, "y");
  std::vector<float> dx(x.size()), dx_last(x.size()), dwb(2 * c), dwb_last(2 * c),
      dy_last(x.size());
  relayout(first, spread.data(), dy_last.data());  // any gradient: the spread means
  batchnorm_backward(bn, x.data(), weight.data(), stats.data(), stats.data() + c, spread.data(),
                     dx.data(), dwb.data(), dwb.data() + c);
  batchnorm_backward(bn_last, x_last.data(), weight.data(), stats_last.data(),
                     stats_last.data() + c, dy_last.data(), dx_last.data(), dwb_last.data(),
                     dwb_last.data() + c);
  near(dwb_last, dwb, "dweight, dbias");
  near(nchw(dx_last, hw), dx, "dx");
}

// cuDNN's NHWC convolutions take their filters KRSC (kernels/train.cu's mixed-precision step):
// the model's KCRS weights are maps of k "images", c channels and r x s pixels, relayouted.
TEST(Layouts, FiltersKcrsAreMapsRelayoutedToKrsc) {
  const std::int64_t K = 3, C = 4, R = 2, S = 3;
  std::vector<float> w(static_cast<std::size_t>(K * C * R * S)), krsc(w.size()), back(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  relayout(Maps{K, C, R * S, false}, w.data(), krsc.data());
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t t = 0; t < S; ++t)
          EXPECT_EQ(krsc[static_cast<std::size_t>(((k * R + r) * S + t) * C + c)],
                    w[static_cast<std::size_t>(((k * C + c) * R + r) * S + t)]);
  relayout(Maps{K, C, R * S, true}, krsc.data(), back.data());  // the gradient's way back
  EXPECT_EQ(back, w);
}

// What the GPU's test does with the GPU's step, done with two CPU steps: one step read back with
// step_of is the expected step of the other; a 1% wrong layer update and a wrong loss are not.
TEST(TrainCompare, OneDevicesStepAgainstAnothers) {
  const ImplSpec blas = testing::find_impl(cpu::train_impls(), "openblas");
  const ImplSpec dnn = testing::find_impl(cpu::train_impls(), "onednn");
  const bool have_dnn = cpu::onednn::unavailable(Dtype::fp32).empty();
  for (const char* name : {"mlp", "cnn", "resnet", "small"})
    for (bool train : {true, false}) {
      const TrainWorkload w = testing::train_workload(name, 8, train);
      const TrainShape& s = w.train();
      const Tensors in = w.make_inputs();
      auto run = [&](const ImplSpec& spec, int threads) {
        auto impl = spec.make(w, threads);
        impl->activate();
        impl->prepare(in);
        impl->run();
        return impl->result();
      };
      const Tensors a = run(blas, 1), b = have_dnn ? run(dnn, 2) : run(blas, 2);
      const ReferenceStep expected = step_of(s, a);
      const Check same = compare_step(w.model(), s, in, expected, b);
      EXPECT_TRUE(same.ok) << w.shape().to_string() << ": " << same.detail;
      Tensors bad = b;
      if (!train) {
        bad[0].f32()[3] += 0.01f * std::fabs(bad[0].f32()[3]) + 0.01f;
        EXPECT_FALSE(compare_step(w.model(), s, in, expected, bad).ok) << w.shape().to_string();
        continue;
      }
      const ParamSlice layer = w.model().params[4];  // the fifth parameter tensor
      for (std::int64_t j = layer.offset; j < layer.offset + layer.size(); ++j) {
        const float before = at(in, "params").f32()[j];
        bad[1].f32()[j] = before + 1.01f * (b[1].f32()[j] - before);
      }
      EXPECT_FALSE(compare_step(w.model(), s, in, expected, bad).ok) << w.shape().to_string();
      bad = b;
      bad[0].f32()[0] *= 1.001f;
      EXPECT_FALSE(compare_step(w.model(), s, in, expected, bad).ok) << w.shape().to_string();
    }
}

// One step of a CPU backend on the workload's inputs, through the workload's check.
// One run of a CPU backend's case on the workload's inputs, checked; with `twice`, a second run
// on the same impl too, checked from the first's results (a step from its parameters, velocity
// and state; make_inputs' order: x, labels, params, velocity, state), the worse of the two.
Check step_checked(const TrainWorkload& w, const char* backend, bool twice = false) {
  const Tensors in = w.make_inputs();
  auto impl = testing::find_impl(cpu::train_impls(), backend).make(w, 2);
  impl->activate();
  impl->prepare(in);
  impl->run();
  const Tensors first = impl->result();
  const Check c = w.verify(in, first);
  if (!twice || !c.ok) return c;
  Tensors next = in;
  if (w.train().train) {
    next[2].f32() = at(first, "params").f32();
    next[3].f32() = at(first, "velocity").f32();
    if (w.model().state_count > 0) next[4].f32() = at(first, "state").f32();
  }
  impl->run();
  Check again = w.verify(next, impl->result());
  again.detail = "second run: " + again.detail;
  return again;
}

TEST(TrainModel, FlopsBytesAndShapes) {
  TrainShape s;
  s.batch = 32;
  const TrainWorkload w(s);
  const ModelDesc mlp = describe_model("mlp", 0), cnn = describe_model("cnn", 0),
                  resnet = describe_model("resnet", 224);
  EXPECT_DOUBLE_EQ(mlp.macs(), 784.0 * 1024 + 1024.0 * 1024 + 1024.0 * 10);
  EXPECT_DOUBLE_EQ(w.flops(), 2.0 * 32 * (3 * mlp.macs() - 784.0 * 1024));
  EXPECT_DOUBLE_EQ(w.items(), 32);
  EXPECT_EQ(mlp.param_count, 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10);
  EXPECT_EQ(w.shape().to_string(), "model=mlp,pass=train,batch=32,dtype=fp32");
  EXPECT_EQ(w.outputs(), (std::vector<std::string>{"loss", "params", "velocity"}));
  const TrainShape inf = parse_train_shape({{"model", "cnn"}, {"batch", "8"}, {"pass", "infer"}});
  EXPECT_FALSE(inf.train);
  EXPECT_EQ(inf.model, "cnn");
  EXPECT_EQ(cnn.param_count, 32 * 27 + 32 + 64 * 288 + 64 + 10 * 4096 + 10);
  EXPECT_DOUBLE_EQ(cnn.macs(), 32.0 * 27 * 1024 + 64.0 * 288 * 256 + 10.0 * 4096);
  // The stem (64 x 147 x 112^2), two blocks of 1x1, 3x3 and 1x1 on 56^2, the classifier.
  EXPECT_DOUBLE_EQ(resnet.macs(),
                   64.0 * 147 * 12544 + 2 * (64.0 * 32 + 32.0 * 288 + 32.0 * 64) * 3136 + 640);
  EXPECT_EQ(resnet.param_count,
            64 * 147 + 64 + 2 * (32 * 64 + 32 + 32 * 288 + 32 + 64 * 32 + 64) + 10 * 64 + 10);
  EXPECT_EQ(resnet.classes, 10);
  TrainShape r;
  r.model = "resnet", r.batch = 2;
  EXPECT_EQ(TrainWorkload(r).shape().to_string(),
            "model=resnet,pass=train,batch=2,image=224,dtype=fp32");
  EXPECT_DOUBLE_EQ(TrainWorkload(r).flops(), 2.0 * 2 * (3 * resnet.macs() - 64.0 * 147 * 12544));
  EXPECT_EQ(TrainWorkload(r).model().input.size(), 3 * 224 * 224);
  // The small model: its state (batch norm's running mean and variance) goes in and out.
  const TrainWorkload small = testing::train_workload("small", 2);
  EXPECT_EQ(small.model().state_count, 16);
  EXPECT_EQ(small.outputs(), (std::vector<std::string>{"loss", "params", "velocity", "state"}));
  EXPECT_EQ(small.make_inputs().back().name(), "state");
  EXPECT_EQ(small.shape().to_string(), "model=small,pass=train,batch=2,lr=0.05,dtype=fp32");
  EXPECT_EQ(
      parse_train_shape({{"model", "mlp"}, {"batch", "8"}, {"weight_decay", "1e-4"}}).weight_decay,
      1e-4f);
  // The update's numbers are in the name where they are not the defaults: two cases that
  // differ in them are two cases.
  EXPECT_EQ(TrainWorkload(parse_train_shape({{"model", "mlp"},
                                             {"batch", "4"},
                                             {"lr", "0.5"},
                                             {"momentum", "0"},
                                             {"weight_decay", "1e-4"}}))
                .shape()
                .to_string(),
            "model=mlp,pass=train,batch=4,lr=0.5,momentum=0,weight_decay=0.0001,dtype=fp32");
  EXPECT_EQ(TrainWorkload(parse_train_shape({{"model", "resnet50"},
                                             {"batch", "4"},
                                             {"lr", "0.01"},
                                             {"weight_decay", "1e-4"},
                                             {"image", "32"}}))
                .shape()
                .to_string(),
            "model=resnet50,pass=train,batch=4,image=32,dtype=fp32");
  for (auto kv : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"batch", "8"}},  // no model
           {{"model", "mlp"}, {"batch", "8"}, {"lr", "0"}},
           {{"model", "mlp"}, {"batch", "8"}, {"lr", "-1"}},
           {{"model", "mlp"}, {"batch", "8"}, {"lr", "1e10"}},
           {{"model", "mlp"}, {"batch", "8"}, {"momentum", "2"}},
           {{"model", "mlp"}, {"batch", "8"}, {"momentum", "-0.1"}},
           {{"model", "mlp"}, {"batch", "8"}, {"weight_decay", "-1"}},
           {{"model", "mlp"}, {"batch", "8"}, {"lr", "0.1"}, {"pass", "infer"}},
           {{"batch", "0"}},
           {{"model", "vgg"}, {"batch", "8"}},
           {{"model", "cnn"}, {"batch", "8"}, {"image", "32"}},
           {{"model", "resnet"}, {"batch", "8"}, {"image", "30"}},
           {{"model", "resnet"}, {"batch", "8"}, {"image", "4"}},
           {{"batch", "8"}, {"pass", "both"}},
           {{"batch", "8"}, {"lr", "nan"}},
           {{"batch", "8"}, {"depth", "3"}},
           {{"batch", "8"}, {"weight_decay", "inf"}},
           {{"model", "mlp"}}})
    EXPECT_THROW(parse_train_shape(kv), std::invalid_argument);
}

// Training normalizes a channel over batch x h x w values: a shape whose batch norm would see
// one value (ResNet-50's last stage is 1x1 on 32x32 images) is refused as input, naming the
// layer; two values, and inference at batch 1, are shapes.
TEST(TrainModel, ABatchNormOfOneValueAChannelIsRefused) {
  auto shape = [](const char* batch, const char* image, const char* pass) {
    return parse_train_shape(
        {{"model", "resnet50"}, {"batch", batch}, {"image", image}, {"pass", pass}});
  };
  try {
    shape("1", "32", "train");
    ADD_FAILURE() << "batch 1 on 32x32 images was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("batch norm layer4.0.bn2 would see 1 value"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(shape("1", "8", "train"), std::invalid_argument);
  EXPECT_NO_THROW(shape("2", "32", "train"));
  EXPECT_NO_THROW(shape("1", "64", "train"));  // layer4 is 2x2
  EXPECT_NO_THROW(shape("1", "8", "infer"));
}

// A layer may read the flattened input itself (its memory is the input's): a linear model of
// images, on the CPU against the reference.
TEST(TrainModel, ALinearLayerOnTheFlattenedInput) {
  ModelBuilder b("linear_on_images", {3, 4, 4});
  b.loss(b.linear(b.flatten(0), 10, true, "fc"));
  auto m = std::make_shared<const ModelDesc>(b.build());
  EXPECT_DOUBLE_EQ(m->first_layer_macs(), m->macs());
  for (bool train : {true, false}) {
    TrainShape s;
    s.model = m->name, s.batch = 5, s.train = train;
    const TrainWorkload w(s, m);
    const Check c = step_checked(w, "openblas");
    EXPECT_TRUE(c.ok) << w.shape().to_string() << ": " << c.detail;
  }
}

// ResNet-50 v1.5 as torchvision builds it: its parameters, state and work; one forward and
// backward pass of the CPU's step on 8 images of 32x32 (the reference is a naive double walk)
// against the reference's: the loss within 1e-5, every gradient tensor within 5% in norm; its
// inference on each backend through the workload's check. Fifty layers of batch norm at
// PyTorch's default initialisation are ill-conditioned: fp32 and double differ by up to 1.0%
// in the first layers' gradients here on one machine (2.8% at batch 1 on 224x224), and another
// CPU's summation order moves that, so the bound is five times it; a wiring error is off by
// far more. The workload's 1e-3 check of the update does not hold for this model yet.
TEST(TrainModel, ResNet50AsTorchvisionBuildsIt) {
  const ModelDesc m = describe_model("resnet50", 224);
  EXPECT_EQ(m.param_count, 25557032);  // sum(p.numel() for p in resnet50().parameters())
  EXPECT_EQ(m.state_count, 53120);     // the running means and variances of 53 batch norms
  EXPECT_EQ(m.classes, 1000);
  EXPECT_DOUBLE_EQ(m.macs(), 4089184256.0);  // the convolutions' and the classifier's, per image
  EXPECT_EQ(m.params[0].name, "conv1.w");
  EXPECT_EQ(m.params.back().name, "fc.b");
  // A training step at batch 8 and inference at batch 2, on 32x32, through the workload's check,
  // on each backend (the training check's bound is ResNet-50's own: see the next test).
  for (bool train : {true, false}) {
    TrainShape s;
    s.model = "resnet50", s.batch = train ? 8 : 2, s.image = 32, s.train = train;
    const TrainWorkload w(s);
    for (const char* backend : {"openblas", "onednn"}) {
      const ImplSpec spec = testing::find_impl(cpu::train_impls(), backend);
      if (spec.unavailable && !spec.unavailable(w).empty()) continue;
      const Check c = step_checked(w, backend);
      EXPECT_TRUE(c.ok) << backend << " " << w.shape().to_string() << ": " << c.detail;
      EXPECT_EQ(c.method, "");  // checked update by update (the next test)
    }
  }
}

// The training check's bound follows from the model: 1e-3 for a model that does not amplify
// fp32's rounding (the cnn), ten times the distance fp32's rounding (the stores and the sums)
// moves an update for one that does (ResNet-50: percents), and no bound on each update where
// that distance is beyond 5%: the step is checked in norm there, as a bf16 step is, and says so
// (batch 1 on 48x48, whose last batch norms see four values a channel: its bound about three
// times the 50%, so another CPU's sums keep it there), or, where the norms are chance too, it is
// not verifiable (batch 2 on 32x32: two values a channel), in fp32 as in bf16.
TEST(TrainModel, TheUpdatesBoundFollowsFromTheModel) {
  auto bound = [](const TrainWorkload& w) {
    const Tensors in = w.make_inputs();
    auto reference = [&](bool fp32_storage) {
      return reference_step(
          w.model(), w.train(), at(in, "x").f32().data(), at(in, "labels").i32().data(),
          at(in, "params").f32().data(), at(in, "velocity").f32().data(),
          w.model().state_count ? at(in, "state").f32().data() : nullptr, fp32_storage);
    };
    const ReferenceStep exact = reference(false), rounded = reference(true);
    if (w.model().name == "cnn") {
      EXPECT_EQ(rounding_loss_bound(exact, rounded), kLossTolerance);
    }
    return rounding_bound(w.model(), w.train(), in, exact, rounded);
  };
  EXPECT_EQ(bound(testing::train_workload("cnn", 8)), kUpdateTolerance);
  TrainShape s;
  s.model = "resnet50", s.batch = 8, s.image = 32;
  const double resnet50 = bound(TrainWorkload(s));
  EXPECT_GT(resnet50, 0.01);
  EXPECT_LT(resnet50, kMostBound);
  s.batch = 1, s.image = 48;
  const Check c = step_checked(TrainWorkload(s), "openblas");
  EXPECT_TRUE(c.ok) << c.detail;
  EXPECT_NE(c.method.find("each update's norm (fp32's rounding alone moves an update by"),
            std::string::npos)
      << c.method;
  s.batch = 2, s.image = 32;
  const Check chaos = step_checked(TrainWorkload(s), "openblas");
  EXPECT_FALSE(chaos.ok);
  EXPECT_NE(chaos.detail.find("not verifiable in fp32 at this shape"), std::string::npos)
      << chaos.detail;
  // and in bf16 (its step checked in norm at any shape), whatever the step did
  s.dtype = Dtype::bf16;
  const TrainWorkload bf16(s);
  const Tensors in = bf16.make_inputs();
  const Check b = bf16.verify(in, {Tensor::of("loss", std::vector<float>{0.0f}), at(in, "params"),
                                   at(in, "velocity"), at(in, "state")});
  EXPECT_FALSE(b.ok);
  EXPECT_NE(b.detail.find("not verifiable in bf16 at this shape"), std::string::npos) << b.detail;
}

// Shapes where rounding only the results put the reference 0.07-0.1% from the exact step,
// while both CPU steps, as PyTorch's own fp32 step, lay 2-4% from it: each step failed its check
// "off by 2-5x its tolerance". With the sums in fp32 the reference lands where the steps do, and
// every step passes, checked update by update, or in norm where the sums move the reference
// beyond kMostBound (batch 1 on 64x64: 4-15%, by the CPU's summation order).
TEST(TrainModel, TheBoundHoldsWhereTheSumsDecideTheKinks) {
  for (auto [batch, image] : {std::pair{2, 48}, std::pair{1, 64}}) {
    TrainShape s;
    s.model = "resnet50", s.batch = batch, s.image = image;
    const TrainWorkload w(s);
    for (const char* backend : {"openblas", "onednn"}) {
      const ImplSpec spec = testing::find_impl(cpu::train_impls(), backend);
      if (spec.unavailable && !spec.unavailable(w).empty()) continue;
      const Check c = step_checked(w, backend);
      SCOPED_TRACE(std::string(backend) + " " + w.shape().to_string() + ": " + c.detail);
      EXPECT_TRUE(c.ok);
      if (batch == 2) {
        EXPECT_EQ(c.method, "");
      }
    }
  }
}

// A bf16, fp16 or tf32 step's check (compare_step), and an fp32 step's where fp32's rounding
// alone moves the updates beyond kMostBound (ResNet-50 at batch 1 on 48x48): the loss, every
// running statistic and every update's and velocity's norm, each against the reference rounded
// as the dtype rounds. Its own rounded reference passes; a loss 50% off, one tensor's statistics
// moved twice as far, one tensor's update three times as long, one tensor's velocity not updated
// each fail. Runs on any CPU (no bf16 or tf32 arithmetic: the reference rounds in software).
TEST(TrainModel, ALowPrecisionStepIsCheckedByItsLossStatisticsAndUpdateNorms) {
  // How far the rounded reference's logits lie from the exact one's, relative (L2). Not the
  // loss: one number, whose error cancels by chance; on the same data it moved 0.0057 in bf16
  // and 0.014 in tf32 with OpenBLAS's SkylakeX dgemm, 0.079 and 0.0034 with its Haswell one. The
  // logits' distances held at 1.0-1.3e-4, 0.13-0.14, 0.19-0.20 and 0.63-0.65 (fp32, tf32, fp16,
  // bf16) over the SkylakeX, Haswell, Zen and Prescott kernels.
  std::map<Dtype, double> logits_moved;
  for (auto [t, batch] :
       {std::pair{Dtype::fp32, 8}, std::pair{Dtype::fp32, 1}, std::pair{Dtype::tf32, 8},
        std::pair{Dtype::fp16, 8}, std::pair{Dtype::bf16, 8}}) {
    SCOPED_TRACE(std::string(to_string(t)) + " at batch " + std::to_string(batch));
    TrainShape s;
    s.model = "resnet50", s.batch = batch, s.image = batch == 1 ? 48 : 32, s.dtype = t;
    const TrainWorkload w(s);
    const ModelDesc& m = w.model();
    const Tensors in = w.make_inputs();
    auto reference = [&](bool rounded) {
      return reference_step(m, s, at(in, "x").f32().data(), at(in, "labels").i32().data(),
                            at(in, "params").f32().data(), at(in, "velocity").f32().data(),
                            at(in, "state").f32().data(), rounded);
    };
    const ReferenceStep rounded = reference(true);
    if (batch == 8) {
      const std::vector<double> exact = reference(false).logits;
      double moved = 0, size = 0;
      for (std::size_t j = 0; j < exact.size(); ++j) {
        const double d = rounded.logits[j] - exact[j];
        moved += d * d, size += exact[j] * exact[j];
      }
      logits_moved[t] = std::sqrt(moved / size);
    }
    if (t == Dtype::fp32 && batch == 8) continue;  // checked update by update
    auto floats = [](const std::vector<double>& v) {
      return std::vector<float>(v.begin(), v.end());
    };
    const Tensors out = {Tensor::of("loss", std::vector<float>{static_cast<float>(rounded.loss)}),
                         Tensor::of("params", floats(rounded.params)),
                         Tensor::of("velocity", floats(rounded.velocity)),
                         Tensor::of("state", floats(rounded.state))};
    const Check ok = w.verify(in, out);
    EXPECT_TRUE(ok.ok) << ok.detail;
    EXPECT_NE(ok.method.find("each update's norm"), std::string::npos) << ok.method;
    Tensors bad = out;
    bad[0].f32()[0] *= 1.5f;
    EXPECT_FALSE(w.verify(in, bad).ok);
    bad = out;
    const ParamSlice st = m.state[3];
    for (std::int64_t j = st.offset; j < st.offset + st.size(); ++j) {
      const float before = at(in, "state").f32()[j];
      bad[3].f32()[j] = before + 2.0f * (out[3].f32()[j] - before);
    }
    Check c = w.verify(in, bad);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.detail.find(st.name), std::string::npos) << c.detail;
    EXPECT_NE(c.detail.find(std::string("what ") + to_string(t) + " rounding moves it"),
              std::string::npos)
        << c.detail;
    bad = out;
    const ParamSlice p = m.params[5];
    for (std::int64_t j = p.offset; j < p.offset + p.size(); ++j) {
      const float before = at(in, "params").f32()[j];
      bad[1].f32()[j] = before + 3.0f * (out[1].f32()[j] - before);
    }
    c = w.verify(in, bad);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.detail.find("the norm of the update of " + p.name), std::string::npos) << c.detail;
    bad = out;
    std::copy_n(at(in, "velocity").f32().begin() + p.offset, p.size(),
                bad[2].f32().begin() + p.offset);  // a velocity not updated
    c = w.verify(in, bad);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.detail.find("the norm of the update of " + p.name), std::string::npos) << c.detail;
  }
  // tf32 rounds the convolutions' and GEMMs' inputs (10-bit mantissas) but stores fp32 maps:
  // its rounding lies between fp32's and bf16's (8-bit mantissas on every map too); fp16's
  // (10-bit mantissas on every map) below bf16's.
  EXPECT_LT(logits_moved[Dtype::fp32], logits_moved[Dtype::tf32]);
  EXPECT_LT(logits_moved[Dtype::tf32], logits_moved[Dtype::bf16]);
  EXPECT_LT(logits_moved[Dtype::fp16], logits_moved[Dtype::bf16]);
}

// fp16's dynamic loss scale (core/layers.hpp, the GPU's fp16 step; PyTorch GradScaler's rule and
// defaults): an overflow halves it and counts a skipped step; 2000 clean steps in a row double
// it; an overflow restarts the count.
TEST(TrainModel, TheLossScaleHalvesOnOverflowAndGrowsAfterCleanSteps) {
  LossScale s;
  EXPECT_EQ(s.scale, 65536.0f);
  s.overflow = 1;
  loss_scale_after_step(s);
  EXPECT_EQ(s.scale, 32768.0f);
  EXPECT_EQ(s.skipped, 1.0f);
  s.overflow = 0;
  for (int i = 0; i < 1999; ++i) loss_scale_after_step(s);
  EXPECT_EQ(s.scale, 32768.0f);
  EXPECT_EQ(s.good_steps, 1999.0f);
  s.overflow = 1;
  loss_scale_after_step(s);
  EXPECT_EQ(s.scale, 16384.0f);
  EXPECT_EQ(s.good_steps, 0.0f);
  EXPECT_EQ(s.skipped, 2.0f);
  s.overflow = 0;
  for (int i = 0; i < 1999; ++i) loss_scale_after_step(s);
  EXPECT_EQ(s.scale, 16384.0f);
  loss_scale_after_step(s);  // the 2000th in a row
  EXPECT_EQ(s.scale, 32768.0f);
  EXPECT_EQ(s.good_steps, 0.0f);
  EXPECT_EQ(s.skipped, 2.0f);
}

// ResNet-50 learns in each precision this CPU has: 50 steps of oneDNN's step on fresh synthetic
// batches at batch 8 on 32x32 (lr 0.001) take the loss from about ln(1000) to under half of it; the
// first step passes the workload's check, and so does a second on the same impl from its results
// (as the GPU's test checks its held weights). bf16 where the CPU has it (skipped with the reason
// elsewhere).
TEST(TrainModel, ResNet50LearnsInEachPrecision) {
  for (Dtype t : {Dtype::fp32, Dtype::bf16}) {
    const std::string why = cpu::onednn::unavailable(t);
    if (!why.empty()) {
      std::cout << to_string(t) << " not run: " << why << "\n";
      continue;
    }
    TrainShape s;
    s.model = "resnet50", s.batch = 8, s.image = 32, s.dtype = t;
    s.weight_decay = default_weight_decay(s.model);
    s.lr = 0.001f;
    const TrainWorkload w(s);
    const Check c = step_checked(w, "onednn", true);
    EXPECT_TRUE(c.ok) << to_string(t) << ": " << c.detail;
    const ModelDesc& m = w.model();
    auto step = cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2);
    std::vector<float> p = initial_params(m), v(p.size(), 0.0f), state = initial_state(m);
    std::vector<float> x(static_cast<std::size_t>(s.batch * m.input.size()));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
    float first = 0, last = 0;
    for (int i = 0; i < 50; ++i) {
      synthetic_batch(m.input.size(), m.classes, s.batch, i, x.data(), labels.data());
      step->step(x.data(), labels.data(), p.data(), v.data(), state.data(), m.param_count);
      last = *step->loss();
      ASSERT_TRUE(std::isfinite(last)) << to_string(t) << " step " << i;
      if (i == 0) first = last;
    }
    EXPECT_NEAR(first, std::log(1000.0), 1.0) << to_string(t);  // about uniform at the start
    EXPECT_LT(last, 0.5f * first) << to_string(t) << ": first " << first << ", last " << last;
  }
}

// Inference fuses a ReLU into the batch norm or add before it (CpuOps: one pass over the maps)
// only where the ReLU is that output's sole reader, and oneDNN's steps fuse it into the batch norm
// in training too (FusesTrainingRelu: forward and backward). Here bn1's output is read by a ReLU
// and by an add (not fused: the add needs it), the add's by a ReLU alone (fused in inference),
// bn2's likewise (fused); each CPU step's results pass the reference's check, as unfused, in
// inference and training; in bf16 too (oneDNN's batch norm with its ReLU fused) where the CPU has
// it.
TEST(TrainModel, AReluIsFusedOnlyIntoItsSoleInput) {
  ModelBuilder b("fusions", {3, 8, 8});
  const int bn1 = b.batchnorm(b.conv(0, 8, 3, 1, 1, false, "conv1"), "bn1");
  const int sum = b.relu(b.add(b.relu(bn1), bn1));
  const int bn2 = b.relu(b.batchnorm(b.conv(sum, 8, 3, 1, 1, false, "conv2"), "bn2"));
  b.loss(b.linear(b.avgpool(bn2), 10, true, "fc"));
  auto m = std::make_shared<const ModelDesc>(b.build());
  for (bool train : {false, true})
    for (Dtype t : {Dtype::fp32, Dtype::bf16}) {
      TrainShape s;
      s.model = m->name, s.batch = 4, s.train = train, s.dtype = t;
      const TrainWorkload w(s, m);
      const Tensors in = w.make_inputs();
      each_cpu_step(w, in, [&](const char* backend, const Tensors& out) {
        const Check c = w.verify(in, out);
        EXPECT_TRUE(c.ok) << backend << " " << to_string(t) << (train ? " train" : " infer") << ": "
                          << c.detail;
      });
    }
}

// Inference through oneDNN holds the convolutions' weights from one pass to the next
// (ModelStep::Params::unchanged): a pass gives the logits of a step that has never held any, and
// a fresh pass after the parameters changed at the same address gives the new parameters'
// logits, in each dtype the CPU has. conv2 and conv3 share a shape, so one plan holds both
// layers' weights.
TEST(TrainModel, InferenceHoldsItsWeightsOnlyWhileTheyAreUnchanged) {
  ModelBuilder b("held", {3, 8, 8});
  int a = b.relu(b.batchnorm(b.conv(0, 8, 3, 1, 1, false, "conv1"), "bn1"));
  a = b.relu(b.batchnorm(b.conv(a, 8, 3, 1, 1, false, "conv2"), "bn2"));
  a = b.relu(b.batchnorm(b.conv(a, 8, 3, 1, 1, false, "conv3"), "bn3"));
  b.loss(b.linear(b.avgpool(a), 10, true, "fc"));
  const ModelDesc m = b.build();
  using Params = ModelStep::Params;
  for (Dtype t : {Dtype::fp32, Dtype::bf16}) {
    if (!cpu::onednn::unavailable(t).empty()) continue;  // bf16 where the CPU has it
    TrainShape s;
    s.model = m.name, s.batch = 2, s.train = false, s.dtype = t;
    const std::int64_t f = m.input.size();
    std::vector<float> x(static_cast<std::size_t>(s.batch * f));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
    synthetic_batch(f, m.classes, s.batch, 0, x.data(), labels.data());
    std::vector<float> state = initial_state(m), p = initial_params(m);
    auto logits = [&](ModelStep& step, Params how) {
      step.forward(x.data(), p.data(), state.data(), how);
      return std::vector<float>(step.logits(), step.logits() + s.batch * m.classes);
    };
    auto once = [&] {
      return logits(*cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2), Params::fresh);
    };
    auto step = cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2);
    const std::vector<float> before = once();
    EXPECT_EQ(logits(*step, Params::fresh), before) << to_string(t);
    EXPECT_EQ(logits(*step, Params::unchanged), before) << to_string(t);
    for (std::size_t i = 0; i < p.size(); i += 3) p[i] = -p[i];
    const std::vector<float> after = once();
    ASSERT_NE(after, before);
    EXPECT_EQ(logits(*step, Params::fresh), after) << to_string(t);
    EXPECT_EQ(logits(*step, Params::unchanged), after) << to_string(t);
  }
}

// core/held_weights.hpp, the GPU's 16-bit steps' logic as the CPU's bf16 step runs it: a source's
// copy is converted on its first use, reused until drop(), then converted again into the same
// buffer (a replayed CUDA graph writes where its capture did); each source has its own, of the
// one size it is asked for.
TEST(HeldWeights, EachSourceIsConvertedOnceUntilDroppedIntoTheSameCopy) {
  HeldWeights<std::vector<int>> held;
  int made = 0, converted = 0;
  auto make = [&made](std::int64_t n) {
    ++made;
    return std::vector<int>(static_cast<std::size_t>(n));
  };
  auto from = [&converted](const std::vector<float>& w, std::int64_t n) {
    return [&converted, &w, n](int* out) {
      ++converted;
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = static_cast<int>(10 * w[static_cast<std::size_t>(i)]);
    };
  };
  std::vector<float> w1 = {1, 2, 3, 4}, w2 = {5, 6, 3};
  int* first = held.get(w1.data(), 4, make, from(w1, 4));
  EXPECT_EQ(std::vector<int>(first, first + 4), (std::vector<int>{10, 20, 30, 40}));
  EXPECT_EQ(held.get(w1.data(), 4, make, from(w1, 4)), first);
  EXPECT_EQ(converted, 1);
  int* second = held.get(w2.data(), 2, make, from(w2, 2));
  EXPECT_NE(second, first);
  EXPECT_EQ(second[1], 60);
  EXPECT_EQ(made, 2);
  w1[0] = 7;  // the parameters change; until the walk drops, the copy is what it was
  EXPECT_EQ(held.get(w1.data(), 4, make, from(w1, 4))[0], 10);
  held.drop();
  EXPECT_EQ(held.get(w1.data(), 4, make, from(w1, 4)), first);
  EXPECT_EQ(first[0], 70);
  EXPECT_EQ(converted, 3);
  EXPECT_EQ(made, 2);
  EXPECT_THROW(held.get(w2.data(), 3, make, from(w2, 3)), std::logic_error);
  EXPECT_EQ(made, 2);
  EXPECT_EQ(held.copies(), 2u);
}

// The bf16 step holds its linear layers' weights in bf16 from the forward pass to the input's
// gradient and forgets them in the update: two steps on one step object equal, bit for bit, the
// same two steps each on a fresh object (which holds nothing from before); inference after them
// on that object, fresh and then unchanged, gives a fresh object's logits.
TEST(TrainModel, HeldWeightsAreForgottenByEachUpdate) {
  if (!cpu::onednn::unavailable(Dtype::bf16).empty())
    GTEST_SKIP() << cpu::onednn::unavailable(Dtype::bf16);
  ModelBuilder b("held", {3, 8, 8});
  const int a = b.relu(b.batchnorm(b.conv(0, 8, 3, 1, 1, false, "conv1"), "bn1"));
  b.loss(b.linear(b.relu(b.linear(b.avgpool(a), 16, true, "fc1")), 10, true, "fc2"));
  const ModelDesc m = b.build();
  TrainShape s;
  s.model = m.name, s.batch = 4, s.train = true, s.dtype = Dtype::bf16;
  const std::int64_t f = m.input.size();
  std::vector<float> x(static_cast<std::size_t>(s.batch * f));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  synthetic_batch(f, m.classes, s.batch, 0, x.data(), labels.data());
  struct Run {
    std::vector<float> p, v, state;
  };
  const std::vector<float> p0 = initial_params(m);
  Run held{p0, std::vector<float>(p0.size()), initial_state(m)}, apart = held;
  auto step = [&](ModelStep& on, Run& r) {
    on.step(x.data(), labels.data(), r.p.data(), r.v.data(), r.state.data(), m.param_count);
  };
  auto one = cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2);
  for (int i = 0; i < 2; ++i) {
    step(*one, held);
    step(*cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2), apart);
    EXPECT_EQ(held.p, apart.p) << "step " << i + 1;
    EXPECT_EQ(held.v, apart.v) << "step " << i + 1;
  }
  ASSERT_NE(held.p, p0);
  s.train = false;
  auto logits = [&](ModelStep& on, ModelStep::Params how) {
    on.forward(x.data(), held.p.data(), held.state.data(), how);
    return std::vector<float>(on.logits(), on.logits() + s.batch * m.classes);
  };
  auto infer = cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2);
  const std::vector<float> expected =
      logits(*cpu::make_model_step(m, s, cpu::TrainBackend::onednn, 2), ModelStep::Params::fresh);
  EXPECT_EQ(logits(*infer, ModelStep::Params::fresh), expected);
  EXPECT_EQ(logits(*infer, ModelStep::Params::unchanged), expected);
}

// Inference's plan of fusions (core/model.hpp's inference_fusions) on ResNet-50: every
// convolution takes its batch norm; each block's residual add and the ReLU after it go into the
// block's last convolution (the projection's, in a stage's first block, whose add comes after
// it); every ReLU is taken by a convolution. Without convolution fusions, a batch norm or an add
// takes the ReLU after it. No layer a pass takes writes a tensor that another layer reads.
TEST(TrainModel, InferenceFusionsOfResNet50) {
  const ModelDesc m = describe_model("resnet50", 64);
  auto count = [&](const std::vector<Fusion>& fs, LayerKind kind, auto pick) {
    int n = 0;
    for (std::size_t i = 0; i < fs.size(); ++i) {
      if (m.layers[i].kind == kind && pick(fs[i])) ++n;
      i = fs[i].last;
    }
    return n;
  };
  const std::vector<Fusion> convs = inference_fusions(m, true, true);
  auto with_bn = [](const Fusion& f) { return f.batchnorm >= 0; };
  auto with_residual = [](const Fusion& f) { return f.residual >= 0; };
  auto with_relu = [](const Fusion& f) { return f.relu; };
  EXPECT_EQ(count(convs, LayerKind::conv, with_bn), 53);
  EXPECT_EQ(count(convs, LayerKind::conv, with_residual), 16);
  EXPECT_EQ(count(convs, LayerKind::conv, with_relu), 49);  // the stem's, 2 a block, each add's
  EXPECT_EQ(count(convs, LayerKind::batchnorm, with_relu), 0);
  const std::vector<Fusion> relus = inference_fusions(m, false, true);
  EXPECT_EQ(count(relus, LayerKind::conv, with_bn), 0);
  EXPECT_EQ(count(relus, LayerKind::batchnorm, with_relu), 33);
  EXPECT_EQ(count(relus, LayerKind::add, with_relu), 16);
  for (const std::vector<Fusion>* fs : {&convs, &relus}) {
    std::vector<bool> skipped(m.layers.size() + 1, false);  // tensors no pass writes
    for (std::size_t i = 0; i < fs->size(); i = (*fs)[i].last + 1)
      for (std::size_t j = i; j < (*fs)[i].last; ++j) skipped[j + 1] = true;
    for (std::size_t i = 0; i < fs->size(); i = (*fs)[i].last + 1) {
      const Fusion& f = (*fs)[i];
      for (std::size_t j = i; j <= f.last; ++j) {  // the pass's layers read their chain and
        const Layer& l = m.layers[j];              // its residual, nothing skipped elsewhere
        for (int t : {l.in, l.in2})
          if (t >= 0 && skipped[static_cast<std::size_t>(m.storage(t))]) {
            EXPECT_TRUE(j > i && t == static_cast<int>(j)) << l.name << " reads " << t;
          }
      }
    }
  }
}

// Inference's buffers (core/model.hpp's inference_buffers) on every model, with and without
// each fusion: no two maps whose lives overlap share a buffer, where a map lives from the pass
// that writes it to the last pass that reads it (the logits to the end), and a pass reads every
// input of its layers that it does not write itself; every map a pass writes has a buffer. On
// ResNet-50 at 224x224 the buffers hold under a tenth of the maps an unshared walk keeps, and
// the walk's counted bytes in inference (walk_bytes) fall with them.
TEST(TrainModel, InferenceSharesBuffersBetweenMapsWhoseLivesDoNotOverlap) {
  for (const char* name : {"mlp", "cnn", "resnet", "resnet50"}) {
    const ModelDesc m = describe_model(name, std::string(name) == "resnet50" ? 64 : 32);
    for (auto [convs, relus] : {std::pair{true, true}, {false, true}, {false, false}}) {
      const std::vector<Fusion> fs = inference_fusions(m, convs, relus);
      const std::vector<int> buffer = inference_buffers(m, fs);
      const std::size_t tensors = m.layers.size() + 1;
      std::vector<int> written(tensors, -1), last_read(tensors, -1);
      int pass = 0;
      for (std::size_t i = 0; i < m.layers.size(); i = fs[i].last + 1) {
        const LayerKind kind = m.layers[i].kind;
        if (kind == LayerKind::flatten || kind == LayerKind::loss) continue;
        for (std::size_t j = i; j <= fs[i].last; ++j)
          for (int t : {m.layers[j].in, m.layers[j].in2}) {
            const bool inside = t > static_cast<int>(i) && t <= static_cast<int>(fs[i].last);
            if (t >= 0 && !inside) last_read[static_cast<std::size_t>(m.storage(t))] = pass;
          }
        written[fs[i].last + 1] = pass++;
      }
      last_read[static_cast<std::size_t>(m.storage(m.logits()))] = pass;
      const std::string at = std::string(name) + (convs ? " convs" : "") + (relus ? " relus" : "");
      for (std::size_t u = 1; u < tensors; ++u) {
        EXPECT_EQ(buffer[u] >= 0, written[u] >= 0) << at << " tensor " << u;
        for (std::size_t v = u + 1; v < tensors && buffer[u] >= 0; ++v)
          if (buffer[v] == buffer[u]) {
            EXPECT_LT(last_read[u], written[v]) << at << " tensors " << u << " and " << v;
          }
      }
    }
  }
  const ModelDesc m = describe_model("resnet50", 224);
  const std::vector<int> buffer = inference_buffers(m, inference_fusions(m, true, true));
  std::vector<std::int64_t> held(buffer.size(), 0);
  for (std::size_t t = 1; t < buffer.size(); ++t)
    if (buffer[t] >= 0)
      held[static_cast<std::size_t>(buffer[t])] =
          std::max(held[static_cast<std::size_t>(buffer[t])], m.dims(static_cast<int>(t)).size());
  const double sum = std::accumulate(held.begin(), held.end(), 0.0);
  EXPECT_LT(sum, 0.1 * m.activations());
  TrainShape s;
  s.model = "resnet50", s.batch = 8, s.train = false;
  EXPECT_LT(walk_bytes(m, s, false, Device::cpu), 4.0 * 8 * 0.1 * m.activations());
}

// A training walk's buffers (core/model.hpp's training_buffers) on every model, in place and
// not, played out: the forward pass and the backward pass as core/train_step.hpp's Walk runs
// them, each buffer holding one map's value or one tensor's gradient at a time. Every read
// finds what it reads in its buffer: a layer's inputs forward; backward, a convolution's, a
// linear layer's and a batch norm's input, a ReLU's input or its output (its mask), and the
// gradients the layer reads (its output's, and its input's where it adds a second term); only
// an elementwise layer (a ReLU, a batch norm, an add) writes a gradient over the one it reads.
// Mutating the plan to keep a gradient in the buffer where an in-place ReLU's backward finds its
// mask fails it, for the ReLU's own output and for an add's written over it.
TEST(TrainModel, TrainingBuffersHoldWhatEachPassReads) {
  // A ReLU written over its input, then an add over the ReLU's output, read by one convolution:
  // the add's output shares the ReLU's buffer, where the ReLU's backward finds its mask.
  ModelBuilder relu_add("relu_add", {3, 8, 8});
  const int skip = relu_add.conv(0, 4, 3, 1, 1);
  const int sum = relu_add.add(relu_add.relu(relu_add.conv(skip, 4, 3, 1, 1)), skip);
  relu_add.loss(relu_add.linear(relu_add.flatten(relu_add.conv(sum, 4, 3, 1, 1)), 10));
  const ModelDesc relu_add_model = relu_add.build();
  for (const char* name : {"mlp", "cnn", "resnet", "resnet50", "small", "relu_add"}) {
    const std::string n = name;
    const ModelDesc m = n == "small"      ? testing::small_model()
                        : n == "relu_add" ? relu_add_model
                                          : describe_model(name, n == "resnet50" ? 64 : 32);
    for (bool in_place : {true, false}) {
      const TrainBuffers b = training_buffers(m, in_place);
      const std::string at = std::string(name) + (in_place ? " in place" : "");
      std::map<std::pair<bool, int>, std::string> held;  // (gradient?, buffer): what it holds
      auto value_at = [&](int t) { return std::pair{false, b.value[static_cast<std::size_t>(t)]}; };
      auto grad_at = [&](int t) {
        const auto o = static_cast<std::size_t>(b.grad[static_cast<std::size_t>(t)]);
        return b.in_value[o] ? value_at(static_cast<int>(o)) : std::pair{true, b.grad_buffer[o]};
      };
      auto v = [](int t) { return "value " + std::to_string(t); };
      auto g = [](int t) { return "gradient " + std::to_string(t); };
      auto reads = [&](std::pair<bool, int> buffer, const std::string& what, const Layer& l,
                       const std::string& pass) {
        EXPECT_GE(buffer.second, 0) << at << ": " << what;
        EXPECT_EQ(held[buffer], what)
            << at << ": " << pass << " of " << l.name << " (" << to_string(l.kind) << ")";
      };
      const std::size_t layers = m.layers.size();
      for (std::size_t i = 0; i < layers; ++i) {
        const Layer& l = m.layers[i];
        if (l.kind == LayerKind::flatten || l.kind == LayerKind::loss) continue;
        for (int t : {l.in, l.in2})
          if (t >= 0 && m.storage(t) > 0)
            reads(value_at(m.storage(t)), v(m.storage(t)), l, "forward");
        held[value_at(static_cast<int>(i) + 1)] = v(static_cast<int>(i) + 1);
      }
      const int logits = m.storage(m.logits());
      reads(value_at(logits), v(logits), m.layers.back(), "loss");
      held[grad_at(logits)] = g(logits);
      std::vector<bool> written(layers + 1, false);
      written[static_cast<std::size_t>(logits)] = true;
      auto writes = [&](int t, const Layer& l) {  // a gradient term into tensor t
        const int st = m.storage(t);
        if (st == 0) return;
        if (written[static_cast<std::size_t>(st)]) reads(grad_at(st), g(st), l, "second term");
        const bool elementwise =
            l.kind == LayerKind::relu || l.kind == LayerKind::batchnorm || l.kind == LayerKind::add;
        if (!elementwise && !written[static_cast<std::size_t>(st)]) {  // else scratch, added
          EXPECT_NE(grad_at(st), grad_at(static_cast<int>(&l - m.layers.data()) + 1))
              << at << ": " << l.name << " writes over the gradient it reads";
        }
        held[grad_at(st)] = g(st);
        written[static_cast<std::size_t>(st)] = true;
      };
      for (std::size_t i = layers - 1; i-- > 0;) {
        const Layer& l = m.layers[i];
        if (l.kind == LayerKind::flatten) continue;
        const int out = static_cast<int>(i) + 1, in = m.storage(l.in);
        const bool needs_input = l.kind == LayerKind::conv || l.kind == LayerKind::linear ||
                                 l.kind == LayerKind::batchnorm || l.kind == LayerKind::relu;
        if (needs_input && in > 0) {
          const bool mask = l.kind == LayerKind::relu && held[value_at(in)] == v(out);
          if (!mask) reads(value_at(in), v(in), l, "backward");
        }
        reads(grad_at(out), g(out), l, "backward's output gradient");
        writes(l.in, l);
        if (l.kind == LayerKind::add) writes(l.in2, l);
      }
    }
  }
}

// ResNet-50's training walk in place: each of its 49 ReLUs and 16 residual adds writes over the
// map before it, and its gradients share three buffers (two the size of its largest block
// output, as its identity shortcuts need at once). The walk's counted bytes (walk_bytes) fall
// from those of a walk that keeps every map and gradient (the reference's choice) by a third.
// The CPU's steps, in place, pass their checks against the reference above.
struct KeepingCountingOps : FusingCountingOps<float> {
  static constexpr bool kKeepsEveryMap = true;
};
TEST(TrainModel, TrainingWritesReluAndResidualInPlace) {
  const ModelDesc m = describe_model("resnet50", 224);
  auto held = [&](const std::vector<int>& buffer_of, const std::vector<int>& tensors) {
    std::map<int, std::int64_t> size;
    for (int t : tensors) {
      const int b = buffer_of[static_cast<std::size_t>(t)];
      if (b > 0) size[b] = std::max(size[b], m.dims(t).size());
    }
    return size;
  };
  std::vector<int> all(m.layers.size());
  std::iota(all.begin(), all.end(), 1);
  const TrainBuffers kept = training_buffers(m, false), in_place = training_buffers(m, true);
  double overwritten = 0;
  int relus = 0, adds = 0;
  for (const Layer& l : m.layers)
    if (l.kind == LayerKind::relu || l.kind == LayerKind::add) {
      overwritten += static_cast<double>(l.out.size());
      ++(l.kind == LayerKind::relu ? relus : adds);
    }
  EXPECT_EQ(relus, 49);
  EXPECT_EQ(adds, 16);
  auto sum = [](const std::map<int, std::int64_t>& sizes) {
    double s = 0;
    for (const auto& [buffer, size] : sizes) s += static_cast<double>(size);
    return s;
  };
  EXPECT_DOUBLE_EQ(sum(held(kept.value, all)) - sum(held(in_place.value, all)), overwritten);
  std::vector<int> owners;  // the gradients in buffers of their own
  for (int t : all)
    if (in_place.value[static_cast<std::size_t>(t)] >= 0 &&
        in_place.grad[static_cast<std::size_t>(t)] == t &&
        !in_place.in_value[static_cast<std::size_t>(t)])
      owners.push_back(t);
  const std::map<int, std::int64_t> grads = held(in_place.grad_buffer, owners);
  EXPECT_EQ(grads.size(), 3u);
  std::int64_t largest = 0;
  for (int t : all)
    if (m.layers[static_cast<std::size_t>(t) - 1].kind == LayerKind::add)
      largest = std::max(largest, m.dims(t).size());
  EXPECT_LE(sum(grads), 2.25 * static_cast<double>(largest));
  TrainShape s;
  s.model = "resnet50", s.batch = 8, s.train = true;
  const double before = counted_walk_bytes(m, s, KeepingCountingOps{});
  const double after = walk_bytes(m, s, false, Device::cpu);
  EXPECT_LT(after, 0.7 * before);
  EXPECT_GT(after, 4.0 * 8 * sum(held(in_place.value, all)));
}

// Inference with batch norms far from the identity through every fusion
// (testing::folded_inference_workload and drawn_batch_norms): each CPU backend's logits equal
// the reference's, unfused, in each precision it has; test_train_gpu holds the GPU's to it too.
TEST(TrainModel, InferenceWithBatchNormFoldedIntoTheConvolutions) {
  for (Dtype dt : {Dtype::fp32, Dtype::bf16}) {
    const TrainWorkload w = testing::folded_inference_workload(dt);
    const Tensors in = testing::drawn_batch_norms(w);
    each_cpu_step(w, in, [&](const char* backend, const Tensors& out) {
      const Check c = w.verify(in, out);
      EXPECT_TRUE(c.ok) << backend << " " << to_string(dt) << ": " << c.detail;
      // The same logits checked against PyTorch's initial batch norms: they differ.
      EXPECT_FALSE(w.verify(w.make_inputs(), out).ok) << backend << " " << to_string(dt);
    });
  }
}

// A description whose shapes do not chain is one clear error, naming the model and the layer.
TEST(TrainModel, BadDescriptionsAreOneClearError) {
  auto fails = [](const std::function<void(ModelBuilder&)>& f, const std::string& says) {
    ModelBuilder b("bad", {3, 8, 8});
    try {
      f(b);
      b.build();
      ADD_FAILURE() << "no error; expected one saying " << says;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("model bad", 0), 0u) << e.what();
    }
  };
  fails([](ModelBuilder& b) { b.loss(b.linear(0, 10)); }, "needs a flat input");
  fails([](ModelBuilder& b) { b.add(b.conv(0, 4, 3), 0); }, "different shapes");
  fails([](ModelBuilder& b) { b.maxpool(b.conv(0, 4, 7), 3); }, "window is larger");
  fails([](ModelBuilder& b) { b.maxpool(0, 3, 2, 2); }, "padding from 0 to half the window");
  fails([](ModelBuilder& b) { b.conv(0, 4, 11); }, "filter");
  fails([](ModelBuilder& b) { b.relu(5); }, "reads tensor 5");
  fails([](ModelBuilder& b) { b.loss(b.conv(0, 10, 3)); }, "flat logits");
  fails([](ModelBuilder& b) { b.linear(b.flatten(0), 10); }, "does not end in a loss");
  fails(
      [](ModelBuilder& b) {
        const int t = b.linear(b.flatten(0), 10);
        b.loss(t);
        b.relu(t);
      },
      "comes after the loss");
}

// A ReLU input within fp32's summation error of its kink: fp32 may pass the gradient there where
// double does not. Here fc1's unit 0 gets a bias that cancels its input for the one sample, and a
// step that decides that kink the other way (the reference on a bias one ulp away) passes the
// check through the exact reference's slack, which only that unit's row of fc1 has; without the
// slack it fails, and with it a step 1% off elsewhere still fails.
TEST(TrainModel, AFlipAtAKinkWithinRoundingIsTheStepsToDecide) {
  ModelBuilder b("kink", {8, 1, 1});
  b.loss(b.linear(b.relu(b.linear(0, 4, true, "fc1")), 3, true, "fc2"));
  const ModelDesc m = b.build();
  TrainShape s;
  s.model = m.name, s.batch = 1;
  std::vector<float> x(8), params = initial_params(m), velocity = initial_velocity(m);
  std::vector<std::int32_t> label = {1};
  synthetic_batch(8, 3, 1, 0, x.data(), label.data());
  const Layer& fc1 = m.layers[0];
  double z = 0;
  for (int k = 0; k < 8; ++k) z += static_cast<double>(params[fc1.weight + k]) * x[k];
  float& bias = params[fc1.bias_at];
  bias = static_cast<float>(-z);
  auto step = [&](const std::vector<float>& p) {
    return reference_step(m, s, x.data(), label.data(), p.data(), velocity.data(), nullptr);
  };
  const ReferenceStep exact = step(params);
  ASSERT_EQ(exact.kinks, 1);
  // The same step with unit 0 decided the other way: the bias stepped an ulp at a time until
  // the ReLU's input changes sign.
  std::vector<float> other = params;
  const double sign = z + bias > 0 ? -1.0 : 1.0;
  auto input = [&] { return z + other[fc1.bias_at]; };
  while ((input() > 0) == (z + bias > 0))
    other[fc1.bias_at] = std::nextafter(other[fc1.bias_at], static_cast<float>(sign));
  const ReferenceStep flipped = step(other);
  const Tensors in = {Tensor::of("params", params)};
  auto outputs = [&](const ReferenceStep& r, double scale_fc2) {
    std::vector<float> p(r.params.begin(), r.params.end()), v(r.velocity.begin(), r.velocity.end());
    const ParamSlice& w2 = m.params[2];
    for (std::int64_t j = w2.offset; j < w2.offset + w2.size(); ++j)
      p[j] = static_cast<float>(params[j] + scale_fc2 * (r.params[j] - params[j]));
    return Tensors{Tensor::of("loss", std::vector<float>{static_cast<float>(r.loss)}),
                   Tensor::of("params", p), Tensor::of("velocity", v)};
  };
  for (const ParamSlice& sl : m.params)
    for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j) {
      const bool row0 = sl.name.rfind("fc1", 0) == 0 && (j - sl.offset) / sl.cols == 0;
      EXPECT_EQ(exact.slack[j] > 0, row0) << sl.name << " " << j - sl.offset;
    }
  const Check c = compare_step(m, s, in, exact, outputs(flipped, 1.0));
  EXPECT_TRUE(c.ok) << c.detail;
  ReferenceStep no_slack = exact;
  no_slack.slack.clear();
  EXPECT_FALSE(compare_step(m, s, in, no_slack, outputs(flipped, 1.0)).ok);
  const Check off = compare_step(m, s, in, exact, outputs(flipped, 1.01));
  EXPECT_FALSE(off.ok);
  EXPECT_NE(off.detail.find("at the 1 ReLU inputs and pooling choices within its error"),
            std::string::npos)
      << off.detail;
}

// A max-pooling window whose two inputs tie exactly (a 1x1 convolution of weights 1, 1 gives 1.0
// at two pixels of different inputs, (0.5, 0.5) and (1, 0)): fp32 may choose either, which moves
// the convolution's gradients by the window's term. A step that chose the second (the reference on
// an input one ulp larger there) passes through the slack, which only the convolution has, and
// fails without it.
TEST(TrainModel, AMaxPoolingTieWithinRoundingIsTheStepsToDecide) {
  ModelBuilder b("pool_tie", {2, 2, 2});
  b.loss(b.linear(b.flatten(b.maxpool(b.relu(b.conv(0, 1, 1, 1, 0, true, "conv")), 2)), 3, true,
                  "fc"));
  const ModelDesc m = b.build();
  TrainShape s;
  s.model = m.name, s.batch = 1;
  std::vector<float> params = initial_params(m), velocity = initial_velocity(m);
  const Layer& conv = m.layers[0];
  params[conv.weight] = params[conv.weight + 1] = 1.0f, params[conv.bias_at] = 0.0f;
  std::vector<float> x = {0.5f, 1.0f, -1.0f, -1.0f,   // channel 0: pixels A, B, C, D
                          0.5f, 0.0f, -1.0f, -1.0f};  // channel 1
  const std::vector<std::int32_t> label = {2};
  auto step = [&](const std::vector<float>& in) {
    return reference_step(m, s, in.data(), label.data(), params.data(), velocity.data(), nullptr);
  };
  const ReferenceStep exact = step(x);
  ASSERT_EQ(exact.kinks, 1);
  for (const ParamSlice& sl : m.params)
    for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j)
      EXPECT_EQ(exact.slack[j] > 0, sl.name.rfind("conv", 0) == 0) << sl.name;
  std::vector<float> other = x;
  other[1] = std::nextafter(1.0f, 2.0f);  // B wins
  const ReferenceStep flipped = step(other);
  auto floats = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const Tensors in = {Tensor::of("params", params)};
  const Tensors out = {Tensor::of("loss", std::vector<float>{static_cast<float>(flipped.loss)}),
                       Tensor::of("params", floats(flipped.params)),
                       Tensor::of("velocity", floats(flipped.velocity))};
  const Check c = compare_step(m, s, in, exact, out);
  EXPECT_TRUE(c.ok) << c.detail;
  ReferenceStep no_slack = exact;
  no_slack.slack.clear();
  EXPECT_FALSE(compare_step(m, s, in, no_slack, out).ok);
}

// Data parallel over ranks (DDP): each rank's shard of the global batch, the gradients averaged.
// Without batch norm that is one step on the global batch, which the sharded reference (what a
// multi-rank case is verified against) must equal; with grads=local each rank's own step is not.
// A batch too large for the double-precision reference is made of repeats of one period
// (TrainWorkload::period), and the reference steps on one period standing for them all
// (TrainShape::replicas): on the small model (batch norm and its state) and the CNN, the step on
// 12 samples that repeat 4 equals the step on the 4 with replicas 3, the running variance
// included (which replicas 1 gets wrong); ResNet-50's period on 224x224 is 32, its batch of 64
// repeats it; inference's check reads the period's logits for every repeat.
TEST(TrainModel, ABatchOfRepeatsIsCheckedOnOnePeriod) {
  for (const char* name : {"small", "cnn"}) {
    SCOPED_TRACE(name);
    const TrainWorkload w = testing::train_workload(name, 12);
    Tensors in = w.make_inputs();
    float* x = in[0].f32().data();
    std::int32_t* labels = in[1].i32().data();
    const std::int64_t f = w.model().input.size();
    for (std::int64_t i = 4; i < 12; ++i) {  // 12 samples: 3 repeats of the first 4
      std::copy(x + (i - 4) * f, x + (i - 3) * f, x + i * f);
      labels[i] = labels[i - 4];
    }
    const float* state = find(in, "state") ? at(in, "state").f32().data() : nullptr;
    auto reference = [&](const TrainShape& s) {
      return reference_step(w.model(), s, x, labels, at(in, "params").f32().data(),
                            at(in, "velocity").f32().data(), state);
    };
    const ReferenceStep whole = reference(w.train());
    TrainShape one = w.train();
    one.batch = 4, one.replicas = 3;
    const ReferenceStep period = reference(one);
    auto worst = [](const std::vector<double>& a, const std::vector<double>& b) {
      double e = 0;
      for (std::size_t j = 0; j < a.size(); ++j)
        e = std::max(e, std::fabs(a[j] - b[j]) / (std::fabs(b[j]) + 1e-3));
      return e;
    };
    EXPECT_NEAR(period.loss, whole.loss, 1e-12 * std::fabs(whole.loss));
    EXPECT_LT(worst(period.params, whole.params), 1e-10);
    EXPECT_LT(worst(period.velocity, whole.velocity), 1e-10);
    EXPECT_LT(worst(period.state, whole.state), 1e-10);
    if (!whole.state.empty()) {  // without replicas the running variance counts 4 samples
      one.replicas = 1;
      EXPECT_GT(worst(reference(one).state, whole.state), 1e-6);
    }
  }
  TrainShape s;
  s.model = "resnet50", s.image = 224, s.batch = 32;
  EXPECT_EQ(TrainWorkload(s).period(), 32);
  s.batch = 64;
  const TrainWorkload big(s);
  EXPECT_EQ(big.period(), 32);
  const Tensors in = big.make_inputs();
  const std::int64_t f = big.model().input.size();
  const std::vector<float>& x = at(in, "x").f32();
  EXPECT_TRUE(std::equal(x.begin(), x.begin() + 32 * f, x.begin() + 32 * f));
  EXPECT_FALSE(std::equal(x.begin(), x.begin() + f, x.begin() + f));  // the samples differ
  EXPECT_EQ(at(in, "labels").i32()[33], at(in, "labels").i32()[1]);

  // Inference: the period's logits (4 samples here) stand for each repeat of the batch of 8.
  const TrainWorkload infer = testing::train_workload("small", 8, false);
  ReferenceStep ref;
  for (int i = 0; i < 4 * 10; ++i) ref.logits.push_back(std::sin(i + 1.0));
  std::vector<float> logits;
  for (int i = 0; i < 8 * 10; ++i) logits.push_back(static_cast<float>(ref.logits[i % 40]));
  const Tensors outs = {Tensor::of("logits", logits)};
  const Tensors no_inputs;
  EXPECT_TRUE(compare_step(infer.model(), infer.train(), no_inputs, ref, outs).ok);
  Tensors bad = outs;
  bad[0].f32()[75] += 0.01f;  // in the second repeat
  const Check c = compare_step(infer.model(), infer.train(), no_inputs, ref, bad);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.detail.find("logits[75]"), std::string::npos) << c.detail;
}

TEST(DataParallel, TheShardedReferenceIsOneStepOnTheGlobalBatch) {
  for (const char* name : {"mlp", "cnn"}) {
    TrainShape global;
    global.model = name, global.batch = 12, global.image = 16;
    const TrainWorkload gw(global);
    const Tensors in = gw.make_inputs();
    const float* state = find(in, "state") ? at(in, "state").f32().data() : nullptr;
    auto reference = [&](const TrainShape& s) {
      return reference_step(gw.model(), s, at(in, "x").f32().data(), at(in, "labels").i32().data(),
                            at(in, "params").f32().data(), at(in, "velocity").f32().data(), state);
    };
    const ReferenceStep whole = reference(global);
    for (int rank = 0; rank < 3; ++rank) {
      TrainShape s = global;
      s.batch = 4, s.ranks = 3, s.rank = rank;
      // The workload of a rank holds the same global batch.
      EXPECT_EQ(TrainWorkload(s).make_inputs()[0].f32(), at(in, "x").f32()) << name;
      const ReferenceStep r = reference(s);
      double worst = 0;
      for (std::size_t j = 0; j < r.params.size(); ++j)
        worst =
            std::max(worst, std::fabs(r.params[j] - whole.params[j]) /
                                (std::fabs(whole.params[j] - at(in, "params").f32()[j]) + 1e-6));
      EXPECT_LT(worst, 1e-9) << name << " rank " << rank;
      s.local = true;
      const ReferenceStep own = reference(s);
      double moved = 0;
      for (std::size_t j = 0; j < own.params.size(); ++j)
        moved = std::max(moved, std::fabs(own.params[j] - whole.params[j]));
      EXPECT_GT(moved, 1e-6) << name << " rank " << rank << ": a local step is its shard's alone";
      EXPECT_DOUBLE_EQ(own.loss, r.loss) << "each rank's loss is its own shard's";
    }
  }
}

TEST(DataParallel, EveryGradientIsFinalWhenTheBackwardPassSaysSo) {
  for (const char* name : {"mlp", "cnn", "small"}) {  // small: convolutions and batch norm
    const TrainWorkload w = testing::train_workload(name, 2);
    const TrainShape& s = w.train();
    const Tensors in = w.make_inputs();
    auto step = cpu::make_model_step(w.model(), s, cpu::TrainBackend::openblas, 1);
    std::vector<std::int64_t> told;
    std::vector<std::vector<float>> seen;  // the gradients from each offset on, as told
    step->on_ready = [&](float* g, std::int64_t from) {
      told.push_back(from);
      seen.emplace_back(g + from, g + w.model().param_count);
    };
    std::vector<float> params = at(in, "params").f32();
    std::vector<float> state = find(in, "state") ? at(in, "state").f32() : std::vector<float>();
    step->forward_backward(at(in, "x").f32().data(), at(in, "labels").i32().data(), params.data(),
                           state.data());
    ASSERT_FALSE(told.empty()) << name;
    EXPECT_EQ(told.back(), 0) << name;
    EXPECT_TRUE(std::is_sorted(told.rbegin(), told.rend())) << name;
    EXPECT_GT(told.size(), 2u) << name << ": told layer by layer, not once at the end";
    const float* g = step->grads();
    for (std::size_t i = 0; i < told.size(); ++i)
      EXPECT_TRUE(std::equal(seen[i].begin(), seen[i].end(), g + told[i]))
          << name << ": the gradients from " << told[i] << " changed after they were final";
  }
}

TEST(DataParallel, BucketsCoverTheGradientsFromTheEnd) {
  const auto b = gradient_buckets(10, 4);
  const std::vector<std::pair<std::int64_t, std::int64_t>> want = {{6, 10}, {2, 6}, {0, 2}};
  EXPECT_EQ(b, want);
  EXPECT_EQ(gradient_buckets(4, 4).size(), 1u);
  EXPECT_TRUE(gradient_buckets(0, 4).empty());
  EXPECT_THROW(gradient_buckets(4, 0), std::invalid_argument);
}

TEST(DataParallel, ShapesOnRanks) {
  const TrainShape s =
      parse_train_shape({{"model", "mlp"}, {"batch", "8"}, {"ranks", "2"}, {"grads", "local"}}, 2);
  EXPECT_EQ(s.ranks, 2);
  EXPECT_TRUE(s.local);
  TrainShape on2 = s;
  on2.local = false;
  const TrainWorkload w(on2), one(parse_train_shape({{"model", "mlp"}, {"batch", "8"}}));
  EXPECT_EQ(w.shape().to_string(), "model=mlp,pass=train,batch=8,dtype=fp32,ranks=2");
  EXPECT_DOUBLE_EQ(w.items(), 16);
  EXPECT_DOUBLE_EQ(w.flops(), 2 * one.flops());
  EXPECT_DOUBLE_EQ(w.gradient_bytes(), 4.0 * w.model().param_count);
  EXPECT_EQ(TrainWorkload(s).shape().to_string(),
            "model=mlp,pass=train,batch=8,dtype=fp32,ranks=2,grads=local");
  auto says = [](const std::vector<std::pair<std::string, std::string>>& kv, int ranks,
                 const std::string& what) {
    try {
      parse_train_shape(kv, ranks);
      ADD_FAILURE() << "no error; expected " << what;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  says({{"model", "mlp"}, {"batch", "8"}, {"ranks", "3"}}, 2, "ranks=3 but this run has 2");
  says({{"model", "mlp"}, {"batch", "8"}, {"grads", "local"}}, 1, "grads=local is for a run of");
  says({{"model", "mlp"}, {"batch", "8"}, {"grads", "some"}}, 2, "not one of allreduce, local");
}

}  // namespace
}  // namespace pb
