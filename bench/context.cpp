#include "bench/context.hpp"

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>

#include "bench/ceilings.hpp"
#include "bench/ranks.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "kernels/gpu.hpp"

#ifndef PAIRBENCH_VERSION
#define PAIRBENCH_VERSION "0.0.0"
#endif
#ifndef PAIRBENCH_GIT_REVISION
#define PAIRBENCH_GIT_REVISION "unknown"
#endif

namespace pb {

std::string host_name() {
  char host[256] = "unknown";
  gethostname(host, sizeof host - 1);
  return host;
}

namespace {

// The nominal clock in GHz: from the model name ("@ 2.50GHz") when it has one, else as
// Google Benchmark measured it.
double cpu_ghz() {
  std::smatch m;
  const std::string& model = cpu::cpu_info().model;
  if (std::regex_search(model, m, std::regex(R"(@\s*([0-9.]+)\s*GHz)"))) return std::stod(m[1]);
  return benchmark::CPUInfo::Get().cycles_per_second / 1e9;
}

// The first word of a file under sysfs's root; empty where it is absent.
std::string sysfs_word(const char* path) {
  std::ifstream f(cpu::sysfs_root() + path);
  std::string w;
  return f >> w ? w : std::string();
}

// The maximum clock as cpufreq gives it, where that is the clock the CPU can reach.
CpuMaxClock this_cpu_max_clock() {
  const std::string khz = sysfs_word("/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
  return cpu_max_clock(khz.empty() ? 0.0 : std::atof(khz.c_str()),
                       sysfs_word("/devices/system/cpu/cpu0/cpufreq/scaling_driver"),
                       sysfs_word("/devices/system/cpu/cpufreq/boost"));
}

}  // namespace

double cpu_peak_fp32_gflops() {
  return cpu::cpu_info().logical_cpus * cpu_ghz() *
         cpu_flop_per_cycle(cpu::cpu_info().isa, Dtype::fp32).flop_per_cycle;
}

report::json make_context(const char* argv0, const Options& o) {
  const auto& gb = benchmark::CPUInfo::Get();
  const auto& cpu = cpu::cpu_info();
  report::json c;
  char buf[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", std::localtime(&now));
  c["date"] = buf;
  c["host_name"] = host_name();
  c["executable"] = argv0;
  c["num_cpus"] = gb.num_cpus;
  c["mhz_per_cpu"] = static_cast<int>(gb.cycles_per_second / 1e6);
  c["cpu_scaling_enabled"] = gb.scaling == benchmark::CPUInfo::ENABLED;
  report::json caches = report::json::array();
  for (const auto& ci : gb.caches)
    caches.push_back({{"type", ci.type},
                      {"level", ci.level},
                      {"size", ci.size},
                      {"num_sharing", ci.num_sharing}});
  c["caches"] = caches;
  c["load_avg"] = gb.load_avg;
#ifdef NDEBUG
  c["library_build_type"] = "release";
#else
  c["library_build_type"] = "debug";
#endif
  c["pairbench_version"] = PAIRBENCH_VERSION;
  c["pairbench_git_revision"] = PAIRBENCH_GIT_REVISION;
  c["suite"] = o.suite;
  c["cold_cache"] = o.cold;
  c["epochs"] = o.epochs;
  c["cpu_model"] = cpu.model;
  std::string isa;
  for (const auto& f : cpu.isa) isa += (isa.empty() ? "" : " ") + f;
  c["cpu_isa"] = isa;
  c["cpu_logical_cores"] = cpu.logical_cpus;
  c["cpu_l2_bytes"] = cpu.l2_bytes;
  c["cpu_l3_bytes"] = cpu.l3_bytes;
  c["cpu_peak_fp32_gflops"] = cpu_peak_fp32_gflops();
  c["cpu_peak_note"] = "cores x nominal GHz x " +
                       std::to_string(cpu_flop_per_cycle(cpu.isa, Dtype::fp32).flop_per_cycle) +
                       " FLOP/cycle (widest FMA, two FMA units assumed)";
  c["cpu_nominal_ghz"] = cpu_ghz();
  const CpuMaxClock max_clock = this_cpu_max_clock();
  if (max_clock.ghz > 0) c["cpu_max_ghz"] = max_clock.ghz;
  if (!max_clock.note.empty()) c["cpu_max_ghz_note"] = max_clock.note;
  c["openblas_config"] = cpu.openblas_config;
  c["openblas_core"] = cpu.openblas_core;
  c["openblas_core_detected"] = cpu.openblas_core_detected.empty()
                                    ? "unknown (OPENBLAS_CORETYPE was set)"
                                    : cpu.openblas_core_detected;
  c["openblas_core_source"] = cpu.openblas_core_source;
  if (!cpu.openblas_coretype_env.empty()) c["openblas_coretype_env"] = cpu.openblas_coretype_env;
  c["openblas_core_for_isa"] = cpu::openblas_core_for_isa(cpu.isa);
  const auto plan = cpu::openblas_core_plan(cpu, o.openblas_asis);
  if (!plan.note.empty()) c["openblas_core_note"] = plan.note;
  c["openblas_threading"] = cpu.openblas_threading;
  c["openblas_threads"] = cpu.openblas_threads;
  c["omp_threads"] = cpu.omp_threads;
  c["cpu_amx"] = cpu::to_string(cpu.amx);
  if (cpu::onednn::built()) {
    c["onednn_version"] = cpu::onednn::version();
    c["onednn_isa"] = cpu::onednn::effective_isa();
    if (!cpu::onednn::isa_cap_note().empty()) c["onednn_isa_cap"] = cpu::onednn::isa_cap_note();
  } else {
    c["onednn_missing"] = cpu::onednn::unavailable(Dtype::fp32);
  }
  const auto& g = gpu::probe();
  c["gpu_available"] = g.available;
  c["cuda_runtime_version"] = g.runtime_version;
  c["cuda_driver_version"] = g.driver_version;
  if (!g.available) {
    c["gpu_reason"] = g.reason;
    return c;
  }
  c["gpu_name"] = g.name;
  c["gpu_compute_capability"] = std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor);
  c["gpu_sms"] = g.sms;
  c["gpu_memory_bytes"] = g.total_bytes;
  c["gpu_l2_bytes"] = g.l2_bytes;
  c["gpu_clock_mhz"] = g.clock_khz / 1e3;
  c["gpu_memory_clock_mhz"] = g.mem_clock_khz / 1e3;
  c["gpu_bus_width_bits"] = g.bus_width_bits;
  c["gpu_peak_fp32_gflops"] = g.peak_fp32_gflops;
  c["gpu_peak_bandwidth_gbs"] = g.peak_bandwidth_gbs;
  c["cublas_version"] = g.cublas_version;
  // The arithmetic the dtype names can run as something else: say what this GPU has, and the
  // variables that change what cuBLAS runs (each cuBLAS case's impl_detail says so too).
  report::json math = {{"fp16_tensor_cores", g.cc_major >= 7},
                       {"bf16_tensor_cores", g.cc_major >= 8},
                       {"tf32_tensor_cores", g.cc_major >= 8}};
  for (const char* v : {"NVIDIA_TF32_OVERRIDE", "CUBLAS_EMULATION_STRATEGY",
                        "CUBLAS_EMULATE_SINGLE_PRECISION", "CUBLAS_WORKSPACE_CONFIG"})
    if (const char* value = std::getenv(v)) math[v] = value;
  c["gpu_math"] = math;
  c["transfer_s_counts"] =
      "the host<->device copies of what the work reads (not an output it overwrites) and of its "
      "result, from pinned host memory; for a training step or an inference pass, its batch in "
      "and an inference pass's logits out (the parameters stay on the device between steps; an "
      "_h2d step copies its batch inside the timed step)";
  return c;
}

std::string build_identity() {
  return std::string(PAIRBENCH_VERSION) + " " + PAIRBENCH_GIT_REVISION +
         (gpu::built_with_cuda() ? " cuda" : " cpu-only");
}

report::json ranks_context(const report::json& context) {
  const ranks::World& w = ranks::world();
  report::json mine = {{"host_name", context["host_name"]}, {"local_rank", w.local_rank}};
  for (const char* key : {"cpu_model", "cpu_logical_cores", "openblas_config", "onednn_version",
                          "gpu_name", "cuda_driver_version", "cublas_version"})
    if (context.contains(key)) mine[key] = context[key];
  report::json per_rank = report::json::array();
  for (const std::string& s : ranks::gather(mine.dump()))
    per_rank.push_back(report::json::parse(s));
  return {{"size", w.size}, {"launcher", w.launcher}, {"per_rank", per_rank}};
}

}  // namespace pb
