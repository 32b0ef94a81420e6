// What every CPU implementation shares, and the CPU's identity for the report.
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "cpu_ref/cpu.hpp"

namespace pb::cpu {

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
  static const char* interesting[] = {"sse4_2",      "avx",      "avx2",     "fma",
                                      "avx512f",     "avx512bw", "avx512vl", "avx512_vnni",
                                      "avx512_bf16", "amx_tile", "amx_bf16"};
  std::vector<std::string> isa;
  std::istringstream is(flags);
  std::vector<std::string> present;
  for (std::string w; is >> w;) present.push_back(w);
  for (const char* f : interesting)
    if (std::find(present.begin(), present.end(), f) != present.end()) isa.push_back(f);
  return isa;
}

}  // namespace

std::string openblas_fallback_warning(const std::string& core,
                                      const std::vector<std::string>& isa) {
  const int have = core_rank(core), can = isa_rank(isa);
  if (have == 0 || have >= can) return "";
  const char* right = can == 4 ? "SkylakeX" : can == 3 ? "Haswell" : "Sandybridge";
  return "OpenBLAS runs its " + core + " kernels on a CPU with " +
         (can == 4   ? "AVX-512"
          : can == 3 ? "AVX2"
                     : "AVX") +
         ", so cpu/openblas is slower than it should be; set OPENBLAS_CORETYPE=" + right +
         " before the process starts (e.g. OPENBLAS_CORETYPE=" + right + " pairbench ...)";
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo c;
    c.isa = read_isa(&c.model);
    c.logical_cpus = omp_get_num_procs();
    c.l2_bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    c.l3_bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
    c.openblas_config = openblas_get_config();
    c.openblas_core = openblas_get_corename();
    const int par = openblas_get_parallel();
    c.openblas_threading = par == 0 ? "sequential" : par == 1 ? "pthreads" : "openmp";
    c.openblas_threads = openblas_get_num_threads();
    c.omp_threads = omp_get_max_threads();
    c.openblas_warning = openblas_fallback_warning(c.openblas_core, c.isa);
    return c;
  }();
  return info;
}

}  // namespace pb::cpu
