// The registry: op families, their implementations, and the cases a run is made of
// (op x device x implementation x shape).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/options.hpp"
#include "core/workload.hpp"

namespace pb {

struct SuiteEntry {
  std::shared_ptr<const Workload> workload;
  bool sweep = false;  // also run across parallel units: CPU threads 1, 2, 4, ..., SMs 1, 2, 4, ...
  bool gpu_only = false;  // the suite runs it on the GPU alone (a shape the CPU takes minutes on)
};

struct OpFamily {
  std::string name;
  std::string shape_keys;  // the --shape keys, for --help, e.g. "rows=R,cols=C"
  // The suite's workloads (level 0 quick, 1 standard, 2 full) in one dtype.
  std::function<std::vector<SuiteEntry>(int level, Dtype)> suite;
  // A workload from --shape keys; throws std::invalid_argument.
  std::function<std::shared_ptr<const Workload>(const KeyValues&, Dtype)> from_shape;
  std::vector<ImplSpec> impls;  // CPU and GPU
};

// Every op, as bench/ops/ops.cpp lists them (each family in its own file, bench/ops/<op>.cpp),
// then any registered since.
const std::vector<OpFamily>& op_families();
// Adds an op at run time (the tests register one from their own file); throws
// std::invalid_argument for a name already there.
void register_op_family(OpFamily family);

// --help, with the ops and their implementations as the registry has them.
std::string usage_from_registry();

struct Case {
  std::string name;  // <op>/<device>/<impl>/<shape>, stable across machines
  std::shared_ptr<const Workload> workload;
  ImplSpec impl;
  int units = 0;     // CPU threads; on the GPU the SMs it may use (0: all)
  Shape shape;       // the workload's shape, plus threads=N on the CPU, sms=K on a limited GPU
  std::string skip;  // non-empty: the case is listed but not run, for this reason
};

struct Resources {
  bool gpu_available = false;
  std::string gpu_reason;
  double gpu_free_bytes = 0;
  double gpu_l2_bytes = 0;
  int gpu_sms = 0;
  double host_available_bytes = 0;
  int cores = 1;
  int openblas_max_threads = 0;  // OpenBLAS's MAX_THREADS (0: not known)
};

// Expands the options into cases; throws UsageError for bad values and for shapes that would
// not fit in memory (checked before anything is allocated; see gpu_bytes_needed).
std::vector<Case> build_cases(const Options& o, const Resources& r);
// Why build_cases(o, r) chose no case, as one line: the first of --dtypes, --impls, --devices
// and --threads without which some case would match, with what those cases have instead.
std::string no_case_reason(const Options& o, const Resources& r);

double host_available_bytes();  // MemAvailable from /proc/meminfo

// Whether a case that counts `needed` bytes of host memory (Workload::host_bytes) fits what is
// available, with headroom for what no count sees: the process and its libraries, their
// scratch, the allocator (host_headroom: 512 MiB and 5% of what is available). ResNet-50's CPU
// step at batch 128 on 224x224, counted at 22.0 GiB without it (22.4 now that the reference's
// results kept for the check are counted), was killed by the kernel at 23.0 GiB on a VM with
// 22.9 GiB available; at batch 96 it took 18.0 GiB, counted at 17.1 now.
double host_headroom(const Resources& r);
bool fits_host(double needed, const Resources& r);

// What a GPU case needs of the free device memory: its operands, the library's workspace, the
// --cold flush buffer (twice the L2, at least 8 MiB), and headroom for the CUDA context and
// the allocator (256 MiB and 5% of what is free).
double gpu_bytes_needed(const Workload& w, const ImplSpec& spec, const Resources& r, bool cold);
bool fits_gpu(double needed, const Resources& r);

// 1, 2, 4, ... below `all`, then `all`.
std::vector<int> powers_of_two_upto(int all);

}  // namespace pb
