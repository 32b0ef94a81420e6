#include "reports/report.hpp"

#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>

namespace pb::report {

namespace {

// The shape without dtype and threads: what a CPU case and a GPU case have in common.
std::string problem_key(const json& c) {
  std::string key;
  for (const auto& [k, v] : c.at("shape").items()) {
    if (k == "dtype" || k == "threads") continue;
    if (!key.empty()) key += ',';
    key += k + '=' + v.get<std::string>();
  }
  return key;
}

json side(const json& c) {
  json s = {{"name", c["name"]},     {"impl", c["impl"]},
            {"dtype", c["dtype"]},   {"time_s", c["time"]["median_s"]},
            {"gflops", c["gflops"]}, {"transfer_s", c["transfer_s"]}};
  if (c["device"] == "cpu") s["threads"] = c["threads"];
  return s;
}

bool faster(const json& a, const json* best) {
  return best == nullptr ||
         a["time"]["median_s"].get<double>() < (*best)["time"]["median_s"].get<double>();
}

}  // namespace

json speedup(const json& cases) {
  struct Group {
    std::string op, shape;
    const json *cpu = nullptr, *gpu = nullptr, *cpu32 = nullptr, *gpu32 = nullptr;
    std::string gpu_missing;
  };
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (const json& c : cases) {
    const std::string op = c["op"], shape = problem_key(c), key = op + "/" + shape;
    if (!index.count(key)) {
      index[key] = groups.size();
      groups.push_back(Group{op, shape, nullptr, nullptr, nullptr, nullptr, ""});
    }
    Group& g = groups[index[key]];
    const bool gpu = c["device"] == "gpu";
    if (c["status"] != "ok") {
      if (gpu && g.gpu_missing.empty()) g.gpu_missing = c["message"];
      continue;
    }
    const bool fp32 = c["dtype"] == "fp32";
    if (gpu) {
      if (faster(c, g.gpu)) g.gpu = &c;
      if (fp32 && faster(c, g.gpu32)) g.gpu32 = &c;
    } else {
      if (faster(c, g.cpu)) g.cpu = &c;
      if (fp32 && faster(c, g.cpu32)) g.cpu32 = &c;
    }
  }
  json out = json::array();
  for (const Group& g : groups) {
    json e = {{"op", g.op}, {"shape", g.shape}};
    e["cpu"] = g.cpu ? side(*g.cpu) : json(nullptr);
    e["gpu"] = g.gpu ? side(*g.gpu) : json(nullptr);
    if (g.cpu && g.gpu) {
      const double tc = (*g.cpu)["time"]["median_s"], tg = (*g.gpu)["time"]["median_s"];
      const double tx = (*g.gpu)["transfer_s"];
      e["speedup"] = tc / tg;
      e["speedup_with_transfer"] = tc / (tg + tx);
    }
    if (g.cpu32 && g.gpu32)
      e["speedup_fp32"] = (*g.cpu32)["time"]["median_s"].get<double>() /
                          (*g.gpu32)["time"]["median_s"].get<double>();
    if (!g.gpu)
      e["gpu_missing"] = g.gpu_missing.empty() ? "no GPU case was selected" : g.gpu_missing;
    out.push_back(e);
  }
  return out;
}

json build(const json& context, const json& benchmarks, const json& cases) {
  json doc;
  doc["context"] = context;
  doc["benchmarks"] = benchmarks;
  doc["pairbench"] = {{"schema_version", kSchemaVersion},
                      {"cases", cases},
                      {"analyses", {{"speedup", speedup(cases)}}}};
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

std::string describe(const json& s) {
  if (s.is_null()) return "-";
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %s %s (%.1f GFLOP/s)", s["impl"].get<std::string>().c_str(),
                s["dtype"].get<std::string>().c_str(), fmt_time(s["time_s"]).c_str(),
                s["gflops"].get<double>());
  return buf;
}
}  // namespace

std::string summary(const json& report) {
  const json& rows = report["pairbench"]["analyses"]["speedup"];
  std::ostringstream os;
  os << "Summary: best CPU and best GPU per op and shape (median time per iteration)\n";
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
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-44s %-40s %-40s %s\n", "op / shape", "best CPU", "best GPU",
                "GPU speedup");
  os << buf;
  for (const json& r : rows) {
    std::string speed;
    if (r.contains("speedup")) {
      char s[96];
      std::snprintf(s, sizeof s, "%.1fx (%.1fx with transfers)", r["speedup"].get<double>(),
                    r["speedup_with_transfer"].get<double>());
      speed = s;
    } else if (r["gpu"].is_null()) {
      speed = shared.empty() ? r["gpu_missing"].get<std::string>() : "-";
    } else {
      speed = "no CPU case ran";
    }
    const std::string what = r["op"].get<std::string>() + " " + r["shape"].get<std::string>();
    std::snprintf(buf, sizeof buf, "%-44s %-40s %-40s %s\n", what.c_str(),
                  describe(r["cpu"]).c_str(), describe(r["gpu"]).c_str(), speed.c_str());
    os << buf;
  }
  return os.str();
}

void write_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

std::string log_path_for(const std::string& report_path) { return report_path + ".partial.jsonl"; }

Log::Log(const std::string& path) : path_(path), out_(path, std::ios::trunc) {
  if (!out_) throw std::runtime_error("cannot write " + path);
}

void Log::append(const char* kind, const json& value) {
  out_ << json{{kind, value}}.dump() << '\n';
  out_.flush();
}

json recover(const std::string& log_path) {
  std::ifstream f(log_path);
  if (!f) throw std::runtime_error("cannot read " + log_path);
  json context, benchmarks = json::array(), cases = json::array();
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
    if (j.contains("context"))
      context = j["context"], have_context = true;
    else if (j.contains("benchmark"))
      benchmarks.push_back(j["benchmark"]);
    else if (j.contains("case"))
      cases.push_back(j["case"]);
    else
      throw std::runtime_error(log_path + ":" + std::to_string(lineno) + ": unknown entry");
  }
  if (!have_context) throw std::runtime_error(log_path + " is not a pairbench log (no context)");
  context["recovered_from"] = log_path;
  return build(context, benchmarks, cases);
}

}  // namespace pb::report
