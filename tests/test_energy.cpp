// Energy without the hardware: a fake powercap tree whose counters a thread advances at a known
// power (a wrap included) stands for RAPL, and tests/fake_nvml.cpp for NVML. Each figure must
// come out at that power times its time, and every meter that cannot be read must say why.
#include <benchmark/benchmark.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "bench/cases.hpp"
#include "bench/energy.hpp"
#include "bench/harness.hpp"
#include "bench/options.hpp"

namespace pb {
namespace {

using report::json;
namespace fs = std::filesystem;

void write_file(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  std::ofstream(tmp) << text << "\n";
  fs::rename(tmp, p);  // whole, as sysfs shows it: a reader never sees half a number
}

// A powercap tree under a temporary root: one package at `package_w` and its DRAM at `dram_w`,
// beside zones pairbench must not add (the package's core, psys, the MMIO copy of the package).
// A thread moves the counters every millisecond; the package's wraps after 150 J, starting at
// 140 J so that it wraps within a tenth of a second.
class FakePowercap {
 public:
  FakePowercap(double package_w, double dram_w) : package_w_(package_w), dram_w_(dram_w) {
    root_ = fs::path(::testing::TempDir()) / ("powercap-" + std::to_string(getpid()));
    fs::remove_all(root_);
    const fs::path pc = root_ / "class" / "powercap";
    zone(pc / "intel-rapl:0", "package-0", kPackageRange);
    zone(pc / "intel-rapl:0:0", "core", kPackageRange);
    zone(pc / "intel-rapl:0:1", "dram", kDramRange);
    zone(pc / "intel-rapl:1", "psys", kPackageRange);
    zone(pc / "intel-rapl-mmio:0", "package-0", kPackageRange);
    advance(0);
    setenv("PAIRBENCH_SYSFS_ROOT", root_.c_str(), 1);
    writer_ = std::thread([this] {
      const auto t0 = std::chrono::steady_clock::now();
      while (!stop_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        advance(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    });
  }
  ~FakePowercap() {
    stop_ = true;
    writer_.join();
    unsetenv("PAIRBENCH_SYSFS_ROOT");
    fs::remove_all(root_);
  }
  const fs::path& root() const { return root_; }

 private:
  static constexpr unsigned long long kPackageRange = 150000000ull, kDramRange = 1ull << 40;

  void zone(const fs::path& dir, const std::string& name, unsigned long long range) {
    fs::create_directories(dir);
    write_file(dir / "name", name);
    write_file(dir / "max_energy_range_uj", std::to_string(range));
    write_file(dir / "energy_uj", "0");
  }
  void advance(double t) {
    const fs::path pc = root_ / "class" / "powercap";
    const auto uj = [](double joules) { return static_cast<unsigned long long>(joules * 1e6); };
    write_file(pc / "intel-rapl:0" / "energy_uj",
               std::to_string((uj(140.0 + package_w_ * t)) % (kPackageRange + 1)));
    write_file(pc / "intel-rapl:0:1" / "energy_uj", std::to_string(uj(dram_w_ * t)));
    // What must not be added: the core inside the package, the platform, the MMIO copy.
    for (const char* other : {"intel-rapl:0:0", "intel-rapl:1", "intel-rapl-mmio:0"})
      write_file(pc / other / "energy_uj", std::to_string(uj(1000.0 * t)));
  }

  double package_w_, dram_w_;
  fs::path root_;
  std::atomic<bool> stop_{false};
  std::thread writer_;
};

// The fake's counters move in a thread of their own, which a loaded 2-vCPU VM has starved for
// about 0.1 s under ASan (121 W over a 0.5 s region): a reading can be that late. So a figure read
// off the fake is read again (up to three times in all) while it is off the fake's 100 W by more
// than 5 W; a wrong meter would be off every time (a retry of a calibration may miss the
// package's wrap, which the wrap test reads across in every attempt).
bool near_100_w(double watts) { return std::fabs(watts - 100.0) <= 5.0; }

energy::Calibrated calibrated_steady(double seconds) {
  energy::Calibrated c;
  for (int attempt = 0; attempt < 3; ++attempt) {
    c = energy::calibrate(energy::open_cpu_meter(), seconds);
    if (c.usable() && near_100_w(c.idle_power_w)) break;
  }
  return c;
}

TEST(Energy, RaplReadsThePackageAndDramAcrossAWrapAtTheirPower) {
  double watts = 0;
  // A fresh fake each attempt: its package counter wraps 0.125 s into its life, inside the
  // window, so a retry reads across a wrap too.
  for (int attempt = 0; attempt < 3 && !near_100_w(watts); ++attempt) {
    FakePowercap fake(80, 20);
    auto meter = energy::open_cpu_meter();
    ASSERT_TRUE(meter->available()) << meter->reason();
    EXPECT_NE(meter->source().find("1 package + 1 DRAM domain"), std::string::npos)
        << meter->source();
    const energy::Mark a = energy::mark(*meter);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the package wraps in here
    const energy::Mark b = energy::mark(*meter);
    watts = (b.joules - a.joules) / (b.t_s - a.t_s);
  }
  EXPECT_NEAR(watts, 100.0, 5.0);
}

TEST(Energy, CalibrationFindsTheIdlePowerAndHowOftenTheCounterMoves) {
  FakePowercap fake(80, 20);
  const energy::Calibrated c = calibrated_steady(0.3);
  ASSERT_TRUE(c.usable()) << c.error << c.meter->reason();
  EXPECT_NEAR(c.idle_power_w, 100.0, 5.0);
  EXPECT_GT(c.update_period_s, 0.0005);
  EXPECT_LT(c.update_period_s, 0.02);
  // Five update periods, at least 20 ms (a loaded machine's thread may move the fake counter
  // less often than each millisecond).
  EXPECT_DOUBLE_EQ(c.min_region_s(), std::max(5 * c.update_period_s, 0.02));
  const json ctx = c.context();
  EXPECT_EQ(ctx["status"], "ok");
  EXPECT_NEAR(ctx["idle_power_w"].get<double>(), 100.0, 5.0);
}

TEST(Energy, WithoutPowercapEachCpuFigureSaysWhy) {
  const fs::path empty = fs::path(::testing::TempDir()) / "no-powercap";
  fs::create_directories(empty);
  setenv("PAIRBENCH_SYSFS_ROOT", empty.c_str(), 1);
  const energy::Calibrated c = energy::calibrate(energy::open_cpu_meter(), 0.1);
  unsetenv("PAIRBENCH_SYSFS_ROOT");
  EXPECT_FALSE(c.usable());
  EXPECT_EQ(c.context()["status"], "unavailable");
  EXPECT_NE(c.context()["reason"].get<std::string>().find("no RAPL counters"), std::string::npos)
      << c.context().dump();
  const json rec = energy::CaseEnergy().record(c, 1e9, 0, 0, false, false);
  EXPECT_EQ(rec["status"], "unavailable");
  EXPECT_EQ(rec["reason"], c.context()["reason"]);
}

Options parse(std::vector<std::string> args) {
  args.insert(args.begin(), "pairbench");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

// A STREAM case through the harness, metered by `meter`: its record.
json metered_case(const energy::Calibrated& meter, const std::string& min_time) {
  std::string flag = "--benchmark_min_time=" + min_time;
  char* argv[] = {flag.data(), flag.data()};
  int argc = 2;
  benchmark::Initialize(&argc, argv);
  Resources r;
  r.host_available_bytes = 1e12;
  r.cores = 1;
  const auto cases = build_cases(
      parse({"--ops=stream", "--devices=cpu", "--threads=1", "--shape=kernel=triad,n=1048576"}), r);
  EXPECT_EQ(cases.size(), 1u);
  HarnessConfig cfg;
  cfg.quiet = true;
  cfg.cpu_energy = &meter;
  const std::string log_path = ::testing::TempDir() + "energy.partial.jsonl";
  report::Log log(log_path);
  const HarnessResult result = run_cases(cases, cfg, log);
  std::remove(log_path.c_str());
  EXPECT_EQ(result.cases.size(), 1u);
  return result.cases.at(0);
}

// metered_case, run again (up to three times in all) while its mean power is off the fake's
// 100 W by more than 5 W (see calibrated_steady).
json metered_case_steady(const energy::Calibrated& meter, const std::string& min_time) {
  json rec;
  for (int attempt = 0; attempt < 3; ++attempt) {
    rec = metered_case(meter, min_time);
    const json& e = rec.value("energy", json::object());
    if (e.value("status", "") == "ok" && near_100_w(e["mean_power_w"].get<double>())) break;
  }
  return rec;
}

TEST(Energy, ACaseJoulesArePowerTimesItsTime) {
  FakePowercap fake(80, 20);
  const energy::Calibrated meter = calibrated_steady(0.2);
  ASSERT_TRUE(meter.usable());
  // Half a second: the fake's counters move in a thread of their own, which a loaded machine
  // can run late by tens of milliseconds (as the slow counter's test below says).
  const json rec = metered_case_steady(meter, "0.5");
  ASSERT_EQ(rec["status"], "ok") << rec.dump();
  const json& e = rec["energy"];
  ASSERT_EQ(e["status"], "ok") << e.dump();
  EXPECT_FALSE(e["lengthened"].get<bool>());
  EXPECT_GE(e["region_s"].get<double>(), 0.5);
  EXPECT_NEAR(e["mean_power_w"].get<double>(), 100.0, 5.0);
  // Per iteration: the power times the iteration's mean time in the metered region.
  const double mean_iter_s = e["region_s"].get<double>() / e["iterations"].get<double>();
  EXPECT_NEAR(e["joules_per_iter"].get<double>() / (100.0 * mean_iter_s), 1.0, 0.05);
  // STREAM is read in GB/s: its energy per GB of its compulsory traffic.
  EXPECT_NEAR(e["joules_per_gb"].get<double>(),
              e["joules_per_iter"].get<double>() / (rec["min_bytes"].get<double>() / 1e9), 1e-9);
  // All of it is idle power here (the fake draws 100 W throughout).
  EXPECT_LT(e["above_idle_joules_per_iter"].get<double>(),
            0.1 * e["joules_per_iter"].get<double>());
}

TEST(Energy, ATimedRegionTooShortForTheCounterIsLengthened) {
  FakePowercap fake(80, 20);
  energy::Calibrated meter = calibrated_steady(0.2);
  ASSERT_TRUE(meter.usable());
  // A slow counter: half a second at least. (At 0.05 s, a quarter of a second, the fake's
  // writer thread running 18 ms late on a loaded machine under ASan moved the power by 7 W.)
  meter.update_period_s = 0.1;
  const json rec = metered_case_steady(meter, "0.001");
  ASSERT_EQ(rec["status"], "ok") << rec.dump();
  const json& e = rec["energy"];
  ASSERT_EQ(e["status"], "ok") << e.dump();
  EXPECT_TRUE(e["lengthened"].get<bool>());
  EXPECT_GE(e["region_s"].get<double>(), 0.5);
  EXPECT_NEAR(e["mean_power_w"].get<double>(), 100.0, 5.0);
}

TEST(Energy, TooShortARegionIsUnavailableNotAGuess) {
  FakePowercap fake(80, 20);
  const energy::Calibrated meter = calibrated_steady(0.2);
  ASSERT_TRUE(meter.usable());
  energy::CaseEnergy e;
  const energy::Mark a = energy::mark(*meter.meter);
  const energy::Mark b = energy::mark(*meter.meter);
  e.add(a, b, 1);
  const json rec = e.record(meter, 1e9, 0, 0, false, false);
  EXPECT_EQ(rec["status"], "unavailable");
  EXPECT_NE(rec["reason"].get<std::string>().find("the counter needs"), std::string::npos);
}

// Under several ranks a meter reads more or less than a case's work: rank 0's board alone for
// a step over every rank's GPU (N times too few joules a sample), every rank's process for a CPU
// case on a shared host. Those cases say so instead of giving a figure.
TEST(Energy, UnderSeveralRanksAMeterThatSeesOtherWorkGivesNoFigure) {
  EXPECT_EQ(energy::shared_meter_reason(true, 1, 1), "");
  EXPECT_EQ(energy::shared_meter_reason(false, 1, 4), "");  // each rank's own GPU
  EXPECT_EQ(energy::shared_meter_reason(false, 4, 4),
            "over 4 ranks: each rank's meter reads its own device, not the others' share of the "
            "work");
  EXPECT_EQ(energy::shared_meter_reason(true, 1, 2),
            "under 2 ranks: the CPU's counters read every rank's process on this host, not this "
            "case's alone");
}

// ---- the GPU side, on tests/fake_nvml.cpp ----

struct FakeNvml {
  explicit FakeNvml(const char* extra = nullptr) {
    setenv("PAIRBENCH_NVML_LIBRARY", PAIRBENCH_FAKE_NVML, 1);
    if (extra) setenv(extra, "1", 1);
    extra_ = extra;
  }
  ~FakeNvml() {
    unsetenv("PAIRBENCH_NVML_LIBRARY");
    if (extra_) unsetenv(extra_);
  }
  const char* extra_;
};

TEST(Energy, NvmlGivesTheBoardsJoulesClocksAndWhyItWasHeldBack) {
  FakeNvml fake;
  energy::Calibrated c = energy::calibrate(energy::open_gpu_meter("0000:65:00.0"), 0.3);
  ASSERT_TRUE(c.usable()) << c.meter->reason() << c.error;
  EXPECT_NEAR(c.update_period_s, 0.01, 0.004);  // the fake's counter moves every 10 ms
  EXPECT_NEAR(c.min_region_s(), 0.05, 0.02);
  EXPECT_NEAR(c.idle_power_w, 300.0, 15.0);
  // A region of GPU work (a busy host stands for it): power times time, clocks, reasons.
  energy::CaseEnergy e;
  const energy::Mark a = energy::mark(*c.meter);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const energy::Mark b = energy::mark(*c.meter);
  e.add(a, b, 100);
  const json rec = e.record(c, 2e12, 0, 0, false, false);
  ASSERT_EQ(rec["status"], "ok") << rec.dump();
  EXPECT_NEAR(rec["mean_power_w"].get<double>(), 300.0, 15.0);
  EXPECT_NEAR(rec["joules_per_iter"].get<double>(), 300.0 * (b.t_s - a.t_s) / 100, 0.05 * 1.2);
  EXPECT_NEAR(rec["joules_per_gflop"].get<double>(), rec["joules_per_iter"].get<double>() / 2000,
              1e-12);
  // One region: each read up to one update period late, over the region's seconds.
  EXPECT_DOUBLE_EQ(rec["counter_error_bound"].get<double>(),
                   c.update_period_s / rec["region_s"].get<double>());
  EXPECT_EQ(rec["sm_clock_mhz"], 1755);
  EXPECT_EQ(rec["memory_clock_mhz"], 2619);
  EXPECT_EQ(rec["temperature_c"], 64);
  EXPECT_EQ(rec["clock_event_reasons"], json::array({"sw_power_cap"}));
  EXPECT_TRUE(rec["throttled"].get<bool>());
  const json& held = rec["held_below_clocks_s"];
  EXPECT_NEAR(held["power"].get<double>(), 0.25 * (b.t_s - a.t_s), 0.02);
  EXPECT_NEAR(held["any"].get<double>(), held["power"].get<double>(), 0.02);
  EXPECT_EQ(held["thermal"], 0.0);
  EXPECT_FALSE(held.contains("reliability"));  // the fake board does not count it
}

TEST(Energy, NvmlThatCannotBeUsedSaysWhy) {
  {
    setenv("PAIRBENCH_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
    auto m = energy::open_gpu_meter("");
    unsetenv("PAIRBENCH_NVML_LIBRARY");
    EXPECT_FALSE(m->available());
    EXPECT_NE(m->reason().find("NVML could not be loaded"), std::string::npos) << m->reason();
  }
  {
    FakeNvml fake("PAIRBENCH_FAKE_NVML_NO_ENERGY");
    auto m = energy::open_gpu_meter("0000:65:00.0");
    EXPECT_FALSE(m->available());
    EXPECT_NE(m->reason().find("cannot be read on this GPU"), std::string::npos) << m->reason();
  }
  {
    FakeNvml fake;
    auto m = energy::open_gpu_meter("0000:17:00.0");  // not the fake's bus
    EXPECT_FALSE(m->available());
    EXPECT_NE(m->reason().find("no GPU at PCI bus 0000:17:00.0"), std::string::npos) << m->reason();
  }
}

TEST(Energy, ClockEventReasonsByName) {
  EXPECT_EQ(energy::reason_names(0), json::array());
  EXPECT_EQ(energy::reason_names(0x1 | 0x4 | 0x40),
            json::array({"gpu_idle", "sw_power_cap", "hw_thermal_slowdown"}));
  EXPECT_EQ(energy::reason_names(0x1 | 0x2 | 0x10 | 0x100, true), json::array());
  EXPECT_EQ(energy::reason_names(0x8 | 0x20 | 0x80, true),
            json::array({"hw_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"}));
}

}  // namespace
}  // namespace pb
