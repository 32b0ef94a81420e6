// CPU collectives: MPI's, in place on MPI_COMM_WORLD, as osu_allreduce calls them. bf16 travels
// as 16-bit words, summed by a user-defined MPI operation (MPI has no bf16 type). And the
// data-parallel step's gradient all-reduce (GradientReducer).
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

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

// --- the data-parallel step's gradients ---

#ifdef PAIRBENCH_HAVE_MPI
namespace {

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// g[0..n) summed over the ranks in place, then divided by their number.
void average(float* g, std::int64_t n) {
  const int rc =
      MPI_Allreduce(MPI_IN_PLACE, g, static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS)
    throw std::runtime_error("the gradients' all-reduce failed: MPI error " + std::to_string(rc));
  const float inv = 1.0f / static_cast<float>(world_size());
  for (std::int64_t i = 0; i < n; ++i) g[i] *= inv;
}

}  // namespace

// The overlap's thread takes the buckets the backward pass finished, in order, one all-reduce
// each; only it calls MPI while a step runs (MPI_THREAD_SERIALIZED).
struct GradientReducer::State {
  std::int64_t n = 0;
  bool overlap = false;
  std::vector<std::pair<std::int64_t, std::int64_t>> buckets;
  std::size_t next = 0;  // the first bucket not handed to the thread this step
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<float*, std::int64_t>> queue;  // (start, count)
  int pending = 0;
  bool stop = false;
  std::string error;  // the thread's, rethrown by finish()
  std::thread worker;

  void work() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;
      const auto [g, count] = queue.front();
      queue.pop_front();
      lock.unlock();
      std::string why;
      try {
        average(g, count);
      } catch (const std::exception& e) {
        why = e.what();
      }
      lock.lock();
      if (error.empty()) error = why;
      --pending;
      cv.notify_all();
    }
  }
};

GradientReducer::GradientReducer(std::int64_t n, bool overlap) : st_(std::make_unique<State>()) {
  st_->n = n;
  st_->overlap = overlap;
  if (!overlap) return;
  if (const std::string why = overlap_unavailable(); !why.empty()) throw Unavailable(why);
  st_->buckets = gradient_buckets(n, kBucketBytes / static_cast<std::int64_t>(sizeof(float)));
  st_->worker = std::thread([s = st_.get()] { s->work(); });
}

GradientReducer::~GradientReducer() {
  if (!st_->worker.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    st_->stop = true;
  }
  st_->cv.notify_all();
  st_->worker.join();
}

void GradientReducer::ready(float* g, std::int64_t from) {
  if (!st_->overlap) return;
  std::lock_guard<std::mutex> lock(st_->mu);
  for (auto& b = st_->buckets; st_->next < b.size() && b[st_->next].first >= from; ++st_->next) {
    st_->queue.emplace_back(g + b[st_->next].first, b[st_->next].second - b[st_->next].first);
    ++st_->pending;
  }
  st_->cv.notify_all();
}

void GradientReducer::finish(float* g) {
  if (!st_->overlap) return average(g, st_->n);
  ready(g, 0);
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return st_->pending == 0; });
  st_->next = 0;
  if (!st_->error.empty()) throw std::runtime_error(std::exchange(st_->error, ""));
}

std::string overlap_unavailable() {
  int up = 0, level = MPI_THREAD_SINGLE;
  MPI_Initialized(&up);
  if (!up) return "one rank: the gradients' all-reduce needs several (mpirun -np N, or srun)";
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_SERIALIZED)
    return "this MPI gives no MPI_THREAD_SERIALIZED: the overlap's thread cannot call it";
  return "";
}

bool same_on_every_rank(const std::vector<float>& v) {
  int up = 0;
  MPI_Initialized(&up);
  if (!up) return true;
  const std::uint64_t h = fingerprint(v.data(), v.size() * sizeof(float));
  std::uint64_t both[2] = {h, ~h};  // the largest of each is every rank's only where all agree
  MPI_Allreduce(MPI_IN_PLACE, both, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return both[0] == h && both[1] == ~h;
}
#else
struct GradientReducer::State {};
GradientReducer::GradientReducer(std::int64_t, bool) {
  throw Unavailable("pairbench was built without MPI");
}
GradientReducer::~GradientReducer() = default;
void GradientReducer::ready(float*, std::int64_t) {}
void GradientReducer::finish(float*) {}
std::string overlap_unavailable() { return "pairbench was built without MPI"; }
bool same_on_every_rank(const std::vector<float>&) { return true; }
#endif

}  // namespace pb::cpu
