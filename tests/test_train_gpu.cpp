// The GPU's training steps: every backend's first step against the reference step (the
// workload's check) and against the CPU's step on the same inputs (compare_step, the tolerances
// of the check), all three models (resnet on 16x16 images) and a small model this file defines
// (batch norm and its state, a convolution without bias, a residual add), train and infer; the
// loss falling over repeated steps; ResNet-50 in tf32 and bf16; the step replayed as a CUDA
// graph. Skips,
// with the reason, where there is no GPU. What the GPU's step shares with the CPU's is tested on
// the CPU in test_train: the walk (core/train_step.hpp), the pooling, batch norm and SGD math, and
// compare_step itself.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
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

// ResNet-50 below fp32 on the library backends: tf32 (tensor cores on fp32 maps) on cuBLAS and
// cuDNN, bf16 and fp16 (mixed precision: 16-bit NHWC maps, fp32 parameters; fp16 with dynamic
// loss scaling) on cuDNN, plain and replayed as a graph. The step and inference at batch 8 on 32x32
// pass the workload's check (against the reference rounded as the dtype rounds), and so does a
// second run of each on the same impl (held weights reused, or forgotten after an update), cuDNN
// says it allowed tensor-op math, and the loss falls over 50 steps on fresh batches as test_train's
// ResNet50LearnsInEachPrecision has it fall on the CPU.
struct LowPrecision {
  Dtype dtype;
  const char* impl;
};
class GpuTrainLow : public ::testing::TestWithParam<LowPrecision> {};

TEST_P(GpuTrainLow, ResNet50StepsAndInferencePassTheirChecksAndLearn) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  const auto [dtype, name] = GetParam();
  const bool cudnn = std::string(name).rfind("cudnn", 0) == 0;
  if (cudnn && !gpu::cudnn_unavailable().empty()) GTEST_SKIP() << gpu::cudnn_unavailable();
  if (dtype == Dtype::bf16 && gpu::probe().cc_major < 8)
    GTEST_SKIP() << "cuDNN's bf16 convolutions need sm_80 or later";
  for (bool train : {true, false}) {
    TrainShape s;
    s.model = "resnet50", s.batch = 8, s.image = 32, s.train = train, s.dtype = dtype;
    s.weight_decay = default_weight_decay(s.model);
    const TrainWorkload w(s);
    const Tensors in = w.make_inputs();
    auto impl = gpu::make_impl("train", name, w, 0);
    impl->activate();
    impl->prepare(in);
    impl->run();
    const Check c = w.verify(in, impl->result());
    EXPECT_TRUE(c.ok) << name << " " << w.shape().to_string() << ": " << c.detail;
    // A second run on the same impl, checked too: inference reuses the weights the first pass
    // held (core/held_weights.hpp), and a training step, from the first step's results, must
    // not (that step's update made them stale). make_inputs' order: x, labels, params,
    // velocity, state. Not fp16's step: its loss scale was found for the first step's
    // parameters and may overflow on the second's (GpuLowOps holds alike in bf16 and fp16).
    if (!(train && dtype == Dtype::fp16)) {
      Tensors next = in;
      if (train) {
        const Tensors first = impl->result();
        next[2].f32() = at(first, "params").f32();
        next[3].f32() = at(first, "velocity").f32();
        next[4].f32() = at(first, "state").f32();
      }
      impl->run();
      const Check again = w.verify(next, impl->result());
      EXPECT_TRUE(again.ok) << name << " " << w.shape().to_string()
                            << ", second run: " << again.detail;
    }
    if (cudnn) {
      EXPECT_NE(impl->detail().find("tensor-op math allowed"), std::string::npos) << impl->detail();
    }
    if (dtype == Dtype::fp16 && train) {
      EXPECT_NE(impl->detail().find("dynamic loss scaling: 2^"), std::string::npos)
          << impl->detail();
    }
  }
  TrainShape s;
  s.model = "resnet50", s.batch = 8, s.image = 32, s.lr = 0.001f, s.dtype = dtype;
  s.weight_decay = default_weight_decay(s.model);
  const TrainWorkload w(s);
  Tensors in = w.make_inputs();
  auto impl = gpu::make_impl("train", name, w, 0);
  impl->activate();
  impl->prepare(in);
  impl->run();
  const float first = at(impl->result(), "loss").f32()[0];
  float last = first;
  for (int i = 1; i < 50; ++i) {  // fresh batches, the parameters carried over
    const Tensors out = impl->result();
    // make_inputs' order: x, labels, params, velocity, state
    synthetic_batch(w.model().input.size(), w.model().classes, s.batch, i, in[0].f32().data(),
                    in[1].i32().data());
    in[2].f32() = at(out, "params").f32();
    in[3].f32() = at(out, "velocity").f32();
    in[4].f32() = at(out, "state").f32();
    impl->prepare(in);
    impl->run();
    last = at(impl->result(), "loss").f32()[0];
    ASSERT_TRUE(std::isfinite(last)) << name << " step " << i;
  }
  EXPECT_LT(last, 0.5f * first) << name << ": " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(
    Libraries, GpuTrainLow,
    ::testing::Values(LowPrecision{Dtype::tf32, "cublas"}, LowPrecision{Dtype::tf32, "cudnn"},
                      LowPrecision{Dtype::bf16, "cudnn"}, LowPrecision{Dtype::bf16, "cudnn_graph"},
                      LowPrecision{Dtype::fp16, "cudnn"}, LowPrecision{Dtype::fp16, "cudnn_graph"}),
    [](const ::testing::TestParamInfo<LowPrecision>& p) {
      return std::string(to_string(p.param.dtype)) + "_" + p.param.impl;
    });

