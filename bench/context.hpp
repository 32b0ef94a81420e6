// The report's "context": Google Benchmark's own fields plus the hardware's identity.
#pragma once

#include "bench/cases.hpp"
#include "reports/report.hpp"

namespace pb {

// Theoretical fp32 peak of the CPU: cores x clock x FLOP per cycle of its widest FMA.
double cpu_peak_fp32_gflops();

report::json make_context(const char* argv0, const Options& o);

}  // namespace pb
