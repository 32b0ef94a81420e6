#include "bench/ceilings.hpp"

#include <algorithm>
#include <cstdio>
#include <regex>
#include <set>
#include <sstream>

#include "bench/harness.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb {

using report::json;

const std::vector<GpuDatasheet>& gpu_datasheets() {
  // Dense TFLOP/s (the datasheets' sparsity figures halved), memory and host link GB/s per
  // direction. More specific patterns first: "H100 NVL" before "H100". A name inside another
  // word is another part: GH200 and GB200 (their host links are NVLink-C2C, not PCIe) match no
  // row.
  static const std::vector<GpuDatasheet> table = {
      {"B200", "\\bB200\\b", 0, 0, 75, 1125, 2250, 2250, 8000, "PCIe 5.0 x16", 64,
       "NVIDIA HGX B200 datasheet, per GPU (the 8-GPU figures / 8)"},
      {"H200 NVL", "\\bH200 NVL", 1785, 1545, 60, 417.5, 835.5, 835.5, 4800, "PCIe 5.0 x16", 64,
       "NVIDIA H200 datasheet (NVL)"},
      {"H200 SXM 141 GB", "\\bH200\\b", 1980, 1830, 66.9, 494.7, 989.4, 989.4, 4800, "PCIe 5.0 x16",
       64, "NVIDIA H200 datasheet (SXM)"},
      {"H100 NVL", "\\bH100 NVL", 1785, 1545, 60, 417.5, 835.5, 835.5, 3938, "PCIe 5.0 x16", 64,
       "NVIDIA H100 datasheet (NVL)"},
      {"H100 PCIe 80 GB", "\\bH100.*PCIe", 1755, 1620, 51.2, 378, 756, 756, 2039, "PCIe 5.0 x16",
       64, "NVIDIA H100 datasheet (PCIe)"},
      {"H100 SXM5 80 GB", "\\bH100\\b", 1980, 1830, 66.9, 494.7, 989.4, 989.4, 3352, "PCIe 5.0 x16",
       64, "NVIDIA H100 datasheet (SXM)"},
      {"A100 SXM4 80 GB", "A100.*SXM.*80", 1410, 1410, 19.5, 156, 312, 312, 2039, "PCIe 4.0 x16",
       32, "NVIDIA A100 datasheet (80GB SXM)"},
      {"A100 SXM4 40 GB", "A100.*SXM", 1410, 1410, 19.5, 156, 312, 312, 1555, "PCIe 4.0 x16", 32,
       "NVIDIA A100 datasheet (40GB SXM)"},
      {"A100 PCIe 80 GB", "A100.*80GB|A100.*PCIE.*80", 1410, 1410, 19.5, 156, 312, 312, 1935,
       "PCIe 4.0 x16", 32, "NVIDIA A100 datasheet (80GB PCIe)"},
      {"A100 PCIe 40 GB", "A100", 1410, 1410, 19.5, 156, 312, 312, 1555, "PCIe 4.0 x16", 32,
       "NVIDIA A100 datasheet (40GB PCIe)"},
      {"A40", "\\bA40\\b", 1740, 1740, 37.4, 74.8, 149.7, 149.7, 696, "PCIe 4.0 x16", 32,
       "NVIDIA A40 datasheet"},
      {"A30", "\\bA30\\b", 1440, 1440, 10.3, 82, 165, 165, 933, "PCIe 4.0 x16", 32,
       "NVIDIA A30 datasheet"},
      {"A10", "\\bA10\\b", 1695, 1695, 31.2, 62.5, 125, 125, 600, "PCIe 4.0 x16", 32,
       "NVIDIA A10 datasheet"},
      {"L40S", "\\bL40S\\b", 2520, 2490, 91.6, 183, 362, 362, 864, "PCIe 4.0 x16", 32,
       "NVIDIA L40S datasheet"},
      {"L40", "\\bL40\\b", 2490, 2490, 90.5, 90.5, 181, 181, 864, "PCIe 4.0 x16", 32,
       "NVIDIA L40 datasheet"},
      {"L4", "\\bL4\\b", 2040, 2040, 30.3, 60, 121, 121, 300, "PCIe 4.0 x16", 32,
       "NVIDIA L4 datasheet"},
      {"T4", "\\bT4\\b", 1590, 1590, 8.1, 0, 0, 65, 320, "PCIe 3.0 x16", 16, "NVIDIA T4 datasheet"},
      {"V100S PCIe", "V100S", 1601, 1601, 16.4, 0, 0, 130, 1134, "PCIe 3.0 x16", 16,
       "NVIDIA V100 datasheet (V100S PCIe)"},
      {"V100 SXM2", "V100.*SXM", 1530, 1530, 15.7, 0, 0, 125, 900, "PCIe 3.0 x16", 16,
       "NVIDIA V100 datasheet (SXM2)"},
      {"V100 PCIe", "V100", 1380, 1380, 14, 0, 0, 112, 900, "PCIe 3.0 x16", 16,
       "NVIDIA V100 datasheet (PCIe)"},
      {"GeForce RTX 4090", "RTX 4090", 2520, 2520, 82.6, 82.6, 165.2, 165.2, 1008, "PCIe 4.0 x16",
       32, "NVIDIA Ada GPU architecture whitepaper (FP32 accumulate)"},
      {"GeForce RTX 3090", "RTX 3090$", 1695, 1695, 35.6, 35.6, 71, 71, 936, "PCIe 4.0 x16", 32,
       "NVIDIA Ampere GA102 GPU architecture whitepaper (FP32 accumulate)"},
  };
  return table;
}

