#include "reports/report.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace pb::report {

std::string case_of_entry(const json& benchmark) {
  std::string run = benchmark.value("run_name", "");
  if (run.size() > 12 && run.compare(run.size() - 12, 12, "/manual_time") == 0)
    run.resize(run.size() - 12);
  return run;
}

json machine_drift(const json& probes) {
  json d = {{"threshold", kDriftThreshold}, {"probes", probes.size()}, {"changed", false}};
  for (const char* metric : {"copy_gbs", "compute_gflops"}) {
    double lo = probes.empty() ? 0.0 : 1e300, hi = 0;
    for (const json& p : probes) {
      lo = std::min(lo, p.value(metric, 0.0));
      hi = std::max(hi, p.value(metric, 0.0));
    }
    const double spread = hi > 0 ? 1.0 - lo / hi : 0.0;
    d[metric] = {{"min", lo}, {"max", hi}, {"spread", spread}};
    if (probes.size() >= 2 && spread > kDriftThreshold) d["changed"] = true;
  }
  return d;
}

std::string drift_warning(const json& drift) {
  if (!drift.value("changed", false)) return "";
  char buf[320];
  const json &c = drift["copy_gbs"], &f = drift["compute_gflops"];
  std::snprintf(buf, sizeof buf,
                "warning: the machine changed speed during the run: STREAM copy %.1f-%.1f GB/s, "
                "compute %.0f-%.0f GFLOP/s over %d probes (more than %.0f%% apart); its times "
                "move with it (context.machine_drift)",
                c["min"].get<double>(), c["max"].get<double>(), f["min"].get<double>(),
                f["max"].get<double>(), drift["probes"].get<int>(), 100 * kDriftThreshold);
  return buf;
}

json build(const json& context, const json& benchmarks, const json& measured, const json& probes) {
  json doc;
  doc["context"] = context;
  doc["context"]["noisy_cv_threshold"] = kNoisyCv;
  if (!probes.empty()) {
    doc["context"]["machine_probes"] = probes;
    doc["context"]["machine_drift"] = machine_drift(probes);
    widen_cpu_memory_bound(doc["context"]);
  }
  const json cases = checked_cases(measured, doc["context"]);
  // A case that is not ok (an error, an impossible figure) has no time for CI tools to read:
  // not the repetitions it timed before it failed, nor their aggregates (what
  // --keep-error-entries keeps are the entries Google Benchmark marked error_occurred, with no
  // time). An entry whose case has no record (a run cut short between the two) has nothing
  // that says what it measured.
  std::set<std::string> ok, recorded;
  for (const json& c : cases) {
    recorded.insert(c["name"].get<std::string>());
    if (c["status"] == "ok") ok.insert(c["name"].get<std::string>());
  }
  doc["benchmarks"] = json::array();
  for (const json& b : benchmarks) {
    const std::string run = case_of_entry(b);
    if (recorded.count(run) && (ok.count(run) || b.value("error_occurred", false)))
      doc["benchmarks"].push_back(b);
  }
  doc["pairbench"] = {{"schema_version", kSchemaVersion},
                      {"cases", cases},
                      {"analyses",
                       {{"speedup", speedup(cases, probes)},
                        {"memory_bandwidth", memory_bandwidth(cases, doc["context"])},
                        {"parallelism", parallelism(cases)},
                        {"batch", batch(cases)},
                        {"batch_size", batch_size(cases)},
                        {"projection", projection(cases, doc["context"])},
                        {"energy", energy(cases, doc["context"])},
                        {"collectives", collectives(cases)},
                        {"scaling", scaling(cases, doc["context"])},
                        {"roofline", roofline(cases, context)}}}};
  return doc;
}

