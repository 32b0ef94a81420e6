#include "bench/energy.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu_ref/cpu.hpp"

namespace pb::energy {

namespace {

using report::json;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// One sysfs attribute, opened anew at each read (sysfs regenerates it then), trimmed; false
// with errno's text in *why when it cannot be read.
bool read_attr(const std::string& path, std::string* out, std::string* why) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (why) *why = std::strerror(errno);
    return false;
  }
  char buf[128];
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  const int err = errno;
  close(fd);
  if (n < 0) {
    if (why) *why = std::strerror(err);
    return false;
  }
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  *out = s;
  return true;
}

bool read_u64(const std::string& path, unsigned long long* v, std::string* why) {
  std::string s;
  if (!read_attr(path, &s, why)) return false;
  char* end = nullptr;
  errno = 0;
  *v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) {
    if (why) *why = "not a number: '" + s + "'";
    return false;
  }
  return true;
}

// ---- CPU: RAPL through powercap ----

class RaplMeter : public Meter {
 public:
  RaplMeter() {
    const std::string dir = cpu::sysfs_root() + "/class/powercap";
    DIR* d = opendir(dir.c_str());
    if (!d) {
      reason_ = "no RAPL counters: " + dir + ": " + std::strerror(errno) +
                " (a VM, or a kernel without the RAPL powercap driver)";
      return;
    }
    std::vector<std::string> zones;
    while (const dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      // intel-rapl:N is a package (or psys), intel-rapl:N:M one of its parts (core, uncore,
      // dram); AMD's packages appear under the same names. The MMIO copy of a package
      // (intel-rapl-mmio:N) would count it twice.
      if (name.rfind("intel-rapl:", 0) == 0) zones.push_back(name);
    }
    closedir(d);
    std::sort(zones.begin(), zones.end());
    int packages = 0, drams = 0;
    for (const std::string& z : zones) {
      std::string kind;
      if (!read_attr(dir + "/" + z + "/name", &kind, nullptr)) continue;
      const bool package = kind.rfind("package", 0) == 0;
      if (!package && kind != "dram") continue;  // core and uncore are inside the package
      Domain dom;
      dom.path = dir + "/" + z + "/energy_uj";
      std::string why;
      unsigned long long range = 0;
      if (!read_u64(dir + "/" + z + "/max_energy_range_uj", &range, &why) || range == 0) {
        reason_ = "cannot read " + dir + "/" + z + "/max_energy_range_uj: " + why;
        return;
      }
      dom.range_uj = range;
      if (!read_u64(dom.path, &dom.last_uj, &why)) {
        reason_ = "cannot read " + dom.path + ": " + why;
        if (why == std::strerror(EACCES))
          reason_ +=
              " (since Linux 5.10 only root may read RAPL energy: run as root, or make "
              "energy_uj readable)";
        return;
      }
      domains_.push_back(dom);
      (package ? packages : drams) += 1;
    }
    if (packages == 0) {
      reason_ = "no RAPL package domain under " + dir;
      return;
    }
    source_ = "RAPL via powercap (" + dir + "): " + std::to_string(packages) + " package" +
              (packages > 1 ? "s" : "") +
              (drams > 0 ? " + " + std::to_string(drams) + " DRAM domain" + (drams > 1 ? "s" : "")
                         : std::string(", no DRAM domain")) +
              ", summed";
  }

  double joules() override {
    for (Domain& d : domains_) {
      unsigned long long now = 0;
      std::string why;
      if (!read_u64(d.path, &now, &why))
        throw std::runtime_error("cannot read " + d.path + ": " + why);
      // The counter runs from 0 to max_energy_range_uj and starts again at 0: a smaller value
      // than the last is one wrap (reads come far more often than the minutes a wrap takes).
      d.total_uj += now >= d.last_uj ? now - d.last_uj : now + (d.range_uj - d.last_uj) + 1;
      d.last_uj = now;
    }
    double uj = 0;
    for (const Domain& d : domains_) uj += static_cast<double>(d.total_uj);
    return uj * 1e-6;
  }

