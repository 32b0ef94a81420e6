// The GPU's training steps: every backend's first step against the reference step (the
// workload's check) and against the CPU's step on the same inputs (compare_step, the tolerances
// of the check), all three models (resnet on 16x16 images) and a small model this file defines
// (batch norm and its state, a convolution without bias, a residual add), train and infer; the
// loss falling over repeated steps. Skips, with the reason, where there is no GPU. What the GPU's
// step shares with the CPU's is tested on the CPU in test_train: the walk (core/train_step.hpp),
// the pooling, batch norm and SGD math, and compare_step itself.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"
#include "kernels/gpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

class GpuTrain : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
    if (std::string(GetParam()).rfind("cudnn", 0) == 0 && !gpu::cudnn_unavailable().empty())
      GTEST_SKIP() << gpu::cudnn_unavailable();
  }
  // One run of implementation `name` (a step, or the forward pass) on the workload's inputs.
  static Tensors run_once(const ImplSpec* cpu, const std::string& name, const TrainWorkload& w,
                          const Tensors& in) {
    auto impl = cpu ? cpu->make(w, 2) : gpu::make_impl("train", name, w, 0);
    impl->activate();
    impl->prepare(in);
    impl->run();
    return impl->result();
  }
};

TEST_P(GpuTrain, OneStepEqualsTheReferenceAndTheCpuStep) {
  const ImplSpec cpu = testing::find_impl(cpu::train_impls(), "openblas");
  for (const char* m : {"mlp", "cnn", "resnet", "small"})
    for (std::int64_t b : {1, 3, 32})
      for (bool train : {true, false}) {
        const TrainWorkload w = testing::train_workload(m, b, train);
        const TrainShape& s = w.train();
        const Tensors in = w.make_inputs();
        const Tensors out = run_once(nullptr, GetParam(), w, in);
        const std::string what = std::string(GetParam()) + " " + w.shape().to_string();
        const Check ref = w.verify(in, out);
        EXPECT_TRUE(ref.ok) << what << " against the reference: " << ref.detail;
        const ReferenceStep on_cpu = step_of(s, run_once(&cpu, "", w, in));
        const Check same = compare_step(w.model(), s, in, on_cpu, out);
        EXPECT_TRUE(same.ok) << what << " against the CPU's step: " << same.detail;
      }
}

TEST_P(GpuTrain, TheLossFallsOverRepeatedSteps) {
  for (const char* m : {"mlp", "cnn", "resnet", "small"}) {
    const TrainWorkload w = testing::train_workload(m, 32);
    const Tensors in = w.make_inputs();
    auto impl = gpu::make_impl("train", GetParam(), w, 0);
    impl->activate();
    impl->prepare(in);
    impl->run();
    const float first = at(impl->result(), "loss").f32()[0];
    for (int i = 0; i < 80; ++i) impl->run();  // the same batch: the model learns it
    const float last = at(impl->result(), "loss").f32()[0];
    EXPECT_NEAR(first, std::log(10.0), 0.3) << GetParam() << " " << m;
    EXPECT_LT(last, 0.25f * first) << GetParam() << " " << m;
  }
}

// ResNet-50's inference (2 images of 32x32: the reference is a naive double walk) against the
// reference and the CPU's. Its training step is held to the reference on the CPU alone, within
// the bounds its conditioning allows (test_train's ResNet50AsTorchvisionBuildsIt).
TEST_P(GpuTrain, ResNet50InferenceEqualsTheReferenceAndTheCpus) {
  const ImplSpec cpu = testing::find_impl(cpu::train_impls(), "openblas");
  TrainShape s;
  s.model = "resnet50", s.batch = 2, s.image = 32, s.train = false;
  const TrainWorkload w(s);
  const Tensors in = w.make_inputs();
  const Tensors out = run_once(nullptr, GetParam(), w, in);
  const std::string what = std::string(GetParam()) + " " + w.shape().to_string();
  const Check ref = w.verify(in, out);
  EXPECT_TRUE(ref.ok) << what << " against the reference: " << ref.detail;
  const Check same = compare_step(w.model(), s, in, step_of(s, run_once(&cpu, "", w, in)), out);
  EXPECT_TRUE(same.ok) << what << " against the CPU's: " << same.detail;
}

INSTANTIATE_TEST_SUITE_P(Backends, GpuTrain,
                         ::testing::Values("kernels", "cublas", "cudnn", "cublas_h2d",
                                           "cudnn_h2d"));

}  // namespace
}  // namespace pb
