// A small op registered from this file alone: the registry gives it to --ops, --list, --help,
// the cases and the harness with no other change anywhere (what adding an op must take).
#include <benchmark/benchmark.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "bench/harness.hpp"
#include "bench/options.hpp"
#include "core/conv.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb {
namespace {

// y = 2 x over n floats, and a second output: sum, the sum of y (so that verification of a case
// with two named outputs is tested end to end).
class Doubling : public Workload {
 public:
  explicit Doubling(std::int64_t n) : n_(n) {}
  std::string op() const override { return "doubling"; }
  Shape shape() const override {
    Shape s;
    s.add("n", n_);
    s.add("dtype", "fp32");
    return s;
  }
  Dtype dtype() const override { return Dtype::fp32; }
  double flops() const override { return static_cast<double>(n_); }
  double min_bytes() const override { return 8.0 * static_cast<double>(n_); }
  bool bandwidth_bound() const override { return true; }
  double host_bytes(Device) const override { return 12.0 * static_cast<double>(n_); }
  double device_bytes() const override { return 8.0 * static_cast<double>(n_); }
  Tensors make_inputs() const override {
    Tensor x("x", {n_});
    for (std::int64_t i = 0; i < n_; ++i) x.f32()[i] = static_cast<float>(i % 97) - 48.0f;
    return {x};
  }
  std::vector<std::string> outputs() const override { return {"y", "sum"}; }
  Check verify(const Tensors& in, const Tensors& out) const override {
    Check c;
    const float* x = at(in, "x").f32().data();
    const float* y = output_f32(out, "y", n_, c);
    const float* sum = output_f32(out, "sum", 1, c);
    if (!y || !sum) return c;
    double ref = 0;
    c.ok = true;
    for (std::int64_t i = 0; c.ok && i < n_; ++i) c.ok = y[i] == 2.0f * x[i], ref += y[i];
    if (!c.ok) c.detail = "y is not 2 x";
    if (c.ok && *sum != ref) c.ok = false, c.detail = "sum is not the sum of y";
    return c;
  }

 private:
  std::int64_t n_;
};

class DoublingCpu : public cpu::CpuImpl {
 public:
  using CpuImpl::CpuImpl;
  void prepare(const Tensors& in) override { x_ = at(in, "x").f32(), y_.resize(x_.size()); }
  void run() override {
    sum_ = 0;
    for (std::size_t i = 0; i < x_.size(); ++i) sum_ += (y_[i] = 2.0f * x_[i]);
  }
  Tensors result() override {
    return {Tensor::of("y", y_), Tensor::of("sum", std::vector<float>{sum_})};
  }