 private:
  struct Domain {
    std::string path;
    unsigned long long range_uj = 0, last_uj = 0, total_uj = 0;
  };
  std::vector<Domain> domains_;
};

// ---- GPU: NVML, loaded at run time ----

// The few NVML types pairbench uses, as nvml.h declares them (its ABI is stable).
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
struct nvmlViolationTime_t {
  unsigned long long referenceTime;  // microseconds
  unsigned long long violationTime;  // nanoseconds
};
constexpr unsigned kNvmlClockSm = 1, kNvmlClockMem = 2, kNvmlTemperatureGpu = 0;
// The perf policies of GpuState::held_s, in kLimiters' order: power, thermal, board limit,
// reliability, and the total over all limiters.
constexpr unsigned kNvmlPolicies[5] = {0, 1, 3, 5, 10};

class NvmlMeter : public Meter {
 public:
  explicit NvmlMeter(const std::string& bus_id) {
    const std::string lib = env_or("PAIRBENCH_NVML_LIBRARY", "libnvidia-ml.so.1");
    handle_ = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) {
      const char* e = dlerror();
      reason_ = "NVML could not be loaded (" + std::string(e ? e : lib) +
                "): it comes with the NVIDIA driver";
      return;
    }
    auto sym = [&](const char* a, const char* b = nullptr) {
      void* p = dlsym(handle_, a);
      return p || !b ? p : dlsym(handle_, b);
    };
    init_ = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlInit_v2", "nvmlInit"));
    shutdown_ = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlShutdown"));
    error_string_ = reinterpret_cast<const char* (*)(nvmlReturn_t)>(sym("nvmlErrorString"));
    by_bus_ = reinterpret_cast<nvmlReturn_t (*)(const char*, nvmlDevice_t*)>(
        sym("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId"));
    by_index_ = reinterpret_cast<nvmlReturn_t (*)(unsigned, nvmlDevice_t*)>(
        sym("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"));
    energy_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*)>(
        sym("nvmlDeviceGetTotalEnergyConsumption"));
    clock_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned, unsigned*)>(
        sym("nvmlDeviceGetClockInfo"));
    reasons_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*)>(
        sym("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"));
    violation_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned, nvmlViolationTime_t*)>(
        sym("nvmlDeviceGetViolationStatus"));
    temperature_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned, unsigned*)>(
        sym("nvmlDeviceGetTemperature"));
    if (!init_ || !shutdown_ || !energy_ || !(by_bus_ || by_index_)) {
      reason_ = "NVML (" + lib + ") lacks the functions pairbench reads";
      return;
    }
    if (nvmlReturn_t r = init_(); r != 0) {
      reason_ = "nvmlInit failed: " + error(r);
      return;
    }
    initialised_ = true;
    nvmlReturn_t r = -1;
    if (!bus_id.empty() && by_bus_) r = by_bus_(bus_id.c_str(), &device_);
    if (r != 0 && bus_id.empty() && by_index_) r = by_index_(0, &device_);
    if (r != 0) {
      reason_ = "NVML has no GPU at PCI bus " + (bus_id.empty() ? std::string("(first)") : bus_id) +
                ": " + error(r);
      return;
    }
    unsigned long long mj = 0;
    if (nvmlReturn_t e = energy_(device_, &mj); e != 0) {
      reason_ = "NVML's total-energy counter cannot be read on this GPU (" + error(e) +
                "; it needs Volta or newer)";
      return;
    }
    first_mj_ = mj;
    source_ = "NVML total energy consumption (" + lib + "), the whole board, in mJ";
  }

  ~NvmlMeter() override {
    if (initialised_) shutdown_();
    // The library stays loaded: unloading NVML at exit has been seen to hang in some drivers.
  }

  double joules() override {
    unsigned long long mj = 0;
    if (nvmlReturn_t e = energy_(device_, &mj); e != 0)
      throw std::runtime_error("NVML energy read failed: " + error(e));
    return static_cast<double>(mj - first_mj_) * 1e-3;
  }

  GpuState state() override {
    GpuState s;
    s.valid = true;
    unsigned v = 0;
    if (clock_ && clock_(device_, kNvmlClockSm, &v) == 0) s.sm_mhz = v;
    if (clock_ && clock_(device_, kNvmlClockMem, &v) == 0) s.mem_mhz = v;
    if (temperature_ && temperature_(device_, kNvmlTemperatureGpu, &v) == 0) s.temperature_c = v;
    unsigned long long bits = 0;
    if (reasons_ && reasons_(device_, &bits) == 0) s.reasons = bits;
    for (int k = 0; k < 5; ++k) {
      nvmlViolationTime_t t{};
      if (violation_ && violation_(device_, kNvmlPolicies[k], &t) == 0)
        s.held_s[k] = static_cast<double>(t.violationTime) * 1e-9;
    }
    return s;
  }

 private:
  std::string error(nvmlReturn_t r) const {
    const char* s = error_string_ ? error_string_(r) : nullptr;
    return (s ? std::string(s) : std::string("NVML error")) + " (" + std::to_string(r) + ")";
  }

  void* handle_ = nullptr;
  bool initialised_ = false;
  nvmlDevice_t device_ = nullptr;
  unsigned long long first_mj_ = 0;
  nvmlReturn_t (*init_)() = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;
  const char* (*error_string_)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*by_bus_)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*by_index_)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*energy_)(nvmlDevice_t, unsigned long long*) = nullptr;
  nvmlReturn_t (*clock_)(nvmlDevice_t, unsigned, unsigned*) = nullptr;
  nvmlReturn_t (*reasons_)(nvmlDevice_t, unsigned long long*) = nullptr;
  nvmlReturn_t (*violation_)(nvmlDevice_t, unsigned, nvmlViolationTime_t*) = nullptr;
  nvmlReturn_t (*temperature_)(nvmlDevice_t, unsigned, unsigned*) = nullptr;
};