const GpuDatasheet* find_gpu_datasheet(const std::string& device_name) {
  for (const GpuDatasheet& d : gpu_datasheets())
    if (std::regex_search(device_name, std::regex(d.pattern, std::regex::icase))) return &d;
  return nullptr;
}

CpuRate cpu_flop_per_cycle(const std::vector<std::string>& isa, Dtype t) {
  auto has = [&](const char* f) { return std::find(isa.begin(), isa.end(), f) != isa.end(); };
  if (t == Dtype::bf16 && has("amx_bf16")) return {1024, "AMX-BF16 tile multiply"};
  if (t == Dtype::fp16 && has("amx_fp16")) return {1024, "AMX-FP16 tile multiply"};
  if (t == Dtype::bf16 && has("avx512_bf16")) return {128, "AVX512-BF16 dot products, two units"};
  if (t == Dtype::fp16 && has("avx512_fp16")) return {128, "AVX512-FP16 FMA, two units"};
  // Without its own instructions a dtype is computed in fp32 after conversion.
  if (has("avx512f")) return {64, "AVX-512 FMA, two units"};
  if (has("avx2") && has("fma")) return {32, "AVX2 FMA, two units"};
  if (has("avx")) return {16, "AVX, one add and one multiply"};
  return {8, "SSE, one add and one multiply"};
}

CpuMaxClock cpu_max_clock(double max_khz, const std::string& driver, const std::string& boost) {
  if (max_khz <= 0) return {0, ""};
  if (driver == "acpi-cpufreq" && boost == "1") {
    char note[192];
    std::snprintf(note, sizeof note,
                  "cpufreq's maximum (%.2f GHz) is acpi-cpufreq's highest clock without boost, "
                  "and boost is on",
                  max_khz / 1e6);
    return {0, note};
  }
  return {max_khz / 1e6, ""};
}

