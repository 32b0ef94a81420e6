// GPU collectives through NCCL, in place on the case's stream, as nccl-tests calls them: one
// communicator over the run's ranks (one GPU each), bootstrapped over MPI by bench/main.cpp
// (rank 0's ncclGetUniqueId given to every rank, then ncclCommInitRank on each). NCCL is
// loaded with dlopen (libnccl.so.2) on first use, never linked: a machine without it runs every
// other GPU case, and the collective cases say why they are skipped.
#include <cuda_bf16.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/collective.hpp"
#include "core/deadline.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

// The NCCL functions pairbench calls, from the library found at run time.
struct Nccl {
  decltype(&::ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&::ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&::ncclGetErrorString) error_string = nullptr;
  decltype(&::ncclAllReduce) all_reduce = nullptr;
  decltype(&::ncclAllGather) all_gather = nullptr;
  decltype(&::ncclReduceScatter) reduce_scatter = nullptr;
  decltype(&::ncclBroadcast) broadcast = nullptr;
  std::string reason;  // why it could not be loaded ("" when it was)
};

const Nccl& nccl() {
  static const Nccl n = [] {
    Nccl x;
    // Every connection between the ranks made while the communicator comes up, under its
    // deadline (device_nccl_init), not in a collective's first call, as NCCL 2.22 and later
    // make them by default, where a rank that cannot reach another would leave the others
    // waiting in the timed loop. A value the user set is kept.
    setenv("NCCL_RUNTIME_CONNECT", "0", 0);
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      x.reason = std::string("NCCL could not be loaded: ") + (e ? e : "libnccl.so.2") +
                 " (the CUDA toolkit's NCCL, or PyPI's nvidia-nccl-cu13)";
      return x;
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(h, name);
      if (!p && x.reason.empty()) x.reason = std::string("NCCL has no ") + name;
      return p;
    };
    x.get_unique_id = reinterpret_cast<decltype(x.get_unique_id)>(sym("ncclGetUniqueId"));
    x.comm_init_rank = reinterpret_cast<decltype(x.comm_init_rank)>(sym("ncclCommInitRank"));
    x.error_string = reinterpret_cast<decltype(x.error_string)>(sym("ncclGetErrorString"));
    x.all_reduce = reinterpret_cast<decltype(x.all_reduce)>(sym("ncclAllReduce"));
    x.all_gather = reinterpret_cast<decltype(x.all_gather)>(sym("ncclAllGather"));
    x.reduce_scatter = reinterpret_cast<decltype(x.reduce_scatter)>(sym("ncclReduceScatter"));
    x.broadcast = reinterpret_cast<decltype(x.broadcast)>(sym("ncclBroadcast"));
    auto version = reinterpret_cast<decltype(&::ncclGetVersion)>(sym("ncclGetVersion"));
    int v = 0;
    if (x.reason.empty() && (version(&v) != ncclSuccess || v < 21000))
      x.reason = "NCCL " + std::to_string(v) +
                 " is older than 2.10 (21000), which bf16 and "
                 "ncclAvg need";
    return x;
  }();
  return n;
}

// How long ncclCommInitRank may take before the run ends saying so (PAIRBENCH_NCCL_TIMEOUT
// overrides): NCCL brings up a communicator across nodes in seconds.
constexpr double kNcclInitSeconds = 300;

// The run's communicator (made once by nccl_init; kept for the process's life).
ncclComm_t g_comm = nullptr;
int g_ranks = 0, g_rank = 0;

std::string nccl_error(const char* call, ncclResult_t r) {
  return std::string(call) + " failed: " +
         (nccl().error_string ? nccl().error_string(r) : std::to_string(static_cast<int>(r)));
}

