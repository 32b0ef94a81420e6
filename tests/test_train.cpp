// The training steps of the MLP, the CNN and resnet (on 16x16 images) on the CPU: the
// double-precision reference's gradients against finite differences of its loss, every layer;
// each CPU backend's step against the reference step through the workload's check, and one
// backend's against another's through compare_step; the loss falling over fresh batches and
// over repeated steps of one; the checks catching a wrong update; max pooling; bad shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

class Reference : public ::testing::TestWithParam<Model> {};

TEST_P(Reference, GradientsMatchFiniteDifferencesInEveryLayer) {
  TrainShape s;
  s.model = GetParam(), s.batch = 3;
  s.image = 16;  // resnet: 16x16 images keep the reference fast
  const std::int64_t f = input_features(s);
  std::vector<float> x(static_cast<std::size_t>(s.batch * f));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  synthetic_batch(f, s.batch, 0, x.data(), labels.data());
  std::vector<float> p = initial_params(s.model);
  const std::vector<float> v(p.size(), 0.0f);
  const ReferenceStep ref = reference_step(s, x.data(), labels.data(), p.data(), v.data());
  TrainShape fwd = s;
  fwd.train = false;
  auto loss = [&] {  // the mean loss from the reference's logits, in double
    const ReferenceStep r = reference_step(fwd, x.data(), labels.data(), p.data(), v.data());
    double l = 0;
    for (std::int64_t i = 0; i < s.batch; ++i) {
      const double* z = &r.logits[i * 10];
      const double m = *std::max_element(z, z + 10);
      double sum = 0;
      for (int j = 0; j < 10; ++j) sum += std::exp(z[j] - m);
      l += (m + std::log(sum) - z[labels[i]]) / static_cast<double>(s.batch);
    }
    return l;
  };
  EXPECT_NEAR(loss(), ref.loss, 1e-12);
  for (const ParamSlice& sl : model_params(s.model)) {
    const std::int64_t n = sl.rows * sl.cols;
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

INSTANTIATE_TEST_SUITE_P(Models, Reference,
                         ::testing::Values(Model::mlp, Model::cnn, Model::resnet),
                         [](const auto& info) { return std::string(to_string(info.param)); });

using BackendModel = std::tuple<const char*, Model>;
class CpuTrain : public ::testing::TestWithParam<BackendModel> {
 protected:
  const char* backend() const { return std::get<0>(GetParam()); }
  Model model() const { return std::get<1>(GetParam()); }
  bool without_onednn() const {
    return std::string(backend()) == "onednn" && !cpu::onednn::unavailable(Dtype::fp32).empty();
  }
  // The shape the learning tests train: batch 32, resnet on 16x16 images (they keep the
  // reference fast) at lr 0.05 (0.01 learns slowly, 0.1 diverges).
  TrainShape learning_shape() const {
    TrainShape s;
    s.model = model(), s.batch = 32, s.image = 16;
    if (s.model == Model::resnet) s.lr = 0.05f;
    return s;
  }
};

TEST_P(CpuTrain, OneStepEqualsTheReferenceStep) {
  const ImplSpec spec = testing::find_impl(cpu::train_impls(), backend());
  for (std::int64_t b : {1, 3, 32})
    for (bool train : {true, false}) {
      TrainShape s;
      s.model = model(), s.batch = b, s.train = train;
      s.image = 16;  // resnet: 16x16 images keep the reference fast
      const TrainWorkload w(s);
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
      // The second layer's weights updated by 1% more than they should be (the check is per
      // tensor, in norm: 1e-3), and its bias's largest velocity wrong by its size.
      const ParamSlice w2 = model_params(s.model)[2], b2 = model_params(s.model)[3];
      Tensors bad = out;
      for (std::int64_t j = w2.offset; j < w2.offset + w2.rows * w2.cols; ++j) {
        const float before = at(in, "params").f32()[j];
        bad[1].f32()[j] = before + 1.01f * (out[1].f32()[j] - before);
      }
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
      bad = out;
      float* v = bad[2].f32().data() + b2.offset;
      *std::max_element(v, v + b2.rows,
                        [](float a, float b) { return std::fabs(a) < std::fabs(b); }) *= 2.0f;
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
      bad = out;
      bad[0].f32()[0] *= 1.001f;  // the loss
      EXPECT_FALSE(w.verify(in, bad).ok) << backend();
    }
}

TEST_P(CpuTrain, TheLossFallsOverFreshBatches) {
  if (without_onednn()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  const TrainShape s = learning_shape();
  auto step = cpu::make_model_step(
      s, std::string(backend()) == "onednn" ? cpu::GemmBackend::onednn : cpu::GemmBackend::openblas,
      2);
  std::vector<float> p = initial_params(s.model), v(p.size(), 0.0f);
  const std::int64_t f = input_features(s);
  std::vector<float> x(static_cast<std::size_t>(s.batch * f));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  float first = 0, last = 0;
  const int steps = s.model == Model::resnet ? 200 : 50;  // the deeper model learns slower
  for (int i = 0; i < steps; ++i) {
    synthetic_batch(f, s.batch, i, x.data(), labels.data());  // a new batch each step
    step->step(x.data(), labels.data(), p.data(), v.data());
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
                                            ::testing::Values(Model::mlp, Model::cnn,
                                                              Model::resnet)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" +
                                  to_string(std::get<1>(info.param));
                         });

TEST(MaxPool, PicksTheFirstMaximumAndRoutesItsGradient) {
  const float x[16] = {1, 5, 2, 2,  //
                       3, 4, 2, 0,  //
                       0, 0, 9, 8,  //
                       0, 0, 7, 9};
  float y[4];
  std::int32_t arg[4];
  maxpool2_forward<float>(1, 4, 4, x, y, arg);
  EXPECT_EQ(std::vector<float>(y, y + 4), (std::vector<float>{5, 2, 0, 9}));
  EXPECT_EQ(std::vector<std::int32_t>(arg, arg + 4), (std::vector<std::int32_t>{1, 2, 8, 10}));
  const float dy[4] = {1, 2, 3, 4};
  float dx[16];
  maxpool2_backward<float>(1, 4, 4, dy, arg, dx);
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
  const TrainShape s = learning_shape();
  const TrainWorkload w(s);
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

// Several planes of odd size: each output is its window's maximum, and each input's gradient is
// its window's where it is the maximum, else zero (the GPU's kernels run the same functions).
TEST(MaxPool, EveryPlaneAndWindowAgainstBruteForce) {
  const std::int64_t planes = 3, h = 6, w = 10, hw = h * w;
  std::vector<float> x(static_cast<std::size_t>(planes * hw)), y(x.size() / 4), dy(y.size()),
      dx(x.size());
  std::vector<std::int32_t> arg(y.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 61);
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(i + 1);
  maxpool2_forward(planes, h, w, x.data(), y.data(), arg.data());
  maxpool2_backward(planes, h, w, dy.data(), arg.data(), dx.data());
  std::vector<float> want_dx(x.size(), 0.0f);
  for (std::int64_t p = 0; p < planes; ++p)
    for (std::int64_t i = 0; i < h / 2; ++i)
      for (std::int64_t j = 0; j < w / 2; ++j) {
        const std::int64_t o = (p * (h / 2) + i) * (w / 2) + j;
        std::int64_t best = p * hw + 2 * i * w + 2 * j;
        for (std::int64_t at : {best, best + 1, best + w, best + w + 1})
          if (x[at] > x[best]) best = at;
        EXPECT_EQ(y[o], x[best]) << o;
        EXPECT_EQ(arg[o], best - p * hw) << o;
        want_dx[best] = dy[o];
      }
  EXPECT_EQ(dx, want_dx);
  for (std::int64_t p = 0; p < planes; ++p)  // the GPU's gather, one input at a time
    for (std::int64_t r = 0; r < h; ++r)
      for (std::int64_t c = 0; c < w; ++c)
        EXPECT_EQ(maxpool2_grad_at(w, dy.data() + p * hw / 4, arg.data() + p * hw / 4, r, c),
                  want_dx[(p * h + r) * w + c]);
}

// What the GPU's test does with the GPU's step, done with two CPU steps: one step read back with
// step_of is the expected step of the other; a 1% wrong layer update and a wrong loss are not.
TEST(TrainCompare, OneDevicesStepAgainstAnothers) {
  const ImplSpec blas = testing::find_impl(cpu::train_impls(), "openblas");
  const ImplSpec dnn = testing::find_impl(cpu::train_impls(), "onednn");
  const bool have_dnn = cpu::onednn::unavailable(Dtype::fp32).empty();
  for (Model m : {Model::mlp, Model::cnn, Model::resnet})
    for (bool train : {true, false}) {
      TrainShape s;
      s.model = m, s.batch = 8, s.train = train;
      s.image = 16;  // resnet: 16x16 images keep the reference fast
      const TrainWorkload w(s);
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
      const Check same = compare_step(s, in, expected, b);
      EXPECT_TRUE(same.ok) << w.shape().to_string() << ": " << same.detail;
      Tensors bad = b;
      if (!train) {
        bad[0].f32()[3] += 0.01f * std::fabs(bad[0].f32()[3]) + 0.01f;
        EXPECT_FALSE(compare_step(s, in, expected, bad).ok) << w.shape().to_string();
        continue;
      }
      const ParamSlice layer = model_params(m)[4];  // the third weight tensor
      for (std::int64_t j = layer.offset; j < layer.offset + layer.rows * layer.cols; ++j) {
        const float before = at(in, "params").f32()[j];
        bad[1].f32()[j] = before + 1.01f * (b[1].f32()[j] - before);
      }
      EXPECT_FALSE(compare_step(s, in, expected, bad).ok) << w.shape().to_string();
      bad = b;
      bad[0].f32()[0] *= 1.001f;
      EXPECT_FALSE(compare_step(s, in, expected, bad).ok) << w.shape().to_string();
    }
}

TEST(TrainModel, FlopsBytesAndShapes) {
  TrainShape s;
  s.batch = 32;
  const TrainWorkload w(s);
  EXPECT_DOUBLE_EQ(Mlp::macs(), 784.0 * 1024 + 1024.0 * 1024 + 1024.0 * 10);
  EXPECT_DOUBLE_EQ(w.flops(), 2.0 * 32 * (3 * Mlp::macs() - 784.0 * 1024));
  EXPECT_DOUBLE_EQ(w.items(), 32);
  EXPECT_EQ(Mlp::param_count(), 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10);
  EXPECT_EQ(w.shape().to_string(), "model=mlp,pass=train,batch=32,dtype=fp32");
  EXPECT_EQ(w.outputs(), (std::vector<std::string>{"loss", "params", "velocity"}));
  const TrainShape inf = parse_train_shape({{"model", "cnn"}, {"batch", "8"}, {"pass", "infer"}});
  EXPECT_FALSE(inf.train);
  EXPECT_EQ(inf.model, Model::cnn);
  EXPECT_EQ(Cnn::param_count(), 32 * 27 + 32 + 64 * 288 + 64 + 10 * 4096 + 10);
  EXPECT_DOUBLE_EQ(Cnn::macs(), 32.0 * 27 * 1024 + 64.0 * 288 * 256 + 10.0 * 4096);
  // The stem (64 x 147 x 112^2), two blocks of 1x1, 3x3 and 1x1 on 56^2, the classifier.
  EXPECT_DOUBLE_EQ(Resnet::macs(224),
                   64.0 * 147 * 12544 + 2 * (64.0 * 32 + 32.0 * 288 + 32.0 * 64) * 3136 + 640);
  EXPECT_EQ(Resnet::param_count(),
            64 * 147 + 64 + 2 * (32 * 64 + 32 + 32 * 288 + 32 + 64 * 32 + 64) + 10 * 64 + 10);
  TrainShape r;
  r.model = Model::resnet, r.batch = 2;
  EXPECT_EQ(TrainWorkload(r).shape().to_string(),
            "model=resnet,pass=train,batch=2,image=224,dtype=fp32");
  EXPECT_DOUBLE_EQ(TrainWorkload(r).flops(),
                   2.0 * 2 * (3 * Resnet::macs(224) - 64.0 * 147 * 12544));
  EXPECT_EQ(input_features(r), 3 * 224 * 224);
  for (auto kv : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"batch", "0"}},
           {{"model", "vgg"}, {"batch", "8"}},
           {{"model", "cnn"}, {"batch", "8"}, {"image", "32"}},
           {{"model", "resnet"}, {"batch", "8"}, {"image", "30"}},
           {{"model", "resnet"}, {"batch", "8"}, {"image", "4"}},
           {{"batch", "8"}, {"pass", "both"}},
           {{"batch", "8"}, {"lr", "nan"}},
           {{"batch", "8"}, {"depth", "3"}},
           {{"model", "mlp"}}})
    EXPECT_THROW(parse_train_shape(kv), std::invalid_argument);
}

}  // namespace
}  // namespace pb
