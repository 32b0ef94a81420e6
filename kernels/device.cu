// Device probe, the CUDA-event timer and the GpuImpl base.
#include <cublas_v2.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>

#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

void fail(const char* what, const char* detail, const char* file, int line) {
  throw std::runtime_error(std::string(what) + " failed: " + detail + " (" + file + ":" +
                           std::to_string(line) + ")");
}

namespace {

// FP32 lanes per SM by compute capability (CUDA C Programming Guide, arithmetic throughput).
int fp32_lanes_per_sm(int major, int minor) {
  if (major == 8 && minor == 0) return 64;
  if (major >= 8) return 128;
  if (major == 7) return 64;
  if (major == 6) return minor == 0 ? 64 : 128;
  return 128;
}

// Owns one CUDA event (so that a failure creating the second of a pair frees the first).
class Event {
 public:
  Event() { PB_CUDA(cudaEventCreate(&event_)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(event_); }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_{};  // not e_: PB_CUDA uses that name
};

// Busy-waits on the GPU for about `ns` nanoseconds (%globaltimer), at most a bounded number of
// reads (a timer that never moves, as on some virtualised GPUs, cannot hang the run).
__global__ void spin(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (int reads = 0; reads < (1 << 22); ++reads) {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 >= ns) break;
  }
}

// How long the spin before each start event lasts: longer than the host takes to enqueue a
// short piece of work (a copy, a kernel launch, a cuBLAS call: a few microseconds).
constexpr unsigned long long kSpinNs = 20000;

// Holds the stream until the host sets flags[0] to this hold's generation `gen` (it has
// enqueued all of the timed work), or for timeout_ns at most (%globaltimer, and a bounded
// number of reads where the timer does not move), then writes gen to flags[1] if it gave up.
// flags: mapped pinned host memory; the generation keeps a late hold from answering for another.
__global__ void hold(volatile int* flags, int gen, unsigned long long timeout_ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (int reads = 0; reads < (1 << 20); ++reads) {
    if (flags[0] == gen) return;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 >= timeout_ns) break;
  }
  flags[1] = gen;
}

// The longest the holding kernel waits for the host: far longer than a case that fits the
// driver's launch queue (about a thousand launches) takes to enqueue, short enough that a case
// that cannot be held loses little before its timers fall back to the spin.
constexpr unsigned long long kHoldNs = 100000000;

// The two flags the holding kernel and the host share, in mapped pinned memory: one pair for
// the process, as timers run one at a time. Null where the device cannot map host memory.
struct HoldFlags {
  volatile int* host = nullptr;
  int* device = nullptr;
};
const HoldFlags& hold_flags() {
  static const HoldFlags flags = [] {
    HoldFlags f;
    void *h = nullptr, *d = nullptr;
    if (cudaHostAlloc(&h, 2 * sizeof(int), cudaHostAllocMapped) != cudaSuccess) {
      cudaGetLastError();  // not sticky: the spin serves instead
      return f;
    }
    if (cudaHostGetDevicePointer(&d, h, 0) != cudaSuccess) {
      cudaGetLastError();
      cudaFreeHost(h);
      return f;
    }
    f.host = static_cast<volatile int*>(h), f.device = static_cast<int*>(d);
    f.host[0] = f.host[1] = -1;
    return f;
  }();
  return flags;
}