class NcclCollective : public GpuImpl {
 public:
  explicit NcclCollective(const CollectiveShape& s) : s_(s) {
    if (!g_comm) throw std::runtime_error("NCCL's communicator is not up");
    if (g_ranks != s.ranks || g_rank != s.rank)
      throw std::runtime_error("NCCL's communicator has another rank or size than the case");
  }
  void prepare(const Tensors& in) override {
    const std::vector<float>& v = at(in, "buf").f32();
    buf_ = DeviceMem(v.size() * elem());
    if (s_.ranks == 1) {  // out of place: all bits set, a NaN in fp32 and bf16, until NCCL writes
      out_ = DeviceMem(v.size() * elem());
      PB_CUDA(cudaMemsetAsync(out_.as<void>(), 0xff, v.size() * elem(), stream_));
    }
    if (bf16()) {
      std::vector<__nv_bfloat16> h(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) h[i] = __float2bfloat16(v[i]);
      upload(buf_.as<void>(), h.data(), h.size() * elem());
    } else {
      upload(buf_.as<void>(), v.data(), v.size() * elem());
    }
  }
  void run() override {
    const Nccl& n = nccl();
    const std::size_t count = static_cast<std::size_t>(s_.elements());
    const std::size_t chunk = count / static_cast<std::size_t>(s_.ranks);
    char* base = buf_.as<char>();
    // In place as NCCL defines it: all-gather's and reduce-scatter's own chunk sits at
    // rank x chunk of the whole buffer. On one rank NCCL moves nothing in place (a collective
    // there is a copy to itself, which it leaves out): out of place, it copies the buffer, and
    // the check sees whether it did.
    char* own = base + static_cast<std::size_t>(s_.rank) * chunk * elem();
    char* to = s_.ranks == 1 ? out_.as<char>() : base;     // the whole result's
    char* to_own = s_.ranks == 1 ? out_.as<char>() : own;  // reduce-scatter's chunk's
    const ncclDataType_t t = bf16() ? ncclBfloat16 : ncclFloat32;
    ncclResult_t r = ncclSuccess;
    const char* call = "";
    switch (s_.kind) {
      case CollectiveKind::allreduce:
        call = "ncclAllReduce";
        r = n.all_reduce(base, to, count, t, ncclSum, g_comm, stream_);
        break;
      case CollectiveKind::allgather:
        call = "ncclAllGather";
        r = n.all_gather(own, to, chunk, t, g_comm, stream_);
        break;
      case CollectiveKind::reduce_scatter:
        call = "ncclReduceScatter";
        r = n.reduce_scatter(base, to_own, chunk, t, ncclSum, g_comm, stream_);
        break;
      case CollectiveKind::broadcast:
        call = "ncclBroadcast";
        r = n.broadcast(base, to, count, t, 0, g_comm, stream_);
        break;
    }
    if (r != ncclSuccess) throw std::runtime_error(nccl_error(call, r));
  }
  Tensors result() override {
    const std::int64_t n = s_.elements(), chunk = n / s_.ranks;
    const bool scattered = s_.kind == CollectiveKind::reduce_scatter;
    const std::int64_t first = scattered ? s_.rank * chunk : 0, keep = scattered ? chunk : n;
    std::vector<float> out(static_cast<std::size_t>(keep));
    const char* from = (s_.ranks == 1 ? out_ : buf_).as<char>() + first * elem();
    if (bf16()) {
      std::vector<__nv_bfloat16> h(out.size());
      download(h.data(), from, h.size() * elem());
      for (std::size_t i = 0; i < h.size(); ++i) out[i] = __bfloat162float(h[i]);
    } else {
      download(out.data(), from, out.size() * elem());
    }
    return {Tensor::of("out", out)};
  }
  std::string detail() const override {
    return s_.ranks == 1 ? "NCCL, out of place (one rank: in place it moves nothing)"
                         : "NCCL, in place";
  }

 private:
  bool bf16() const { return s_.dtype == Dtype::bf16; }
  std::size_t elem() const { return bf16() ? 2 : 4; }
  CollectiveShape s_;
  DeviceMem buf_, out_;  // out_: one rank's result (out of place)
};