namespace {
std::string fmt_time(double s) {
  char buf[32];
  if (s >= 1)
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  else if (s >= 1e-3)
    std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f us", s * 1e6);
  return buf;
}

// An epoch's time in the unit that keeps it readable: 2.82 h, 6.1 min, 14.2 s.
std::string fmt_duration(double s) {
  char buf[32];
  if (s >= 3600e5)  // a hundred thousand hours and up: its size, not its digits
    std::snprintf(buf, sizeof buf, "%.3g h", s / 3600);
  else if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%.2f h", s / 3600);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
  else
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

// A side of a speedup row: "onednn fp32 1.23 ms (456.7 GFLOP/s)"; a training step's
// samples/s before its GFLOP/s.
std::string describe(const json& s) {
  if (s.is_null()) return "-";
  char buf[160];
  const double gflops = s["gflops"], gbs = s.value("gbs", 0.0);
  const bool bytes = s.value("metric", "GFLOP/s") == "GB/s";
  char samples[48] = "";
  if (s.contains("samples_per_s")) {
    const double sps = s["samples_per_s"];
    std::snprintf(samples, sizeof samples, sps < 100 ? "%.1f samples/s, " : "%.0f samples/s, ",
                  sps);
  }
  std::snprintf(buf, sizeof buf, "%s %s %s (%s%.1f %s)", s["impl"].get<std::string>().c_str(),
                s["dtype"].get<std::string>().c_str(), fmt_time(s["time_s"]).c_str(), samples,
                bytes ? gbs : gflops, bytes ? "GB/s" : "GFLOP/s");
  return buf;
}
}  // namespace

std::string summary(const json& report) {
  const json& rows = report["pairbench"]["analyses"]["speedup"];
  std::ostringstream os;
  os << "Summary: best CPU and best GPU per op and shape, whatever their dtype (median time per "
        "iteration)\n";
  // A reason every row shares (typically "no GPU: ...") is said once, above the table.
  std::string shared;
  for (const json& r : rows) {
    const std::string why = r.value("gpu_missing", "");
    if (why.empty() || (!shared.empty() && why != shared)) {
      shared.clear();
      break;
    }
    shared = why;
  }
  if (!shared.empty()) os << "No GPU numbers: " << shared << "\n";
  char buf[1024];
  // A row whose figures mean less than they seem (checked_cases's labels, a throttled host) is
  // shown apart, below the others, with why.
  auto why_apart = [](const json& r) {
    std::string why;
    for (const json& l : r.value("apart", json::array()))
      why += (why.empty() ? "" : ", ") +
             std::string(l == "latency_bound" ? "latency-bound" : "cache-resident");
    if (r.contains("host_throttled"))
      why += (why.empty() ? "" : ", ") + r["host_throttled"]["note"].get<std::string>();
    return why;
  };
  std::string table, apart;
  // Problems that ran on neither device: one line per op and reason, not a row of dashes each.
  struct NotRun {
    std::string op, why;
    int shapes;
  };
  std::vector<NotRun> not_run;
  for (const json& r : rows) {
    if (r["cpu"].is_null() && r["gpu"].is_null()) {
      const std::string op = r["op"], on_cpu = r.value("cpu_missing", "its cases did not run"),
                        on_gpu = r.value("gpu_missing", "");
      const std::string why =
          on_gpu == on_cpu || on_gpu.rfind("no GPU", 0) == 0 ? on_cpu : on_cpu + "; GPU: " + on_gpu;
      const auto seen = std::find_if(not_run.begin(), not_run.end(),
                                     [&](const NotRun& n) { return n.op == op && n.why == why; });
      if (seen == not_run.end())
        not_run.push_back({op, why, 1});
      else
        ++seen->shapes;
      continue;
    }
    std::string speed;
    if (r.contains("speedup")) {
      char s[96];
      std::snprintf(s, sizeof s, "%.1fx (%.1fx with transfers)", r["speedup"].get<double>(),
                    r["speedup_with_transfer"].get<double>());
      speed = s;
    } else if (r["gpu"].is_null()) {
      speed = shared.empty() ? r["gpu_missing"].get<std::string>() : "-";
    } else {
      speed = "no CPU case ran: " + r.value("cpu_missing", std::string("-"));
    }
    const std::string what = r["op"].get<std::string>() + " " + r["shape"].get<std::string>();
    std::snprintf(buf, sizeof buf, "%-44s %-40s %-40s %s\n", what.c_str(),
                  describe(r["cpu"]).c_str(), describe(r["gpu"]).c_str(), speed.c_str());
    const std::string why = why_apart(r);
    if (why.empty())
      table += buf;
    else
      apart += std::string(buf, std::strlen(buf) - 1) + "  [" + why + "]\n";
  }
  if (!table.empty() || !apart.empty()) {
    std::snprintf(buf, sizeof buf, "%-44s %-40s %-40s %s\n", "op / shape", "best CPU", "best GPU",
                  "GPU speedup");
    os << buf << table;
  }
  if (!apart.empty())
    os << "Apart: figures that mean less than they seem (latency-bound: under "
       << static_cast<int>(kLatencyBoundS * 1e6)
       << " us, launch or fork-join latency as much as work; cache-resident: work read in GB/s "
          "whose working set fits the last-level cache; a throttled host):\n"
       << apart;
  if (!not_run.empty()) {
    os << "Not run on either device:\n";
    for (const NotRun& n : not_run)
      os << "  " << n.op << ", " << n.shapes << (n.shapes == 1 ? " shape: " : " shapes: ") << n.why
         << "\n";
  }
  // Like precision against like: the speedup per dtype where both devices ran it.
  std::string like;
  for (const json& r : rows) {
    std::string line;
    for (const auto& [key, label] : {std::pair<const char*, const char*>{"speedup_fp32", "fp32"},
                                     {"speedup_bf16", "bf16"},
                                     {"speedup_fp16", "fp16"},
                                     {"speedup_gpu_tf32_vs_cpu_fp32", "GPU tf32 vs CPU fp32"}}) {
      if (!r.contains(key)) continue;
      std::snprintf(buf, sizeof buf, "%s%s %.1fx", line.empty() ? "" : ", ", label,
                    r[key].get<double>());
      line += buf;
    }
    for (const json& same : r.value("same_algorithm", json::array())) {
      std::snprintf(buf, sizeof buf, "%s%s %s vs %s %.1fx", line.empty() ? "" : ", ",
                    same["dtype"].get<std::string>().c_str(),
                    same["impl"].get<std::string>().c_str(),
                    same["impl"].get<std::string>().c_str(), same["speedup"].get<double>());
      line += buf;
    }
    if (line.empty()) continue;
    const std::string why = why_apart(r);
    std::snprintf(buf, sizeof buf, "%-44s %s%s\n",
                  (r["op"].get<std::string>() + " " + r["shape"].get<std::string>()).c_str(),
                  line.c_str(), why.empty() ? "" : ("  [" + why + "]").c_str());
    like += buf;
  }
  if (!like.empty())
    os << "\nGPU speedup at like precision (best of each device in that dtype; then the same "
          "algorithm on both, by implementation name):\n"
       << like;
  const json& an = report["pairbench"]["analyses"];
  if (an.contains("memory_bandwidth")) {
    for (const char* device : {"cpu", "gpu"}) {
      if (!an["memory_bandwidth"].contains(device)) continue;
      const json& d = an["memory_bandwidth"][device];
      os << "\nMemory bandwidth, " << device << " (STREAM, best of each kernel):";
      for (const json& k : d["stream"]) {
        std::snprintf(buf, sizeof buf, " %s %.1f GB/s", k["kernel"].get<std::string>().c_str(),
                      k["gbs"].get<double>());
        os << buf;
      }
      if (d["theoretical_gbs"].is_number()) {
        std::snprintf(buf, sizeof buf, "; theoretical peak %.0f GB/s",
                      d["theoretical_gbs"].get<double>());
        os << buf;
      }
      os << "\n";
    }
    for (const json& t : an["memory_bandwidth"].value("transfer", json::array())) {
      std::snprintf(buf, sizeof buf,
                    "Copies %s (%s memory): peak %.1f GB/s; %.0f bytes take %.1f us\n",
                    t["dir"].get<std::string>().c_str(), t["host"].get<std::string>().c_str(),
                    t["peak_gbs"].get<double>(), t["latency_bytes"].get<double>(),
                    1e6 * t["latency_s"].get<double>());
      os << buf;
    }
  }
  // Sweeps: parallel units with their efficiency; batch sizes with samples/s.
  for (const char* kind : {"parallelism", "batch"}) {
    if (!an.contains(kind)) continue;
    const bool units = std::string(kind) == "parallelism";
    for (const char* device : {"cpu", "gpu"}) {
      for (const json& sw : an[kind][device]) {
        os << (units ? "Parallelism, " : "Batch, ") << sw["op"].get<std::string>() << "/" << device
           << "/" << sw["impl"].get<std::string>() << " " << sw["shape"].get<std::string>() << ":";
        for (const json& p : sw["points"]) {
          const std::string unit = sw["unit"];
          std::snprintf(buf, sizeof buf, " %d %s %.1f %s", p[unit].get<int>(), unit.c_str(),
                        p["throughput"].get<double>(), sw["metric"].get<std::string>().c_str());
          os << buf;
          if (units)
            std::snprintf(buf, sizeof buf, " (x%.2f, %.0f%%)", p["speedup"].get<double>(),
                          100.0 * p["efficiency"].get<double>());
          else if (sw["metric"] != "samples/s")
            std::snprintf(buf, sizeof buf, " %.0f samples/s (x%.2f)", p.value("samples_per_s", 0.0),
                          p["speedup"].get<double>());
          else
            std::snprintf(buf, sizeof buf, " (x%.2f)", p["speedup"].get<double>());
          os << buf << (&p == &sw["points"].back() ? "" : ";");
        }
        os << "\n";
      }
    }
  }
  // The epoch projection, from the training steps' best throughput per device.
  if (an.contains("projection") && !an["projection"]["devices"].empty()) {
    const json& pr = an["projection"];
    os << "\nProjection: one epoch of ImageNet-1k (" << static_cast<long long>(kImagenetImages)
       << " images) and " << pr.value("epochs", 90)
       << " epochs at the best training throughput measured:";
    for (const auto& [device, d] : pr["devices"].items()) {
      std::snprintf(
          buf, sizeof buf, " %s %s, %d epochs %s (%s, %s %s, batch %lld%s, %.0f samples/s);",
          device.c_str(), fmt_duration(3600 * d["epoch_h"].get<double>()).c_str(),
          pr.value("epochs", 90), fmt_duration(3600 * d.value("training_h", 0.0)).c_str(),
          d["model"].get<std::string>().c_str(), d["impl"].get<std::string>().c_str(),
          d.value("dtype", "fp32").c_str(), static_cast<long long>(d["batch"].get<std::int64_t>()),
          d.contains("image") ? (", " + std::to_string(d["image"].get<int>()) + "x" +
                                 std::to_string(d["image"].get<int>()) + " images")
                                    .c_str()
                              : "",
          d["samples_per_s"].get<double>());
      os << buf;
      if (d.contains("host_throttled"))
        os << " [" << d["host_throttled"]["note"].get<std::string>() << "];";
      if (d.contains("end_to_end")) {
        const json& e = d["end_to_end"];
        std::snprintf(buf, sizeof buf, " end to end, the batch copied from host memory: %s (%s);",
                      fmt_duration(3600 * e["epoch_h"].get<double>()).c_str(),
                      e["impl"].get<std::string>().c_str());
        os << buf;
      }
    }
    os << "\n  the claim: " << pr["claim"].get<std::string>() << "; "
       << pr["note"].get<std::string>() << "\n";
    // Energy and cost of the same epoch and training, where metered and priced.
    for (const auto& [device, d] : pr["devices"].items()) {
      os << "  " << device << ": ";
      if (d.contains("epoch_kwh"))
        std::snprintf(buf, sizeof buf, "%.3g kWh an epoch, %.3g kWh the training (%.0f W)",
                      d["epoch_kwh"].get<double>(), d["training_kwh"].get<double>(),
                      d["mean_power_w"].get<double>());
      else
        std::snprintf(buf, sizeof buf, "energy unavailable (%s)",
                      d["energy"].value("reason", "").c_str());
      os << buf;
      if (d.contains("epoch_usd")) {
        std::snprintf(buf, sizeof buf, "; $%.2f an epoch, $%.2f the training at $%.2f/h",
                      d["epoch_usd"].get<double>(), d["training_usd"].get<double>(),
                      d["usd_per_hour"].get<double>());
        os << buf;
      }
      os << "\n";
    }
    if (pr.contains("cost_cpu_over_gpu"))
      std::snprintf(buf, sizeof buf, "  an epoch costs %.2fx as much on the CPU as on the GPU\n",
                    pr["cost_cpu_over_gpu"].get<double>()),
          os << buf;
    if (pr.contains("energy_cpu_over_gpu"))
      std::snprintf(buf, sizeof buf,
                    "  an epoch takes %.2fx the energy on the CPU (the CPU's package and "
                    "DRAM against the GPU's board alone, not its host)\n",
                    pr["energy_cpu_over_gpu"].get<double>()),
          os << buf;
  }
  // The collectives' bus bandwidth by size, as nccl-tests prints it.
  if (an.contains("collectives"))
    for (const json& sr : an["collectives"]) {
      os << "Collective, " << sr["device"].get<std::string>() << " "
         << sr["impl"].get<std::string>() << " " << sr["coll"].get<std::string>() << " "
         << sr["dtype"].get<std::string>() << ", " << sr["ranks"].get<int>() << " ranks (busbw):";
      for (const json& p : sr["points"]) {
        std::snprintf(buf, sizeof buf, " %lld B %.2f GB/s;",
                      static_cast<long long>(p["bytes"].get<std::int64_t>()),
                      p["busbw_gbs"].get<double>());
        os << buf;
      }
      os << "\n";
    }
  // Data parallelism: each step over several ranks against its local twin, and the cluster sizes.
  if (an.contains("scaling")) {
    for (const json& e : an["scaling"]["steps"]) {
      std::snprintf(buf, sizeof buf, "Scaling, %s %s %s %s, %d ranks x batch %.0f: %.0f samples/s",
                    e["device"].get<std::string>().c_str(), e["impl"].get<std::string>().c_str(),
                    e["model"].get<std::string>().c_str(), e["dtype"].get<std::string>().c_str(),
                    e["ranks"].get<int>(), e["batch"].get<double>(),
                    e["samples_per_s"].get<double>());
      os << buf;
      if (e.contains("efficiency"))
        std::snprintf(buf, sizeof buf,
                      ", %.0f%% of the same step without the all-reduce (%.0f samples/s; the "
                      "all-reduce adds %.2f ms)",
                      100 * e["efficiency"].get<double>(), e["local_samples_per_s"].get<double>(),
                      1e3 * e["reduce_s"].get<double>()),
            os << buf;
      if (e.contains("measured_over_predicted"))
        std::snprintf(buf, sizeof buf, "; measured %.2fx the ring model's %.2f ms",
                      e["measured_over_predicted"].get<double>(),
                      1e3 * (e["overlapped"].get<bool>() ? e["predicted_overlapped_step_s"]
                                                         : e["predicted_step_s"])
                                .get<double>()),
            os << buf;
      os << "\n";
    }
    for (const json& c : an["scaling"]["cluster"]) {
      os << "Cluster, " << c["device"].get<std::string>() << " " << c["model"].get<std::string>();
      std::snprintf(buf, sizeof buf, " (busbw %.3g GB/s, %s): epoch", c["busbw_gbs"].get<double>(),
                    c["busbw_source"].get<std::string>().c_str());
      os << buf;
      for (const json& z : c["sizes"]) {
        const int n = z["ranks"];
        if (n != 1 && n != 8 && n != 64 && n != 1024) continue;
        std::snprintf(buf, sizeof buf, " %d: %s (%.0f%%);", n,
                      fmt_duration(3600 * z["epoch_h"].get<double>()).c_str(),
                      100 * z["efficiency"].get<double>());
        os << buf;
      }
      os << "\n";
    }
  }
  // The meters, and when the GPU was throttled.
  if (an.contains("energy")) {
    for (const auto& [device, d] : an["energy"]["devices"].items()) {
      if (d.value("status", "") != "ok") {
        os << "Energy, " << device << ": unavailable (" << d.value("reason", "") << ")\n";
        continue;
      }
      std::snprintf(buf, sizeof buf, "Energy, %s: idle %.1f W; %d cases metered", device.c_str(),
                    d["idle_power_w"].get<double>(), d.value("cases_metered", 0));
      os << buf;
      if (d.contains("power_w"))
        std::snprintf(buf, sizeof buf, ", %.1f-%.1f W (median %.1f W)",
                      d["power_w"]["min"].get<double>(), d["power_w"]["max"].get<double>(),
                      d["power_w"]["median"].get<double>()),
            os << buf;
      os << "; " << d["source"].get<std::string>() << "\n";
      if (d.contains("throttled_cases") && !d["throttled_cases"].empty()) {
        std::map<std::string, int> why;
        for (const json& t : d["throttled_cases"])
          for (const json& r : t["clock_event_reasons"]) ++why[r.get<std::string>()];
        os << "  the GPU was throttled during " << d["throttled_cases"].size() << " case(s):";
        for (const auto& [r, n] : why) os << " " << r << " (" << n << ")";
        os << "; their records say how long\n";
      }
    }
  }
  return os.str();
}

void write_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    errno = 0;
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) {
      const int err = errno;
      f.close();
      std::remove(tmp.c_str());
      throw std::runtime_error("cannot write " + path + " (" +
                               (err ? std::strerror(err) : "the write failed") + ")");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write " + path +
                             " (renaming its temporary file: " + std::strerror(err) + ")");
  }
}

