// The MLP's training step on the CPU: the double-precision reference's gradients against finite
// differences of its loss, every layer; the composed CPU step (OpenBLAS and oneDNN GEMMs)
// against the reference step through the workload's check; the loss falling over 50 steps of
// the synthetic data; the check catching a wrong update; bad shapes.
#include <gtest/gtest.h>

#include <cmath>

#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

TEST(MlpReference, GradientsMatchFiniteDifferencesInEveryLayer) {
  TrainShape s;
  s.batch = 3;
  std::vector<float> x(static_cast<std::size_t>(s.batch * Mlp::in));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  synthetic_batch(s.batch, 0, x.data(), labels.data());
  std::vector<float> p = mlp_initial_params();
  const std::vector<float> v(p.size(), 0.0f);
  const MlpStep ref = mlp_reference_step(s, x.data(), labels.data(), p.data(), v.data());
  auto loss = [&] {
    return mlp_reference_step(s, x.data(), labels.data(), p.data(), v.data()).loss;
  };
  for (const Mlp::Slice& sl : Mlp::params()) {
    const std::int64_t n = sl.rows * sl.cols;
    for (std::int64_t t = 0; t < 6; ++t) {
      const std::int64_t j = sl.offset + (t * 7919) % n;
      // A small step: 1024 ReLUs per layer, and a step of 1e-4 on a first-layer weight
      // already moves some second-layer unit across its kink.
      const float p0 = p[j], h = 1e-5f;
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

class CpuTrain : public ::testing::TestWithParam<const char*> {};

TEST_P(CpuTrain, OneStepEqualsTheReferenceStep) {
  const ImplSpec spec = testing::find_impl(cpu::train_impls(), GetParam());
  for (std::int64_t b : {1, 3, 32})
    for (bool train : {true, false}) {
      TrainShape s;
      s.batch = b, s.train = train;
      const TrainWorkload w(s);
      if (spec.unavailable && !spec.unavailable(w).empty()) GTEST_SKIP() << spec.unavailable(w);
      const Tensors in = w.make_inputs();
      auto impl = spec.make(w, 2);
      impl->activate();
      impl->prepare(in);
      impl->run();
      Tensors out = impl->result();
      const Check c = w.verify(in, out);
      EXPECT_TRUE(c.ok) << GetParam() << " " << w.shape().to_string() << ": " << c.detail;
      if (!train) continue;
      Tensors bad = out;  // one weight of layer 2 updated by a tenth more than its gradient says
      const std::int64_t j = Mlp::w_offset(1) + 12345;
      const float before = at(in, "params").f32()[j];
      bad[1].f32()[j] = before + 1.1f * (out[1].f32()[j] - before) + 1e-9f;
      EXPECT_FALSE(w.verify(in, bad).ok) << GetParam();
      bad = out;
      bad[0].f32()[0] *= 1.001f;  // the loss
      EXPECT_FALSE(w.verify(in, bad).ok) << GetParam();
    }
}

TEST_P(CpuTrain, TheLossFallsOver50Steps) {
  if (std::string(GetParam()) == "onednn" && !cpu::onednn::unavailable(Dtype::fp32).empty())
    GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  TrainShape s;
  s.batch = 32;
  cpu::MlpCpuStep step(
      s,
      std::string(GetParam()) == "onednn" ? cpu::GemmBackend::onednn : cpu::GemmBackend::openblas,
      2);
  std::vector<float> p = mlp_initial_params(), v(p.size(), 0.0f);
  std::vector<float> x(static_cast<std::size_t>(s.batch * Mlp::in));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(s.batch));
  float first = 0, last = 0;
  for (int i = 0; i < 50; ++i) {
    synthetic_batch(s.batch, i, x.data(), labels.data());  // a new batch each step
    const float loss = step.step(x.data(), labels.data(), p.data(), v.data());
    ASSERT_TRUE(std::isfinite(loss)) << "step " << i;
    if (i == 0) first = loss;
    last = loss;
  }
  EXPECT_NEAR(first, std::log(10.0), 0.3);  // about uniform over 10 classes at the start
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

INSTANTIATE_TEST_SUITE_P(Backends, CpuTrain, ::testing::Values("openblas", "onednn"));

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
  const TrainShape inf = parse_train_shape({{"model", "mlp"}, {"batch", "8"}, {"pass", "infer"}});
  EXPECT_FALSE(inf.train);
  for (auto kv : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"batch", "0"}},
           {{"model", "resnet"}, {"batch", "8"}},
           {{"batch", "8"}, {"pass", "both"}},
           {{"batch", "8"}, {"lr", "nan"}},
           {{"batch", "8"}, {"depth", "3"}},
           {{"model", "mlp"}}})
    EXPECT_THROW(parse_train_shape(kv), std::invalid_argument);
}

}  // namespace
}  // namespace pb
