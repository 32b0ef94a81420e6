// The report's "context": Google Benchmark's own fields plus the hardware's identity.
#pragma once

#include "bench/cases.hpp"
#include "reports/report.hpp"

namespace pb {

// This machine's host name ("unknown" when it has none).
std::string host_name();

// Theoretical fp32 peak of the CPU: cores x clock x FLOP per cycle of its widest FMA.
double cpu_peak_fp32_gflops();

report::json make_context(const char* argv0, const Options& o);

// pairbench's version, git revision, and whether it was built with CUDA: what every rank of a
// run must share.
std::string build_identity();

// context.ranks over several ranks: the size, the launcher, and every rank's host, local rank,
// CPU, GPU and library versions (from each rank's own context). Called on every rank.
report::json ranks_context(const report::json& context);

}  // namespace pb