// CUDA events on the case's stream, with the host's launch time kept out, as nvbench does it:
// a case's timed region (hold: the case's own flag) starts with a kernel that holds the stream
// until stop() has enqueued the end event, so all of the case's work is queued before the
// start event fires and the GPU never waits for the host inside the region (a training step
// of hundreds of launches). Where the holding kernel gives up (kHoldNs: a run() that waits on
// the stream itself, a pageable copy, more launches than the driver queues, as ResNet-50's
// step unless replayed as a graph), that iteration's time may hold the host's gaps, and the
// case's timers take a 20 us spin from then on (*hold false). Copies (null) take the spin.
class EventTimer : public Timer {
 public:
  EventTimer(cudaStream_t s, bool* hold) : s_(s), hold_(hold_flags().host ? hold : nullptr) {}
  void start() override {
    if (hold_ && *hold_) {
      const HoldFlags& f = hold_flags();
      gen_ = ++generation_;
      f.host[1] = -1;
      std::atomic_thread_fence(std::memory_order_seq_cst);
      hold<<<1, 1, 0, s_>>>(f.device, gen_, kHoldNs);
    } else {
      gen_ = 0;
      spin<<<1, 1, 0, s_>>>(kSpinNs);
    }
    PB_CUDA(cudaGetLastError());
    PB_CUDA(cudaEventRecord(a_.get(), s_));
  }
  double stop() override {
    PB_CUDA(cudaEventRecord(b_.get(), s_));
    if (gen_) {  // everything is enqueued: let it run
      std::atomic_thread_fence(std::memory_order_seq_cst);
      hold_flags().host[0] = gen_;
    }
    PB_CUDA(cudaEventSynchronize(b_.get()));
    if (gen_ && hold_flags().host[1] == gen_) *hold_ = false;  // it gave up: the spin from now on
    float ms = 0;
    PB_CUDA(cudaEventElapsedTime(&ms, a_.get(), b_.get()));
    return 1e-3 * ms;
  }

 private:
  cudaStream_t s_;
  bool* hold_;   // the case's: whether its timers hold the stream (null: never)
  int gen_ = 0;  // this region's hold (0: none)
  static inline int generation_ = 0;
  Event a_, b_;
};

}  // namespace

namespace {
int g_ordinal = 0;
}  // namespace

int device_ordinal() { return g_ordinal; }
void device_select(int ordinal) { g_ordinal = ordinal; }

#ifndef PAIRBENCH_HAVE_NCCL
std::string device_nccl_load() {
  return "pairbench was built without NCCL (CMake found no nccl.h beside the CUDA toolkit or in "
         ".venv)";
}
std::string device_nccl_unique_id() { return ""; }
std::string device_nccl_init(const std::string&, int, int) { return device_nccl_load(); }
void nccl_average(float*, std::int64_t, cudaStream_t) {
  throw std::runtime_error(device_nccl_load());
}
bool nccl_same_on_every_rank(const std::vector<float>&, cudaStream_t) {
  throw std::runtime_error(device_nccl_load());
}
#endif

const DeviceInfo& device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int dev = g_ordinal;
    cudaRuntimeGetVersion(&d.runtime_version);
    cudaDriverGetVersion(&d.driver_version);
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      d.reason = e != cudaSuccess
                     ? no_gpu_reason(cudaGetErrorName(e), cudaGetErrorString(e), d.driver_version,
                                     d.runtime_version, access("/dev/nvidia0", F_OK) == 0)
                     : "no CUDA device found";
      cudaGetLastError();  // clear the sticky error
      return d;
    }
    d.device_count = count;
    dev %= count;  // of the GPUs this process sees (one, where the launcher gives each rank one)
    d.ordinal = dev;
    g_ordinal = dev;
    if (const cudaError_t s = cudaSetDevice(dev); s != cudaSuccess) {
      d.reason = "cudaSetDevice(" + std::to_string(dev) + ") failed: " + cudaGetErrorString(s);
      cudaGetLastError();
      return d;
    }
    auto attr = [dev](cudaDeviceAttr a) {
      int v = 0;
      if (cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) cudaGetLastError();
      return v;
    };
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
      d.reason = "cudaGetDeviceProperties failed";
      cudaGetLastError();
      return d;
    }
    d.name = p.name;
    char bus[32] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, dev) == cudaSuccess)
      d.pci_bus_id = bus;
    else
      cudaGetLastError();
    d.cc_major = attr(cudaDevAttrComputeCapabilityMajor);
    d.cc_minor = attr(cudaDevAttrComputeCapabilityMinor);
    d.sms = attr(cudaDevAttrMultiProcessorCount);
    d.clock_khz = attr(cudaDevAttrClockRate);
    d.mem_clock_khz = attr(cudaDevAttrMemoryClockRate);
    d.bus_width_bits = attr(cudaDevAttrGlobalMemoryBusWidth);
    d.l2_bytes = attr(cudaDevAttrL2CacheSize);
    std::size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      d.reason = "cudaMemGetInfo failed: the device cannot be used";
      cudaGetLastError();
      return d;
    }
    d.free_bytes = static_cast<double>(free_b);
    d.total_bytes = static_cast<double>(total_b);
    d.peak_fp32_gflops =
        2.0 * d.sms * fp32_lanes_per_sm(d.cc_major, d.cc_minor) * d.clock_khz * 1e3 / 1e9;
    // Double data rate: two transfers per memory clock.
    d.peak_bandwidth_gbs = 2.0 * d.mem_clock_khz * 1e3 * (d.bus_width_bits / 8.0) / 1e9;
    int v = 0;
    if (cublasGetProperty(MAJOR_VERSION, &v) == CUBLAS_STATUS_SUCCESS) d.cublas_version = v * 10000;
    if (cublasGetProperty(MINOR_VERSION, &v) == CUBLAS_STATUS_SUCCESS) d.cublas_version += v * 100;
    if (cublasGetProperty(PATCH_LEVEL, &v) == CUBLAS_STATUS_SUCCESS) d.cublas_version += v;
    d.available = true;
    return d;
  }();
  return info;
}

