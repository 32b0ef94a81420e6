// The analyses of a report, computed from its case records (and the context's peaks) alone, so
// that a recovered report gets them too.
#include <algorithm>
#include <cmath>
#include <cstdio>
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
            {"metric", c.value("metric", "GFLOP/s")},
            {"transfer_s", c["transfer_s"]}};
  // A training step's or inference pass's samples/s (a convolution's images/s say little).
  if (c.contains("samples_per_s") && c.value("metric", "") == "samples/s")
    s["samples_per_s"] = c["samples_per_s"];
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

namespace {

// The labels of a speedup's two cases that make it mean less than it seems (checked_cases): a
// latency-bound case; a cache-resident one where the work is read in GB/s (its figure is the
// cache's, not the memory's; a GEMM is meant to run from cache).
json apart_labels(const json* cpu, const json* gpu) {
  json out = json::array();
  for (const char* label : {"latency_bound", "cache_resident"})
    for (const json* c : {cpu, gpu}) {
      if (!c || !c->value(label, false)) continue;
      if (std::string(label) == "cache_resident" && c->value("metric", "") != "GB/s") continue;
      out.push_back(label);
      break;
    }
  return out;
}

// The compute probe taken just before an op family (the slowest such, where random
// interleaving came back to the family), against the run's best: where it read under
// kThrottledFraction of it, the family's CPU figures were measured on a slowed host.
json host_throttled(const std::string& op, const json& probes,
                    const char* consequence = "its speedups were divided by a slowed host") {
  double best = 0;
  const json* before = nullptr;
  for (const json& p : probes) {
    best = std::max(best, p.value("compute_gflops", 0.0));
    if (p.value("when", "") == "before " + op &&
        (!before || p.value("compute_gflops", 0.0) < before->value("compute_gflops", 0.0)))
      before = &p;
  }
  if (!before || best <= 0) return nullptr;
  const double f = before->value("compute_gflops", 0.0) / best;
  if (f >= kThrottledFraction) return nullptr;
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "the CPU probe before %s read %.0f GFLOP/s, %.0f%% of the run's best %.0f: %s",
                op.c_str(), before->value("compute_gflops", 0.0), 100 * f, best, consequence);
  return {{"probe_gflops", before->value("compute_gflops", 0.0)},
          {"best_probe_gflops", best},
          {"fraction", f},
          {"note", buf}};
}

}  // namespace

json speedup(const json& cases, const json& probes) {
  struct Group {
    std::string op, shape;
    const json *cpu = nullptr, *gpu = nullptr;          // the fastest of each, whatever its dtype
    std::map<std::string, const json*> cpu_by, gpu_by;  // the fastest of each per dtype
    // The fastest of each per implementation name and dtype: the same algorithm on both devices
    // where the names match (conv's im2col against im2col).
    std::map<std::pair<std::string, std::string>, const json*> cpu_impl, gpu_impl;
    std::string cpu_missing, gpu_missing;  // why the first case of each that did not run
    bool any_cpu = false;                  // a CPU case of this problem exists, whatever its status
  };
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (const json& c : cases) {
    const std::string op = c["op"], shape = problem_key(c), key = op + "/" + shape;
    if (!index.count(key)) {
      index[key] = groups.size();
      groups.push_back(Group{op, shape, nullptr, nullptr, {}, {}, {}, {}, "", "", false});
    }
    Group& g = groups[index[key]];
    const bool gpu = c["device"] == "gpu";
    g.any_cpu = g.any_cpu || !gpu;
    if (c["status"] != "ok") {
      std::string& missing = gpu ? g.gpu_missing : g.cpu_missing;
      if (missing.empty()) missing = c.value("message", c["status"].get<std::string>());
      continue;
    }
    const json*& best = gpu ? g.gpu : g.cpu;
    const json*& best_of_dtype = (gpu ? g.gpu_by : g.cpu_by)[c["dtype"].get<std::string>()];
    if (faster(c, best)) best = &c;
    if (faster(c, best_of_dtype)) best_of_dtype = &c;
    const json*& best_of_impl = (gpu ? g.gpu_impl : g.cpu_impl)[{c["impl"], c["dtype"]}];
    if (faster(c, best_of_impl)) best_of_impl = &c;
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
    json same = json::array();
    for (const auto& [key, cpu_case] : g.cpu_impl) {
      const auto d = g.gpu_impl.find(key);
      if (d == g.gpu_impl.end()) continue;
      same.push_back({{"impl", key.first},
                      {"dtype", key.second},
                      {"speedup", median_s(*cpu_case) / median_s(*d->second)}});
    }
    if (!same.empty()) e["same_algorithm"] = same;
    if (!g.cpu) e["cpu_missing"] = g.cpu_missing;
    if (!g.gpu)
      e["gpu_missing"] = g.gpu_missing.empty() ? "no GPU case was selected" : g.gpu_missing;
    const json apart = apart_labels(g.cpu, g.gpu);
    if (!apart.empty()) e["apart"] = apart;
    const json throttled = g.cpu ? host_throttled(g.op, probes) : json(nullptr);
    if (!throttled.is_null()) e["host_throttled"] = throttled;
    out.push_back(e);
  }
  return out;
}

