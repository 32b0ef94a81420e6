// Verify, then time: registers every runnable case with Google Benchmark, records each result
// in the report's format as soon as it is measured.
#pragma once

#include <vector>

#include "bench/cases.hpp"
#include "reports/report.hpp"

namespace pb {

struct HarnessConfig {
  bool cold = false;
  double cpu_peak_gflops = 0;  // theoretical fp32 peaks for the "% of peak" counter
  double gpu_peak_gflops = 0;
  // Keep Google Benchmark's entries of failed cases (error_occurred, a zero time) in
  // `benchmarks`; by default they are left out, so no CI tool reads them as times.
  bool keep_error_entries = false;
  bool quiet = false;  // no progress lines on stderr (bench/progress.hpp)
  std::string suite;   // for the expected time before any case has run
};

struct HarnessResult {
  report::json benchmarks = report::json::array();  // Google Benchmark's run entries
  report::json cases = report::json::array();       // one record per case, skipped ones included
  report::json probes = report::json::array();      // the machine probes, in order
  int failed = 0;                                   // cases that errored or failed verification
};

HarnessResult run_cases(const std::vector<Case>& cases, const HarnessConfig& cfg, report::Log& log);

}  // namespace pb
