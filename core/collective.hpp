// Collectives across ranks (MPI on the CPU, NCCL on the GPU), in place, as nccl-tests defines
// their figures: `bytes` is the whole buffer (all-reduce, broadcast), the gathered output
// (all-gather) or the scattered input (reduce-scatter); algbw = bytes / time; busbw = algbw x
// the collective's factor (all-reduce 2(n-1)/n; all-gather and reduce-scatter (n-1)/n;
// broadcast 1), the figure comparable with the links' bandwidth whatever n is.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/workload.hpp"

namespace pb {

enum class CollectiveKind { allreduce, allgather, reduce_scatter, broadcast };
const char* to_string(CollectiveKind k);
const std::vector<CollectiveKind>& all_collectives();

struct CollectiveShape {
  CollectiveKind kind = CollectiveKind::allreduce;
  std::int64_t bytes = 0;
  Dtype dtype = Dtype::fp32;  // fp32 or bf16
  int ranks = 1;              // the world's size
  int rank = 0;               // this process's place in it (not in the case's name)
  std::int64_t elements() const { return bytes / input_bytes(dtype); }
};

// nccl-tests' bus bandwidth factor for n ranks.
double bus_factor(CollectiveKind k, int ranks);

// Rank r's input element i: a small integer, so that sums over up to 16 ranks are exact in
// fp32 and in bf16, and the check can be exact.
inline float collective_input(int rank, std::int64_t i) {
  return static_cast<float>((i * 7 + rank * 3) % 17) - 8.0f;
}

// Sizes by suite (0 quick, 1 standard, 2 full): quick 4 KiB, 1 MiB and 16 MiB; standard 4 B to
// 256 MiB by 4x; full 4 B to 1 GiB by 2x, as nccl-tests sweeps.
std::vector<std::int64_t> collective_suite_bytes(int level);

// coll=allreduce|allgather|reduce_scatter|broadcast,bytes=B[,ranks=N] (ranks, where given, must be
// the world's size); throws std::invalid_argument.
CollectiveShape parse_collective_shape(const std::vector<std::pair<std::string, std::string>>& kv,
                                       Dtype dtype, int ranks, int rank);

class CollectiveWorkload : public Workload {
 public:
  explicit CollectiveWorkload(const CollectiveShape& s);
  const CollectiveShape& collective() const { return s_; }
  std::string op() const override { return "collective"; }
  Shape shape() const override;
  Dtype dtype() const override { return s_.dtype; }
  double flops() const override { return 0; }
  // The bytes as nccl-tests counts them; none on one rank, where nothing moves between ranks
  // (NCCL's collectives then run out of place and are checked, but measure a call and a copy
  // on the GPU, not a bandwidth between ranks).
  double min_bytes() const override { return s_.ranks > 1 ? static_cast<double>(s_.bytes) : 0.0; }
  bool bandwidth_bound() const override { return true; }
  Role role() const override { return Role::collective; }
  double host_bytes(Device) const override { return 3.0 * static_cast<double>(s_.bytes); }
  // In place; one rank's out of place (kernels/collective.cu): two buffers.
  double device_bytes() const override {
    return (s_.ranks == 1 ? 2.0 : 1.0) * static_cast<double>(s_.bytes);
  }
  // "buf": this rank's buffer before the collective, in f32 (bf16 values are exact in it):
  // all-gather's holds its own chunk in place, reduce-scatter's and all-reduce's the whole
  // input, broadcast's the root's data on rank 0 and zeros elsewhere.
  Tensors make_inputs() const override;
  // "out": the buffer after it (reduce-scatter: this rank's chunk only).
  std::vector<std::string> outputs() const override { return {"out"}; }
  // Exact: every element against the sums (or copies) of every rank's inputs.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  CollectiveShape s_;
};

// A data-parallel step's gradient buckets: [begin, end) element ranges of a flat buffer of n,
// at most `cap` elements each, from the end of the buffer down (the backward pass finishes the
// last layers' gradients first), as PyTorch's DDP buckets them (25 MiB each by default).
constexpr std::int64_t kBucketBytes = 25 << 20;
std::vector<std::pair<std::int64_t, std::int64_t>> gradient_buckets(std::int64_t n,
                                                                    std::int64_t cap);

}  // namespace pb
