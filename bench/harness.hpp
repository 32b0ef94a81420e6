// Verify, then time: registers every runnable case with Google Benchmark, records each result
// in the report's format as soon as it is measured.
#pragma once

#include <vector>

#include "bench/cases.hpp"
#include "bench/energy.hpp"
#include "bench/progress.hpp"
#include "reports/report.hpp"

namespace pb {

struct HarnessConfig {
  bool cold = false;
  double cpu_peak_gflops = 0;  // the fp32 peaks pct_peak divides by (pct_peak_gflops)
  double gpu_peak_gflops = 0;
  // Keep Google Benchmark's entries of failed cases (error_occurred, a zero time) in
  // `benchmarks`; by default they are left out, so no CI tool reads them as times.
  bool keep_error_entries = false;
  bool quiet = false;  // no progress lines on stderr (bench/progress.hpp)
  std::string suite;   // for the expected time before any case has run
  // The energy meters, calibrated (bench/energy.hpp): every measured case's record gets an
  // `energy` from its device's meter, or the reason it has none. Null: energy is not measured.
  const energy::Calibrated* cpu_energy = nullptr;
  const energy::Calibrated* gpu_energy = nullptr;
};

// An fp32 case's GFLOP/s as a percentage of its device's peak: {"pct_peak"}, or, where it beat
// the peak (one that is no ceiling: the turbo clock a VM hides from the nominal-clock peak),
// {"pct_peak": 100, "beat_peak_by": the fraction above}, as the roofline marks a case above its
// measured ceiling; {} where no peak is known (0) or the case counts no FLOPs (STREAM copy).
report::json pct_of_peak(double gflops, double peak);

struct HarnessResult {
  report::json benchmarks = report::json::array();  // Google Benchmark's run entries
  report::json cases = report::json::array();       // one record per case, skipped ones included
  report::json probes = report::json::array();      // the machine probes, in order
  int failed = 0;                                   // cases that errored or failed verification
};

// A case's implementation, prepared, run once and verified against the workload's reference; when
// the check passed, also warmed up (up to 3 more runs, ~50 ms). corrupt_result: the test hook
// (PAIRBENCH_INJECT_FAULT). Throws what the implementation throws (Unavailable among them).
struct FirstRun {
  std::unique_ptr<Impl> impl;
  Check check;
  std::string detail;  // Impl::detail() after the first run
  double transfer_s = 0;
};
// across_ranks: over several ranks, the ranks agree on the check and the warm-up (a case's
// run() may be a collective); a rank's own probes (measure_best) do not.
FirstRun first_run(const Case& c, const Tensors& inputs, bool corrupt_result,
                   bool across_ranks = true);

// Outside Google Benchmark (the ceiling probes): the shortest of `runs` timed runs of a verified
// case; seconds 0 and the reason in error when it could not run or failed its check.
struct BestTime {
  double seconds = 0;
  std::string error;
};
BestTime measure_best(const Case& c, int runs);

// A case as the progress estimate sees it: its kind (estimate_kind) and, for a training case,
// its FLOPs as its work.
ProgressEstimate::Pending progress_pending(const Case& c);

// Whether --benchmark_filter selects the case of this name.
bool selected_by_filter(const std::string& name);

HarnessResult run_cases(const std::vector<Case>& cases, const HarnessConfig& cfg, report::Log& log);

}  // namespace pb
