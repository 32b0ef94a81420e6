// Energy: the counters a device keeps of the joules it used, read around each case's timed
// iterations. CPU: the RAPL package and DRAM domains of Linux's powercap (sysfs); GPU: NVML's
// total-energy counter (libnvidia-ml.so.1, loaded at run time, never linked). Where a meter
// cannot be read, every figure of its device says `unavailable` with the reason: nothing is
// estimated.
#pragma once

#include <memory>
#include <string>

#include "reports/report.hpp"

namespace pb::energy {

// NVML's view of the GPU at one moment; `valid` false on a CPU meter.
struct GpuState {
  bool valid = false;
  double sm_mhz = 0, mem_mhz = 0, temperature_c = 0;
  unsigned long long reasons = 0;  // NVML's clock event reason bits (0 where it cannot say)
  // Cumulative seconds NVML counted the GPU held below its clocks, per limiter (kLimiters);
  // negative where NVML does not count that one.
  double held_s[5] = {-1, -1, -1, -1, -1};
};
// The limiters of GpuState::held_s, as the report names them.
inline constexpr const char* kLimiters[5] = {"power", "thermal", "board_limit", "reliability",
                                             "any"};

class Meter {
 public:
  virtual ~Meter() = default;
  bool available() const { return reason_.empty(); }
  const std::string& reason() const { return reason_; }  // why it cannot be read; "" if it can
  const std::string& source() const { return source_; }  // what it reads
  // Joules since the meter opened, the counters' wraps unfolded. Throws std::runtime_error when a
  // read fails.
  virtual double joules() = 0;
  virtual GpuState state() { return {}; }

 protected:
  std::string reason_, source_;
};

// The CPU's: every RAPL package domain and its DRAM domain under
// $PAIRBENCH_SYSFS_ROOT/class/powercap (the root is /sys unless the variable is set), summed.
std::unique_ptr<Meter> open_cpu_meter();
// The GPU's, found by its PCI bus id (CUDA's form, "0000:65:00.0"; the first GPU where empty):
// the library at $PAIRBENCH_NVML_LIBRARY, else libnvidia-ml.so.1.
std::unique_ptr<Meter> open_gpu_meter(const std::string& pci_bus_id);
// A meter that cannot be read, for a device the run does not have.
std::unique_ptr<Meter> unavailable_meter(const std::string& reason);

// The clock-event reasons of NVML's bit mask by name ("sw_power_cap", ...); the ones that lower
// clocks under load (power, thermal, a hardware slowdown) only when `throttles_only`.
report::json reason_names(unsigned long long reasons, bool throttles_only = false);

// A meter and what was learned of it before the cases: the idle power and how often the counter
// moves, by polling it while nothing runs.
struct Calibrated {
  std::unique_ptr<Meter> meter;
  double idle_power_w = 0;
  double update_period_s = 0;
  std::string error;  // the calibration failed: the meter is then not used

  bool usable() const { return meter && meter->available() && error.empty(); }
  // The shortest region a figure is read over: five of the counter's update periods, and at
  // least 20 ms.
  double min_region_s() const;
  // context.energy.<device>: status, source or reason, idle power, update period.
  report::json context() const;
};
Calibrated calibrate(std::unique_ptr<Meter> meter, double seconds);

// Readings of a meter at the two ends of a run of iterations.
struct Mark {
  double joules = 0, t_s = 0;
  GpuState state;
};
Mark mark(Meter& m);

// The energy of one case: its regions (a run of iterations each) added up, and its record.
class CaseEnergy {
 public:
  void add(const Mark& before, const Mark& after, long iterations);
  double seconds() const { return seconds_; }
  void clear() { *this = CaseEnergy(); }
  // The record's `energy`: joules per iteration and per unit of the work (per sample where it
  // has samples, else per GB for work read in GB/s, else per GFLOP), mean power, the same above
  // idle, and for a GPU its clocks, temperature, clock-event reasons and the seconds it was held
  // below its clocks. `lengthened`: the iterations were run again, after the timed ones, because
  // those lasted less than the meter's shortest region. `counter_error_bound`: the most, as a
  // fraction, that the counter's pace can move the joules (each region's reads return the energy
  // up to the counter's last update, up to one update period late: regions x period / seconds).
  report::json record(const Calibrated& c, double flops, double bytes, double items, bool gbs,
                      bool lengthened) const;

 private:
  double joules_ = 0, seconds_ = 0;
  long iterations_ = 0;
  int regions_ = 0;  // metered regions: each one's two reads lag the energy by a counter update
  GpuState first_, last_;
  unsigned long long reasons_ = 0;
  double held_s_[5] = {0, 0, 0, 0, 0};
  bool held_known_[5] = {true, true, true, true, true};
};

report::json unavailable(const std::string& reason);

// Why a case's energy cannot be told apart under several ranks, or "" where it can: a case over
// several ranks is every rank's work, where each rank's meter reads its own device alone; and
// under several ranks, a CPU case's package counters read every rank's process on the host.
std::string shared_meter_reason(bool cpu, int case_ranks, int world_ranks);

}  // namespace pb::energy
