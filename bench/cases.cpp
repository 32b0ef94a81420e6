#include "bench/cases.hpp"

#include <algorithm>
#include <functional>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace pb {

namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// --impls names an implementation as "name" (any device) or "device/name".
bool named(const Options& o, const ImplSpec& spec) {
  return contains(o.impls, spec.name) ||
         contains(o.impls, std::string(to_string(spec.device)) + "/" + spec.name);
}

}  // namespace

std::string usage_from_registry() {
  const std::string indent(23, ' ');
  std::string ops, impls, shapes;
  for (const auto& f : op_families()) {
    ops += (ops.empty() ? "" : ", ") + f.name;
    impls += indent + f.name + ":";
    for (const auto& s : f.impls) impls += std::string(" ") + to_string(s.device) + "/" + s.name;
    impls += "\n";
    shapes += indent + f.name + ": " + f.shape_keys + "\n";
  }
  impls.pop_back();
  shapes.pop_back();
  return usage(ops, impls, shapes);
}

std::vector<int> powers_of_two_upto(int all) {
  std::vector<int> out;
  for (int p = 1; p < all; p *= 2) out.push_back(p);
  out.push_back(all);
  return out;
}

double gpu_bytes_needed(const Workload& w, const ImplSpec& spec, const Resources& r, bool cold) {
  const double flush = cold ? std::max(2.0 * r.gpu_l2_bytes, 8.0 * (1 << 20)) : 0.0;
  return w.device_bytes() + spec.workspace_bytes + flush;
}

double host_headroom(const Resources& r) {
  return 512.0 * (1 << 20) + 0.05 * r.host_available_bytes;
}

bool fits_host(double needed, const Resources& r) {
  return needed + host_headroom(r) <= r.host_available_bytes;
}

bool fits_gpu(double needed, const Resources& r) {
  const double headroom = 256.0 * (1 << 20) + 0.05 * r.gpu_free_bytes;
  return needed + headroom <= r.gpu_free_bytes;
}

double host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (f >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024.0;
    f.ignore(256, '\n');
  }
  return 0;
}

