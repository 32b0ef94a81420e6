// The command line: pairbench's own flags (Google Benchmark takes its --benchmark_* first).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/types.hpp"

namespace pb {

// Bad input on the command line: one line on stderr, exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct Options {
  std::string suite = "standard";
  std::vector<std::string> ops;    // empty: all
  std::vector<Device> devices;     // empty: all
  std::vector<std::string> impls;  // "name" or "device/name"; empty: all
  std::vector<int> threads;        // empty: all cores
  std::vector<Dtype> dtypes;       // empty: all
  std::vector<KeyValues> shapes;   // --shape, replaces the suite's shapes
  std::string report;              // empty: results/<host>-<UTC timestamp>.json
  std::string recover;             // --recover=LOG
  bool list = false, help = false, cold = false;
  bool quiet = false;  // --quiet: no progress lines on stderr
  int epochs = 90;     // --epochs: the whole training the projection gives
  // --price: the machine's hourly price per device in USD (e.g. a cloud instance's); negative
  // where none was given. The projection's dollars come from these alone.
  double price_cpu = -1, price_gpu = -1;
  // --busbw: the all-reduce bus bandwidth (GB/s, as nccl-tests gives it) between the devices of
  // a cluster, for the scaling analysis's projection to cluster sizes; negative where not given.
  double busbw_cpu = -1, busbw_gpu = -1;
  bool openblas_asis = false;       // --openblas-core=asis: OpenBLAS's own choice of kernels
  bool keep_error_entries = false;  // --keep-error-entries: failed cases stay in `benchmarks`
  std::vector<std::string> given;   // the flags given, in order (each once but --shape)
};

// Parses what Google Benchmark left in argv; throws UsageError.
Options parse_options(int argc, char** argv);
// The first bad Google Benchmark flag in argv, as one line ("" if none): a value it would take
// and then print its help and exit 0 for, or run nothing with (an unknown format, time unit,
// repetitions below 1, a min time that is not a positive number, a filter that is no regular
// expression, --benchmark_list_tests), a --benchmark_out it could not write at the end, a flag
// given twice; the same of the variables Google Benchmark reads for the flags the command line
// does not give (BENCHMARK_REPETITIONS=0). Checked before Google Benchmark sees the flags.
std::string check_benchmark_flags(int argc, char** argv);
// Whether Google Benchmark will shuffle the cases, as it reads
// --benchmark_enable_random_interleaving (or its variable, BENCHMARK_ENABLE_RANDOM_INTERLEAVING):
// each process by a seed of its own.
bool random_interleaving(int argc, char** argv);
// Why `flag`'s output file `path` cannot be written, as one line ("" if it can, as far as its
// folder says): no name, a directory, a folder that does not exist or is not writable.
std::string output_path_problem(const std::string& flag, const std::string& path);
// Why --report=path cannot be written, as one line ("" if it can): output_path_problem's
// reasons, or something other than a file at path or at path.tmp (a device, a pipe, a link, a
// folder), which the report's rename would replace.
std::string report_path_problem(const std::string& path);
// The value Google Benchmark will read for `flag` (e.g. "--benchmark_out"): the command
// line's, else its variable's (BENCHMARK_OUT); "" where neither gives it.
std::string benchmark_flag(int argc, char** argv, const std::string& flag);
// How Google Benchmark will run the cases, as argv and its variables set it: the flags that
// change which iterations and repetitions run and what is reported ("--benchmark_min_time=0.5
// --benchmark_repetitions=3"), each as it will read it; "" where none is set. Every rank of a
// run must have the same.
std::string run_settings(int argc, char** argv);
// The Google Benchmark flag that sets the suite's min time per case where the user gives none
// (neither --benchmark_min_time nor BENCHMARK_MIN_TIME): "--benchmark_min_time=0.1" for the
// quick suite, 0.25 for the standard suite (so that it fits in ten minutes on two cores); ""
// for the full suite and --shape runs, which keep Google Benchmark's 0.5 s.
std::string default_min_time(int argc, char** argv);
// The --help text; the op list and each op's implementations come from the registry
// (bench/cases.hpp: usage_from_registry() fills them in).
std::string usage(const std::string& ops, const std::string& impls, const std::string& shapes);

// Splits "a,b,c"; throws UsageError on an empty item.
std::vector<std::string> split_list(const std::string& flag, const std::string& value);

}  // namespace pb
