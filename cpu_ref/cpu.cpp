// What every CPU implementation shares, and the CPU's identity for the report.
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <linux/perf_event.h>
#include <sched.h>
#include <strings.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <numeric>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/stream.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::cpu {

int openblas_max_threads_in(const std::string& config) {
  const std::size_t at = config.find("MAX_THREADS=");
  return at == std::string::npos ? 0 : std::atoi(config.c_str() + at + 12);
}

void set_threads(int threads) {
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int max_threads() { return omp_get_num_procs(); }

void CpuImpl::activate() { set_threads(threads_); }

void CpuImpl::flush_cache() {
  // Writing twice the last-level cache evicts the operands.
  static std::vector<char> junk;
  if (junk.empty()) {
    const long llc = std::max({cpu_info().l3_bytes, cpu_info().l2_bytes, 8L << 20});
    junk.resize(static_cast<std::size_t>(2 * llc));
  }
  static char tick = 0;
  ++tick;
  for (std::size_t i = 0; i < junk.size(); i += 64) junk[i] = tick;
}

namespace {

// ISA rank: 1 SSE, 2 AVX, 3 AVX2+FMA, 4 AVX-512.
int isa_rank(const std::vector<std::string>& isa) {
  auto has = [&](const char* f) { return std::find(isa.begin(), isa.end(), f) != isa.end(); };
  if (has("avx512f")) return 4;
  if (has("avx2") && has("fma")) return 3;
  if (has("avx")) return 2;
  return 1;
}

int core_rank(std::string core) {
  std::transform(core.begin(), core.end(), core.begin(), ::tolower);
  static const std::map<std::string, int> ranks = {
      {"prescott", 1},   {"core2", 1},       {"penryn", 1},      {"dunnington", 1},
      {"nehalem", 1},    {"atom", 1},        {"barcelona", 1},   {"opteron", 1},
      {"nano", 1},       {"bobcat", 1},      {"sandybridge", 2}, {"bulldozer", 2},
      {"piledriver", 2}, {"steamroller", 2}, {"haswell", 3},     {"zen", 3},
      {"excavator", 3},  {"skylakex", 4},    {"cooperlake", 4},  {"sapphirerapids", 4}};
  auto it = ranks.find(core);
  return it == ranks.end() ? 0 : it->second;
}

std::vector<std::string> read_isa(std::string* model) {
  std::ifstream f("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(f, line)) {
    auto value = [&] { return line.substr(line.find(':') + 2); };
    if (model->empty() && line.rfind("model name", 0) == 0) *model = value();
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = value();
  }
  static const char* interesting[] = {
      "sse4_2",      "avx",         "avx2",        "fma",      "avx512f",  "avx512bw", "avx512vl",
      "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16"};
  std::vector<std::string> isa;
  std::istringstream is(flags);
  std::vector<std::string> present;
  for (std::string w; is >> w;) present.push_back(w);
  for (const char* f : interesting)
    if (std::find(present.begin(), present.end(), f) != present.end()) isa.push_back(f);
  return isa;
}

}  // namespace

std::string openblas_core_for_isa(const std::vector<std::string>& isa) {
  switch (isa_rank(isa)) {
    case 4:
      return "SkylakeX";
    case 3:
      return "Haswell";
    case 2:
      return "Sandybridge";
    default:
      return "";
  }
}

OpenblasCorePlan openblas_core_plan(const std::string& detected, const std::string& used,
                                    const std::string& source, const std::vector<std::string>& isa,
                                    bool asis) {
  OpenblasCorePlan plan;
  plan.target = openblas_core_for_isa(isa);
  const int can = isa_rank(isa);
  const std::string cpu = std::string("this ") +
                          (can == 4   ? "AVX-512"
                           : can == 3 ? "AVX2"
                                      : "AVX") +
                          " CPU";
  auto below = [can](const std::string& core) {
    const int have = core_rank(core);
    return have > 0 && have < can;  // an unknown core is not second-guessed
  };
  if (source == "pairbench") {
    plan.note = below(used)
                    ? "warning: OpenBLAS picked its " + detected + " kernels for " + cpu +
                          " and still runs its " + used +
                          " ones with OPENBLAS_CORETYPE=" + plan.target +
                          ": cpu/openblas is slower than it could be"
                    : "OpenBLAS picked its " + detected + " kernels for " + cpu +
                          "; pairbench restarted itself with OPENBLAS_CORETYPE=" + plan.target +
                          " and OpenBLAS runs its " + used +
                          " kernels (--openblas-core=asis keeps OpenBLAS's choice)";
    return plan;
  }
  if (source == "user") {
    if (strcasecmp(detected.c_str(), used.c_str()) != 0)
      plan.note = "warning: OPENBLAS_CORETYPE=" + detected +
                  " from the environment did not take: OpenBLAS runs its " + used +
                  " kernels (it ignores a name it does not know; unset it and pairbench checks "
                  "OpenBLAS's choice)";
    else if (below(used))
      plan.note = "warning: OPENBLAS_CORETYPE from the environment makes OpenBLAS run its " + used +
                  " kernels on " + cpu + "; its " + plan.target +
                  " kernels are faster (unset it and pairbench picks them)";
    return plan;
  }
  if (!below(detected) || plan.target.empty()) return plan;
  if (asis)
    plan.note = "warning: OpenBLAS runs its " + detected + " kernels on " + cpu +
                " (--openblas-core=asis); without that flag pairbench runs its " + plan.target +
                " kernels";
  else
    plan.reexec = true;
  return plan;
}

OpenblasCorePlan openblas_core_plan(const CpuInfo& cpu, bool asis) {
  return openblas_core_plan(
      cpu.openblas_core_source == "user" ? cpu.openblas_coretype_env : cpu.openblas_core_detected,
      cpu.openblas_core, cpu.openblas_core_source, cpu.isa, asis);
}

AmxState amx_state(bool amx_flags, std::uint32_t max_leaf, const CpuidRegs& leaf1d_0,
                   const CpuidRegs& leaf1d_1) {
  if (!amx_flags) return AmxState::absent;
  if (max_leaf < 0x1D || leaf1d_0.eax < 1) return AmxState::broken;  // no palette 1
  // Palette 1: total tile bytes, bytes per tile, bytes per row, tile count, rows per tile.
  const std::uint32_t fields[] = {leaf1d_1.eax & 0xffff, leaf1d_1.eax >> 16, leaf1d_1.ebx & 0xffff,
                                  leaf1d_1.ebx >> 16, leaf1d_1.ecx & 0xffff};
  for (std::uint32_t f : fields)
    if (f == 0) return AmxState::broken;
  return AmxState::usable;
}

const char* to_string(AmxState s) {
  switch (s) {
    case AmxState::usable:
      return "usable";
    case AmxState::broken:
      return "advertised but unusable (CPUID leaf 0x1D has no tile palette)";
    default:
      return "absent";
  }
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::string sysfs_root() {
  return env("PAIRBENCH_SYSFS_ROOT").empty() ? "/sys" : env("PAIRBENCH_SYSFS_ROOT");
}

namespace {

CpuidRegs cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
  CpuidRegs r;
#if defined(__x86_64__) || defined(__i386__)
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#else
  (void)leaf, (void)subleaf;
#endif
  return r;
}

AmxState host_amx_state(const std::vector<std::string>& isa) {
  const bool flags = std::find(isa.begin(), isa.end(), "amx_tile") != isa.end();
  if (!flags) return AmxState::absent;
  const std::uint32_t max_leaf = cpuid(0, 0).eax;
  // Test hook: PAIRBENCH_FAKE_AMX_PALETTE=none reads leaf 0x1D as zeros, as the VMs that
  // advertise AMX without its state do, so tests can watch the cap on any AMX machine.
  if (env("PAIRBENCH_FAKE_AMX_PALETTE") == "none") return amx_state(flags, max_leaf, {}, {});
  return amx_state(flags, max_leaf, cpuid(0x1D, 0), cpuid(0x1D, 1));
}

}  // namespace

namespace {

// FMA chains, independent of each other so that they fill the FMA units: lanes of the widest
// vector times enough chains to cover the FMA latency.
constexpr int kChains = 64;
constexpr std::int64_t kProbeSteps = 1 << 18;

// The calling thread's cycle counter (user-space cycles only, as perf_event_paranoid 2 allows);
// -1 with the reason in clock_reason() where it cannot be opened.
std::string& clock_reason() {
  static std::string reason;
  return reason;
}
int open_cycle_counter() {
  perf_event_attr a{};
  a.type = PERF_TYPE_HARDWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_HW_CPU_CYCLES;
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  const int fd = static_cast<int>(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
  if (fd < 0) {
    const int err = errno;
#pragma omp critical(clock_reason)
    clock_reason() = std::string("perf_event_open(cycles) failed: ") + std::strerror(err) +
                     (err == ENOENT || err == EOPNOTSUPP
                          ? " (no hardware cycle counter: a VM without a virtual PMU)"
                      : err == EACCES || err == EPERM ? " (kernel.perf_event_paranoid forbids it)"
                                                      : "");
  }
  return fd;
}

double compute_probe_gflops(int threads, double* effective_ghz) {
  std::vector<float> sink(static_cast<std::size_t>(threads));
  std::vector<double> ghz(static_cast<std::size_t>(threads), 0.0);
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
  {
    const int fd = open_cycle_counter();
    const auto start = std::chrono::steady_clock::now();
    float x[kChains];
    for (int j = 0; j < kChains; ++j) x[j] = 1.0f + 1e-3f * static_cast<float>(j);
    const float a = 0.999999f, b = 1e-7f;
    for (std::int64_t s = 0; s < kProbeSteps; ++s) {
#pragma omp simd
      for (int j = 0; j < kChains; ++j) x[j] = x[j] * a + b;
    }
    float sum = 0;
    for (float v : x) sum += v;
    sink[static_cast<std::size_t>(omp_get_thread_num())] = sum;  // keeps the loop alive
    long long cycles = 0;
    if (fd >= 0) {
      if (read(fd, &cycles, sizeof cycles) == static_cast<ssize_t>(sizeof cycles))
        ghz[static_cast<std::size_t>(omp_get_thread_num())] =
            static_cast<double>(cycles) /
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 1e9;
      close(fd);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float keep = sink[0];
  (void)keep;
  *effective_ghz = std::all_of(ghz.begin(), ghz.end(), [](double g) { return g > 0; })
                       ? std::accumulate(ghz.begin(), ghz.end(), 0.0) / threads
                       : 0.0;
  return 2.0 * kChains * static_cast<double>(kProbeSteps) * threads / s / 1e9;
}

}  // namespace

MachineProbe probe_machine() {
  const int threads = max_threads();
  // One copy case, prepared once per process and kept: its arrays are first touched by the
  // threads that use them, as in the suites.
  static const StreamWorkload copy(StreamShape{StreamKernel::copy, std::int64_t{1} << 24});
  static const std::unique_ptr<Impl> impl = [&] {
    auto i = stream_impls().front().make(copy, threads);
    i->activate();
    i->prepare(copy.make_inputs());
    return i;
  }();
  impl->activate();
  SteadyTimer timer;
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    timer.start();
    impl->run();
    best = std::min(best, timer.stop());
  }
  MachineProbe p;
  p.copy_gbs = copy.min_bytes() / best / 1e9;
  p.compute_gflops = compute_probe_gflops(threads, &p.effective_ghz);
  return p;
}

std::string clock_unavailable() {
  std::string reason;
#pragma omp critical(clock_reason)
  reason = clock_reason();
  return reason;
}

long cache_bytes(const std::string& sysfs, const std::vector<int>& cpus, int level) {
  std::map<std::string, long> caches;  // shared_cpu_list -> bytes
  for (int cpu : cpus) {
    const std::string dir = sysfs + "/devices/system/cpu/cpu" + std::to_string(cpu) + "/cache/";
    for (int i = 0;; ++i) {
      const std::string index = dir + "index" + std::to_string(i) + "/";
      std::ifstream lv(index + "level"), type(index + "type"), size(index + "size"),
          shared(index + "shared_cpu_list");
      int l = 0;
      if (!(lv >> l)) break;
      std::string t, sharers;
      long bytes = 0;
      char unit = 0;
      if (!(type >> t) || t == "Instruction" || l != level || !(size >> bytes) || bytes <= 0 ||
          !(shared >> sharers))
        continue;
      if (size >> unit) bytes <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
      caches[sharers] = bytes;
    }
  }
  long total = 0;
  for (const auto& kv : caches) total += kv.second;
  return total;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo c;
    c.isa = read_isa(&c.model);
    if (!env(kFakeNo16BitEnv).empty()) {
      c.no_16bit_fake = true;
      c.isa.erase(std::remove_if(c.isa.begin(), c.isa.end(),
                                 [](const std::string& f) {
                                   return f == "avx512_bf16" || f == "avx512_fp16" ||
                                          f.rfind("amx_", 0) == 0;
                                 }),
                  c.isa.end());
    }
    c.logical_cpus = omp_get_num_procs();
    std::vector<int> cpus;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
      for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &allowed)) cpus.push_back(i);
    c.l2_bytes = cache_bytes(sysfs_root(), cpus, 2);
    c.l3_bytes = cache_bytes(sysfs_root(), cpus, 3);
    if (c.l2_bytes == 0 && c.l3_bytes == 0) {  // no sysfs: glibc's figures
      c.l2_bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
      c.l3_bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
    }
    c.openblas_config = openblas_get_config();
    c.openblas_max_threads = openblas_max_threads_in(c.openblas_config);
    c.openblas_core = openblas_get_corename();
    const std::string marker = env(kOpenblasDetectedEnv), fake = env(kFakeOpenblasCoreEnv);
    if (!marker.empty()) {
      c.openblas_core_detected = marker;
      c.openblas_core_source = "pairbench";
      unsetenv(kOpenblasDetectedEnv);
    } else if (!env("OPENBLAS_CORETYPE").empty()) {
      c.openblas_core_source = "user";  // what OpenBLAS would have picked is not known
      c.openblas_coretype_env = env("OPENBLAS_CORETYPE");
    } else {
      c.openblas_core_detected = fake.empty() ? c.openblas_core : fake;
      c.openblas_core_source = "openblas";
    }
    const int par = openblas_get_parallel();
    c.openblas_threading = par == 0 ? "sequential" : par == 1 ? "pthreads" : "openmp";
    c.openblas_threads = openblas_get_num_threads();
    c.omp_threads = omp_get_max_threads();
    c.amx = host_amx_state(c.isa);
    return c;
  }();
  return info;
}

}  // namespace pb::cpu
