// A plain Google Benchmark program, built against the same library as pairbench: the reference
// for what Google Benchmark itself writes in a JSON report, entry by entry (tests/test_ci_tools.py
// compares pairbench's entries with its entries, key for key). One case that runs with manual
// time and counters, one that fails.
#include <benchmark/benchmark.h>

static void ok(benchmark::State& st) {
  for (auto _ : st) st.SetIterationTime(1e-6);
  st.counters["GFLOP/s"] = 1.0;
  st.counters["bytes_per_second"] = 1e9;
}

static void fails(benchmark::State& st) {
  st.SkipWithError("failed on purpose");
  for (auto _ : st) {
  }
}

BENCHMARK(ok)->UseManualTime();
BENCHMARK(fails)->UseManualTime();
BENCHMARK_MAIN();