std::string log_path_for(const std::string& report_path) { return report_path + ".partial.jsonl"; }

Log::Log(const std::string& path) : path_(path) {
  if (path.empty()) return;
  out_.open(path, std::ios::trunc);
  if (!out_) throw std::runtime_error("cannot write " + path);
}

void Log::append(const char* kind, const json& value) {
  if (path_.empty()) return;
  out_ << json{{kind, value}}.dump() << '\n';
  out_.flush();
}

namespace {

// f()'s report; a record that lacks a field the analyses read, or has one of another type,
// is one line naming the file (nlohmann's message says which type it found).
template <class F>
json built_or_why(const std::string& path, F f) {
  try {
    return f();
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": a record lacks a field or has one of the wrong type (" +
                             e.what() + ")");
  } catch (const std::logic_error& e) {  // std::stod's, on a shape's value
    throw std::runtime_error(path + ": a record has a field that is not a number (" +
                             std::string(e.what()) + ")");
  }
}

// A whole report, rebuilt: its records and probes through this version's checks and analyses;
// its references (scripts/reference's PyTorch figures) and their entries kept as they were.
json rebuild(json doc, const std::string& path) {
  json context = doc["context"];
  for (const char* derived : {"machine_probes", "machine_drift", "noisy_cv_threshold"})
    context.erase(derived);
  context["rebuilt_from"] = path;
  json out = build(context, doc.value("benchmarks", json::array()), doc["pairbench"]["cases"],
                   doc["context"].value("machine_probes", json::array()));
  if (doc["pairbench"].contains("references")) {
    const json& refs = doc["pairbench"]["references"];
    out["pairbench"]["references"] = refs;
    std::set<std::string> names;
    for (const auto& [tool, ref] : refs.items())
      for (const json& c : ref.value("cases", json::array())) names.insert(c.value("name", ""));
    for (const json& b : doc.value("benchmarks", json::array()))
      if (names.count(case_of_entry(b))) out["benchmarks"].push_back(b);
  }
  return out;
}

