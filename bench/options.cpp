#include "bench/options.hpp"

#include <regex.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "core/parse.hpp"

namespace pb {

std::string usage(const std::string& ops, const std::string& impls, const std::string& shapes) {
  std::string text = R"(usage: pairbench [flags] [--benchmark_* flags]

Measures CPU and GPU implementations of neural-network work, each verified before it is timed,
and writes a Google Benchmark JSON report with a "pairbench" section of analyses.

  --suite=quick|standard|full  which shapes to run (default standard; quick: under 2 minutes on 2 cores)
  --ops=LIST         ops to run: @OPS@
  --devices=LIST     cpu, gpu (default: both; without a GPU its cases are listed as skipped)
  --impls=LIST       implementations by name or as device/name (gpu/naive); naming one also
                     runs it on shapes a suite would leave out as too slow. By op:
@IMPLS@
  --threads=LIST     CPU thread counts, e.g. 1,2 (default: all cores)
  --dtypes=LIST      fp32, tf32, fp16, bf16 (default: all; the CPU runs fp32, and bf16 and
                     fp16 through oneDNN where its ISA has them)
  --shape=K=V,...    run this shape instead of the suite's (repeatable; --ops must name one
                     op). Keys by op (ta=1: A stored transposed):
@SHAPES@
  --openblas-core=auto|asis
                     auto (default): when OpenBLAS picked kernels below the CPU's ISA (a CPU
                     newer than the library), pairbench restarts itself once with
                     OPENBLAS_CORETYPE set to the right core and says so; asis: keep
                     OpenBLAS's choice. An OPENBLAS_CORETYPE you set always wins
  --keep-error-entries
                     keep Google Benchmark's entries of failed cases (error_occurred, a zero
                     time) in "benchmarks"; by default a failed case is only in
                     pairbench.cases, so no CI tool reads it as a time
  --cold             flush the CPU last-level cache / GPU L2 before every iteration
  --quiet            no progress on stderr (by default a line per case as it starts: the
                     count, elapsed time and an estimate of what is left; refreshed in place
                     on a terminal)
  --epochs=N         the epochs of a whole training in the projection (default 90, as
                     torchvision's reference recipe trains ResNet-50)
  --price=cpu=USD,gpu=USD
                     the hourly price of the machine each device is in (a cloud instance's,
                     say): the projection then gives dollars per epoch and per training
                     beside the hours and the energy (no prices are built in)
  --busbw=cpu=GBPS,gpu=GBPS
                     the all-reduce bus bandwidth between the devices of a cluster (GB/s, as
                     nccl-tests reports it): the scaling analysis projects the training step to
                     cluster sizes with it (default: the run's own all-reduce, where it ran)
  --report=PATH      where to write the report (default results/<host>-<UTC time>.json)
  --recover=LOG      turn the log of an interrupted run (PATH.partial.jsonl) into its report;
                     given a report, rebuild it through this version's checks and analyses
  --list             print the cases without running them
  --help             this text

Exit codes: 0 all cases verified; 1 a case failed verification or errored (its entry in the
report says why); 2 bad input (nothing was run or written).
)";
  for (const auto& [key, value] : {std::pair<std::string, std::string>{"@OPS@", ops},
                                   {"@IMPLS@", impls},
                                   {"@SHAPES@", shapes}})
    text.replace(text.find(key), key.size(), value);
  return text;
}

std::vector<std::string> split_list(const std::string& flag, const std::string& value) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = value.find(',', start);
    const std::string item = value.substr(start, comma - start);
    if (item.empty()) throw UsageError(flag + ": empty item in '" + value + "'");
    out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

