// The ceilings of context.ceilings: the GPU table found by CUDA device name, the CPU's FLOP per
// cycle per dtype, the peaks, measured figures and bounds with their sources, and the probes.
#include <gtest/gtest.h>

#include "bench/ceilings.hpp"
#include "bench/harness.hpp"
#include "kernels/gpu.hpp"

namespace pb {
namespace {

using report::json;

std::string table_name(const std::string& cuda_name) {
  const GpuDatasheet* d = find_gpu_datasheet(cuda_name);
  return d ? d->name : "(none)";
}

TEST(Ceilings, FindsEachGpuByItsCudaNameAndNoOtherByAccident) {
  EXPECT_EQ(table_name("NVIDIA H100 80GB HBM3"), "H100 SXM5 80 GB");
  EXPECT_EQ(table_name("NVIDIA H100 PCIe"), "H100 PCIe 80 GB");
  EXPECT_EQ(table_name("NVIDIA H100 NVL"), "H100 NVL");
  EXPECT_EQ(table_name("NVIDIA H200"), "H200 SXM 141 GB");
  EXPECT_EQ(table_name("NVIDIA A100-SXM4-40GB"), "A100 SXM4 40 GB");
  EXPECT_EQ(table_name("NVIDIA A100-SXM4-80GB"), "A100 SXM4 80 GB");
  EXPECT_EQ(table_name("NVIDIA A100 80GB PCIe"), "A100 PCIe 80 GB");
  EXPECT_EQ(table_name("NVIDIA A100-PCIE-40GB"), "A100 PCIe 40 GB");
  EXPECT_EQ(table_name("NVIDIA A10"), "A10");
  EXPECT_EQ(table_name("NVIDIA L4"), "L4");
  EXPECT_EQ(table_name("NVIDIA L40S"), "L40S");
  EXPECT_EQ(table_name("NVIDIA L40"), "L40");
  EXPECT_EQ(table_name("Tesla T4"), "T4");
  EXPECT_EQ(table_name("Tesla V100-SXM2-32GB"), "V100 SXM2");
  EXPECT_EQ(table_name("NVIDIA GeForce RTX 4090"), "GeForce RTX 4090");
  EXPECT_EQ(table_name("NVIDIA B200"), "B200");
  // Near misses: another part whose figures differ.
  EXPECT_EQ(table_name("NVIDIA A10G"), "(none)");
  EXPECT_EQ(table_name("NVIDIA GeForce RTX 3090 Ti"), "(none)");
  EXPECT_EQ(table_name("NVIDIA L40G"), "(none)");
  EXPECT_EQ(table_name("Some Future GPU"), "(none)");
  EXPECT_EQ(table_name("NVIDIA GH200 480GB"), "(none)");  // NVLink-C2C to its host, not PCIe
  EXPECT_EQ(table_name("NVIDIA GB200"), "(none)");
  EXPECT_EQ(table_name("Tesla V100S-PCIE-32GB"), "V100S PCIe");  // faster memory than a V100's
  for (const GpuDatasheet& d : gpu_datasheets()) {
    EXPECT_GT(d.fp32, 0) << d.name;
    EXPECT_GE(d.bf16, d.tf32) << d.name;  // tensor cores: half precision at least as fast
    EXPECT_GT(d.memory_gbs, 0) << d.name;
    EXPECT_GT(d.host_link_gbs, 0) << d.name;
  }
}

TEST(Ceilings, CpuFlopPerCycleFollowsTheWidestUnitForTheDtype) {
  const std::vector<std::string> amx = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"};
  EXPECT_EQ(cpu_flop_per_cycle(amx, Dtype::fp32).flop_per_cycle, 64);
  EXPECT_EQ(cpu_flop_per_cycle(amx, Dtype::bf16).flop_per_cycle, 1024);
  EXPECT_EQ(cpu_flop_per_cycle(amx, Dtype::fp16).flop_per_cycle, 64);  // converted to fp32
  EXPECT_EQ(cpu_flop_per_cycle({"avx512f", "avx512_bf16"}, Dtype::bf16).flop_per_cycle, 128);
  EXPECT_EQ(cpu_flop_per_cycle({"avx2", "fma"}, Dtype::bf16).flop_per_cycle, 32);  // Zen 3
  EXPECT_EQ(cpu_flop_per_cycle({}, Dtype::fp32).flop_per_cycle, 8);
}

json cpu_context() {
  return {{"cpu_isa", "avx2 fma avx512f"},
          {"cpu_logical_cores", 4},
          {"cpu_nominal_ghz", 2.0},
          {"gpu_available", false}};
}

TEST(Ceilings, TheCpuPeakAllowsTurboOnlyWhereTheMaximumClockIsNotVisible) {
  const json measured = {{"cpu",
                          {{"fp32", {{"value", 300.0}, {"case", "gemm/cpu/openblas/x"}}},
                           {"memory", {{"value", 20.0}, {"case", "stream/cpu/omp/x"}}}}}};
  json c = ceilings(cpu_context(), measured);
  const json& fp32 = c["cpu"]["fp32"];
  EXPECT_EQ(fp32["peak"], 4 * 2.0 * 64);
  EXPECT_EQ(fp32["bound"], 2 * 4 * 2.0 * 64);  // nominal clock: turbo allowed
  EXPECT_EQ(fp32["measured"], 300.0);
  EXPECT_NE(fp32["measured_source"].get<std::string>().find("gemm/cpu/openblas/x"),
            std::string::npos);
  EXPECT_TRUE(c["cpu"]["memory"]["peak"].is_null());  // not knowable from inside
  EXPECT_EQ(c["cpu"]["memory"]["bound"], 40.0);       // twice the measured
  EXPECT_TRUE(c["cpu"]["bf16"]["measured"].is_null());
  EXPECT_FALSE(c.contains("gpu"));
  json with_max = cpu_context();
  with_max["cpu_max_ghz"] = 3.0;
  c = ceilings(with_max, measured);
  EXPECT_EQ(c["cpu"]["fp32"]["peak"], 4 * 3.0 * 64);
  EXPECT_EQ(c["cpu"]["fp32"]["bound"], 4 * 3.0 * 64);
  EXPECT_EQ(c["cpu"]["fp32"]["bound_source"], "the peak");
}

// pct_peak divides by the fp32 peak, or by the run's own probe where that beat the peak (a VM's
// CPU at a turbo clock above the nominal one the peak assumes); the caller's fallback where the
// run has no fp32 ceiling. No percentage exceeds 100.
TEST(Ceilings, PctPeakDividesByThePeakOrTheProbeThatBeatIt) {
  auto with_probe = [](double gflops) {
    return ceilings(cpu_context(),
                    {{"cpu", {{"fp32", {{"value", gflops}, {"case", "gemm/cpu/onednn/x"}}}}}});
  };
  const double peak = 4 * 2.0 * 64;
  EXPECT_EQ(pct_peak_gflops(with_probe(300.0), Device::cpu, 1.0), peak);
  EXPECT_EQ(pct_peak_gflops(with_probe(700.0), Device::cpu, 1.0), 700.0);
  EXPECT_EQ(pct_peak_gflops(ceilings(cpu_context(), json::object()), Device::cpu, 1.0), peak);
  EXPECT_EQ(pct_peak_gflops(with_probe(300.0), Device::gpu, 42.0), 42.0);  // no GPU ceiling
  EXPECT_EQ(pct_peak_gflops(json::object(), Device::cpu, 7.0), 7.0);
  // A case above its divisor reads 100%, and by how much it beat it, as the roofline marks one.
  EXPECT_EQ(pct_of_peak(50.0, 200.0), json({{"pct_peak", 25.0}}));
  EXPECT_EQ(pct_of_peak(300.0, 200.0), json({{"pct_peak", 100.0}, {"beat_peak_by", 0.5}}));
  EXPECT_EQ(pct_of_peak(300.0, 0.0), json::object());
  EXPECT_EQ(pct_of_peak(0.0, 200.0), json::object());  // a copy counts no FLOPs
}

TEST(Ceilings, AcpiCpufreqWithBoostOnHidesTheMaximumClock) {
  EXPECT_EQ(cpu_max_clock(3'500'000, "intel_pstate", "").ghz, 3.5);  // the turbo clock
  EXPECT_EQ(cpu_max_clock(3'500'000, "amd-pstate-epp", "").ghz, 3.5);
  EXPECT_EQ(cpu_max_clock(2'450'000, "acpi-cpufreq", "0").ghz, 2.45);  // boost off: the maximum
  const CpuMaxClock hidden = cpu_max_clock(2'450'000, "acpi-cpufreq", "1");
  EXPECT_EQ(hidden.ghz, 0);
  EXPECT_NE(hidden.note.find("2.45 GHz"), std::string::npos);
  EXPECT_TRUE(cpu_max_clock(0, "", "").note.empty());  // no cpufreq: a VM

  // The check then allows turbo over the nominal clock, and says why.
  json ctx = cpu_context();
  ctx["cpu_max_ghz_note"] = hidden.note;
  const json fp32 = ceilings(ctx, json::object())["cpu"]["fp32"];
  EXPECT_EQ(fp32["bound"], 2 * 4 * 2.0 * 64);
  EXPECT_NE(fp32["bound_source"].get<std::string>().find("acpi-cpufreq"), std::string::npos);
}

TEST(Ceilings, AGpuInTheTableGetsItsDatasheetScaledToItsClock) {
  json ctx = cpu_context();
  ctx["gpu_available"] = true;
  ctx["gpu_name"] = "NVIDIA H100 80GB HBM3";
  ctx["gpu_clock_mhz"] = 1980.0;
  const json measured = {{"gpu", {{"bf16", {{"value", 700000.0}, {"case", "gemm/gpu/cublas/x"}}}}}};
  json g = ceilings(ctx, measured)["gpu"];
  EXPECT_EQ(g["datasheet"], "H100 SXM5 80 GB");
  EXPECT_NEAR(g["fp32"]["peak"].get<double>(), 66900, 1e-6);  // quoted at its 1980 MHz boost
  // Its tensor figures are quoted at 1830 MHz (989.4 = 132 SMs x 4096 FLOP x 1.83 GHz); at the
  // 1980 MHz the tensor cores may run at, 8% more is physically possible.
  EXPECT_NEAR(g["bf16"]["peak"].get<double>(), 989400 * 1980.0 / 1830, 1e-6);
  EXPECT_NEAR(g["tf32"]["peak"].get<double>(), 494700 * 1980.0 / 1830, 1e-6);
  EXPECT_NE(g["bf16"]["peak_source"].get<std::string>().find("quoted at 1830 MHz"),
            std::string::npos);
  EXPECT_EQ(g["fp32"]["peak_source"].get<std::string>().find("quoted at"), std::string::npos);
  EXPECT_EQ(g["bf16"]["bound"], g["bf16"]["peak"]);
  EXPECT_EQ(g["bf16"]["measured"], 700000.0);
  EXPECT_EQ(g["memory"]["bound"], 3352.0);
  EXPECT_EQ(g["host_link"]["peak"], 64.0);
  ctx["gpu_clock_mhz"] = 2178.0;  // 10% above the datasheet's boost clock
  g = ceilings(ctx, measured)["gpu"];
  EXPECT_NEAR(g["fp32"]["peak"].get<double>(), 66900 * 1.1, 1e-6);
  EXPECT_NEAR(g["bf16"]["peak"].get<double>(), 989400 * 2178.0 / 1830, 1e-6);
  EXPECT_EQ(g["memory"]["peak"], 3352.0);  // the memory's clock is another matter
  // A device that reports no clock is held to its datasheet's boost clock.
  ctx.erase("gpu_clock_mhz");
  g = ceilings(ctx, measured)["gpu"];
  EXPECT_NEAR(g["bf16"]["peak"].get<double>(), 989400 * 1980.0 / 1830, 1e-6);
  EXPECT_NEAR(g["fp32"]["peak"].get<double>(), 66900, 1e-6);
  // A part whose figures are all quoted at one clock is not scaled at that clock.
  ctx["gpu_name"] = "NVIDIA A100-SXM4-80GB";
  ctx["gpu_clock_mhz"] = 1410.0;
  g = ceilings(ctx, measured)["gpu"];
  EXPECT_NEAR(g["bf16"]["peak"].get<double>(), 312000, 1e-6);
  EXPECT_EQ(g["bf16"]["peak_source"].get<std::string>().find("scaled"), std::string::npos);
  // T4: no bf16 tensor cores; bf16 is held to the fp32 rate.
  ctx["gpu_name"] = "Tesla T4";
  ctx["gpu_clock_mhz"] = 1590.0;
  g = ceilings(ctx, json::object())["gpu"];
  EXPECT_NEAR(g["bf16"]["peak"].get<double>(), 8100, 1e-6);
  EXPECT_NE(g["bf16"]["peak_source"].get<std::string>().find("no tensor-core path"),
            std::string::npos);
}

TEST(Ceilings, NoDatasheetQuotesItsTensorFiguresAboveItsBoostClock) {
  for (const GpuDatasheet& d : gpu_datasheets()) {
    SCOPED_TRACE(d.name);
    EXPECT_LE(d.tensor_mhz, d.boost_mhz);
    EXPECT_EQ(d.tensor_mhz > 0, d.boost_mhz > 0);
  }
}

TEST(Ceilings, AnUnknownGpuUsesItsAttributesAndItsProbesWithAMargin) {
  json ctx = cpu_context();
  ctx["gpu_available"] = true;
  ctx["gpu_name"] = "Some Future GPU";
  ctx["gpu_peak_fp32_gflops"] = 100000.0;
  ctx["gpu_peak_bandwidth_gbs"] = 9000.0;
  const json measured = {{"gpu", {{"bf16", {{"value", 1e6}, {"case", "gemm/gpu/cublas/x"}}}}}};
  const json g = ceilings(ctx, measured)["gpu"];
  EXPECT_TRUE(g["datasheet"].is_null());
  EXPECT_EQ(g["fp32"]["bound"], 100000.0);
  EXPECT_EQ(g["memory"]["bound"], 9000.0);
  EXPECT_TRUE(g["bf16"]["peak"].is_null());
  EXPECT_EQ(g["bf16"]["bound"], 2e6);         // the measured x 2
  EXPECT_TRUE(g["fp16"]["bound"].is_null());  // neither peak nor probe: not checked
  EXPECT_TRUE(g["host_link"]["bound"].is_null());
}

TEST(Ceilings, TheProbesMeasureWhatTheRunsCasesNeed) {
  Options o;
  o.ops = {"gemm"};
  o.impls = {"cpu/openblas"};
  o.dtypes = {Dtype::fp32};
  o.shapes = {{{"m", "64"}, {"n", "64"}, {"k", "64"}}};
  Resources res;
  res.cores = 1;
  res.host_available_bytes = host_available_bytes();
  const std::vector<Case> run = build_cases(o, res);
  ASSERT_FALSE(run.empty());
  const json m = measure_ceilings(run, res, true);
  ASSERT_TRUE(m.contains("cpu"));
  EXPECT_GT(m["cpu"]["fp32"].value("value", 0.0), 0.0) << m.dump();
  EXPECT_NE(m["cpu"]["fp32"]["case"].get<std::string>().find("gemm/cpu/"), std::string::npos);
  EXPECT_GT(m["cpu"]["memory"].value("value", 0.0), 0.0) << m.dump();
  EXPECT_FALSE(m["cpu"].contains("bf16"));  // no bf16 case in the run
  EXPECT_FALSE(m.contains("gpu"));          // no GPU case in the run
}

}  // namespace
}  // namespace pb