// What a record must carry before the analyses read it, with the log's line in the message:
// a benchmark entry its names and non-negative times, a case its name, a known status, and an
// "ok" case a positive median time.
void check_record(const json& j, const std::string& where) {
  auto bad = [&](const std::string& what) { throw std::runtime_error(where + ": " + what); };
  auto text = [&](const json& r, const char* key) {
    if (!r.contains(key) || !r[key].is_string() || r[key].get<std::string>().empty())
      bad(std::string("the record has no '") + key + "' string");
  };
  if (j.contains("benchmark")) {
    const json& b = j["benchmark"];
    if (!b.is_object()) bad("the benchmark entry is not an object");
    text(b, "name");
    text(b, "run_name");
    for (const char* key : {"real_time", "cpu_time"})
      if (b.contains(key) && !(b[key].is_number() && b[key].get<double>() >= 0))
        bad(std::string("the benchmark entry's ") + key + " is not a number >= 0");
  } else if (j.contains("case")) {
    const json& c = j["case"];
    if (!c.is_object()) bad("the case record is not an object");
    text(c, "name");
    text(c, "status");
    const std::string status = c["status"];
    if (status != "ok" && status != "error" && status != "skipped")
      bad("case " + c["name"].get<std::string>() + " has status '" + status +
          "' (ok, error, skipped)");
    if (status == "ok" &&
        !(c.contains("time") && c["time"].is_object() && c["time"].contains("median_s") &&
          c["time"]["median_s"].is_number() && c["time"]["median_s"].get<double>() > 0))
      bad("case " + c["name"].get<std::string>() + " is ok but has no time.median_s above 0");
    for (const char* key : {"flops", "min_bytes", "gflops", "gbs", "threads"})
      if (c.contains(key) && !c[key].is_number())
        bad("case " + c["name"].get<std::string>() + "'s " + key + " is not a number");
  } else if (j.contains("context")) {
    if (!j["context"].is_object()) bad("the context is not an object");
  }
}

}  // namespace

