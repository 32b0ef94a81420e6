// The ceilings every figure of a report is held against (context.ceilings), per device and
// metric: each dtype's GFLOP/s, the memory's GB/s and, on a GPU, the host link's GB/s. Each
// ceiling has three figures, each with its source:
//   peak      what the hardware can do: a GPU's datasheet (the table in ceilings.cpp, found by
//             the CUDA device name); the CPU's logical CPUs x clock x FLOP per cycle of its
//             widest unit for the dtype. Null where it is not known (a GPU outside the table for
//             tf32/bf16/fp16; the CPU's memory, whose channels a program cannot see).
//   measured  what probes made for it reached, run before the cases (measure_ceilings): the
//             fastest of the square GEMMs per dtype that time allows, STREAM triad over 3x the
//             last-level cache, pinned copies of 256 MiB. The roofline's attainable comes from
//             these.
//   bound     what the report's self-check allows a case (reports/checks.cpp): the peak (a CPU's
//             at twice its clock where the maximum clock is not visible: turbo), else 2x the
//             measured ceiling; null when neither exists.
#pragma once

#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "reports/report.hpp"

namespace pb {

// One GPU as its datasheet gives it: dense figures (no sparsity), per direction for the link.
struct GpuDatasheet {
  const char* name;     // e.g. "H100 SXM5 80 GB"
  const char* pattern;  // ECMAScript regex, case-insensitive, on the CUDA device name
  double boost_mhz;     // the maximum clock, at which the fp32 figure is quoted; 0: none given
  // The clock the tensor-core figures are quoted at: below boost_mhz on some parts (H100 SXM:
  // fp32 66.9 TFLOP/s = 132 SMs x 256 FLOP x 1980 MHz, bf16 989.4 = 132 x 4096 x 1830 MHz),
  // while the tensor cores, clocked with the SMs, may run up to boost_mhz.
  double tensor_mhz;
  double fp32, tf32, bf16, fp16;  // TFLOP/s; 0: no tensor-core path (runs at the fp32 rate)
  double memory_gbs;
  const char* host_link;
  double host_link_gbs;
  const char* source;
};
const std::vector<GpuDatasheet>& gpu_datasheets();
// The first entry whose pattern matches the CUDA device name; nullptr when none does.
const GpuDatasheet* find_gpu_datasheet(const std::string& device_name);

// FLOP per cycle of one logical CPU in a dtype, from the ISA flags, and what gives it.
struct CpuRate {
  int flop_per_cycle;
  const char* unit;
};
CpuRate cpu_flop_per_cycle(const std::vector<std::string>& isa, Dtype t);

// The CPU's maximum clock from cpufreq (cpuinfo_max_freq in kHz, the scaling driver, and
// cpufreq/boost's "0" or "1", empty where absent): its GHz, or 0 with a note where cpufreq's
// maximum is not the clock the CPU can reach. acpi-cpufreq with boost on gives its highest
// P-state without boost (an AMD's base clock, an Intel's base + 1 MHz); intel_pstate and
// amd-pstate give the boost clock. No cpufreq at all (a VM) is 0 and no note.
struct CpuMaxClock {
  double ghz;
  std::string note;
};
CpuMaxClock cpu_max_clock(double max_khz, const std::string& driver, const std::string& boost);

// context.ceilings from the context (cpu_isa, cpu_logical_cores, cpu_nominal_ghz, cpu_max_ghz
// where visible or cpu_max_ghz_note where it is not, gpu_* as make_context writes them) and what
// measure_ceilings measured.
report::json ceilings(const report::json& context, const report::json& measured);

// What a case's pct_peak divides by on device d: its fp32 ceiling's peak, or the measured
// figure where the run's own probe beat the peak (a CPU clocked above the nominal clock its peak
// assumes, the maximum hidden from it, as in a VM: that peak is then no peak); `fallback` where
// context.ceilings (`ceilings`) has no fp32 figure for d.
double pct_peak_gflops(const report::json& ceilings, Device d, double fallback);

// Runs the probes the run's cases need (only the devices, dtypes and metrics they have): per
// device {"fp32": {"value": GFLOP/s, "case": name}, ..., "memory": {"value": GB/s, ...},
// "host_link": ...}; a probe that could not run has {"error": why}.
report::json measure_ceilings(const std::vector<Case>& run, const Resources& res, bool quiet);

}  // namespace pb
