// pairbench: parse the flags, build the cases, verify and time them, write the report.
#include <benchmark/benchmark.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <vector>

#include "bench/progress.hpp"
#include "bench/cases.hpp"
#include "bench/ceilings.hpp"
#include "bench/context.hpp"
#include "bench/energy.hpp"
#include "bench/harness.hpp"
#include "bench/ops/family.hpp"
#include "bench/ranks.hpp"
#include "cpu_ref/cpu.hpp"
#include "core/deadline.hpp"
#include "kernels/gpu.hpp"

namespace {

char g_interrupt_msg[4096];

extern "C" void on_signal(int sig) {
  const ssize_t ignored = write(STDERR_FILENO, g_interrupt_msg, std::strlen(g_interrupt_msg));
  (void)ignored;
  _exit(128 + sig);
}

std::string default_report_path() {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
  mkdir("results", 0755);
  return "results/" + pb::host_name() + "-" + stamp + ".json";
}

int fail_usage(const std::string& msg);

// Whether paths a and b name one file, existing or not: the same string, another spelling of it
// (./r.json, a//r.json, through a link), a hard link.
bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code e1, e2, e3;
  if (a == b || fs::equivalent(a, b, e1)) return true;
  const fs::path ca = fs::weakly_canonical(a, e2), cb = fs::weakly_canonical(b, e3);
  return !e2 && !e3 && ca == cb;
}

// Whether all written to stdout reached it; where not (a full disk, a closed stdout), says so.
bool stdout_written() {
  if (pb::ranks::world().rank > 0) return true;  // its stdout is shut on purpose
  std::cout.flush();
  if (std::cout.good() && std::fflush(stdout) == 0 && !std::ferror(stdout)) return true;
  fail_usage("cannot write to stdout");
  return false;
}

int fail_usage(const std::string& msg) {
  // One line, whatever the user typed into a value (a newline, an escape sequence), in one
  // write: the lines of several ranks on one terminal do not interleave.
  std::string line = "pairbench: error: ";
  for (const char c : msg) {
    if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) {
      line += c;
      continue;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
    line += hex;
  }
  line += "\n";
  std::fputs(line.c_str(), stderr);
  return 2;
}

// argv with the suite's default min time (pb::default_min_time) put first. It is passed as a
// default flag, not per benchmark, so that case names do not depend on it.
std::vector<char*> with_default_min_time(int argc, char** argv) {
  static std::string flag;  // argv's strings outlive the run; so does this one
  flag = pb::default_min_time(argc, argv);
  std::vector<char*> args(argv, argv + argc);
  if (!flag.empty()) args.insert(args.begin() + 1, flag.data());
  args.push_back(nullptr);
  return args;
}

// Re-executes this program with OPENBLAS_CORETYPE=core, so that OpenBLAS, which reads it once
// when it loads, runs the kernels for this CPU. Returns only if the exec failed.
void reexec_with_openblas_core(const std::string& core, const std::string& detected, char** argv) {
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  setenv(pb::cpu::kOpenblasDetectedEnv, detected.c_str(), 1);
  execv("/proc/self/exe", argv);
  const int err = errno;
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(pb::cpu::kOpenblasDetectedEnv);
  std::cerr << "pairbench: warning: could not restart with OPENBLAS_CORETYPE=" << core << " ("
            << std::strerror(err) << "): cpu/openblas runs OpenBLAS's " << detected << " kernels\n";
}

// A hash of the strings, the same on every rank that has the same ones.
std::string fingerprint(const std::vector<std::string>& items) {
  std::size_t h = 0;
  for (const std::string& s : items) h = h * 1000003u ^ std::hash<std::string>()(s);
  return std::to_string(h);
}