namespace {

// `expected` says what an item may be, for the message.
template <class T, class Parse>
std::vector<T> parse_list(const std::string& flag, const std::string& value, Parse parse,
                          const char* expected) {
  std::vector<T> out;
  for (const std::string& item : split_list(flag, value)) {
    T x;
    if (!parse(item, &x)) throw UsageError(flag + ": '" + item + "' is not " + expected);
    if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  }
  return out;
}

bool parse_threads(const std::string& s, int* out) {
  if (s.empty() || s.size() > 4 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *out = std::stoi(s);
  return *out >= 1 && *out <= 1024;
}

KeyValues parse_shape(const std::string& value) {
  KeyValues kv;
  for (const std::string& item : split_list("--shape", value)) {
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError("--shape: '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq);
    for (const auto& [k, v] : kv)
      if (k == key) throw UsageError("--shape: '" + key + "' is given twice in '" + value + "'");
    kv.emplace_back(key, item.substr(eq + 1));
  }
  return kv;
}

// "cpu=0.5,gpu=3.2": a number by device (`unit` names it in the message, `what` says what it
// is), >= 0, or > 0 where `positive`, and at most 1e6 (a million dollars an hour, a petabyte a
// second: beyond any machine).
void parse_per_device(const std::string& flag, const std::string& value, const char* unit,
                      const char* what, bool positive, double* cpu, double* gpu) {
  std::vector<std::string> seen;
  for (const std::string& item : split_list(flag, value)) {
    const std::size_t eq = item.find('=');
    const std::string device = item.substr(0, eq);
    if (eq == std::string::npos || (device != "cpu" && device != "gpu"))
      throw UsageError(flag + ": '" + item + "' is not cpu=" + unit + " or gpu=" + unit);
    if (std::find(seen.begin(), seen.end(), device) != seen.end())
      throw UsageError(flag + ": " + device + " is given twice");
    seen.push_back(device);
    const std::string number = item.substr(eq + 1);
    double v = 0;
    std::size_t used = 0;
    try {
      v = std::stod(number, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (number.empty() || used != number.size() || !std::isfinite(v) || v < 0 ||
        (positive && v == 0) || v > 1e6)
      throw UsageError(flag + ": '" + number + "' is not " + what + " (a number " +
                       (positive ? "> 0" : ">= 0") + " and at most 1e6)");
    *(device == "cpu" ? cpu : gpu) = v + 0.0;  // -0 is 0
  }
}

// A number in [lo, hi] (lo excluded where lo_open), written whole: "2", "0.5", "1e-3".
bool number_in(const std::string& v, double lo, bool lo_open, double hi) {
  char* end = nullptr;
  const double x = v.empty() ? NAN : std::strtod(v.c_str(), &end);
  return !v.empty() && *end == '\0' && std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
}

// The words Google Benchmark reads as a yes or a no; it takes any other word as yes.
bool boolean_word(const std::string& v) {
  std::string w = v;
  for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "1", "0", "t", "f", "y", "n"})
    if (w == word) return true;
  return false;
}

// A flag's value as Google Benchmark 1.7.1 reads a yes (IsTruthyFlagValue): any but a no.
bool truthy(const std::string& v) {
  if (v.size() == 1)
    return std::isalnum(static_cast<unsigned char>(v[0])) &&
           std::string("0fFnN").find(v[0]) == std::string::npos;
  std::string w = v;
  for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return w != "false" && w != "no" && w != "off";
}

}  // namespace

bool random_interleaving(int argc, char** argv) {
  const std::string flag = "--benchmark_enable_random_interleaving";
  for (int i = argc - 1; i >= 1; --i) {
    const std::string a = argv[i];
    if (a == flag) return true;
    if (a.rfind(flag + "=", 0) == 0) return truthy(a.substr(flag.size() + 1));
  }
  const char* env = std::getenv("BENCHMARK_ENABLE_RANDOM_INTERLEAVING");
  return env && truthy(env);
}

std::string output_path_problem(const std::string& flag, const std::string& path) {
  if (path.empty()) return flag + " needs a file name";
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return flag + "=" + path + " is a directory";
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return flag + "=" + path + ": folder " + dir + " does not exist";
  // A new file goes in through a rename: the folder must take it.
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    return flag + "=" + path + ": folder " + dir + " is not writable";
  return "";
}

std::string report_path_problem(const std::string& path) {
  const std::string bad = output_path_problem("--report", path);
  if (!bad.empty()) return bad;
  for (const std::string& p : {path, path + ".tmp"}) {
    struct stat st {};
    if (lstat(p.c_str(), &st) != 0 || S_ISREG(st.st_mode)) continue;
    return "--report=" + path + ": " + p + " is " +
           (S_ISLNK(st.st_mode)   ? "a symbolic link"
            : S_ISDIR(st.st_mode) ? "a directory"
                                  : "a device, pipe or socket") +
           ", which the report, written to " + path + ".tmp and renamed, would replace";
  }
  return "";
}

namespace {

// The flags Google Benchmark 1.7.1 also takes from a variable (BENCHMARK_FILTER for
// --benchmark_filter) where the command line does not give them.
constexpr const char* kBenchmarkEnvFlags[] = {"--benchmark_list_tests",
                                              "--benchmark_filter",
                                              "--benchmark_min_time",
                                              "--benchmark_min_warmup_time",
                                              "--benchmark_repetitions",
                                              "--benchmark_enable_random_interleaving",
                                              "--benchmark_report_aggregates_only",
                                              "--benchmark_display_aggregates_only",
                                              "--benchmark_format",
                                              "--benchmark_out_format",
                                              "--benchmark_out",
                                              "--benchmark_color",
                                              "--benchmark_counters_tabular",
                                              "--benchmark_time_unit"};

// --benchmark_filter's variable: BENCHMARK_FILTER.
std::string env_name(const std::string& flag) {
  std::string name = flag.substr(2);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

struct GivenFlag {
  std::string flag, value;
  bool from_env;
};

// Google Benchmark's flags as it will read them: the command line's, then the variables of
// those it does not give.
std::vector<GivenFlag> benchmark_flags_given(int argc, char** argv) {
  std::vector<GivenFlag> out;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--benchmark_", 0) != 0) continue;
    const std::size_t eq = arg.find('=');
    out.push_back({arg.substr(0, eq), eq == std::string::npos ? "" : arg.substr(eq + 1), false});
  }
  for (const char* flag : kBenchmarkEnvFlags) {
    const char* env = std::getenv(env_name(flag).c_str());
    auto on_line = [&](const GivenFlag& g) { return g.flag == flag && !g.from_env; };
    if (env && std::none_of(out.begin(), out.end(), on_line)) out.push_back({flag, env, true});
  }
  return out;
}

}  // namespace

std::string benchmark_flag(int argc, char** argv, const std::string& flag) {
  std::string v;
  for (const GivenFlag& g : benchmark_flags_given(argc, argv))
    if (g.flag == flag) v = g.value;  // the last, as Google Benchmark reads them
  return v;
}

std::string run_settings(int argc, char** argv) {
  const std::vector<GivenFlag> given = benchmark_flags_given(argc, argv);
  std::string out;
  for (const char* flag :
       {"--benchmark_min_time", "--benchmark_min_warmup_time", "--benchmark_repetitions",
        "--benchmark_report_aggregates_only", "--benchmark_display_aggregates_only"}) {
    auto last = std::find_if(given.rbegin(), given.rend(),
                             [&](const GivenFlag& g) { return g.flag == flag; });
    if (last != given.rend()) out += (out.empty() ? "" : " ") + last->flag + "=" + last->value;
  }
  return out;
}

std::string default_min_time(int argc, char** argv) {
  if (std::getenv("BENCHMARK_MIN_TIME")) return "";
  std::string suite = "standard";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--benchmark_min_time", 20) == 0) return "";
    if (std::strncmp(argv[i], "--shape", 7) == 0) return "";
    if (std::strncmp(argv[i], "--suite=", 8) == 0) suite = argv[i] + 8;
  }
  if (suite == "quick") return "--benchmark_min_time=0.1";
  if (suite == "standard") return "--benchmark_min_time=0.25";
  return "";
}

std::string check_benchmark_flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--help=", 0) == 0) return "--help takes no value";  // Google Benchmark's too
    const std::string level = arg.substr(std::min<std::size_t>(4, arg.size()));
    if (arg.rfind("--v=", 0) == 0 &&
        (level.empty() || level.size() > 3 || !std::all_of(level.begin(), level.end(), ::isdigit) ||
         std::atoi(level.c_str()) > 100))
      return "--v: '" + level + "' is not a verbosity level (a whole number from 0 to 100)";
  }
  std::vector<std::string> seen;
  for (const GivenFlag& g : benchmark_flags_given(argc, argv)) {
    const std::string& v = g.value;
    // A variable is named as itself: the user may not know it is set.
    const std::string flag =
        g.from_env ? env_name(g.flag) + " (Google Benchmark reads it as " + g.flag + ")" : g.flag;
    if (std::find(seen.begin(), seen.end(), flag) != seen.end()) return flag + " is given twice";
    seen.push_back(flag);
    auto one_of = [&](std::initializer_list<const char*> allowed) {
      std::string list;
      for (const char* a : allowed) {
        if (v == a) return std::string();
        list += (list.empty() ? "" : ", ") + std::string(a);
      }
      return flag + ": '" + v + "' is not one of " + list;
    };
    std::string bad;
    if (g.flag == "--benchmark_format" || g.flag == "--benchmark_out_format") {
      bad = one_of({"console", "json", "csv"});
    } else if (g.flag == "--benchmark_time_unit") {
      bad = one_of({"ns", "us", "ms", "s"});
    } else if (g.flag == "--benchmark_repetitions") {
      if (v.empty() || v.size() > 6 || !std::all_of(v.begin(), v.end(), ::isdigit) ||
          std::atoi(v.c_str()) < 1)
        bad = flag + ": '" + v + "' is not a count of repetitions from 1 to 999999";
    } else if (g.flag == "--benchmark_min_time") {
      if (!number_in(v, 0, true, 1e6))
        bad = flag + ": '" + v + "' is not a number of seconds above 0 (e.g. 0.5)";
    } else if (g.flag == "--benchmark_min_warmup_time") {
      if (!number_in(v, 0, false, 1e6))
        bad = flag + ": '" + v + "' is not a number of seconds from 0 (e.g. 0.5)";
    } else if (g.flag == "--benchmark_filter") {
      const std::string pattern = !v.empty() && v[0] == '-' ? v.substr(1) : v;
      regex_t re;
      if (regcomp(&re, pattern.c_str(), REG_EXTENDED | REG_NOSUB) != 0)
        bad = flag + ": '" + v + "' is not a regular expression";
      else
        regfree(&re);
    } else if (g.flag == "--benchmark_color") {
      // Google Benchmark reads any other word as true: "maybe" would have meant yes.
      if (v != "auto" && !boolean_word(v)) bad = flag + ": '" + v + "' is not auto, true or false";
    } else if (g.flag == "--benchmark_counters_tabular" ||
               g.flag == "--benchmark_enable_random_interleaving" ||
               g.flag == "--benchmark_report_aggregates_only" ||
               g.flag == "--benchmark_display_aggregates_only") {
      if (!v.empty() && !boolean_word(v)) bad = flag + ": '" + v + "' is not true or false";
    } else if (g.flag == "--benchmark_list_tests") {
      if (v != "false" && v != "0")
        bad = flag + " lists Google Benchmark's names and runs nothing: --list lists the cases";
    } else if (g.flag == "--benchmark_out") {
      // Google Benchmark writes it at the end of the run: a path that cannot take it fails now.
      bad = output_path_problem(flag, v);
    }
    if (!bad.empty()) return bad;
  }
  return "";
}

