// The report's self-check and labels: every measured figure against its device's ceiling
// (context.ceilings, see bench/ceilings.hpp), and the cases whose figures mean less than they
// seem (latency_bound, cache_resident, effective_flops).
#include <algorithm>
#include <cctype>
#include <cstdio>

#include "reports/report.hpp"

namespace pb::report {

namespace {

double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// The last-level cache the case's device has: the CPU's L3 (L2 without one), the GPU's L2.
double llc_bytes(const json& context, const std::string& device) {
  if (device == "gpu") return num(context, "gpu_l2_bytes");
  const double l3 = num(context, "cpu_l3_bytes");
  return l3 > 0 ? l3 : num(context, "cpu_l2_bytes");
}

// A copy between host and device: it crosses the link whatever its size.
bool over_host_link(const json& c) {
  return c.value("role", "") == "transfer" && c["shape"].value("dir", "") != "d2d";
}

// A convolution computed with fewer multiplications than its direct form counts (Winograd or
// FFT algorithms, as cuDNN may choose in fp32, or oneDNN's Winograd): its GFLOP/s is an effective
// rate, the direct form's FLOPs over the time, which may stand above what the device multiplies.
bool effective_flops(const json& c) {
  std::string d = c.value("impl_detail", "");
  for (char& ch : d) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return c.value("op", "") == "conv" &&
         (d.find("wino") != std::string::npos || d.find("fft") != std::string::npos);
}

// The ceiling a figure of the case is held against: {"metric", "value", "bound", ...}; null
// when the case has no such figure or its device no bound for it.
json ceiling_for(const json& c, const json& ceilings) {
  const std::string device = c["device"];
  if (!ceilings.contains(device)) return nullptr;
  const json& dev = ceilings[device];
  // Over several ranks a figure is every rank's together, each on a device of its own at most:
  // one rank's share is what one device is held to.
  const double ranks = std::stod(c["shape"].value("ranks", "1"));
  auto with = [&](const char* key, const char* figure) -> json {
    if (!dev.contains(key) || !dev[key]["bound"].is_number()) return nullptr;
    return {{"ceiling", key},
            {"figure", figure},
            {"value", num(c, figure) / ranks},
            {"bound", dev[key]["bound"]},
            {"bound_source", dev[key].value("bound_source", "")}};
  };
  if (c.value("metric", "GFLOP/s") == "GB/s") {
    if (c.value("cache_resident", false)) return nullptr;  // a cache is faster than memory
    if (over_host_link(c)) return with("host_link", "gbs");
    return with("memory", "gbs");
  }
  if (num(c, "flops") <= 0 || effective_flops(c)) return nullptr;
  return with(c["dtype"].get<std::string>().c_str(), "gflops");
}

}  // namespace

json checked_cases(const json& cases, const json& context) {
  json out = cases;
  const bool cold = context.value("cold_cache", false);
  const json ceilings = context.value("ceilings", json::object());
  for (json& c : out) {
    if (c.value("status", "") != "ok") continue;
    const std::string device = c["device"];
    const double t = c["time"]["median_s"];
    c["latency_bound"] = t < kLatencyBoundS && (device == "gpu" || c.value("threads", 1) > 1);
    const double llc = llc_bytes(context, device);
    const double ranks = std::stod(c["shape"].value("ranks", "1"));
    c["cache_resident"] =
        !cold && !over_host_link(c) && llc > 0 && num(c, "min_bytes") / ranks <= llc;
    if (effective_flops(c)) c["effective_flops"] = true;
    const json ceil = ceiling_for(c, ceilings);
    if (ceil.is_null() || num(ceil, "value") <= num(ceil, "bound")) continue;
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "impossible: %.1f %s is above the %s's %s ceiling of %.1f (%s); the "
                  "measurement or the work it counts is wrong, so no time is reported",
                  num(ceil, "value"), ceil["figure"] == "gbs" ? "GB/s" : "GFLOP/s", device.c_str(),
                  ceil["ceiling"].get<std::string>().c_str(), num(ceil, "bound"),
                  ceil["bound_source"].get<std::string>().c_str());
    c["status"] = "error";
    c["message"] = buf;
    c["above_ceiling"] = ceil;
  }
  return out;
}

void widen_cpu_memory_bound(json& context) {
  if (!context.contains("ceilings") || !context["ceilings"].contains("cpu") ||
      !context["ceilings"]["cpu"].contains("memory"))
    return;
  json& m = context["ceilings"]["cpu"]["memory"];
  if (m["peak"].is_number()) return;
  double best = 0;
  for (const json& p : context.value("machine_probes", json::array()))
    best = std::max(best, num(p, "copy_gbs"));
  if (2 * best <= num(m, "bound")) return;
  m["bound"] = 2 * best;
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "2x the best STREAM copy of the machine probes over the run (%.1f GB/s), above "
                "the ceiling probe's",
                best);
  m["bound_source"] = buf;
}

int impossible_count(const json& doc) {
  const json& cases = doc["pairbench"]["cases"];
  return static_cast<int>(std::count_if(cases.begin(), cases.end(),
                                        [](const json& c) { return c.contains("above_ceiling"); }));
}

}  // namespace pb::report