// The end of a run, or of --recover: the report written to path (a run's log removed once it
// is), the summary, what failed and where the report is. 1 where a case failed (failed_cases,
// besides those above a ceiling, which the report counts), 2 where the report or stdout could
// not be written.
int conclude(const pb::report::json& doc, int failed_cases, const std::string& path,
             const std::string& log) {
  try {
    pb::report::write_atomic(path, doc.dump(2) + "\n");
  } catch (const std::exception& e) {
    return fail_usage(e.what() +
                      (log.empty() ? std::string()
                                   : "; the cases are in " + log + ": 'pairbench --recover=" + log +
                                         " --report=FILE' writes their report"));
  }
  if (!log.empty()) std::remove(log.c_str());
  std::cout << "\n" << pb::report::summary(doc);
  const int impossible = pb::report::impossible_count(doc);
  const int failed = failed_cases + impossible;
  if (impossible > 0)
    std::cout << impossible
              << " case(s) measured a figure above what the hardware can do (above_ceiling in "
                 "their records): a wrong measurement or count, not a result\n";
  if (failed > 0) std::cout << failed << " case(s) failed; their entries in the report say why\n";
  std::cout << "report: " << path << "\n";
  if (!stdout_written()) return 2;
  return failed > 0 ? 1 : 0;
}