std::string device_sticky_error() {
  // A failed launch or copy leaves an error that the next call reports once; a fault in a
  // kernel (illegal address, a watchdog timeout) leaves the context unusable: every call
  // reports it again.
  cudaGetLastError();
  const cudaError_t first = cudaDeviceSynchronize();
  if (first == cudaSuccess) return "";
  cudaGetLastError();
  const cudaError_t again = cudaDeviceSynchronize();
  if (again == cudaSuccess) return "";
  return std::string(cudaGetErrorName(again)) + ": " + cudaGetErrorString(again);
}

namespace {
std::map<std::string, Factory>& factories() {
  static std::map<std::string, Factory> f;  // built on first use: registration order is free
  return f;
}
}  // namespace

bool register_factory(const std::string& op, Factory make) {
  factories()[op] = make;
  return true;
}

std::unique_ptr<Impl> make_device_impl(const std::string& op, const std::string& name,
                                       const Workload& w, int units) {
  const auto it = factories().find(op);
  if (it == factories().end()) throw std::runtime_error("no GPU implementations of " + op);
  return it->second(op, name, w, units);
}

GpuImpl::GpuImpl() { PB_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }

GpuImpl::~GpuImpl() {
  if (stream_) cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

std::unique_ptr<Timer> GpuImpl::make_timer() {
  return std::make_unique<EventTimer>(stream_, &hold_stream_);
}

void GpuImpl::flush_cache() {
  if (flush_bytes_ == 0) {
    flush_bytes_ =
        static_cast<std::size_t>(std::max(2.0 * device_info().l2_bytes, 8.0 * (1 << 20)));
    flush_buf_ = DeviceMem(flush_bytes_);
  }
  PB_CUDA(cudaMemsetAsync(flush_buf_.as<void>(), 0, flush_bytes_, stream_));
}

void GpuImpl::check_launch() { PB_CUDA(cudaGetLastError()); }

void GpuImpl::timed_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  EventTimer t(stream_, nullptr);
  t.start();
  PB_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
  transfer_s_ += t.stop();
}

// Staged through pinned memory, so the time counted is the copy a tuned program would make
// (from page-locked buffers), not the driver's staging of pageable memory.
void GpuImpl::upload(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  PinnedMem staged(bytes);
  std::memcpy(staged.as<void>(), src, bytes);
  timed_copy(dst, staged.as<void>(), bytes, cudaMemcpyHostToDevice);
}

void GpuImpl::download(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  PinnedMem staged(bytes);
  timed_copy(staged.as<void>(), src, bytes, cudaMemcpyDeviceToHost);
  std::memcpy(dst, staged.as<void>(), bytes);
}

}  // namespace pb::gpu

// The library's one entry point, looked up by kernels/loader.cpp.
extern "C" __attribute__((visibility("default"))) const pb::gpu::GpuModule* pairbench_gpu_module() {
  static const pb::gpu::GpuModule module{
      &pb::gpu::device_info,     &pb::gpu::make_device_impl, &pb::gpu::device_sticky_error,
      &pb::gpu::device_select,   &pb::gpu::device_nccl_load, &pb::gpu::device_nccl_unique_id,
      &pb::gpu::device_nccl_init};
  return &module;
}
