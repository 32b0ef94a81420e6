// Collectives across the run's ranks: all-reduce, all-gather, reduce-scatter and broadcast in
// fp32 and bf16, from 4 B to 1 GiB by suite; MPI on the CPU (listed as skipped on one rank,
// with how to launch several), NCCL on the GPU (one GPU per rank; one rank is enough).
#include "bench/ops/family.hpp"
#include "bench/ranks.hpp"
#include "core/collective.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

namespace {

// Why NCCL cannot run: set by bench/main.cpp once the ranks have set it up (or failed to).
std::string g_nccl_reason =
    "NCCL was not set up: no GPU, or neither the collective nor the train op was selected";

CollectiveShape with_world(CollectiveShape s) {
  s.ranks = ranks::world().size, s.rank = ranks::world().rank;
  return s;
}

}  // namespace

void set_nccl_reason(const std::string& why) { g_nccl_reason = why; }
const std::string& nccl_reason() { return g_nccl_reason; }

OpFamily collective_family() {
  OpFamily f;
  f.name = "collective";
  f.shape_keys = "coll=allreduce|allgather|reduce_scatter|broadcast,bytes=B (ranks: the launch's)";
  f.suite = [](int level, Dtype t) {
    std::vector<SuiteEntry> out;
    if (t != Dtype::fp32 && t != Dtype::bf16) return out;
    for (CollectiveKind k : all_collectives()) {
      if (t == Dtype::bf16 && k != CollectiveKind::allreduce) continue;  // bf16: gradients' sum
      for (std::int64_t bytes : collective_suite_bytes(level)) {
        CollectiveShape s;
        s.kind = k, s.dtype = t;
        s = with_world(s);
        // Every rank's chunk whole: sizes below one element per rank are left out.
        s.bytes = bytes / (input_bytes(t) * s.ranks) * (input_bytes(t) * s.ranks);
        if (s.bytes > 0) out.push_back(entry<CollectiveWorkload>(s));
      }
    }
    return out;
  };
  f.from_shape = [](const KeyValues& kv, Dtype t) -> std::shared_ptr<const Workload> {
    if (t != Dtype::fp32 && t != Dtype::bf16) return nullptr;
    return std::make_shared<CollectiveWorkload>(
        parse_collective_shape(kv, t, ranks::world().size, ranks::world().rank));
  };
  ImplSpec nccl = gpu::spec("collective", "nccl", [](const Workload&) { return true; });
  nccl.library = "nccl";
  nccl.unavailable = [](const Workload&) { return g_nccl_reason; };
  f.impls = concat(cpu::collective_impls(), {nccl});
  return f;
}

}  // namespace pb::ops