namespace {

bool ok(const json& c) { return c.value("status", "") == "ok"; }
int ranks_of(const json& c) { return std::stoi(c["shape"].value("ranks", "1")); }
double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// The figure each case declared it is read by.
std::string metric(const json& c) { return c.value("metric", "GFLOP/s"); }
double throughput(const json& c) {
  const std::string m = metric(c);
  return num(c, m == "GB/s" ? "gbs" : m == "samples/s" ? "samples_per_s" : "gflops");
}
bool has_role(const json& c, std::initializer_list<const char*> roles) {
  const std::string r = c.value("role", "none");
  return std::any_of(roles.begin(), roles.end(), [&](const char* x) { return r == x; });
}
bool bandwidth_kernel(const json& c) { return has_role(c, {"bandwidth", "bandwidth_reference"}); }

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
      if (!ok(c) || !bandwidth_kernel(c) || c["device"] != device) continue;
      const std::string k = c["shape"]["kernel"];
      if (!best.count(k) || num(c, "gbs") > num(*best[k], "gbs")) best[k] = &c;
    }
    if (best.empty()) continue;
    const bool gpu = std::string(device) == "gpu";
    const json theoretical =
        peak_or_null(context, gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs");
    double ceiling = 0;
    for (const auto& kv : best) ceiling = std::max(ceiling, num(*kv.second, "gbs"));
    // The memory's bound (checks.cpp holds every case to it): traffic above it did not happen.
    const json bound = context.value("ceilings", json::object())
                           .value(device, json::object())
                           .value("memory", json::object())
                           .value("bound", json());
    json kernels = json::array();
    for (const char* k : {"copy", "scale", "add", "triad", "dot"}) {
      if (!best.count(k)) continue;
      const json& c = *best[k];
      // A GPU's L2 does not read a line before writing it whole: no write-allocate traffic
      // (reports older than the harness's rule recorded some for GPU cases).
      double wa = gpu ? 0.0 : num(c, "write_allocate_bytes");
      const double seconds = num(c["time"], "median_s");
      // Where the figure with that traffic would stand above the memory's bound, the stores
      // did not read their lines first (non-temporal stores bypass the cache): none is counted.
      // A case inside the cache is held to no memory bound (checks.cpp).
      const bool bypassed = wa > 0 && bound.is_number() && !c.value("cache_resident", false) &&
                            (num(c, "min_bytes") + wa) / seconds / 1e9 > bound.get<double>();
      if (bypassed) wa = 0;
      json e = {{"kernel", k},
                {"gbs", c["gbs"]},
                {"name", c["name"]},
                {"pct_of_best", 100.0 * num(c, "gbs") / ceiling},
                {"write_allocate_bytes", wa},
                {"gbs_with_write_allocate", (num(c, "min_bytes") + wa) / seconds / 1e9}};
      if (bypassed)
        e["write_allocate_note"] =
            "not counted: with it this kernel would have moved more than the memory's bound";
      if (c["device"] == "cpu") e["threads"] = c["threads"];
      if (!theoretical.is_null())
        e["pct_of_theoretical"] = 100.0 * num(c, "gbs") / theoretical.get<double>();
      kernels.push_back(e);
    }
    json d = {
        {"stream", kernels}, {"measured_ceiling_gbs", ceiling}, {"theoretical_gbs", theoretical}};
    d["bytes_counted"] =
        gpu ? "as STREAM counts them: each array read or written once per element (a GPU's L2 "
              "writes whole lines without reading them first)"
            : "as STREAM counts them: each array read or written once per element; a cache that "
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
    if (!ok(c) || !has_role(c, {"transfer"})) continue;
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

json sweeps(const json& cases, const std::string& device, const std::string& axis) {
  std::map<std::string, std::vector<const json*>> groups;
  std::vector<std::string> order;
  for (const json& c : cases) {
    if (!ok(c) || c["device"] != device || !c["shape"].contains(axis)) continue;
    const std::string key = c["op"].get<std::string>() + "/" + c["impl"].get<std::string>() + "/" +
                            problem_key(c, {axis.c_str()});
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(&c);
  }
  json out = json::array();
  for (const std::string& key : order) {
    auto& pts = groups[key];
    if (pts.size() < 2) continue;  // one value is no sweep
    auto at = [&axis](const json* c) { return std::stod((*c)["shape"][axis].get<std::string>()); };
    std::sort(pts.begin(), pts.end(), [&](const json* a, const json* b) { return at(a) < at(b); });
    const json& first = *pts.front();
    const double base = throughput(first), base_at = at(&first);
    json points = json::array();
    for (const json* c : pts) {
      const double speedup = throughput(*c) / base;
      const double v = at(c);  // threads, SMs, batch: whole numbers, written as such
      points.push_back({{axis, v == std::floor(v) ? json(static_cast<std::int64_t>(v)) : json(v)},
                        {"throughput", throughput(*c)},
                        {"speedup", speedup},
                        {"efficiency", speedup * base_at / at(c)}});
      if (c->contains("samples_per_s")) points.back()["samples_per_s"] = (*c)["samples_per_s"];
    }
    out.push_back({{"op", first["op"]},
                   {"impl", first["impl"]},
                   {"shape", problem_key(first, {axis.c_str()})},
                   {"metric", metric(first)},
                   {"unit", axis},
                   {"points", points}});
  }
  return out;
}

json parallelism(const json& cases) {
  json out = {{"cpu", sweeps(cases, "cpu", "threads")}, {"gpu", sweeps(cases, "gpu", "sms")}};
  for (json& e : out["gpu"]) {
    // The same problem at full occupancy, by the implementations that use every SM.
    for (const json& c : cases)
      if (ok(c) && c["device"] == "gpu" && c["op"] == e["op"] && !c["shape"].contains("sms") &&
          problem_key(c, {"sms"}) == e["shape"].get<std::string>())
        e["full_occupancy"] = {{"impl", c["impl"]}, {"throughput", throughput(c)}};
  }
  return out;
}

json batch(const json& cases) {
  return {{"cpu", sweeps(cases, "cpu", "batch")}, {"gpu", sweeps(cases, "gpu", "batch")}};
}

namespace {

// model (from the shape), for the training cases
std::string model_of(const json& c) { return c["shape"].value("model", std::string("?")); }

// A training step on one device: a data-parallel step over several ranks is the scaling
// analysis's.
bool one_device_step(const json& c) {
  return ok(c) && has_role(c, {"training"}) && ranks_of(c) == 1;
}

// A step's image size (0 for models without images).
int image_of(const json& c) { return std::stoi(c["shape"].value("image", "0")); }

// The largest images a model's one-device steps ran on (ImageNet's 224 x 224 where they ran):
// what the projection and the batch series keep to, since a batch of smaller images is other
// work, and an epoch of them is not an epoch of ImageNet.
int largest_image(const json& cases, const std::string& model) {
  int image = 0;
  for (const json& c : cases)
    if (one_device_step(c) && model_of(c) == model) image = std::max(image, image_of(c));
  return image;
}

// The model closest to an image classifier: the most FLOPs per sample among those measured.
std::string heaviest_model(const json& cases) {
  auto per_sample = [](const json& c) {
    return num(c, "flops") / (num(c, "samples_per_s") * c["time"]["median_s"].get<double>());
  };
  std::string model;
  double heaviest = 0;
  for (const json& c : cases)
    if (one_device_step(c) && per_sample(c) > heaviest)
      heaviest = per_sample(c), model = model_of(c);
  return model;
}

// One model's training steps: per device the best samples/s at each batch, the best batch, and
// the smallest batch at which the GPU's step overtakes the CPU's (or that it was ahead at the
// smallest batch both ran).
json batch_series(const json& cases, const std::string& model) {
  const int image = largest_image(cases, model);
  std::map<std::string, std::map<std::int64_t, const json*>> best;  // device -> batch -> case
  for (const json& c : cases) {
    if (!one_device_step(c) || !c["shape"].contains("batch") || model_of(c) != model ||
        image_of(c) != image)
      continue;
    const std::int64_t b = std::stoll(c["shape"]["batch"].get<std::string>());
    const json*& slot = best[c["device"].get<std::string>()][b];
    if (!slot || num(c, "samples_per_s") > num(*slot, "samples_per_s")) slot = &c;
  }
  json out = {
      {"devices", json::object()}, {"best_batch", json::object()}, {"crossover_batch", nullptr}};
  for (const auto& [device, by_batch] : best) {
    json series = json::array();
    std::int64_t best_b = 0;
    double best_s = 0;
    for (const auto& [b, c] : by_batch) {
      series.push_back({{"batch", b},
                        {"samples_per_s", num(*c, "samples_per_s")},
                        {"impl", (*c)["impl"]},
                        {"dtype", c->value("dtype", "fp32")},
                        {"model", model_of(*c)}});
      if (image > 0) series.back()["image"] = image;
      if (num(*c, "samples_per_s") > best_s) best_s = num(*c, "samples_per_s"), best_b = b;
    }
    out["devices"][device] = series;
    out["best_batch"][device] = best_b;
  }
  // The crossover is where the GPU goes ahead after it was behind: ahead at the smallest batch
  // both ran, it overtook the CPU below the batches measured, which the series says instead.
  if (best.count("cpu") && best.count("gpu")) {
    bool behind = false, compared = false;
    for (const auto& [b, g] : best["gpu"]) {
      const auto c = best["cpu"].find(b);
      if (c == best["cpu"].end()) continue;
      const bool ahead = num(*g, "samples_per_s") > num(*c->second, "samples_per_s");
      if (ahead && !compared) out["gpu_ahead_at_smallest_batch"] = true;
      compared = true;
      if (ahead && behind) {
        out["crossover_batch"] = b;
        break;
      }
      behind = behind || !ahead;
    }
  }
  return out;
}

}  // namespace

json batch_size(const json& cases) {
  // Models never mix in a series: the heaviest model's at the top (the projection's), and
  // every model's under `models`.
  const std::string heaviest = heaviest_model(cases);
  json out = batch_series(cases, heaviest);
  out["model"] = heaviest.empty() ? json(nullptr) : json(heaviest);
  out["models"] = json::object();
  for (const json& c : cases)
    if (one_device_step(c) && !out["models"].contains(model_of(c)))
      out["models"][model_of(c)] = batch_series(cases, model_of(c));
  return out;
}

namespace {
// A device's projection gains the energy of an epoch and of the whole training (the case's
// joules per sample times the images), and with a price for the device its dollars; where the
// case has no energy, the reason.
void add_energy_and_cost(json& d, const json& c, const json& context, int epochs) {
  const json e = c.value("energy", json::object());
  if (e.value("status", "") == "ok" && e.contains("joules_per_sample")) {
    const double kwh = num(e, "joules_per_sample") * kImagenetImages / 3.6e6;
    d["mean_power_w"] = e["mean_power_w"];
    d["epoch_kwh"] = kwh;
    d["training_kwh"] = kwh * epochs;
    d["epoch_above_idle_kwh"] = num(e, "above_idle_joules_per_sample") * kImagenetImages / 3.6e6;
  } else {
    d["energy"] = {{"status", "unavailable"},
                   {"reason", e.value("reason", "the case was not metered")}};
  }
  const json prices = context.value("price_usd_per_hour", json::object());
  const std::string device = c["device"];
  if (prices.contains(device)) {
    const double usd = prices[device];
    d["usd_per_hour"] = usd;
    d["epoch_usd"] = usd * d["epoch_h"].get<double>();
    d["training_usd"] = usd * d["training_h"].get<double>();
  }
}
}  // namespace

json projection(const json& cases, const json& context) {
  const std::string model = heaviest_model(cases);
  const int epochs = context.value("epochs", 90);
  const int image = largest_image(cases, model);
  json devices = json::object(), end_to_end = json::object();
  for (const json& c : cases) {
    if (!one_device_step(c) || model_of(c) != model || image_of(c) != image) continue;
    const std::string device = c["device"], impl = c["impl"];
    const bool h2d = impl.size() > 4 && impl.compare(impl.size() - 4, 4, "_h2d") == 0;
    json& best = h2d ? end_to_end : devices;
    const double sps = num(c, "samples_per_s");
    if (best.contains(device) && best[device]["samples_per_s"].get<double>() >= sps) continue;
    const double epoch_s = kImagenetImages / sps;
    best[device] = {{"model", model_of(c)},
                    {"impl", impl},
                    {"dtype", c.value("dtype", "fp32")},
                    {"batch", std::stoll(c["shape"]["batch"].get<std::string>())},
                    {"samples_per_s", sps},
                    {"epoch_s", epoch_s},
                    {"epoch_h", epoch_s / 3600.0},
                    {"training_h", epochs * epoch_s / 3600.0}};
    if (image > 0) best[device]["image"] = image;
    const json throttled =
        device == "cpu" ? host_throttled(c["op"], context.value("machine_probes", json::array()),
                                         "this epoch was measured on a slowed host")
                        : json(nullptr);
    if (!throttled.is_null()) best[device]["host_throttled"] = throttled;
    add_energy_and_cost(best[device], c, context, epochs);
  }
  for (const auto& [device, e] : end_to_end.items())
    if (devices.contains(device)) devices[device]["end_to_end"] = e;
  std::string note =
      "an epoch and a whole training (" + std::to_string(epochs) +
      " epochs) at the training step's measured throughput, on the model it was measured on";
  if (model == "resnet50" && image > 0 && image != 224)
    note += ", ResNet-50 v1.5, the claim's model, but on " + std::to_string(image) + "x" +
            std::to_string(image) +
            " images, not ImageNet's 224x224: an epoch of these is not the claim's epoch, and "
            "nothing is scaled to it (the standard suite runs 224x224)";
  else if (model == "resnet50")
    note += ", ResNet-50 v1.5, the claim's model; nothing is scaled";
  else if (model.empty() && std::any_of(cases.begin(), cases.end(), [](const json& c) {
             return ok(c) && has_role(c, {"training"});
           }))
    note +=
        ": none, for no training step ran on one device (this run's ran over several "
        "ranks: the scaling analysis projects them to cluster sizes)";
  else
    note += " (" + (model.empty() ? std::string("none") : model) +
            "), which is not the claim's model: ResNet-50 did not run, and no figure is scaled to "
            "it";
  json out = {{"images", kImagenetImages},
              {"dataset", "ImageNet-1k, one epoch"},
              {"epochs", epochs},
              {"devices", devices}};
  // The claim's other half: is the GPU cheaper per unit of work (and in energy)?
  if (devices.contains("cpu") && devices.contains("gpu")) {
    const json &cpu = devices["cpu"], &gpu = devices["gpu"];
    if (cpu.contains("epoch_usd") && gpu.contains("epoch_usd") && gpu["epoch_usd"] > 0)
      out["cost_cpu_over_gpu"] = cpu["epoch_usd"].get<double>() / gpu["epoch_usd"].get<double>();
    if (cpu.contains("epoch_kwh") && gpu.contains("epoch_kwh") && gpu["epoch_kwh"] > 0)
      out["energy_cpu_over_gpu"] = cpu["epoch_kwh"].get<double>() / gpu["epoch_kwh"].get<double>();
  }
  out.update(
      json{{"claim",
            "about a week on a CPU and 5-10 hours on a GPU to train an image classifier on 1 "
            "million images (the seed documents)"},
           {"note", note}});
  return out;
}

json collectives(const json& cases) {
  json out = json::array();
  std::map<std::string, std::size_t> series;  // device/impl/coll/dtype/ranks -> index in out
  for (const json& c : cases) {
    if (!ok(c) || c.value("role", "") != "collective") continue;
    const json& sh = c["shape"];
    const std::string coll = sh.value("coll", ""), ranks = sh.value("ranks", "1");
    const std::string key = c["device"].get<std::string>() + "/" + c["impl"].get<std::string>() +
                            "/" + coll + "/" + c["dtype"].get<std::string>() + "/" + ranks;
    if (!series.count(key)) {
      series[key] = out.size();
      out.push_back({{"device", c["device"]},
                     {"impl", c["impl"]},
                     {"coll", coll},
                     {"dtype", c["dtype"]},
                     {"ranks", std::stoi(ranks)},
                     {"points", json::array()}});
    }
    const int n = std::stoi(ranks);
    const double factor = coll == "allreduce"   ? 2.0 * (n - 1) / n
                          : coll == "broadcast" ? 1.0
                                                : static_cast<double>(n - 1) / n;
    const double algbw = num(c, "gbs");
    out[series[key]]["points"].push_back({{"bytes", std::stoll(sh.value("bytes", "0"))},
                                          {"time_s", c["time"]["median_s"]},
                                          {"algbw_gbs", algbw},
                                          {"busbw_gbs", algbw * factor}});
  }
  for (json& s : out)
    std::sort(s["points"].begin(), s["points"].end(),
              [](const json& a, const json& b) { return a["bytes"] < b["bytes"]; });
  return out;
}

namespace {

// The all-reduce's time for `bytes` over n ranks at bus bandwidth busbw (GB/s): a ring's
// 2(n-1)/n x bytes / busbw (its latency is in the busbw measured at that size).
double ring_allreduce_s(double bytes, int n, double busbw_gbs) {
  return 2.0 * (n - 1) / n * bytes / (busbw_gbs * 1e9);
}

// This run's fp32 all-reduce on `device` over n ranks at the size nearest `bytes` (in ratio):
// its busbw and size; null where none ran.
json measured_busbw(const json& colls, const std::string& device, int n, double bytes) {
  json best = nullptr;
  double nearest = 1e300;
  for (const json& sr : colls) {
    if (sr["device"] != device || sr["coll"] != "allreduce" || sr["dtype"] != "fp32" ||
        sr["ranks"] != n)
      continue;
    for (const json& p : sr["points"]) {
      const double d = std::fabs(std::log(num(p, "bytes") / bytes));
      if (d < nearest) nearest = d, best = {{"busbw_gbs", p["busbw_gbs"]}, {"bytes", p["bytes"]}};
    }
  }
  return best;
}

// Where a name's grads=local twin is: the same case without the all-reduce (the overlapped
// step's twin is its backend's).
std::string local_twin(const json& c) {
  std::string impl = c["impl"];
  if (const std::size_t o = impl.find("_overlap"); o != std::string::npos) impl.erase(o);
  json sh = c["shape"];
  sh.erase("grads");
  return impl + "|" + sh.dump() + "|" + std::to_string(c.value("threads", 0));
}

// Epoch time and efficiency on each cluster size from one device's step time t_local (s) at
// per-rank `batch`, with `bytes` of gradients all-reduced at busbw.
json cluster_sizes(double t_local, double batch, double bytes, double busbw_gbs, int epochs) {
  json out = json::array();
  for (int n = 1; n <= 1024; n *= 2) {
    const double t = t_local + (n > 1 ? ring_allreduce_s(bytes, n, busbw_gbs) : 0.0);
    const double sps = n * batch / t, epoch_s = kImagenetImages / sps;
    out.push_back({{"ranks", n},
                   {"step_s", t},
                   {"samples_per_s", sps},
                   {"efficiency", t_local / t},
                   {"epoch_h", epoch_s / 3600.0},
                   {"training_h", epochs * epoch_s / 3600.0}});
  }
  return out;
}

}  // namespace

json scaling(const json& cases, const json& context) {
  const json colls = collectives(cases);
  const json given = context.value("cluster_busbw_gbs", json::object());
  const int epochs = context.value("epochs", 90);
  std::map<std::string, const json*> local;
  for (const json& c : cases)
    if (ok(c) && has_role(c, {"training"}) && c["shape"].value("grads", "") == "local")
      local[local_twin(c)] = &c;
  json steps = json::array(), cluster = json::array();
  for (const json& c : cases) {
    const int n = ranks_of(c);
    if (!ok(c) || !has_role(c, {"training"}) || n < 2 || c["shape"].value("grads", "") == "local")
      continue;
    const std::string device = c["device"];
    const double t = c["time"]["median_s"], bytes = num(c, "gradient_bytes");
    const double batch = std::stod(c["shape"].value("batch", "1"));
    json e = {{"name", c["name"]},
              {"device", device},
              {"impl", c["impl"]},
              {"model", model_of(c)},
              {"dtype", c["dtype"]},
              {"ranks", n},
              {"batch", batch},
              {"global_batch", batch * n},
              {"step_s", t},
              {"samples_per_s", num(c, "samples_per_s")},
              {"gradient_bytes", bytes},
              {"overlapped", c["impl"].get<std::string>().find("_overlap") != std::string::npos}};
    if (c["shape"].contains("image"))
      e["image"] = std::stoi(c["shape"]["image"].get<std::string>());
    const auto twin = local.find(local_twin(c));
    json bw = measured_busbw(colls, device, n, bytes);
    if (!bw.is_null()) e["allreduce"] = bw;
    if (twin == local.end()) {
      e["reason"] = "no grads=local twin ran (the suites run one beside each step)";
      steps.push_back(e);
      continue;
    }
    const double t_local = (*twin->second)["time"]["median_s"];
    e["local_step_s"] = t_local;
    e["local_samples_per_s"] = num(*twin->second, "samples_per_s");
    e["efficiency"] = t_local / t;
    e["reduce_s"] = t - t_local;
    if (!bw.is_null()) {
      const double ar = ring_allreduce_s(bytes, n, num(bw, "busbw_gbs"));
      e["predicted_step_s"] = t_local + ar;
      e["predicted_overlapped_step_s"] = std::max(t_local, ar);
      e["measured_over_predicted"] = t / (e["overlapped"] ? std::max(t_local, ar) : t_local + ar);
    } else {
      e["prediction"] = "no fp32 all-reduce of this run to predict from (add --ops=collective)";
    }
    steps.push_back(e);
  }
  // The projection to cluster sizes: each device's single-device step (the projection's model
  // and best case; over several ranks, each measured grads=local step) with the given busbw, or
  // the run's own all-reduce's.
  auto project = [&](const json& c, const std::string& source_name) {
    const std::string device = c["device"];
    const double bytes = num(c, "gradient_bytes");
    double busbw = 0;
    std::string source;
    if (given.contains(device)) {
      busbw = given[device], source = "--busbw";
    } else {
      const json bw = measured_busbw(colls, device, std::max(2, ranks_of(c)), bytes);
      if (bw.is_null()) return;
      busbw = bw["busbw_gbs"], source = "this run's all-reduce of " +
                                        std::to_string(static_cast<long long>(num(bw, "bytes"))) +
                                        " bytes";
    }
    if (bytes <= 0 || busbw <= 0) return;
    const double batch = std::stod(c["shape"].value("batch", "1"));
    // One per device and model: its fastest single-device step.
    const double sps = batch / c["time"]["median_s"].get<double>();
    for (auto it = cluster.begin(); it != cluster.end(); ++it) {
      if ((*it)["device"] != device || (*it)["model"] != model_of(c)) continue;
      if (num((*it)["sizes"][0], "samples_per_s") >= sps) return;
      cluster.erase(it);
      break;
    }
    cluster.push_back(
        {{"device", device},
         {"from", source_name},
         {"model", model_of(c)},
         {"batch", batch},
         {"gradient_bytes", bytes},
         {"busbw_gbs", busbw},
         {"busbw_source", source},
         {"sizes", cluster_sizes(c["time"]["median_s"], batch, bytes, busbw, epochs)}});
  };
  const json pr = projection(cases, context);
  for (const auto& [device, d] : pr["devices"].items())
    for (const json& c : cases)
      if (one_device_step(c) && c["device"] == device && c["impl"] == d["impl"] &&
          c["dtype"] == d["dtype"] && model_of(c) == d["model"] &&
          std::stoll(c["shape"].value("batch", "0")) == d["batch"].get<std::int64_t>()) {
        project(c, c["name"]);
        break;
      }
  for (const auto& [key, c] : local) project(*c, (*c)["name"]);
  return {{"model",
           "t_step(N) = t_local + 2(N-1)/N x gradient_bytes / busbw: the step on one device "
           "plus a ring all-reduce of its gradients, not overlapped (overlapped, at best "
           "max(t_local, the all-reduce)); busbw taken as the same at every N"},
          {"steps", steps},
          {"cluster", cluster}};
}

json energy(const json& cases, const json& context) {
  json out = {{"devices", json::object()}};
  const json meters = context.value("energy", json::object());
  for (const char* device : {"cpu", "gpu"}) {
    if (!meters.contains(device)) continue;
    json d = meters[device];
    std::vector<double> power;
    json throttled = json::array(), missing = json::object();
    for (const json& c : cases) {
      if (!ok(c) || c["device"] != device || !c.contains("energy")) continue;
      const json& e = c["energy"];
      if (e.value("status", "") != "ok") {
        missing[e.value("reason", "")] = missing.value(e.value("reason", ""), 0) + 1;
        continue;
      }
      power.push_back(num(e, "mean_power_w"));
      if (e.value("throttled", false))
        throttled.push_back(
            {{"name", c["name"]},
             {"clock_event_reasons", e.value("clock_event_reasons", json::array())},
             {"held_below_clocks_s", e.value("held_below_clocks_s", json::object())},
             {"region_s", e["region_s"]}});
    }
    d["cases_metered"] = power.size();
    if (!missing.empty()) d["cases_unmetered"] = missing;  // by reason
    if (!power.empty()) {
      std::sort(power.begin(), power.end());
      d["power_w"] = {
          {"min", power.front()}, {"median", power[power.size() / 2]}, {"max", power.back()}};
    }
    if (std::string(device) == "gpu" && !power.empty()) d["throttled_cases"] = throttled;
    out["devices"][device] = d;
  }
  // The CPU's clock under load before each op family, where the cycle counter can be read.
  json clocks = json::array();
  std::string why;
  for (const json& p : context.value("machine_probes", json::array())) {
    if (p.contains("effective_ghz"))
      clocks.push_back({{"when", p["when"]}, {"effective_ghz", p["effective_ghz"]}});
    else if (p.contains("effective_ghz_unavailable"))
      why = p["effective_ghz_unavailable"];
  }
  if (!clocks.empty())
    out["cpu_effective_clock"] = clocks;
  else if (!why.empty())
    out["cpu_effective_clock"] = {{"status", "unavailable"}, {"reason", why}};
  return out;
}

json roofline(const json& cases, const json& context) {
  json out = json::object();
  const json ceilings = context.value("ceilings", json::object());
  for (const char* device : {"cpu", "gpu"}) {
    const bool gpu = std::string(device) == "gpu";
    const json dev = ceilings.value(device, json::object());
    // The ceilings come from context.ceilings: the probes made for them (bench/ceilings.hpp),
    // never a suite case; the peak where a probe did not run; for a report without them, the
    // context's fp32 and bandwidth peaks.
    auto ceiling = [&](const std::string& key, const char* legacy_peak) {
      if (dev.contains(key)) {
        const double m = num(dev[key], "measured");
        return m > 0 ? m : num(dev[key], "peak");
      }
      return legacy_peak ? num(context, legacy_peak) : 0.0;
    };
    const double ceil_b =
        ceiling("memory", gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs");
    auto ceil_f = [&](const std::string& dtype) {
      return ceiling(dtype, dtype == "fp32"
                                ? (gpu ? "gpu_peak_fp32_gflops" : "cpu_peak_fp32_gflops")
                                : nullptr);
    };
    auto ridge = [&](double f) { return f > 0 && ceil_b > 0 ? json(f / ceil_b) : json(nullptr); };
    json points = json::array();
    std::set<std::string> dtypes;
    for (const json& c : cases) {
      if (!ok(c) || c["device"] != device || num(c, "flops") <= 0) continue;
      const std::string dtype = c["dtype"];
      dtypes.insert(dtype);
      const double f = ceil_f(dtype);
      const double intensity = num(c, "flops") / num(c, "min_bytes");
      const json r = ridge(f);
      // Over several ranks, one rank's share: what one device is held to (as checked_cases).
      const int ranks = ranks_of(c);
      const double gflops = num(c, "gflops") / ranks;
      json p = {{"name", c["name"]},
                {"dtype", dtype},
                {"intensity", intensity},
                {"gflops", gflops},
                {"ceiling_gflops", f > 0 ? json(f) : json(nullptr)}};
      if (ranks > 1) p["ranks"] = ranks;
      p["memory_bound"] = r.is_null() ? json(nullptr) : json(intensity < r.get<double>());
      // A working set inside the last-level cache is not held to the memory's roof.
      const bool resident = c.value("cache_resident", false);
      if (resident) p["cache_resident"] = true;
      if (c.value("latency_bound", false)) p["latency_bound"] = true;
      if (f > 0) {
        const double attainable = resident || ceil_b <= 0 ? f : std::min(f, intensity * ceil_b);
        const double pct = 100.0 * gflops / attainable;
        p["pct_of_attainable"] = std::min(pct, 100.0);
        // A case faster than the probe made for its ceiling (the machine was slower while
        // the probe ran): at the ceiling, and by how much it beat it.
        if (pct > 100) p["beat_measured_ceiling_by"] = pct / 100 - 1;
      }
      points.push_back(p);
    }
    if (points.empty()) continue;
    json by_dtype = json::object(), peaks = json::object();
    for (const std::string& t : dtypes) {
      by_dtype[t] = dev.contains(t) ? dev[t]["measured"] : json(nullptr);
      peaks[t] = dev.contains(t) ? dev[t]["peak"] : json(nullptr);
    }
    const char* peak_f_key = gpu ? "gpu_peak_fp32_gflops" : "cpu_peak_fp32_gflops";
    const char* peak_b_key = gpu ? "gpu_peak_bandwidth_gbs" : "cpu_peak_bandwidth_gbs";
    out[device] = {
        {"measured_gflops", ceil_f("fp32") > 0 ? json(ceil_f("fp32")) : json(nullptr)},
        {"measured_gflops_by_dtype", by_dtype},
        {"measured_gbs", ceil_b > 0 ? json(ceil_b) : json(nullptr)},
        {"theoretical_gflops",
         dev.contains("fp32") ? dev["fp32"]["peak"] : peak_or_null(context, peak_f_key)},
        {"theoretical_gflops_by_dtype", peaks},
        {"theoretical_gbs",
         dev.contains("memory") ? dev["memory"]["peak"] : peak_or_null(context, peak_b_key)},
        {"ridge_intensity", ridge(ceil_f("fp32"))},
        {"ceilings_from", dev.empty() ? "the context's peaks (this report has no ceilings)"
                                      : "context.ceilings: probes made for them, never a suite "
                                        "case; the peak where a probe did not run"},
        {"points", points}};
  }
  return out;
}

}  // namespace pb::report