namespace {

// Measured ceilings at most this much below a bound are what no datasheet gives: the margin
// the check allows above the measured figure.
constexpr double kMeasuredMargin = 2.0;
// A CPU whose maximum clock is not visible (a VM has no cpufreq; acpi-cpufreq hides boost) may
// run turbo above the nominal clock; its check allows twice the nominal.
constexpr double kTurboAllowance = 2.0;

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// One ceiling: the peak and the measured figure with their sources, and the check's bound.
json entry(const char* unit, double peak, const std::string& peak_source, const json& probe,
           double peak_allowance = 1.0, const std::string& allowance_why = "") {
  const json measured = probe.is_object() ? probe : json::object();
  json e = {{"unit", unit},
            {"peak", peak > 0 ? json(peak) : json(nullptr)},
            {"peak_source", peak_source}};
  const double m = num(measured, "value");
  e["measured"] = m > 0 ? json(m) : json(nullptr);
  e["measured_source"] =
      m > 0 ? "the best of 3 runs of " + measured.value("case", std::string("?"))
            : measured.value("error", std::string("not measured: no case of the run needs it"));
  if (peak > 0) {
    e["bound"] = peak * peak_allowance;
    e["bound_source"] = peak_allowance > 1 ? allowance_why : "the peak";
  } else if (m > 0) {
    e["bound"] = m * kMeasuredMargin;
    e["bound_source"] = fmt("%.1fx the measured ceiling (no peak is known)", kMeasuredMargin);
  } else {
    e["bound"] = nullptr;
    e["bound_source"] = "none: neither a peak nor a measurement";
  }
  return e;
}

json cpu_ceilings(const json& context, const json& measured) {
  std::vector<std::string> isa;
  std::istringstream words(context.value("cpu_isa", std::string()));
  for (std::string w; words >> w;) isa.push_back(w);
  const double cpus = num(context, "cpu_logical_cores");
  const bool max_known = num(context, "cpu_max_ghz") > 0;
  const double ghz = max_known ? num(context, "cpu_max_ghz") : num(context, "cpu_nominal_ghz");
  json out = json::object();
  for (Dtype t : {Dtype::fp32, Dtype::bf16, Dtype::fp16}) {
    const CpuRate r = cpu_flop_per_cycle(isa, t);
    const std::string source = fmt("%.0f logical CPUs x %.2f GHz", cpus, ghz) +
                               (max_known ? " (maximum clock, cpufreq)" : " (nominal clock)") +
                               fmt(" x %.0f FLOP/cycle (", r.flop_per_cycle) + r.unit + ")";
    out[to_string(t)] =
        entry("GFLOP/s", cpus * ghz * r.flop_per_cycle, source,
              measured.value(to_string(t), json()), max_known ? 1.0 : kTurboAllowance,
              fmt("the peak at %.0fx the nominal clock: the maximum clock is not visible here (",
                  kTurboAllowance) +
                  context.value("cpu_max_ghz_note", std::string("no cpufreq")) +
                  ") and turbo runs above the nominal");
  }
  out["memory"] = entry("GB/s", 0,
                        "not knowable from inside the machine (the number and speed of the "
                        "populated memory channels are not visible)",
                        measured.value("memory", json()));
  return out;
}

json gpu_ceilings(const json& context, const json& measured) {
  const std::string name = context.value("gpu_name", std::string());
  const GpuDatasheet* d = find_gpu_datasheet(name);
  // The datasheet's figures at the clocks it quotes them at, scaled to the highest clock the
  // part may run: its boost clock, or the device's reported maximum where that is higher. The
  // tensor cores' figures are quoted below boost on some parts (tensor_mhz), and scale up to it.
  const double clock = d ? std::max(num(context, "gpu_clock_mhz"), d->boost_mhz) : 0;
  auto sheet = [&](double quoted_mhz) {
    std::string s = std::string(d->source) + " (" + d->name + ")";
    if (quoted_mhz > 0 && clock > quoted_mhz)
      s += fmt(", quoted at %.0f MHz, scaled to the %.0f MHz clock", quoted_mhz, clock);
    return s;
  };
  auto scaled = [&](double tflops, double quoted_mhz) {
    return 1e3 * tflops * (quoted_mhz > 0 ? std::max(1.0, clock / quoted_mhz) : 1.0);
  };
  json out = json::object();
  out["datasheet"] = d ? json(d->name) : json(nullptr);
  if (!d) out["datasheet_note"] = "\"" + name + "\" is not in pairbench's table of GPUs";
  const json m = measured;
  out["fp32"] = d ? entry("GFLOP/s", scaled(d->fp32, d->boost_mhz), sheet(d->boost_mhz),
                          m.value("fp32", json()))
                  : entry("GFLOP/s", num(context, "gpu_peak_fp32_gflops"),
                          "SMs x FP32 lanes x 2 x clock, from the device's attributes",
                          m.value("fp32", json()));
  const std::pair<Dtype, double> tensor[] = {{Dtype::tf32, d ? d->tf32 : 0},
                                             {Dtype::bf16, d ? d->bf16 : 0},
                                             {Dtype::fp16, d ? d->fp16 : 0}};
  for (const auto& [t, tflops] : tensor) {
    const double peak = !d           ? 0
                        : tflops > 0 ? scaled(tflops, d->tensor_mhz)
                                     : scaled(d->fp32, d->boost_mhz);
    const std::string src = !d           ? "not known: the GPU is not in the table"
                            : tflops > 0 ? sheet(d->tensor_mhz)
                                         : sheet(d->boost_mhz) + ": no tensor-core path for " +
                                               to_string(t) + ", the fp32 rate";
    out[to_string(t)] = entry("GFLOP/s", peak, src, m.value(to_string(t), json()));
  }
  out["memory"] = d ? entry("GB/s", d->memory_gbs, sheet(0), m.value("memory", json()))
                    : entry("GB/s", num(context, "gpu_peak_bandwidth_gbs"),
                            "2 x memory clock x bus width, from the device's attributes",
                            m.value("memory", json()));
  out["host_link"] =
      entry("GB/s", d ? d->host_link_gbs : 0,
            d ? sheet(0) + ": " + d->host_link + ", per direction" : "not known: not in the table",
            m.value("host_link", json()));
  return out;
}

// --- The probes ----------------------------------------------------------------------------

// The run's runnable cases of a device with this property.
template <class P>
bool any_case(const std::vector<Case>& run, Device d, P p) {
  return std::any_of(run.begin(), run.end(), [&](const Case& c) {
    return c.skip.empty() && c.impl.device == d && selected_by_filter(c.name) && p(c);
  });
}

// The fastest verified run of the cases build_cases makes for these options: {"value",
// "case"} in the figure `metric` of the workload, or {"error"}.
json best_of(const Options& o, const Resources& res, bool gflops) {
  std::vector<Case> cases;
  try {
    cases = build_cases(o, res);
  } catch (const std::exception& e) {
    return {{"error", e.what()}};
  }
  json best = {{"error", "no implementation of the probe runs here"}};
  for (const Case& c : cases) {
    if (!c.skip.empty()) {
      if (!best.contains("value")) best["error"] = c.name + ": " + c.skip;
      continue;
    }
    const BestTime t = measure_best(c, 3);
    if (!t.error.empty()) {
      if (!best.contains("value")) best["error"] = c.name + ": " + t.error;
      continue;
    }
    const double v = (gflops ? c.workload->flops() : c.workload->min_bytes()) / t.seconds / 1e9;
    if (v > num(best, "value")) best = {{"value", v}, {"case", c.name}};
  }
  return best;
}

Options probe_options(const char* op, Device d, std::vector<std::string> impls, Dtype t,
                      KeyValues shape) {
  Options o;
  o.ops = {op};
  o.devices = {d};
  o.impls = std::move(impls);
  o.dtypes = {t};
  o.shapes = {std::move(shape)};
  o.quiet = true;
  return o;
}

// The fastest square GEMM among the sizes time allows: from 512^3 on the CPU (4096^3 on a GPU),
// doubled while one run takes under `enough` seconds, up to n_max.
json largest_gemm(Device d, Dtype t, const Resources& res) {
  const bool cpu = d == Device::cpu;
  const std::vector<std::string> impls =
      cpu ? std::vector<std::string>{"cpu/openblas", "cpu/onednn"}
          : std::vector<std::string>{"gpu/cublas"};
  const std::int64_t n_max = cpu ? 2048 : 8192;
  const double enough = 0.005;
  json best;
  for (std::int64_t n = cpu ? 512 : 4096; n <= n_max; n *= 2) {
    const std::string s = std::to_string(n);
    const json b =
        best_of(probe_options("gemm", d, impls, t, {{"m", s}, {"n", s}, {"k", s}}), res, true);
    if (!b.contains("value")) return best.is_null() ? b : best;
    if (best.is_null() || num(b, "value") > num(best, "value")) best = b;
    if (2.0 * static_cast<double>(n) * n * n / (num(b, "value") * 1e9) >= enough) break;
  }
  return best;
}

}  // namespace