 private:
  std::vector<float> x_, y_;
  float sum_ = 0;
};

// The same work under a timer that sees none of it (as CUDA's events between which nothing
// was queued): the case is an error, not a figure, and Google Benchmark does not grow its
// iterations without end to fill its minimum time.
class DoublingUnseen : public DoublingCpu {
 public:
  using DoublingCpu::DoublingCpu;
  std::unique_ptr<Timer> make_timer() override {
    struct Blind : Timer {
      void start() override {}
      double stop() override { return 0; }
    };
    return std::make_unique<Blind>();
  }
};

OpFamily doubling_family() {
  OpFamily f;
  f.name = "doubling";
  f.shape_keys = "n=N";
  f.suite = [](int, Dtype t) {
    return t == Dtype::fp32 ? std::vector<SuiteEntry>{{std::make_shared<Doubling>(4096), false}}
                            : std::vector<SuiteEntry>{};
  };
  f.from_shape = [](const KeyValues&, Dtype) -> std::shared_ptr<const Workload> { return nullptr; };
  ImplSpec cpu;
  cpu.op = "doubling";
  cpu.name = "loop";
  cpu.supports = [](const Workload&) { return true; };
  cpu.make = [](const Workload&, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<DoublingCpu>(threads);
  };
  ImplSpec unseen = cpu;
  unseen.name = "unseen";
  unseen.make = [](const Workload&, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<DoublingUnseen>(threads);
  };
  f.impls = {cpu, unseen};
  return f;
}

Options parse(std::vector<std::string> args) {
  args.insert(args.begin(), "pairbench");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(Registry, AnOpFromItsOwnFileRunsEndToEnd) {
  register_op_family(doubling_family());
  EXPECT_THROW(register_op_family(doubling_family()), std::invalid_argument);  // once

  EXPECT_NE(usage_from_registry().find("doubling: cpu/loop"), std::string::npos);
  EXPECT_NE(usage_from_registry().find("doubling: n=N"), std::string::npos);
  Resources r;
  r.host_available_bytes = 1e12;
  const auto cases = build_cases(parse({"--ops=doubling", "--impls=loop", "--suite=quick"}), r);
  ASSERT_EQ(cases.size(), 1u);
  EXPECT_EQ(cases[0].name, "doubling/cpu/loop/n=4096,dtype=fp32,threads=1");

  // Through the harness: prepared, verified, timed, recorded.
  std::string flag = "--benchmark_min_time=0.01";
  char* argv[] = {flag.data(), flag.data()};
  int argc = 2;
  benchmark::Initialize(&argc, argv);
  const std::string log_path = ::testing::TempDir() + "registry.partial.jsonl";
  report::Log log(log_path);
  const HarnessResult result = run_cases(cases, HarnessConfig{}, log);
  std::remove(log_path.c_str());
  ASSERT_EQ(result.cases.size(), 1u);
  const report::json& rec = result.cases[0];
  EXPECT_EQ(rec["status"], "ok") << rec.dump();
  EXPECT_TRUE(rec["verified"].get<bool>());
  EXPECT_EQ(rec["metric"], "GB/s");  // declared by the workload (bandwidth-bound)
  EXPECT_GT(rec["gbs"].get<double>(), 0);
  EXPECT_EQ(result.failed, 0);

  // Verification reads both named outputs: the harness's fault hook corrupts the last one
  // (sum), and the case fails verification and has no time.
  setenv("PAIRBENCH_INJECT_FAULT", "doubling/", 1);
  report::Log log2(log_path);
  const HarnessResult faulty = run_cases(cases, HarnessConfig{}, log2);
  unsetenv("PAIRBENCH_INJECT_FAULT");
  std::remove(log_path.c_str());
  ASSERT_EQ(faulty.cases.size(), 1u);
  EXPECT_NE(faulty.cases[0]["status"], "ok") << faulty.cases[0].dump();
  EXPECT_NE(faulty.cases[0].dump().find("sum is not the sum of y"), std::string::npos)
      << faulty.cases[0].dump();
  EXPECT_EQ(faulty.failed, 1);

  report::Log log3(log_path);
  const HarnessResult unseen =
      run_cases(build_cases(parse({"--ops=doubling", "--impls=unseen", "--suite=quick"}), r),
                HarnessConfig{}, log3);
  std::remove(log_path.c_str());
  ASSERT_EQ(unseen.cases.size(), 1u);
  EXPECT_EQ(unseen.cases[0]["status"], "error") << unseen.cases[0].dump();
  EXPECT_NE(unseen.cases[0].dump().find("the timer read 0"), std::string::npos)
      << unseen.cases[0].dump();
  EXPECT_FALSE(unseen.cases[0].contains("time"));
}

// Which GPU convolutions run in tf32: the libraries' (cuDNN, and im2col's cuBLAS GEMMs), not the
// project's direct kernel.
TEST(Registry, TheLibrariesConvolveInTf32) {
  ConvShape s;
  s.n = 2, s.c = 32, s.h = s.w = 14, s.k = 32, s.r = s.s = 3, s.pad_h = s.pad_w = 1;
  s.dtype = Dtype::tf32;
  const ConvWorkload w(s);
  int gpu_impls = 0;
  for (const OpFamily& f : op_families()) {
    if (f.name != "conv") continue;
    for (const ImplSpec& spec : f.impls) {
      if (spec.device != Device::gpu) continue;
      ++gpu_impls;
      EXPECT_EQ(spec.supports(w), spec.name != "direct") << spec.name;
    }
  }
  EXPECT_EQ(gpu_impls, 3);
}

// Batch norm's GPU implementations are the family's, so that the suites run them beside the
// CPU's: the project's kernels and cuDNN's (test_batchnorm_gpu runs them where there is a GPU).
TEST(Registry, BatchNormRunsOnBothDevices) {
  std::vector<std::string> gpu_impls;
  int cpu_impls = 0;
  for (const OpFamily& f : op_families()) {
    if (f.name != "batchnorm") continue;
    for (const ImplSpec& spec : f.impls) {
      if (spec.device == Device::gpu)
        gpu_impls.push_back(spec.name);
      else
        ++cpu_impls;
    }
  }
  EXPECT_EQ(gpu_impls, (std::vector<std::string>{"cuda", "cudnn"}));
  EXPECT_EQ(cpu_impls, 2);
}

// Which GPU convolutions run in bf16 and fp16: cuDNN's alone (on NHWC maps), so that the
// like-precision comparison has a GPU side below fp32.
TEST(Registry, CudnnAloneConvolvesIn16Bits) {
  for (Dtype t : {Dtype::bf16, Dtype::fp16}) {
    ConvShape s;
    s.n = 2, s.c = 32, s.h = s.w = 14, s.k = 32, s.r = s.s = 3, s.pad_h = s.pad_w = 1;
    s.dtype = t;
    const ConvWorkload w(s);
    for (const OpFamily& f : op_families()) {
      if (f.name != "conv") continue;
      for (const ImplSpec& spec : f.impls) {
        if (spec.device != Device::gpu) continue;
        EXPECT_EQ(spec.supports(w), spec.name == "cudnn") << spec.name << " " << to_string(t);
      }
    }
  }
}

TEST(TwoOutputs, VerificationChecksEachByName) {
  const Doubling w(10);
  const Tensors in = w.make_inputs();
  std::vector<float> y(10);
  float sum = 0;
  for (int i = 0; i < 10; ++i) sum += (y[i] = 2.0f * in[0].f32()[i]);
  const Tensor good_y = Tensor::of("y", y), good_sum = Tensor::of("sum", std::vector<float>{sum});
  EXPECT_TRUE(w.verify(in, {good_y, good_sum}).ok);
  EXPECT_TRUE(w.verify(in, {good_sum, good_y}).ok);  // by name, not by position

  const Check missing = w.verify(in, {good_y});
  EXPECT_FALSE(missing.ok);
  EXPECT_NE(missing.detail.find("no f32 output named sum"), std::string::npos) << missing.detail;

  const Check bad_sum = w.verify(in, {good_y, Tensor::of("sum", std::vector<float>{sum + 1})});
  EXPECT_FALSE(bad_sum.ok);
  EXPECT_EQ(bad_sum.detail, "sum is not the sum of y");

  std::vector<float> y2 = y;
  y2[3] += 1;
  EXPECT_FALSE(w.verify(in, {Tensor::of("y", y2), good_sum}).ok);
  const Check short_y = w.verify(in, {Tensor::of("y", std::vector<float>(9)), good_sum});
  EXPECT_FALSE(short_y.ok);
  EXPECT_NE(short_y.detail.find("has 9 elements, not 10"), std::string::npos);
  EXPECT_FALSE(w.verify(in, {Tensor("y", {10}, Elem::i32), good_sum}).ok);  // wrong type
}

TEST(Tensor, TypedAccessAndLookup) {
  Tensor labels("labels", {2, 3}, Elem::i32);
  EXPECT_EQ(labels.numel(), 6);
  EXPECT_EQ(labels.bytes(), 24u);
  EXPECT_EQ(labels.i32().size(), 6u);
  EXPECT_THROW(labels.f32(), std::logic_error);
  const TensorView v = labels.view();
  EXPECT_EQ(v.as<std::int32_t>(), labels.i32().data());
  EXPECT_THROW(v.as<float>(), std::logic_error);
  EXPECT_THROW(Tensor("x", {-1}), std::invalid_argument);
  const Tensors ts = {Tensor("a", {1}), labels};
  EXPECT_EQ(&at(ts, "labels"), &ts[1]);
  EXPECT_EQ(find(ts, "b"), nullptr);
  try {
    at(ts, "b");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "no tensor named b (there are: a, labels)");
  }
}

}  // namespace
}  // namespace pb
