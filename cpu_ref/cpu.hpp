// CPU implementations (single-thread references, OpenMP, OpenBLAS) and the CPU's identity.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/workload.hpp"

namespace pb::cpu {

class SteadyTimer : public Timer {
 public:
  void start() override { t0_ = std::chrono::steady_clock::now(); }
  double stop() override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// Shared by every CPU implementation: steady-clock timing, last-level-cache flush, threads.
class CpuImpl : public Impl {
 public:
  explicit CpuImpl(int threads) : threads_(threads) {}
  void activate() override;  // sets OpenMP's and OpenBLAS's thread counts
  std::unique_ptr<Timer> make_timer() override { return std::make_unique<SteadyTimer>(); }
  void flush_cache() override;

 protected:
  int threads_;
};

std::vector<ImplSpec> gemm_impls();
std::vector<ImplSpec> stream_impls();
std::vector<ImplSpec> activation_impls();
std::vector<ImplSpec> row_impls(const std::string& op);

// Sets the threads OpenMP regions and OpenBLAS calls use from now on.
void set_threads(int threads);
int max_threads();

struct CpuInfo {
  std::string model;
  std::vector<std::string> isa;  // the SIMD extensions present, e.g. avx2, avx512f
  int logical_cpus = 0;
  long l2_bytes = 0, l3_bytes = 0;
  std::string openblas_config, openblas_core, openblas_threading;
  int openblas_threads = 0, omp_threads = 0;
  std::string openblas_warning;  // non-empty when OpenBLAS runs kernels below the CPU's ISA
};
const CpuInfo& cpu_info();

// The warning (or "") for an OpenBLAS core name on a CPU with the given ISA flags.
std::string openblas_fallback_warning(const std::string& core, const std::vector<std::string>& isa);

}  // namespace pb::cpu
