// STREAM: copy, scale, add, triad and dot on arrays far larger than the caches; the triad also
// across CPU threads and GPU SMs.
#include "bench/ops/family.hpp"
#include "core/stream.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

OpFamily stream_family() {
  auto suite = [](int level) {
    std::vector<SuiteEntry> out;
    for (StreamKernel k : all_stream_kernels())  // the thread and SM sweeps: the triad
      out.push_back(
          entry<StreamWorkload>(StreamShape{k, stream_suite_n(level)}, k == StreamKernel::triad));
    return out;
  };
  auto triad = [](const Workload& w) {
    return static_cast<const StreamWorkload&>(w).stream().kernel == StreamKernel::triad;
  };
  return fp32_family<StreamWorkload>(
      "stream", "kernel=copy|scale|add|triad|dot,n=N", suite, parse_stream_shape,
      concat(cpu::stream_impls(),
             {gpu::spec("stream", "cuda", any), gpu::spec("stream", "sm_limited", triad, true)}));
}

}  // namespace pb::ops