json recover(const std::string& log_path) {
  struct stat st {};
  if (stat(log_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw std::runtime_error(log_path + " is a directory, not a log or a report");
  {
    std::ifstream whole(log_path);
    if (!whole) throw std::runtime_error("cannot read " + log_path);
    const json doc = json::parse(whole, nullptr, false);
    if (doc.is_object() && doc.contains("pairbench") && doc.contains("context") &&
        doc["pairbench"].contains("cases"))
      return built_or_why(log_path, [&] { return rebuild(doc, log_path); });
  }
  std::ifstream f(log_path);
  if (!f) throw std::runtime_error("cannot read " + log_path);
  json context, benchmarks = json::array(), cases = json::array(), probes = json::array();
  std::set<std::string> names;  // of the cases recorded
  bool have_context = false;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.size() != 1) {
      if (f.peek() == EOF) break;  // the write that was cut short
      throw std::runtime_error(log_path + ":" + std::to_string(lineno) +
                               ": not a pairbench log line");
    }
    const std::string where = log_path + ":" + std::to_string(lineno);
    check_record(j, where);
    if (j.contains("context")) {
      context = j["context"], have_context = true;
    } else if (j.contains("benchmark")) {
      benchmarks.push_back(j["benchmark"]);
    } else if (j.contains("case")) {
      if (!names.insert(j["case"]["name"].get<std::string>()).second)
        throw std::runtime_error(where + ": case " + j["case"]["name"].get<std::string>() +
                                 " is recorded twice");
      cases.push_back(j["case"]);
    } else if (j.contains("probe"))
      probes.push_back(j["probe"]);
    else
      throw std::runtime_error(log_path + ":" + std::to_string(lineno) + ": unknown entry");
  }
  if (!have_context) throw std::runtime_error(log_path + " is not a pairbench log (no context)");
  context["recovered_from"] = log_path;
  return built_or_why(log_path, [&] { return build(context, benchmarks, cases, probes); });
}

}  // namespace pb::report
