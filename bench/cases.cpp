#include "bench/cases.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/gemm.hpp"
#include "cpu_ref/cpu.hpp"
#include "kernels/gpu.hpp"

namespace pb {

namespace {

template <class V>
V concat(V a, const V& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

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

const std::vector<OpFamily>& op_families() {
  static const std::vector<OpFamily> families = [] {
    OpFamily gemm;
    gemm.name = "gemm";
    gemm.suite = [](int level, Dtype t) {
      std::vector<std::shared_ptr<const Workload>> out;
      for (GemmShape s : gemm_suite(level)) {
        s.dtype = t;
        out.push_back(std::make_shared<GemmWorkload>(s));
      }
      return out;
    };
    gemm.from_shape = [](const KeyValues& kv, Dtype t) -> std::shared_ptr<const Workload> {
      GemmShape s = parse_gemm_shape(kv);
      s.dtype = t;
      return std::make_shared<GemmWorkload>(s);
    };
    gemm.impls = concat(cpu::gemm_impls(), gpu::gemm_impls());
    return std::vector<OpFamily>{gemm};
  }();
  return families;
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
  const std::vector<int> threads = o.threads.empty() ? std::vector<int>{r.cores} : o.threads;
  auto device_on = [&](Device d) {
    return o.devices.empty() || std::find(o.devices.begin(), o.devices.end(), d) != o.devices.end();
  };

  std::vector<Case> cases;
  for (const auto& fam : families) {
    if (!o.ops.empty() && !contains(o.ops, fam.name)) continue;
    std::vector<std::shared_ptr<const Workload>> workloads;
    for (Dtype t : dtypes) {
      if (o.shapes.empty()) {
        workloads = concat(workloads, fam.suite(level, t));
        continue;
      }
      for (const auto& kv : o.shapes) {
        try {
          workloads.push_back(fam.from_shape(kv, t));
        } catch (const std::invalid_argument& e) {
          throw UsageError(std::string("--shape: ") + e.what());
        }
      }
    }
    for (const auto& w : workloads) {
      for (const auto& spec : fam.impls) {
        if (!device_on(spec.device) || !spec.supports(*w)) continue;
        if (!o.impls.empty() && !named(o, spec)) continue;
        if (spec.max_flops > 0 && w->flops() > spec.max_flops && !named(o, spec)) continue;
        const bool cpu = spec.device == Device::cpu;
        for (int t : cpu ? (spec.threaded ? threads : std::vector<int>{1}) : std::vector<int>{0}) {
          Case c;
          c.workload = w;
          c.impl = spec;
          c.threads = t;
          c.shape = w->shape();
          if (cpu) c.shape.add("threads", t);
          c.name =
              fam.name + "/" + to_string(spec.device) + "/" + spec.name + "/" + c.shape.to_string();
          if (!cpu && !r.gpu_available) c.skip = "no GPU: " + r.gpu_reason;
          const std::string what = "shape " + c.shape.to_string() + " of " + fam.name;
          if (w->host_bytes() > r.host_available_bytes)
            throw UsageError(what + " needs " + gib(w->host_bytes()) + " of host memory; " +
                             gib(r.host_available_bytes) + " is available");
          if (!cpu && r.gpu_available && w->device_bytes() > r.gpu_free_bytes)
            throw UsageError(what + " needs " + gib(w->device_bytes()) + " of GPU memory; " +
                             gib(r.gpu_free_bytes) + " is free");
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

}  // namespace pb
