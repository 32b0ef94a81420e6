// The analyses of a report, computed from its case records (and the context's peaks) alone, so
// that a recovered report gets them too.
#include <algorithm>
#include <map>
#include <set>

#include "reports/report.hpp"

namespace pb::report {

namespace {

// The shape without the keys listed: by default dtype and the parallel units, what a CPU case
// and a GPU case of the same problem have in common.
std::string problem_key(const json& c,
                        std::initializer_list<const char*> drop = {"dtype", "threads", "sms"}) {
  std::string key;
  for (const auto& [k, v] : c.at("shape").items()) {
    if (std::any_of(drop.begin(), drop.end(), [&k = k](const char* d) { return k == d; })) continue;
    if (!key.empty()) key += ',';
    key += k + '=' + v.get<std::string>();
  }
  return key;
}

json side(const json& c) {
  json s = {{"name", c["name"]},
            {"impl", c["impl"]},
            {"dtype", c["dtype"]},
            {"time_s", c["time"]["median_s"]},
            {"gflops", c["gflops"]},
            {"gbs", c.value("gbs", 0.0)},
            {"transfer_s", c["transfer_s"]}};
  if (c["device"] == "cpu") s["threads"] = c["threads"];
  return s;
}

bool faster(const json& a, const json* best) {
  return best == nullptr ||
         a["time"]["median_s"].get<double>() < (*best)["time"]["median_s"].get<double>();
}

}  // namespace

// The precisions compared like with like: the key, the CPU's dtype, the GPU's. The GPU's tf32
// (fp32 storage, tensor-core products on 10-bit mantissas) has no CPU counterpart: it is set
// against the CPU's fp32 and its key says so.
struct PrecisionPair {
  const char *key, *cpu, *gpu;
};
constexpr PrecisionPair kPrecisions[] = {{"speedup_fp32", "fp32", "fp32"},
                                         {"speedup_bf16", "bf16", "bf16"},
                                         {"speedup_fp16", "fp16", "fp16"},
                                         {"speedup_gpu_tf32_vs_cpu_fp32", "fp32", "tf32"}};

double median_s(const json& c) { return c["time"]["median_s"].get<double>(); }

json speedup(const json& cases) {
  struct Group {
    std::string op, shape;
    const json *cpu = nullptr, *gpu = nullptr;          // the fastest of each, whatever its dtype
    std::map<std::string, const json*> cpu_by, gpu_by;  // the fastest of each per dtype
    std::string gpu_missing;
    bool any_cpu = false;  // a CPU case of this problem exists, whatever its status
  };
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (const json& c : cases) {
    const std::string op = c["op"], shape = problem_key(c), key = op + "/" + shape;
    if (!index.count(key)) {
      index[key] = groups.size();
      groups.push_back(Group{op, shape, nullptr, nullptr, {}, {}, "", false});
    }
    Group& g = groups[index[key]];
    const bool gpu = c["device"] == "gpu";
    g.any_cpu = g.any_cpu || !gpu;
    if (c["status"] != "ok") {
      if (gpu && g.gpu_missing.empty()) g.gpu_missing = c["message"];
      continue;
    }
    const json*& best = gpu ? g.gpu : g.cpu;
    const json*& best_of_dtype = (gpu ? g.gpu_by : g.cpu_by)[c["dtype"].get<std::string>()];
    if (faster(c, best)) best = &c;
    if (faster(c, best_of_dtype)) best_of_dtype = &c;
  }
  json out = json::array();
  for (const Group& g : groups) {
    if (!g.any_cpu) continue;  // GPU-only work (host<->device copies): no pair to compare
    json e = {{"op", g.op}, {"shape", g.shape}};
    e["cpu"] = g.cpu ? side(*g.cpu) : json(nullptr);
    e["gpu"] = g.gpu ? side(*g.gpu) : json(nullptr);
    if (g.cpu && g.gpu) {
      const double tg = median_s(*g.gpu), tx = (*g.gpu)["transfer_s"];
      e["speedup"] = median_s(*g.cpu) / tg;
      e["speedup_with_transfer"] = median_s(*g.cpu) / (tg + tx);
    }
    for (const PrecisionPair& p : kPrecisions) {
      const auto c = g.cpu_by.find(p.cpu), d = g.gpu_by.find(p.gpu);
      if (c != g.cpu_by.end() && d != g.gpu_by.end())
        e[p.key] = median_s(*c->second) / median_s(*d->second);
    }
    if (!g.gpu)
      e["gpu_missing"] = g.gpu_missing.empty() ? "no GPU case was selected" : g.gpu_missing;
    out.push_back(e);
  }
  return out;
}

namespace {

bool ok(const json& c) { return c.value("status", "") == "ok"; }
double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// Memory-bound work (under one FLOP per byte) is measured in GB/s, the rest in GFLOP/s.
bool memory_bound_op(const json& c) { return num(c, "flops") < num(c, "min_bytes"); }
double throughput(const json& c) { return memory_bound_op(c) ? num(c, "gbs") : num(c, "gflops"); }
const char* metric(const json& c) { return memory_bound_op(c) ? "GB/s" : "GFLOP/s"; }

json peak_or_null(const json& context, const char* key) {
  return context.contains(key) && context[key].is_number() && context[key].get<double>() > 0
             ? context[key]
             : json(nullptr);
}

}  // namespace

json memory_bandwidth(const json& cases, const json& context) {
  json out = json::object();
  for (const char* device : {"cpu", "gpu"}) {
    std::map<std::string, const json*> best;  // STREAM kernel -> fastest case
    for (const json& c : cases) {
      if (!ok(c) || c["op"] != "stream" || c["device"] != device) continue;
      const std::string k = c["shape"]["kernel"];
      if (!best.count(k) || num(c, "gbs") > num(*best[k], "gbs")) best[k] = &c;
    }
    if (best.empty()) continue;
    const bool gpu = std::string(device) == "gpu";
    const json theoretical =
        peak_or_null(context, gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs");
    double ceiling = 0;
    for (const auto& kv : best) ceiling = std::max(ceiling, num(*kv.second, "gbs"));
    json kernels = json::array();
    for (const char* k : {"copy", "scale", "add", "triad", "dot"}) {
      if (!best.count(k)) continue;
      const json& c = *best[k];
      json e = {{"kernel", k},
                {"gbs", c["gbs"]},
                {"name", c["name"]},
                {"pct_of_best", 100.0 * num(c, "gbs") / ceiling},
                {"write_allocate_bytes", c.value("write_allocate_bytes", 0.0)},
                {"gbs_with_write_allocate", (num(c, "min_bytes") + num(c, "write_allocate_bytes")) /
                                                num(c["time"], "median_s") / 1e9}};
      if (c["device"] == "cpu") e["threads"] = c["threads"];
      if (!theoretical.is_null())
        e["pct_of_theoretical"] = 100.0 * num(c, "gbs") / theoretical.get<double>();
      kernels.push_back(e);
    }
    json d = {
        {"stream", kernels}, {"measured_ceiling_gbs", ceiling}, {"theoretical_gbs", theoretical}};
    d["bytes_counted"] =
        "as STREAM counts them: each array read or written once per element; a cache that "
        "allocates on write also reads every written array (write_allocate_bytes), which "
        "gbs_with_write_allocate includes";
    if (theoretical.is_null())
      d["theoretical_note"] = gpu ? "the GPU's memory clock and bus width were not reported"
                                  : "not knowable from inside the machine (the number and speed "
                                    "of the populated memory channels are not visible)";
    out[device] = d;
  }
  // Host<->device copies: one curve per direction and kind of host memory.
  std::map<std::string, json> curves;
  for (const json& c : cases) {
    if (!ok(c) || c["op"] != "transfer") continue;
    const json& sh = c["shape"];
    const std::string key = sh["dir"].get<std::string>() + "/" + sh.value("host", "device");
    if (!curves.count(key))
      curves[key] = {
          {"dir", sh["dir"]}, {"host", sh.value("host", "device")}, {"points", json::array()}};
    curves[key]["points"].push_back({{"bytes", std::stod(sh["bytes"].get<std::string>())},
                                     {"gbs", c["gbs"]},
                                     {"time_s", c["time"]["median_s"]}});
  }
  json transfer = json::array();
  for (auto& [key, curve] : curves) {
    auto& pts = curve["points"];
    std::sort(pts.begin(), pts.end(),
              [](const json& a, const json& b) { return a["bytes"] < b["bytes"]; });
    double peak = 0;
    for (const json& p : pts) peak = std::max(peak, p["gbs"].get<double>());
    curve["latency_s"] = pts.front()["time_s"];  // the smallest copy: almost all latency
    curve["latency_bytes"] = pts.front()["bytes"];
    curve["peak_gbs"] = peak;
    transfer.push_back(curve);
  }
  if (!transfer.empty()) out["transfer"] = transfer;
  return out;
}

json parallelism(const json& cases) {
  json out = {{"cpu", json::array()}, {"gpu", json::array()}};
  for (const char* device : {"cpu", "gpu"}) {
    const char* unit = std::string(device) == "cpu" ? "threads" : "sms";
    std::map<std::string, std::vector<const json*>> sweeps;
    std::vector<std::string> order;
    for (const json& c : cases) {
      if (!ok(c) || c["device"] != device || !c["shape"].contains(unit)) continue;
      const std::string key = c["op"].get<std::string>() + "/" + c["impl"].get<std::string>() +
                              "/" + problem_key(c, {"threads", "sms"});
      if (!sweeps.count(key)) order.push_back(key);
      sweeps[key].push_back(&c);
    }
    for (const std::string& key : order) {
      auto& pts = sweeps[key];
      if (pts.size() < 2) continue;  // one count is no sweep
      auto units = [unit](const json* c) {
        return std::stoi((*c)["shape"][unit].get<std::string>());
      };
      std::sort(pts.begin(), pts.end(),
                [&](const json* a, const json* b) { return units(a) < units(b); });
      const json& first = *pts.front();
      const double base = throughput(first);
      const int base_units = units(&first);
      json points = json::array();
      for (const json* c : pts) {
        const double speedup = throughput(*c) / base;
        points.push_back({{unit, units(c)},
                          {"throughput", throughput(*c)},
                          {"speedup", speedup},
                          {"efficiency", speedup * base_units / units(c)}});
      }
      json e = {{"op", first["op"]},
                {"impl", first["impl"]},
                {"shape", problem_key(first, {"threads", "sms"})},
                {"metric", metric(first)},
                {"unit", unit},
                {"points", points}};
      if (std::string(device) == "gpu") {
        // The same problem at full occupancy, by the implementations that use every SM.
        for (const json& c : cases)
          if (ok(c) && c["device"] == "gpu" && c["op"] == first["op"] &&
              !c["shape"].contains("sms") && problem_key(c, {"sms"}) == problem_key(first, {"sms"}))
            e["full_occupancy"] = {{"impl", c["impl"]}, {"throughput", throughput(c)}};
      }
      out[device].push_back(e);
    }
  }
  return out;
}

json roofline(const json& cases, const json& context) {
  json out = json::object();
  for (const char* device : {"cpu", "gpu"}) {
    const bool gpu = std::string(device) == "gpu";
    double best_flops = 0, best_bytes = 0;
    json points = json::array();
    for (const json& c : cases) {
      if (!ok(c) || c["device"] != device) continue;
      if (c["op"] == "stream")
        best_bytes = std::max(best_bytes, num(c, "gbs"));
      else if (c["op"] == "gemm")
        best_flops = std::max(best_flops, num(c, "gflops"));
    }
    const json peak_flops =
        peak_or_null(context, gpu ? "gpu_peak_fp32_gflops" : "cpu_peak_fp32_gflops");
    const json peak_bytes =
        peak_or_null(context, gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs");
    // The ridge: the intensity where the measured ceilings meet (theoretical ones if unmeasured).
    const double ceil_f = best_flops > 0
                              ? best_flops
                              : num(context, gpu ? "gpu_peak_fp32_gflops" : "cpu_peak_fp32_gflops");
    const double ceil_b =
        best_bytes > 0 ? best_bytes
                       : num(context, gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs");
    const json ridge = ceil_f > 0 && ceil_b > 0 ? json(ceil_f / ceil_b) : json(nullptr);
    for (const json& c : cases) {
      if (!ok(c) || c["device"] != device || num(c, "flops") <= 0) continue;
      const double intensity = num(c, "flops") / num(c, "min_bytes");
      json p = {{"name", c["name"]}, {"intensity", intensity}, {"gflops", c["gflops"]}};
      p["memory_bound"] = ridge.is_null() ? json(nullptr) : json(intensity < ridge.get<double>());
      if (ceil_f > 0 && ceil_b > 0) {
        const double attainable = std::min(ceil_f, intensity * ceil_b);
        p["pct_of_attainable"] = 100.0 * num(c, "gflops") / attainable;
      }
      points.push_back(p);
    }
    if (points.empty()) continue;
    out[device] = {{"measured_gflops", best_flops > 0 ? json(best_flops) : json(nullptr)},
                   {"measured_gbs", best_bytes > 0 ? json(best_bytes) : json(nullptr)},
                   {"theoretical_gflops", peak_flops},
                   {"theoretical_gbs", peak_bytes},
                   {"ridge_intensity", ridge},
                   {"points", points}};
  }
  return out;
}

}  // namespace pb::report