int run(int argc_in, char** argv_in) {
  const pb::ranks::World& world = pb::ranks::init(&argc_in, &argv_in);
  // Rank 0 alone speaks on stdout and writes the report; the others only say what went wrong.
  if (world.rank > 0) std::cout.setstate(std::ios::badbit);
  std::vector<char*> original(argv_in, argv_in + argc_in + 1);  // ends with argv's nullptr
  std::vector<char*> args = with_default_min_time(argc_in, argv_in);
  if (world.rank > 0) {  // rank 0 alone writes files: Google Benchmark's output too
    args.erase(
        std::remove_if(args.begin(), args.end() - 1,
                       [](const char* a) { return std::strncmp(a, "--benchmark_out=", 16) == 0; }),
        args.end() - 1);
    unsetenv("BENCHMARK_OUT");
  }
  int argc = static_cast<int>(args.size()) - 1;
  char** argv = args.data();
  // How Google Benchmark will run the cases, which every rank must share (read before it takes
  // its flags out of argv).
  const std::string settings = pb::run_settings(argc, argv);
  // Bad input is found on every rank alike (the same flags), and said on every rank together
  // once the ranks have compared notes (below), so that none is killed before it said it.
  // Google Benchmark's flags are checked first: some bad values make it print its help and exit.
  std::string usage_error = pb::check_benchmark_flags(argc_in, argv_in);
  auto print_help = [] {
    std::cout << pb::usage_from_registry() << "\nGoogle Benchmark's flags:\n" << std::flush;
    benchmark::PrintDefaultHelp();
  };
  // --help: Google Benchmark's own would print it and exit, on every rank, without MPI's end.
  if (usage_error.empty() && std::any_of(argv_in + 1, argv_in + argc_in, [](const char* a) {
        return std::strcmp(a, "--help") == 0;
      })) {
    if (world.rank == 0) print_help();
    return stdout_written() ? 0 : 2;
  }
  pb::Options o;
  if (usage_error.empty()) {
    benchmark::Initialize(&argc, argv, +print_help);
    try {
      o = pb::parse_options(argc, argv);
    } catch (const pb::UsageError& e) {
      usage_error = e.what();
    }
  }
  if (usage_error.empty() && o.help) {
    std::cout << pb::usage_from_registry();
    return stdout_written() ? 0 : 2;
  }
  if (usage_error.empty() && !o.recover.empty() && world.size > 1)
    return fail_usage("--recover runs nothing: run it as one process, not over " +
                      std::to_string(world.size) + " ranks");
  if (usage_error.empty() && !o.recover.empty()) {
    std::vector<std::string> given = o.given;
    for (int i = 1; i < argc_in; ++i)  // Google Benchmark's flags run nothing here either
      if (std::strncmp(argv_in[i], "--benchmark_", 12) == 0 ||
          std::strncmp(argv_in[i], "--v", 3) == 0)
        given.push_back(std::string(argv_in[i]).substr(0, std::string(argv_in[i]).find('=')));
    for (const std::string& f : given)
      if (f != "--recover" && f != "--report" && f != "--quiet")
        return fail_usage("--recover writes a report from a log and runs nothing: " + f +
                          " does not go with it (only --report and --quiet do)");
    const std::string out =
        !o.report.empty() ? o.report
        : o.recover.size() > 14 && o.recover.rfind(".partial.jsonl") == o.recover.size() - 14
            ? o.recover.substr(0, o.recover.size() - 14)
            : o.recover + ".json";
    if (same_file(out, o.recover))
      return fail_usage("--report=" + out + " would overwrite the log --recover reads");
    const std::string bad_out = pb::report_path_problem(out);
    if (!bad_out.empty()) return fail_usage(bad_out);
    pb::report::json doc;
    try {
      doc = pb::report::recover(o.recover);
    } catch (const std::exception& e) {
      return fail_usage(e.what());
    }
    const pb::report::json& recovered = doc["pairbench"]["cases"];
    const int failed = static_cast<int>(
        std::count_if(recovered.begin(), recovered.end(), [](const pb::report::json& c) {
          return c.value("status", "") == "error" && !c.contains("above_ceiling");
        }));
    return conclude(doc, failed, out, "");
  }

  pb::Resources res;
  res.cores = pb::cpu::max_threads();
  // The ranks on this host share its memory: each is held to its share.
  res.host_available_bytes = pb::host_available_bytes() / world.local_size;
  res.openblas_max_threads = pb::cpu::cpu_info().openblas_max_threads;
  const bool want_gpu = o.devices.empty() || std::find(o.devices.begin(), o.devices.end(),
                                                       pb::Device::gpu) != o.devices.end();
  std::string gpu_key;  // this rank's GPU: its host and PCI bus id
  if (want_gpu && usage_error.empty()) {
    // One GPU per rank: its local rank's, of the GPUs it sees (modulo their number: a launcher
    // that gives each rank one GPU makes every rank see one).
    if (world.size > 1) pb::gpu::select_device(world.local_rank);
    const auto& g = pb::gpu::probe();
    // A CPU-only build on a machine with an NVIDIA GPU is a mistake to fix, not a skip.
    if (g.gpu_visible_but_not_built) usage_error = g.reason;
    res.gpu_available = g.available;
    res.gpu_reason = g.reason;
    res.gpu_free_bytes = g.free_bytes;
    res.gpu_l2_bytes = g.l2_bytes;
    res.gpu_sms = g.sms;
    if (g.available) gpu_key = pb::host_name() + " " + g.pci_bus_id;
  }
  if (world.size > 1) {  // two ranks on one GPU: NCCL may hang
    const std::string shared = pb::ranks::shared_gpu(pb::ranks::gather(gpu_key));
    if (usage_error.empty()) usage_error = shared;
  }
  // NCCL's communicator comes up under a deadline (kernels/collective.cu): a bad value of its
  // variable is bad input, found on every rank before any collective.
  if (usage_error.empty()) {
    try {
      pb::timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", std::getenv("PAIRBENCH_NCCL_TIMEOUT"), 1);
    } catch (const std::invalid_argument& e) {
      usage_error = e.what();
    }
  }
  // NCCL over the ranks where a GPU collective or data-parallel step may run, bootstrapped over MPI
  // (rank 0's unique id to every rank, then each rank's communicator); the ranks agree at each
  // step, this one included, so none waits in a call another never makes.
  auto selected = [&o](const char* op) {
    return o.ops.empty() || std::find(o.ops.begin(), o.ops.end(), op) != o.ops.end();
  };
  const bool want_nccl = selected("collective") || (world.size > 1 && selected("train"));
  // --list runs nothing: it loads NCCL, to say whether its cases could run, and makes no
  // communicator (whose setup waits for every rank, up to PAIRBENCH_NCCL_TIMEOUT).
  if (pb::ranks::all(res.gpu_available && want_nccl && usage_error.empty())) {
    const std::string why =
        o.list ? pb::gpu::nccl_load()
               : pb::ranks::bootstrap("NCCL", pb::gpu::nccl_load, pb::gpu::nccl_unique_id,
                                      [&world](const std::string& id) {
                                        return pb::gpu::nccl_init(id, world.size, world.rank);
                                      });
    pb::ops::set_nccl_reason(why);
  }
  std::vector<pb::Case> cases;
  try {
    if (usage_error.empty()) cases = pb::build_cases(o, res);
    if (usage_error.empty() && cases.empty()) usage_error = pb::no_case_reason(o, res);
    // A filter that leaves nothing to run would write an empty report.
    auto runnable = [](const pb::Case& c) { return c.skip.empty(); };
    auto chosen = [](const pb::Case& c) {
      return c.skip.empty() && pb::selected_by_filter(c.name);
    };
    // Nor would flags that chose only cases this machine cannot run (--devices=gpu without one).
    if (usage_error.empty() && !o.list && !cases.empty() &&
        std::none_of(cases.begin(), cases.end(), runnable))
      usage_error = "every case the flags chose is skipped on this machine (" +
                    std::to_string(cases.size()) + "; the first: " + cases.front().skip +
                    "): --list says why for each";
    if (usage_error.empty() && std::any_of(cases.begin(), cases.end(), runnable) &&
        std::none_of(cases.begin(), cases.end(), chosen))
      usage_error = "--benchmark_filter=" + benchmark::GetBenchmarkFilter() +
                    " selects none of the cases the other flags chose (see --list)";
  } catch (const pb::UsageError& e) {
    usage_error = e.what();
  }
  if (usage_error.empty() && o.list) {
    std::vector<pb::ProgressEstimate::Pending> pending;
    for (const auto& c : cases) {
      if (!pb::selected_by_filter(c.name)) continue;
      std::cout << c.name << (c.skip.empty() ? "" : "  (skipped: " + c.skip + ")") << "\n";
      if (c.skip.empty()) pending.push_back(pb::progress_pending(c));
    }
    if (!stdout_written()) return 2;
    if (world.rank == 0)
      std::cerr << "pairbench: " << pb::expected_line(pending, o.shapes.empty() ? o.suite : "")
                << "\n";
    return 0;
  }
  // Several ranks must run one build on the same cases, or their collectives would not match:
  // a launch where they differ, or where any rank had bad input, is one error on every rank.
  if (world.size > 1) {
    if (usage_error.empty() && pb::random_interleaving(argc_in, argv_in))
      usage_error =
          "--benchmark_enable_random_interleaving: each rank would shuffle the cases by a seed of "
          "its own, and their collectives would not match; several ranks run the cases in order";
    std::vector<std::string> names = {pb::build_identity()};
    for (const pb::Case& c : cases)
      names.push_back(c.name + (c.skip.empty() ? "" : " skipped") +
                      (pb::selected_by_filter(c.name) ? "" : " filtered out"));
    // Each rank's cases, then how it runs them (tab-separated; nothing else holds a tab).
    const std::string how = settings + (o.cold ? " --cold" : "");
    const std::vector<std::string> all = pb::ranks::gather(
        usage_error.empty() ? fingerprint(names) + "\t" + how : "error: " + usage_error);
    for (std::size_t r = 0; r < all.size() && usage_error.empty(); ++r)
      if (all[r].rfind("error: ", 0) == 0)
        usage_error = "rank " + std::to_string(r) + ": " + all[r].substr(7);
    const std::string first = all[0].substr(0, all[0].find('\t'));
    for (std::size_t r = 1; r < all.size() && usage_error.empty(); ++r) {
      if (all[r] == all[0]) continue;
      const std::size_t tab = all[r].find('\t');
      if (all[r].substr(0, tab) != first)
        usage_error = "rank " + std::to_string(r) +
                      " has another build or other cases than rank 0 (different flags or filter, "
                      "or hosts whose CPUs or libraries differ): every rank must run the same";
      else
        usage_error =
            "rank " + std::to_string(r) + " would time the cases otherwise than rank 0 ('" +
            all[r].substr(tab + 1) + "' against '" + all[0].substr(all[0].find('\t') + 1) +
            "': Google Benchmark's flags or variables, or --cold): their collectives would not "
            "match, so every rank must run alike";
    }
  }
  if (!usage_error.empty()) return fail_usage(usage_error);

  const std::string path = o.report.empty() ? default_report_path() : o.report;
  std::string bad_path;
  if (world.rank == 0) {
    bad_path = pb::report_path_problem(path);
    // An earlier run's log, cut short, holds the only copy of its cases.
    const std::string log = pb::report::log_path_for(path);
    struct stat st {};
    if (bad_path.empty() && lstat(log.c_str(), &st) == 0)
      bad_path = "--report=" + path + ": " + log +
                 " is the log of an earlier run cut short: 'pairbench --recover=" + log +
                 "' writes its report; remove the log to run again";
    // Google Benchmark's own output written over the report or its log would be lost.
    const std::string out = pb::benchmark_flag(argc_in, argv_in, "--benchmark_out");
    for (const std::string& ours : {path, log})
      if (bad_path.empty() && !out.empty() && same_file(out, ours))
        bad_path = "--benchmark_out=" + out + " is where pairbench writes " +
                   (ours == path ? "its report" : "its log") +
                   ": give Google Benchmark's output another name";
    try {  // the report's folder takes a file and a rename
      if (bad_path.empty()) pb::report::write_atomic(path + ".probe", "");
      std::remove((path + ".probe").c_str());
    } catch (const std::exception& e) {
      bad_path = "--report=" + path + ": " + e.what();
    }
  }
  if (!pb::ranks::all(bad_path.empty()))
    return fail_usage(bad_path.empty() ? "rank 0 cannot write the report" : bad_path);

  // The arguments are valid. If an OpenBLAS case will run, or a case whose check runs OpenBLAS
  // (a training step's reference: on a GPU too), make sure it runs the right kernels.
  if (std::any_of(cases.begin(), cases.end(), [](const pb::Case& c) {
        return c.skip.empty() &&
               (c.impl.library == "openblas" || c.workload->verifies_through_openblas());
      })) {
    const auto& cpu = pb::cpu::cpu_info();
    const auto plan = pb::cpu::openblas_core_plan(cpu, o.openblas_asis);
    if (plan.reexec && world.size == 1)
      reexec_with_openblas_core(plan.target, cpu.openblas_core_detected, original.data());
    else if (plan.reexec && world.rank == 0)
      std::cerr << "pairbench: warning: OpenBLAS runs its " << cpu.openblas_core_detected
                << " kernels; a rank cannot restart itself under MPI: launch with "
                << "OPENBLAS_CORETYPE=" << plan.target << " exported (mpirun -x)\n";
    if (!plan.note.empty() && world.rank == 0) std::cerr << "pairbench: " << plan.note << "\n";
  }
  // More threads than cores is allowed (oversubscription is a thing to measure), but rarely meant.
  const auto most = std::max_element(o.threads.begin(), o.threads.end());
  if (most != o.threads.end() && *most > res.cores && world.rank == 0)
    std::cerr << "pairbench: warning: --threads asks for " << *most << " threads and this process "
              << "may use " << res.cores << " cores: threads beyond them share cores, and their "
              << "cases measure that\n";

  std::unique_ptr<pb::report::Log> log;
  try {
    log = std::make_unique<pb::report::Log>(world.rank == 0 ? pb::report::log_path_for(path)
                                                            : std::string());
  } catch (const std::exception& e) {
    return fail_usage("cannot write the report: " + std::string(e.what()));
  }
  if (world.rank == 0)
    std::snprintf(g_interrupt_msg, sizeof g_interrupt_msg,
                  "\npairbench: interrupted; cases measured so far are in %s; "
                  "'pairbench --recover=%s' writes their report\n",
                  log->path().c_str(), log->path().c_str());
  else  // rank 0 keeps the log
    std::snprintf(g_interrupt_msg, sizeof g_interrupt_msg, "pairbench: rank %d interrupted\n",
                  world.rank);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  // The energy meters, each calibrated at idle (its idle power, how often its counter moves)
  // before anything runs; both at once.
  const bool cpu_cases = std::any_of(cases.begin(), cases.end(), [](const pb::Case& c) {
    return c.skip.empty() && c.impl.device == pb::Device::cpu;
  });
  const bool gpu_cases = std::any_of(cases.begin(), cases.end(), [](const pb::Case& c) {
    return c.skip.empty() && c.impl.device == pb::Device::gpu;
  });
  auto gpu_calibration = std::async(std::launch::async, [&] {
    return pb::energy::calibrate(
        gpu_cases ? pb::energy::open_gpu_meter(pb::gpu::probe().pci_bus_id)
                  : pb::energy::unavailable_meter(want_gpu && !pb::gpu::probe().available
                                                      ? "no GPU: " + pb::gpu::probe().reason
                                                      : std::string("no GPU case runs")),
        1.0);
  });
  const pb::energy::Calibrated cpu_energy = pb::energy::calibrate(
      cpu_cases ? pb::energy::open_cpu_meter() : pb::energy::unavailable_meter("no CPU case runs"),
      1.0);
  const pb::energy::Calibrated gpu_energy = gpu_calibration.get();

  pb::report::json context = pb::make_context(argv[0], o);
  if (world.size > 1) context["ranks"] = pb::ranks_context(context);
  context["energy"] = {{"cpu", cpu_energy.context()}, {"gpu", gpu_energy.context()}};
  // The per-device figures the user gave (negative: not given).
  auto per_device = [&context](const char* key, double cpu, double gpu) {
    if (cpu < 0 && gpu < 0) return;
    context[key] = pb::report::json::object();
    if (cpu >= 0) context[key]["cpu"] = cpu;
    if (gpu >= 0) context[key]["gpu"] = gpu;
  };
  per_device("price_usd_per_hour", o.price_cpu, o.price_gpu);
  per_device("cluster_busbw_gbs", o.busbw_cpu, o.busbw_gpu);
  context["ceilings"] =
      pb::ceilings(context, pb::measure_ceilings(cases, res, o.quiet || world.rank > 0));
  context["pct_peak_gflops"] = {{"cpu", pb::pct_peak_gflops(context["ceilings"], pb::Device::cpu,
                                                            pb::cpu_peak_fp32_gflops())},
                                {"gpu", pb::pct_peak_gflops(context["ceilings"], pb::Device::gpu,
                                                            pb::gpu::probe().peak_fp32_gflops)}};
  log->append("context", context);
  pb::HarnessConfig cfg;
  cfg.cold = o.cold;
  cfg.keep_error_entries = o.keep_error_entries;
  cfg.quiet = o.quiet || world.rank > 0;
  cfg.suite = o.shapes.empty() ? o.suite : "";  // --shape runs have no expected time
  cfg.cpu_peak_gflops = context["pct_peak_gflops"]["cpu"];
  cfg.gpu_peak_gflops = context["pct_peak_gflops"]["gpu"];
  cfg.cpu_energy = &cpu_energy;
  cfg.gpu_energy = &gpu_energy;
  const pb::HarnessResult result = pb::run_cases(cases, cfg, *log);
  // Every rank's failures count, in every rank's exit code.
  const int rank_failed = static_cast<int>(pb::ranks::max_over(result.failed));
  if (world.rank > 0) return rank_failed > 0 ? 1 : 0;  // it kept no log

  const pb::report::json doc =
      pb::report::build(context, result.benchmarks, result.cases, result.probes);
  const std::string drift =
      pb::report::drift_warning(doc["context"].value("machine_drift", pb::report::json::object()));
  if (!drift.empty()) std::cerr << "pairbench: " << drift << "\n";
  return conclude(doc, std::max(result.failed, rank_failed), path, log->path());
}

}  // namespace

int main(int argc, char** argv) {
  int rc = 1;
  try {
    rc = run(argc, argv);
  } catch (const pb::UsageError& e) {
    rc = fail_usage(e.what());
  } catch (const std::exception& e) {
    std::cerr << "pairbench: error: " << e.what() << "\n";
    rc = pb::ranks::world().launcher.empty() || !pb::ranks::built_with_mpi() ? 1 : 2;
  }
  pb::ranks::finalize();
  return rc;
}