class NoMeter : public Meter {
 public:
  explicit NoMeter(const std::string& why) { reason_ = why; }
  double joules() override { throw std::runtime_error(reason_); }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

std::unique_ptr<Meter> open_cpu_meter() { return std::make_unique<RaplMeter>(); }
std::unique_ptr<Meter> open_gpu_meter(const std::string& pci_bus_id) {
  return std::make_unique<NvmlMeter>(pci_bus_id);
}
std::unique_ptr<Meter> unavailable_meter(const std::string& reason) {
  return std::make_unique<NoMeter>(reason);
}

json reason_names(unsigned long long reasons, bool throttles_only) {
  static const struct {
    unsigned long long bit;
    const char* name;
    bool throttles;
  } kReasons[] = {{0x1, "gpu_idle", false},
                  {0x2, "applications_clocks_setting", false},
                  {0x4, "sw_power_cap", true},
                  {0x8, "hw_slowdown", true},
                  {0x10, "sync_boost", false},
                  {0x20, "sw_thermal_slowdown", true},
                  {0x40, "hw_thermal_slowdown", true},
                  {0x80, "hw_power_brake_slowdown", true},
                  {0x100, "display_clock_setting", false}};
  json out = json::array();
  for (const auto& r : kReasons)
    if ((reasons & r.bit) && (r.throttles || !throttles_only)) out.push_back(r.name);
  return out;
}

double Calibrated::min_region_s() const { return std::max(5 * update_period_s, 0.02); }

json Calibrated::context() const {
  if (!meter || !meter->available()) return unavailable(meter ? meter->reason() : "no meter");
  if (!error.empty()) return unavailable(error);
  return {{"status", "ok"},
          {"source", meter->source()},
          {"idle_power_w", idle_power_w},
          {"update_period_s", update_period_s},
          {"min_region_s", min_region_s()}};
}

Calibrated calibrate(std::unique_ptr<Meter> meter, double seconds) {
  Calibrated c;
  c.meter = std::move(meter);
  if (!c.meter->available()) return c;
  try {
    // Poll every millisecond; each change of the counter is an update. The idle power is the
    // energy between the first and the last update over the time between them.
    std::vector<double> changes_t, changes_j;
    double last = c.meter->joules();
    const double t0 = now_s();
    while (now_s() - t0 < seconds) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      const double j = c.meter->joules();
      if (j != last) changes_t.push_back(now_s()), changes_j.push_back(j);
      last = j;
    }
    if (changes_t.size() < 3) {
      c.error = "the energy counter moved " + std::to_string(changes_t.size()) + " times in " +
                std::to_string(seconds) + " s at idle: too slow to time a case by";
      return c;
    }
    std::vector<double> gaps;
    for (std::size_t k = 1; k < changes_t.size(); ++k)
      gaps.push_back(changes_t[k] - changes_t[k - 1]);
    c.update_period_s = median(gaps);
    c.idle_power_w =
        (changes_j.back() - changes_j.front()) / (changes_t.back() - changes_t.front());
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

Mark mark(Meter& m) {
  Mark k;
  k.state = m.state();
  k.joules = m.joules();
  k.t_s = now_s();
  return k;
}

void CaseEnergy::add(const Mark& before, const Mark& after, long iterations) {
  if (iterations_ == 0) first_ = before.state;
  joules_ += after.joules - before.joules;
  seconds_ += after.t_s - before.t_s;
  iterations_ += iterations;
  ++regions_;
  last_ = after.state;
  reasons_ |= before.state.reasons | after.state.reasons;
  for (int k = 0; k < 5; ++k) {
    if (before.state.held_s[k] < 0 || after.state.held_s[k] < 0)
      held_known_[k] = false;
    else
      held_s_[k] += after.state.held_s[k] - before.state.held_s[k];
  }
}

json unavailable(const std::string& reason) {
  return {{"status", "unavailable"}, {"reason", reason}};
}

std::string shared_meter_reason(bool cpu, int case_ranks, int world_ranks) {
  if (case_ranks > 1)
    return "over " + std::to_string(case_ranks) +
           " ranks: each rank's meter reads its own device, not the others' share of the work";
  if (cpu && world_ranks > 1)
    return "under " + std::to_string(world_ranks) +
           " ranks: the CPU's counters read every rank's process on this host, not this case's "
           "alone";
  return "";
}

json CaseEnergy::record(const Calibrated& c, double flops, double bytes, double items, bool gbs,
                        bool lengthened) const {
  if (!c.usable()) return unavailable(c.context().value("reason", "no meter"));
  if (iterations_ == 0 || seconds_ <= 0) return unavailable("no iterations were metered");
  if (seconds_ < c.min_region_s())
    return unavailable("metered over " + std::to_string(seconds_) + " s, under the " +
                       std::to_string(c.min_region_s()) + " s the counter needs");
  const double per_iter = joules_ / static_cast<double>(iterations_);
  const double per_iter_s = seconds_ / static_cast<double>(iterations_);
  const double above = std::max(0.0, per_iter - c.idle_power_w * per_iter_s);
  json j = {{"status", "ok"},
            {"joules_per_iter", per_iter},
            {"mean_power_w", joules_ / seconds_},
            {"above_idle_joules_per_iter", above},
            {"region_s", seconds_},
            {"iterations", iterations_},
            {"counter_error_bound", regions_ * c.update_period_s / seconds_},
            {"lengthened", lengthened}};
  // Per unit of the work, in the unit its throughput is read in.
  if (items > 0)
    j["joules_per_sample"] = per_iter / items, j["above_idle_joules_per_sample"] = above / items;
  else if (gbs && bytes > 0)
    j["joules_per_gb"] = per_iter / (bytes / 1e9);
  else if (flops > 0)
    j["joules_per_gflop"] = per_iter / (flops / 1e9);
  if (last_.valid) {
    j["sm_clock_mhz"] = last_.sm_mhz;
    j["memory_clock_mhz"] = last_.mem_mhz;
    j["temperature_c"] = last_.temperature_c;
    j["clock_event_reasons"] = reason_names(reasons_);
    json held = json::object();
    for (int k = 0; k < 5; ++k)
      if (held_known_[k]) held[kLimiters[k]] = held_s_[k];
    j["held_below_clocks_s"] = held;
    j["throttled"] =
        !reason_names(reasons_, true).empty() || (held_known_[4] && held_s_[4] > 0.01 * seconds_);
  }
  return j;
}

}  // namespace pb::energy