json ceilings(const json& context, const json& measured) {
  json out = {{"cpu", cpu_ceilings(context, measured.value("cpu", json::object()))}};
  if (context.value("gpu_available", false))
    out["gpu"] = gpu_ceilings(context, measured.value("gpu", json::object()));
  return out;
}

double pct_peak_gflops(const json& ceilings, Device d, double fallback) {
  const json fp32 = ceilings.value(to_string(d), json::object()).value("fp32", json::object());
  const double best = std::max(num(fp32, "peak"), num(fp32, "measured"));
  return best > 0 ? best : fallback;
}

json measure_ceilings(const std::vector<Case>& run, const Resources& res, bool quiet) {
  json out = json::object();
  for (Device d : {Device::cpu, Device::gpu}) {
    if (!any_case(run, d, [](const Case&) { return true; })) continue;
    if (!quiet)
      std::fprintf(stderr, "pairbench: measuring the %s's ceilings (GEMM per dtype, STREAM%s)\n",
                   to_string(d), d == Device::gpu ? ", pinned copies" : "");
    json dev = json::object();
    std::set<Dtype> dtypes;
    for (const Case& c : run)
      if (c.skip.empty() && c.impl.device == d && c.workload->flops() > 0 &&
          selected_by_filter(c.name))
        dtypes.insert(c.workload->dtype());
    for (Dtype t : dtypes) dev[to_string(t)] = largest_gemm(d, t, res);
    // STREAM triad over arrays together at least 3x the last-level cache (and 384 MiB).
    const double llc =
        d == Device::cpu ? static_cast<double>(cpu::cpu_info().l3_bytes) : res.gpu_l2_bytes;
    std::int64_t n = std::int64_t{1} << 25;
    while (12.0 * static_cast<double>(n) < 3 * llc) n *= 2;
    dev["memory"] =
        best_of(probe_options("stream", d, {d == Device::cpu ? "cpu/omp" : "gpu/cuda"}, Dtype::fp32,
                              {{"kernel", "triad"}, {"n", std::to_string(n)}}),
                res, false);
    if (d == Device::gpu &&
        any_case(run, d, [](const Case& c) { return c.workload->op() == "transfer"; })) {
      json link;
      for (const char* dir : {"h2d", "d2h"}) {
        const json b =
            best_of(probe_options("transfer", d, {"gpu/memcpy"}, Dtype::fp32,
                                  {{"dir", dir}, {"host", "pinned"}, {"bytes", "268435456"}}),
                    res, false);
        if (link.is_null() || num(b, "value") > num(link, "value")) link = b;
      }
      dev["host_link"] = link;
    }
    out[to_string(d)] = dev;
  }
  return out;
}

}  // namespace pb
