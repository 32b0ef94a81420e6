// CPU collectives: MPI's, in place on MPI_COMM_WORLD, as osu_allreduce calls them. bf16 travels
// as 16-bit words, summed by a user-defined MPI operation (MPI has no bf16 type).
#include "core/collective.hpp"
#include "cpu_ref/cpu.hpp"

#ifdef PAIRBENCH_HAVE_MPI
#include <mpi.h>
#endif

namespace pb::cpu {

namespace {

#ifdef PAIRBENCH_HAVE_MPI
// inout[i] = in[i] + inout[i] over bf16 words, summed in fp32 and rounded back.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const Bf16*>(in);
  auto* b = static_cast<Bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = to_bf16(from_bf16(a[i]) + from_bf16(b[i]));
}

MPI_Op bf16_sum_op() {
  static MPI_Op op = [] {
    MPI_Op o;
    MPI_Op_create(bf16_sum, 1, &o);
    return o;
  }();
  return op;
}

class MpiCollective : public CpuImpl {
 public:
  explicit MpiCollective(const CollectiveShape& s) : CpuImpl(1), s_(s) {}
  void prepare(const Tensors& in) override {
    const std::vector<float>& buf = at(in, "buf").f32();
    if (bf16()) {
      b16_.resize(buf.size());
      for (std::size_t i = 0; i < buf.size(); ++i) b16_[i] = to_bf16(buf[i]);
    } else {
      f32_ = buf;
    }
  }
  void run() override {
    void* data = bf16() ? static_cast<void*>(b16_.data()) : static_cast<void*>(f32_.data());
    const MPI_Datatype type = bf16() ? MPI_UINT16_T : MPI_FLOAT;
    const MPI_Op sum = bf16() ? bf16_sum_op() : MPI_SUM;
    const int n = static_cast<int>(s_.elements()), chunk = n / s_.ranks;
    int rc = MPI_SUCCESS;
    switch (s_.kind) {
      case CollectiveKind::allreduce:
        rc = MPI_Allreduce(MPI_IN_PLACE, data, n, type, sum, MPI_COMM_WORLD);
        break;
      case CollectiveKind::allgather:
        rc = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, chunk, type, MPI_COMM_WORLD);
        break;
      case CollectiveKind::reduce_scatter:  // this rank's chunk lands at the buffer's start
        rc = MPI_Reduce_scatter_block(MPI_IN_PLACE, data, chunk, type, sum, MPI_COMM_WORLD);
        break;
      case CollectiveKind::broadcast:
        rc = MPI_Bcast(data, n, type, 0, MPI_COMM_WORLD);
        break;
    }
    if (rc != MPI_SUCCESS)
      throw std::runtime_error("MPI collective failed: error " + std::to_string(rc));
  }
  Tensors result() override {
    const std::int64_t n = s_.elements();
    const std::int64_t keep = s_.kind == CollectiveKind::reduce_scatter ? n / s_.ranks : n;
    std::vector<float> out(static_cast<std::size_t>(keep));
    for (std::int64_t i = 0; i < keep; ++i) out[i] = bf16() ? from_bf16(b16_[i]) : f32_[i];
    return {Tensor::of("out", out)};
  }

 private:
  bool bf16() const { return s_.dtype == Dtype::bf16; }
  CollectiveShape s_;
  std::vector<float> f32_;
  std::vector<Bf16> b16_;
};
#endif

}  // namespace

std::vector<ImplSpec> collective_impls() {
  ImplSpec sp;
  sp.op = "collective";
  sp.name = "mpi";
  sp.device = Device::cpu;
  sp.library = "mpi";
  sp.supports = [](const Workload&) { return true; };
  sp.unavailable = [](const Workload& w) -> std::string {
#ifndef PAIRBENCH_HAVE_MPI
    (void)w;
    return "pairbench was built without MPI (scripts/setup installs OpenMPI; then scripts/build)";
#else
    if (static_cast<const CollectiveWorkload&>(w).collective().ranks < 2)
      return "one rank: a collective needs several (mpirun -np N pairbench ..., or srun)";
    return "";
#endif
  };
  sp.make = [](const Workload& w, int) -> std::unique_ptr<Impl> {
#ifdef PAIRBENCH_HAVE_MPI
    return std::make_unique<MpiCollective>(static_cast<const CollectiveWorkload&>(w).collective());
#else
    (void)w;
    throw Unavailable("pairbench was built without MPI");
#endif
  };
  return {sp};
}

}  // namespace pb::cpu