std::vector<Case> build_cases(const Options& o, const Resources& r) {
  const auto& families = op_families();
  std::vector<std::string> known_ops, known_impls;
  for (const auto& f : families) {
    known_ops.push_back(f.name);
    for (const auto& s : f.impls) {
      known_impls.push_back(s.name);
      known_impls.push_back(std::string(to_string(s.device)) + "/" + s.name);
    }
  }
  for (const auto& op : o.ops)
    if (!contains(known_ops, op)) throw UsageError("--ops: unknown op '" + op + "'");
  for (const auto& impl : o.impls)
    if (!contains(known_impls, impl))
      throw UsageError("--impls: unknown implementation '" + impl + "'");
  const std::size_t selected_ops = o.ops.empty() ? families.size() : o.ops.size();
  if (!o.shapes.empty() && selected_ops != 1)
    throw UsageError("--shape needs --ops to name exactly one op");

  const int level = o.suite == "quick" ? 0 : o.suite == "standard" ? 1 : 2;
  const std::vector<Dtype> dtypes = o.dtypes.empty() ? all_dtypes() : o.dtypes;
  auto device_on = [&](Device d) {
    return o.devices.empty() || std::find(o.devices.begin(), o.devices.end(), d) != o.devices.end();
  };
  // The parallel units a case runs with: --threads when given, else all cores, and the sweep
  // for the suite's sweep shapes. The GPU's SM sweep needs to know the GPU.
  auto units_for = [&](const ImplSpec& spec, bool sweep) -> std::vector<int> {
    if (spec.device == Device::cpu) {
      if (!spec.threaded) return {1};
      if (!o.threads.empty()) return o.threads;
      return sweep ? powers_of_two_upto(r.cores) : std::vector<int>{r.cores};
    }
    if (!spec.sm_sweep) return {0};
    if (!sweep && !named(o, spec)) return {};
    return r.gpu_available ? powers_of_two_upto(r.gpu_sms) : std::vector<int>{0};
  };

  std::vector<Case> cases;
  for (const auto& fam : families) {
    if (!o.ops.empty() && !contains(o.ops, fam.name)) continue;
    std::vector<SuiteEntry> entries;
    for (Dtype t : dtypes) {
      if (o.shapes.empty()) {
        const std::vector<SuiteEntry> suite = fam.suite(level, t);
        entries.insert(entries.end(), suite.begin(), suite.end());
        continue;
      }
      for (const auto& kv : o.shapes) {
        try {
          if (auto w = fam.from_shape(kv, t)) entries.push_back(SuiteEntry{w, false, false});
        } catch (const std::invalid_argument& e) {
          throw UsageError(std::string("--shape: ") + e.what());
        }
      }
    }
    for (const SuiteEntry& e : entries) {
      const auto& w = e.workload;
      const bool sweep = e.sweep;
      for (const auto& spec : fam.impls) {
        if (!device_on(spec.device) || !spec.supports(*w)) continue;
        if (e.gpu_only && spec.device != Device::gpu) continue;
        if (!o.impls.empty() && !named(o, spec)) continue;
        if (spec.max_flops > 0 && w->flops() > spec.max_flops && !named(o, spec)) continue;
        const bool cpu = spec.device == Device::cpu;
        for (int units : units_for(spec, sweep)) {
          Case c;
          c.workload = w;
          c.impl = spec;
          c.units = units;
          c.shape = w->shape();
          if (cpu)
            c.shape.add("threads", units);
          else if (units > 0)
            c.shape.add("sms", units);
          c.name =
              fam.name + "/" + to_string(spec.device) + "/" + spec.name + "/" + c.shape.to_string();
          if (!cpu && !r.gpu_available) c.skip = "no GPU: " + r.gpu_reason;
          if (c.skip.empty() && spec.unavailable) c.skip = spec.unavailable(*w);
          // OpenBLAS runs at most its MAX_THREADS: the case would be named for threads it lacks.
          if (c.skip.empty() && cpu && spec.library == "openblas" && r.openblas_max_threads > 0 &&
              units > r.openblas_max_threads)
            c.skip = "OpenBLAS runs at most " + std::to_string(r.openblas_max_threads) +
                     " threads (its build's MAX_THREADS), not " + std::to_string(units);
          // Too little memory: an error for a shape asked for; a suite's case that does not fit
          // this machine is skipped, saying so.
          std::string too_big;
          const double host_bytes = w->host_bytes(spec.device);
          if (!fits_host(host_bytes, r))
            too_big = "needs " + gib(host_bytes) + " of host memory and " + gib(host_headroom(r)) +
                      " of headroom; " + gib(r.host_available_bytes) + " is available";
          const double gpu_bytes = cpu ? 0 : gpu_bytes_needed(*w, spec, r, o.cold);
          if (too_big.empty() && !cpu && r.gpu_available && !fits_gpu(gpu_bytes, r))
            too_big = "needs " + gib(gpu_bytes) + " of GPU memory with " + spec.name +
                      "'s workspace" + (o.cold ? ", the --cold flush" : "") + " and headroom; " +
                      gib(r.gpu_free_bytes) + " is free";
          if (!too_big.empty() && !o.shapes.empty())
            throw UsageError("shape " + c.shape.to_string() + " of " + fam.name + " " + too_big);
          if (!too_big.empty() && c.skip.empty()) c.skip = "this machine is too small: " + too_big;
          cases.push_back(std::move(c));
        }
      }
    }
  }
  // The same case twice (a repeated --shape) would be measured twice under one name.
  std::vector<Case> unique;
  for (auto& c : cases) {
    auto same = [&](const Case& u) { return u.name == c.name; };
    if (std::none_of(unique.begin(), unique.end(), same)) unique.push_back(std::move(c));
  }
  return unique;
}

std::string no_case_reason(const Options& o, const Resources& r) {
  struct Relax {
    const char* flag;
    bool given;
    std::function<void(Options&)> drop;
    std::function<std::string(const Case&)> value;  // what a case has of the flag
  };
  const std::vector<Relax> relaxations = {
      {"--dtypes", !o.dtypes.empty(), [](Options& x) { x.dtypes.clear(); },
       [](const Case& c) { return std::string(to_string(c.workload->dtype())); }},
      {"--impls", !o.impls.empty(), [](Options& x) { x.impls.clear(); },
       [](const Case& c) { return std::string(to_string(c.impl.device)) + "/" + c.impl.name; }},
      {"--devices", !o.devices.empty(), [](Options& x) { x.devices.clear(); },
       [](const Case& c) { return std::string(to_string(c.impl.device)); }},
      {"--threads", !o.threads.empty(), [](Options& x) { x.threads.clear(); },
       [](const Case& c) { return c.impl.threaded ? std::to_string(c.units) : std::string(); }},
  };
  for (const Relax& relax : relaxations) {
    if (!relax.given) continue;
    Options wider = o;
    relax.drop(wider);
    std::vector<std::string> have;
    for (const Case& c : build_cases(wider, r)) {
      const std::string v = relax.value(c);
      if (!v.empty() && std::find(have.begin(), have.end(), v) == have.end()) have.push_back(v);
    }
    if (have.empty()) continue;
    std::string list;
    for (const std::string& v : have) list += (list.empty() ? "" : ", ") + v;
    return std::string("no case matches the flags: without ") + relax.flag +
           " they choose cases of " + list;
  }
  return "no case matches the flags (see --list)";
}

}  // namespace pb