// The bf16 step on the models whose layers ResNet-50 lacks: a convolution with a bias (added,
// and its gradient summed, by the mixed-precision backend itself, not cuDNN), a linear layer
// reading 2x2 maps NHWC, max pooling (the CNN) and a batch norm on a bias-free convolution (the
// small model); step and inference pass the workload's check.
TEST(GpuTrainBf16, SmallModelsWithBiasesAndPoolingPassTheirChecks) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  if (!gpu::cudnn_unavailable().empty()) GTEST_SKIP() << gpu::cudnn_unavailable();
  if (gpu::probe().cc_major < 8) GTEST_SKIP() << "cuDNN's bf16 convolutions need sm_80 or later";
  for (const char* model : {"cnn", "small"})
    for (bool train : {true, false}) {
      TrainShape s;
      s.model = model, s.batch = 8, s.train = train, s.image = 16, s.dtype = Dtype::bf16;
      const TrainWorkload w(s, std::string(model) == "small"
                                   ? std::make_shared<const ModelDesc>(testing::small_model())
                                   : nullptr);
      const Tensors in = w.make_inputs();
      auto impl = gpu::make_impl("train", "cudnn", w, 0);
      impl->activate();
      impl->prepare(in);
      impl->run();
      const Check c = w.verify(in, impl->result());
      EXPECT_TRUE(c.ok) << w.shape().to_string() << ": " << c.detail;
    }
}

// Inference with batch norms far from the identity through every fusion
// (testing::folded_inference_workload: the conv tail kernel folding a batch norm, adding a
// residual, applying a ReLU), on each backend and dtype: the logits pass the workload's check
// against the reference, unfused, and fail it against PyTorch's initial batch norms.
TEST(GpuTrainFused, InferenceWithBatchNormFoldedIntoTheConvolutions) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  struct Case {
    const char* impl;
    Dtype dtype;
  };
  for (const Case& k :
       {Case{"kernels", Dtype::fp32}, Case{"cublas", Dtype::fp32}, Case{"cudnn", Dtype::fp32},
        Case{"cublas_graph", Dtype::fp32}, Case{"cublas", Dtype::tf32}, Case{"cudnn", Dtype::tf32},
        Case{"cudnn", Dtype::bf16}, Case{"cudnn_graph", Dtype::bf16}, Case{"cudnn", Dtype::fp16}}) {
    const bool cudnn = std::string(k.impl).rfind("cudnn", 0) == 0;
    if (cudnn && !gpu::cudnn_unavailable().empty()) continue;
    if (k.dtype == Dtype::bf16 && gpu::probe().cc_major < 8) continue;
    const TrainWorkload w = testing::folded_inference_workload(k.dtype);
    const Tensors in = testing::drawn_batch_norms(w);
    auto impl = gpu::make_impl("train", k.impl, w, 0);
    impl->activate();
    impl->prepare(in);
    impl->run();
    const Tensors out = impl->result();
    const Check c = w.verify(in, out);
    EXPECT_TRUE(c.ok) << k.impl << " " << to_string(k.dtype) << ": " << c.detail;
    EXPECT_FALSE(w.verify(w.make_inputs(), out).ok) << k.impl << " " << to_string(k.dtype);
  }
}

// The step replayed as a CUDA graph: three replays equal three plain steps (each replay starts
// from the last one's parameters), and the case says it ran as a graph.
TEST(GpuTrainGraph, ReplaysChainAsPlainStepsDo) {
  if (!gpu::probe().available) GTEST_SKIP() << "no GPU: " << gpu::probe().reason;
  for (const char* base : {"cublas", "cudnn"}) {
    if (std::string(base) == "cudnn" && !gpu::cudnn_unavailable().empty()) continue;
    const TrainWorkload w = testing::train_workload("small", 8);
    const Tensors in = w.make_inputs();
    auto three_steps = [&](const std::string& name) {
      auto impl = gpu::make_impl("train", name, w, 0);
      impl->activate();
      impl->prepare(in);
      for (int i = 0; i < 3; ++i) impl->run();
      return std::make_pair(impl->result(), impl->detail());
    };
    const auto [plain, plain_detail] = three_steps(base);
    const auto [graph, detail] = three_steps(std::string(base) + "_graph");
    EXPECT_NE(detail.find("replayed as one CUDA graph of"), std::string::npos) << detail;
    const Check same = compare_step(w.model(), w.train(), in, step_of(w.train(), plain), graph);
    EXPECT_TRUE(same.ok) << base << "_graph against " << base << ": " << same.detail;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, GpuTrain,
                         ::testing::Values("kernels", "cublas", "cudnn", "cublas_h2d", "cudnn_h2d",
                                           "cublas_graph", "cudnn_graph"));

}  // namespace
}  // namespace pb
