// A small op registered from this file alone: the registry gives it to --ops, --list, --help,
// the cases and the harness with no other change anywhere (what adding an op must take).
#include <benchmark/benchmark.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "bench/cases.hpp"
#include "bench/harness.hpp"
#include "bench/options.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb {
namespace {

// y = 2 x over n floats.
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
  double host_bytes() const override { return 12.0 * static_cast<double>(n_); }
  double device_bytes() const override { return 8.0 * static_cast<double>(n_); }
  std::vector<Buffer> make_inputs() const override {
    Buffer x(static_cast<std::size_t>(n_));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) - 48.0f;
    return {x};
  }
  Check verify(const std::vector<Buffer>& in, const Buffer& out) const override {
    Check c;
    c.ok = out.size() == in[0].size();
    for (std::size_t i = 0; c.ok && i < out.size(); ++i) c.ok = out[i] == 2.0f * in[0][i];
    if (!c.ok) c.detail = "not 2 x";
    return c;
  }

 private:
  std::int64_t n_;
};

class DoublingCpu : public cpu::CpuImpl {
 public:
  using CpuImpl::CpuImpl;
  void prepare(const std::vector<Buffer>& in) override { x_ = in[0], y_.resize(x_.size()); }
  void run() override {
    for (std::size_t i = 0; i < x_.size(); ++i) y_[i] = 2.0f * x_[i];
  }
  Buffer result() override { return y_; }

 private:
  Buffer x_, y_;
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
  f.impls = {cpu};
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
  const auto cases = build_cases(parse({"--ops=doubling", "--suite=quick"}), r);
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
}

}  // namespace
}  // namespace pb