namespace {

// The fewest one-character insertions, deletions and substitutions that turn a into b.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The flag a mistyped one most likely meant: one or two characters away (--thread, --dtype), or
// the name other tools give ours (--out: --report); "" where none is that close.
std::string meant_flag(const std::string& flag) {
  if (flag == "--out" || flag == "--output" || flag == "-o") return "--report";
  static const char* const kFlags[] = {
      "--suite", "--ops",    "--devices", "--impls", "--threads",       "--dtypes",
      "--shape", "--report", "--recover", "--list",  "--cold",          "--epochs",
      "--price", "--busbw",  "--quiet",   "--help",  "--openblas-core", "--keep-error-entries"};
  std::string best;
  std::size_t closest = 3;
  for (const char* known : kFlags) {
    const std::size_t d = edit_distance(flag, known);
    if (d < closest) closest = d, best = known;
  }
  return best;
}

}  // namespace

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::size_t eq = arg.find('=');
    const std::string flag = arg.substr(0, eq);
    const bool has_value = eq != std::string::npos;
    const std::string value = has_value ? arg.substr(eq + 1) : "";
    if (flag != "--shape" && std::find(o.given.begin(), o.given.end(), flag) != o.given.end())
      throw UsageError(flag + " is given twice (give it once, with a list where it takes one)");
    o.given.push_back(flag);
    auto need_value = [&] {
      if (!has_value || value.empty()) throw UsageError(flag + " needs a value (" + flag + "=...)");
    };
    auto no_value = [&] {
      if (has_value) throw UsageError(flag + " takes no value");
    };
    if (flag == "--suite") {
      need_value();
      if (value != "quick" && value != "standard" && value != "full")
        throw UsageError("--suite: unknown suite '" + value + "' (quick, standard, full)");
      o.suite = value;
    } else if (flag == "--ops") {
      need_value();
      o.ops = split_list(flag, value);
    } else if (flag == "--devices") {
      need_value();
      o.devices = parse_list<Device>(flag, value, parse_device, "a device (cpu, gpu)");
    } else if (flag == "--impls") {
      need_value();
      o.impls = split_list(flag, value);
    } else if (flag == "--threads") {
      need_value();
      o.threads = parse_list<int>(flag, value, parse_threads, "a thread count from 1 to 1024");
    } else if (flag == "--dtypes") {
      need_value();
      o.dtypes = parse_list<Dtype>(flag, value, parse_dtype, "a dtype (fp32, tf32, fp16, bf16)");
    } else if (flag == "--shape") {
      need_value();
      o.shapes.push_back(parse_shape(value));
    } else if (flag == "--report") {
      need_value();
      o.report = value;
    } else if (flag == "--recover") {
      need_value();
      o.recover = value;
    } else if (flag == "--openblas-core") {
      need_value();
      if (value != "auto" && value != "asis")
        throw UsageError("--openblas-core: unknown value '" + value + "' (auto, asis)");
      o.openblas_asis = value == "asis";
    } else if (flag == "--keep-error-entries") {
      no_value();
      o.keep_error_entries = true;
    } else if (flag == "--list") {
      no_value();
      o.list = true;
    } else if (flag == "--cold") {
      no_value();
      o.cold = true;
    } else if (flag == "--epochs") {
      need_value();
      try {
        o.epochs = static_cast<int>(parse_count("--epochs", value, 10000));
      } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
      }
    } else if (flag == "--price") {
      need_value();
      parse_per_device(flag, value, "USD_PER_HOUR", "a price in USD per hour", false, &o.price_cpu,
                       &o.price_gpu);
    } else if (flag == "--busbw") {
      need_value();
      parse_per_device(flag, value, "GBPS", "a bus bandwidth in GB/s", true, &o.busbw_cpu,
                       &o.busbw_gpu);
    } else if (flag == "--quiet") {
      no_value();
      o.quiet = true;
    } else if (flag == "--help" || flag == "-h") {
      no_value();
      o.help = true;
    } else if (flag.rfind("--benchmark_", 0) == 0) {
      throw UsageError("bad Google Benchmark flag or value: " + arg);
    } else {
      const std::string meant = meant_flag(flag);
      throw UsageError("unknown flag '" + arg + "' (" +
                       (meant.empty() ? "see --help" : "did you mean " + meant + "?") + ")");
    }
  }
  return o;
}

}  // namespace pb