std::unique_ptr<Impl> make_collective(const std::string&, const std::string& name,
                                      const Workload& w, int) {
  if (name != "nccl") throw std::runtime_error("unknown GPU collective implementation: " + name);
  return std::make_unique<NcclCollective>(static_cast<const CollectiveWorkload&>(w).collective());
}

[[maybe_unused]] const bool registered = register_factory("collective", make_collective);

}  // namespace

std::string device_nccl_load() { return nccl().reason; }

void nccl_average(float* g, std::int64_t n, cudaStream_t stream) {
  if (!g_comm) throw std::runtime_error("NCCL's communicator is not up");
  const ncclResult_t r =
      nccl().all_reduce(g, g, static_cast<std::size_t>(n), ncclFloat32, ncclAvg, g_comm, stream);
  if (r != ncclSuccess) throw std::runtime_error(nccl_error("ncclAllReduce (ncclAvg)", r));
}

bool nccl_same_on_every_rank(const std::vector<float>& v, cudaStream_t stream) {
  if (!g_comm) throw std::runtime_error("NCCL's communicator is not up");
  const std::uint64_t h = fingerprint(v.data(), v.size() * sizeof(float));
  const std::uint64_t mine[2] = {h, ~h};  // the largest of each is every rank's only if all agree
  std::uint64_t most[2] = {0, 0};
  DeviceMem d(sizeof mine);
  PB_CUDA(cudaMemcpyAsync(d.as<void>(), mine, sizeof mine, cudaMemcpyHostToDevice, stream));
  const ncclResult_t r =
      nccl().all_reduce(d.as<void>(), d.as<void>(), 2, ncclUint64, ncclMax, g_comm, stream);
  if (r != ncclSuccess) throw std::runtime_error(nccl_error("ncclAllReduce (ncclMax)", r));
  PB_CUDA(cudaMemcpyAsync(most, d.as<void>(), sizeof most, cudaMemcpyDeviceToHost, stream));
  PB_CUDA(cudaStreamSynchronize(stream));
  return most[0] == mine[0] && most[1] == mine[1];
}

std::string device_nccl_unique_id() {
  if (!nccl().reason.empty()) return "";
  ncclUniqueId id;
  if (nccl().get_unique_id(&id) != ncclSuccess) return "";
  return std::string(id.internal, sizeof id.internal);
}

std::string device_nccl_init(const std::string& id, int ranks, int rank) {
  if (!nccl().reason.empty()) return nccl().reason;
  if (g_comm) return g_ranks == ranks && g_rank == rank ? "" : "NCCL is up with another size";
  ncclUniqueId u;
  if (id.size() != sizeof u.internal)
    return "no NCCL unique id came from rank 0 (" + std::to_string(id.size()) + " bytes)";
  std::memcpy(u.internal, id.data(), sizeof u.internal);
  if (const cudaError_t e = cudaSetDevice(device_ordinal()); e != cudaSuccess)
    return std::string("cudaSetDevice failed: ") + cudaGetErrorString(e);
  // ncclCommInitRank waits for every rank: one that never comes would hang the run.
  double timeout = 0;
  try {
    timeout = timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", std::getenv("PAIRBENCH_NCCL_TIMEOUT"),
                              kNcclInitSeconds);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  const ncclResult_t r =
      within_deadline(timeout,
                      "NCCL's communicator (ncclCommInitRank on rank " + std::to_string(rank) +
                          " of " + std::to_string(ranks) + ")",
                      " (a rank that never started, or hosts that cannot reach each other; "
                      "PAIRBENCH_NCCL_TIMEOUT sets the seconds)",
                      [&] { return nccl().comm_init_rank(&g_comm, ranks, u, rank); });
  if (r != ncclSuccess) {
    g_comm = nullptr;
    return nccl_error("ncclCommInitRank", r);
  }
  g_ranks = ranks, g_rank = rank;
  return "";
}

}  // namespace pb::gpu
