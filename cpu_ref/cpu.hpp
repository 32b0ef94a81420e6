// CPU implementations (single-thread references, OpenMP, OpenBLAS) and the CPU's identity.
#pragma once

#include <chrono>
#include <map>
#include <tuple>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/gemm.hpp"
#include "core/workload.hpp"

namespace pb {
class ModelStep;  // core/train_step.hpp
struct ModelDesc;
struct TrainShape;
enum class Act;  // core/activation.hpp
struct RowShape;
enum class StreamKernel;  // core/stream.hpp
struct ConvShape;         // core/conv.hpp
struct BnShape;           // core/layers.hpp
}  // namespace pb

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
// bf16 storage (core/types.hpp).
using pb::Bf16;
using pb::from_bf16;
using pb::to_bf16;

class CpuImpl : public Impl {
 public:
  explicit CpuImpl(int threads) : threads_(threads) {}
  void activate() override;  // sets OpenMP's and OpenBLAS's thread counts
  std::unique_ptr<Timer> make_timer() override { return std::make_unique<SteadyTimer>(); }
  void flush_cache() override;

 protected:
  int threads_;
};

// --- Op functions: plain functions over the caller's buffers and their shapes, owning nothing,
// that implementations adapt and a training step composes (cpu_ref/<op>.cpp).
// GEMM, C = alpha op(A) op(B) + beta C, row-major (core/gemm.hpp): the double-accumulating
// reference; the teaching kernel (panel: its packing buffer, kept by the caller between calls);
// OpenBLAS's sgemm on the threads set by set_threads().
void gemm_naive(const GemmShape& s, const float* a, const float* b, float* c);
void gemm_omp(const GemmShape& s, const float* a, const float* b, float* c, int threads,
              std::vector<float>& panel);
void gemm_openblas(const GemmShape& s, const float* a, const float* b, float* c);
// oneDNN's matmul, a library that plans: built once for a shape (throws Unavailable where
// oneDNN has no kernel for its dtype here), then run on the caller's buffers, A and B in the
// storage type of s.dtype (fp32; bf16 or fp16 as storage() converts them), C fp32.
class OnednnMatmul {
 public:
  explicit OnednnMatmul(const GemmShape& s);
  OnednnMatmul(const OnednnMatmul&) = delete;
  OnednnMatmul& operator=(const OnednnMatmul&) = delete;
  ~OnednnMatmul();
  void run(const void* a, const void* b, float* c);
  std::string kernel() const;  // what oneDNN chose, e.g. "brg:avx512_core_amx"
  // A (first) or B converted to s.dtype's 16-bit storage; empty for fp32 (pass the floats).
  std::vector<std::uint16_t> storage(bool first, const std::vector<float>& x) const;
  // The same into out (as many elements as the operand has; nothing for fp32).
  void convert(bool first, const float* x, std::uint16_t* out) const;

 private:
  struct State;
  GemmShape s_;
  std::unique_ptr<State> st_;
};

// STREAM (core/stream.hpp) over arrays a, b, c of n floats, writing the kernel's output array;
// returns the sum for dot (0 otherwise).
float stream_omp(StreamKernel k, float* a, float* b, float* c, std::int64_t n, int threads);

// Activations (core/activation.hpp): out = f(x), or, with dy, the gradient dy f'(x) from x (or
// from y = f(x) for sigmoid and tanh, passed as x), over n floats: on OpenMP threads and SIMD
// packs; the scalar reference.
void activation_omp(Act a, const float* x, const float* dy, float* out, std::int64_t n,
                    int threads);
void activation_naive(Act a, const float* x, const float* dy, float* out, std::int64_t n);
// Softmax and the softmax cross-entropy loss, row by row (RowShape: out as RowWorkload says;
// labels: one class index per row, for the loss; tmp: cols floats per thread).
void rows_omp(const RowShape& s, const float* x, const std::int32_t* labels, float* out, float* tmp,
              int threads);
void rows_naive(const RowShape& s, const float* x, const std::int32_t* labels, float* out,
                float* tmp);

// Convolution (core/conv.hpp), NCHW activations and KCRS filters, the pass s.dir says:
//   fwd: in0 x, in1 w, b, out y; bwd_data: in0 dy, in1 w, out dx; bwd_filter: in0 x, in1 dy,
//   out dw, db. The reference computes each point in double; conv_im2col runs im2col (col2im)
//   on OpenMP threads and OpenBLAS's sgemm per image, col: crs x pq floats of the caller's.
void conv_naive(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
                float* db);
void conv_im2col(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
                 float* db, float* col, int threads);
// oneDNN's convolution primitive for one shape and pass, as a plan (throws Unavailable where
// oneDNN has no kernel, or only its reference code): over the same NCHW fp32 buffers,
// load() reorders the operands into the layouts the primitive chose (and converts them to
// s.dtype), execute() runs it alone, store() reorders the outputs back; run() is the three.
// channels_last: the maps (x, y and their gradients) are NHWC, the primitive's own layout, and
// run() hands oneDNN the caller's buffers where no conversion is needed (load, execute and store
// are then not for separate use: only run() binds the outputs). A shape without a bias (s.bias
// false) gets primitives without one: fwd's b and bwd_filter's db are neither read nor written.
// What a forward convolution computes after itself, in its own pass (oneDNN's post-ops;
// inference's fusion): y = relu(scale (conv + b) + shift + residual), each part optional, the
// scale and shift per output channel (fp32), the residual maps like y.
struct ConvPost {
  bool scale_shift = false, residual = false, relu = false;
  bool any() const { return scale_shift || residual || relu; }
};
class OnednnConvolution {
 public:
  // low_maps: the caller's maps (x, y and their gradients) are stored in s.dtype (bf16 or fp16),
  // not fp32; weights, their gradient and the bias stay fp32. post: a forward pass's tail (in
  // inference: prop_kind forward_inference).
  explicit OnednnConvolution(const ConvShape& s, bool channels_last = false, bool low_maps = false,
                             ConvPost post = {});
  // The tail's operands for the next run() (those the plan's ConvPost names; the others ignored).
  void post_inputs(const float* scale, const float* shift, const void* residual);
  OnednnConvolution(const OnednnConvolution&) = delete;
  OnednnConvolution& operator=(const OnednnConvolution&) = delete;
  ~OnednnConvolution();
  // The maps as the constructor says (fp32, or s.dtype's 16 bits); weights fp32. hold_weights
  // (inference, whose weights do not change between passes): a forward pass's weights (in1) are
  // reordered into the primitive's layout and dtype once per source address, and that copy is
  // reused by each later load with hold_weights from the same address until
  // drop_held_weights(); the caller promises the values there do not change meanwhile.
  void load(const void* in0, const void* in1, const float* b, bool hold_weights = false);
  void execute();
  void store(void* out, float* db);
  void run(const void* in0, const void* in1, const float* b, void* out, float* db,
           bool hold_weights = false);
  void drop_held_weights();
  std::string kernel() const;  // what oneDNN chose, e.g. "jit:avx512_core"

 private:
  void bind(void* out, float* db);  // the outputs oneDNN writes in place, at the caller's

  struct State;
  std::unique_ptr<State> st_;
};
// oneDNN's batch normalization with core/layers.hpp's semantics, over maps stored in `maps`
// (fp32 or bf16), NCHW or NHWC, with fp32 scale, shift and statistics: forward with the batch's
// mean and biased variance (training: mean and var out, the running statistics then moved here)
// or the running ones (inference), and backward; one primitive per shape and pass, built on
// first use. With BnShape::relu the ReLU after it is fused (fuse_norm_relu): forward writes
// relu(batch norm), and in training also a mask of relu_mask_bytes(s) bytes (oneDNN's
// workspace: where the output is positive), from which backward, given the ReLU's output's
// gradient as dy, takes the ReLU's backward pass. Throws Unavailable where oneDNN has no
// implementation for it here.
class OnednnBatchNorm {
 public:
  OnednnBatchNorm(Dtype maps, bool channels_last);
  OnednnBatchNorm(const OnednnBatchNorm&) = delete;
  OnednnBatchNorm& operator=(const OnednnBatchNorm&) = delete;
  OnednnBatchNorm(OnednnBatchNorm&&) noexcept;
  OnednnBatchNorm& operator=(OnednnBatchNorm&&) noexcept;
  ~OnednnBatchNorm();
  void forward(const BnShape& s, bool train, const void* x, const float* w, const float* b, void* y,
               float* mean, float* var, float* running_mean, float* running_var,
               void* relu_mask = nullptr);
  // dx may be null (a model's input needs no gradient).
  void backward(const BnShape& s, const void* x, const float* w, const float* mean,
                const float* var, const void* relu_mask, const void* dy, void* dx, float* dw,
                float* db);
  std::int64_t relu_mask_bytes(const BnShape& s);
  std::string kernel() const;  // what oneDNN chose for the last pass built

 private:
  struct State;
  std::unique_ptr<State> st_;
};
std::vector<ImplSpec> batchnorm_impls();
// Batch normalization over fp32 maps, NCHW or NHWC, with core/layers.hpp's semantics (mean and
// invstd kept for the backward pass), tuned for the CPU: forward in two passes (the statistics
// from sums shifted by each channel's first value, then y) and backward in two (the sums, then
// dx), the sums in float over blocks of values and then in double, every pass vectorized (NHWC:
// along the channels, the rows split over the threads; NCHW: along each plane, a channel a
// thread, its second pass while the channel is in cache); on `threads` threads.
void tuned_batchnorm_forward(const BnShape& s, bool train, const float* x, const float* weight,
                             const float* bias, float* y, float* mean, float* invstd,
                             float* running_mean, float* running_var, int threads);
void tuned_batchnorm_backward(const BnShape& s, const float* x, const float* weight,
                              const float* mean, const float* invstd, const float* dy, float* dx,
                              float* dweight, float* dbias, int threads);

// One image's column matrix (crs x pq) from x (c x h x w), and back, summing (col2im).
void im2col_omp(const ConvShape& s, const float* x, float* col, int threads);
void col2im_omp(const ConvShape& s, const float* col, float* x, int threads);

// A model's training step (core/train_step.hpp) on the CPU, on the caller's parameters,
// velocity and state; its loss and logits are host memory. GEMMs and convolutions through
// OpenBLAS (convolutions as im2col + GEMM) or through oneDNN's plans.
enum class TrainBackend { openblas, onednn };
std::unique_ptr<ModelStep> make_model_step(const ModelDesc& m, const TrainShape& s,
                                           TrainBackend backend, int threads);

// The registry's entry for a CPU implementation class T of the op whose workload is W: T is
// made from the workload and the thread count; fp32 only unless the caller widens `supports`.
template <class T, class W>
ImplSpec cpu_spec(const char* op, const char* name, bool threaded, double max_flops,
                  const char* library = "") {
  ImplSpec sp;
  sp.op = op;
  sp.name = name;
  sp.device = Device::cpu;
  sp.threaded = threaded;
  sp.max_flops = max_flops;
  sp.library = library;
  sp.supports = [](const Workload& w) { return w.dtype() == Dtype::fp32; };
  sp.make = [](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<T>(static_cast<const W&>(w), threads);
  };
  return sp;
}

std::vector<ImplSpec> gemm_impls();
std::vector<ImplSpec> train_impls();
std::vector<ImplSpec> conv_impls();
std::vector<ImplSpec> stream_impls();
// collective: MPI's, over MPI_COMM_WORLD (cpu_ref/collective.cpp); unavailable on one rank or
// without MPI.
std::vector<ImplSpec> collective_impls();

// A data-parallel step's gradients averaged over the ranks by MPI (cpu_ref/collective.cpp):
// in one all-reduce after the backward pass, or (overlap) in buckets (gradient_buckets, of
// kBucketBytes), each all-reduced by a thread of the reducer's own as soon as the backward pass
// has finished it, while the backward pass goes on. Needs MPI_THREAD_SERIALIZED for the overlap
// (overlap_unavailable says why not, or ""); without MPI, making one throws.
class GradientReducer {
 public:
  GradientReducer(std::int64_t n, bool overlap);
  ~GradientReducer();
  // The gradients from `from` to the end are final: the buckets wholly in them start (overlap).
  void ready(float* grads, std::int64_t from);
  // The rest, and every bucket waited for: then every gradient is the ranks' mean.
  void finish(float* grads);

 private:
  struct State;
  std::unique_ptr<State> st_;
};
std::string overlap_unavailable();
// Whether every rank holds the same bits (one rank: true).
bool same_on_every_rank(const std::vector<float>& v);
std::vector<ImplSpec> activation_impls();
std::vector<ImplSpec> row_impls(const std::string& op);

enum class AmxState { absent, usable, broken };

// Sets the threads OpenMP regions and OpenBLAS calls use from now on.
void set_threads(int threads);
int max_threads();

struct CpuInfo {
  std::string model;
  std::vector<std::string> isa;  // the SIMD extensions present, e.g. avx2, avx512f
  bool no_16bit_fake = false;    // kFakeNo16BitEnv hid the 16-bit flags
  int logical_cpus = 0;
  // Each level's caches that the CPUs this process may run on have, each cache counted once
  // (cache_bytes).
  long l2_bytes = 0, l3_bytes = 0;
  std::string openblas_config, openblas_threading;
  std::string openblas_core;           // the core whose kernels OpenBLAS runs
  std::string openblas_core_detected;  // the core OpenBLAS picked for this CPU by itself
  // Who chose openblas_core: "openblas" (its own detection), "pairbench" (this process was
  // re-executed with OPENBLAS_CORETYPE set, see openblas_core_plan), "user" (OPENBLAS_CORETYPE
  // from the user's environment).
  std::string openblas_core_source;
  std::string openblas_coretype_env;  // OPENBLAS_CORETYPE as the user set it ("" when unset)
  int openblas_threads = 0, omp_threads = 0;
  // The most threads OpenBLAS runs (its build's MAX_THREADS; 0 where its config does not say):
  // it runs that many where asked for more.
  int openblas_max_threads = 0;
  AmxState amx = AmxState::absent;
};
const CpuInfo& cpu_info();
// MAX_THREADS=N in OpenBLAS's config string ("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY
// Cooperlake MAX_THREADS=64"): N, or 0 where it is not there.
int openblas_max_threads_in(const std::string& config);

// The bytes of the level-`level` data caches (L2, L3) that these CPUs have, each cache counted
// once: the sizes under SYSFS/devices/system/cpu/cpuN/cache/index*/ (SYSFS is /sys), a cache
// told apart by its shared_cpu_list. 0 where sysfs has none. glibc's sysconf gives one size from
// CPUID instead, which a VM can report as the host's: 320 MiB of L3 on a 2-vCPU AMD EPYC VM whose
// kernel shows one 32 MiB L3 for both CPUs (its 256 MiB STREAM copies were then labelled
// cache_resident).
long cache_bytes(const std::string& sysfs, const std::vector<int>& cpus, int level);

// Where sysfs is read from: /sys, or $PAIRBENCH_SYSFS_ROOT where set (tests give a fake tree:
// the caches, cpufreq, powercap).
std::string sysfs_root();

// --- The machine's speed, now -------------------------------------------------------------------
// A short probe (a few tenths of a second, all cores): the best of three STREAM copies of
// 64 MiB arrays through stream/cpu/omp, and a fixed loop of independent FMA chains. Run at the
// start of a run, between op families and at the end, it shows whether the machine itself
// changed speed under the run (shared VMs do: memory bandwidth halves for minutes at a time).
struct MachineProbe {
  double copy_gbs = 0, compute_gflops = 0;
  // The cores' clock while the compute probe ran (cycles counted by perf_event_open over each
  // thread's time, averaged); 0 where the cycle counter cannot be read (clock_unavailable()).
  double effective_ghz = 0;
};
MachineProbe probe_machine();
// Why the machine probe has no effective clock ("" where it has one): a VM without a virtual
// PMU, or perf_event_paranoid.
std::string clock_unavailable();

// --- OpenBLAS's kernels: the core for the CPU's ISA ---------------------------------------------
// Environment variables between pairbench and its re-executed self (never set by the user):
// the core OpenBLAS detected before the re-execution, and a test hook that makes pairbench
// believe OpenBLAS detected the given core (so tests can create the fallback on any machine).
constexpr const char* kOpenblasDetectedEnv = "PAIRBENCH_OPENBLAS_DETECTED";
constexpr const char* kFakeOpenblasCoreEnv = "PAIRBENCH_FAKE_OPENBLAS_CORE";
// Test hook: set, cpu_info() hides the CPU's 16-bit arithmetic (AVX512-BF16, AVX512-FP16 and
// the AMX flags), as a Cascade Lake or a Zen 3 has none, and oneDNN is capped below it, so that
// the paths of such a CPU run and are tested on any machine.
constexpr const char* kFakeNo16BitEnv = "PAIRBENCH_FAKE_NO_16BIT";

// The OpenBLAS core whose kernels use this ISA ("SkylakeX" for AVX-512, "Haswell" for AVX2+FMA,
// "Sandybridge" for AVX), or "" for a CPU with none of them.
std::string openblas_core_for_isa(const std::vector<std::string>& isa);

// What to do about OpenBLAS's core, decided from the arguments alone (a pure function).
struct OpenblasCorePlan {
  bool reexec = false;  // re-execute with OPENBLAS_CORETYPE=target before any OpenBLAS call
  std::string target;   // the core for the ISA ("" when unknown)
  std::string note;     // one stderr line (without "pairbench: "), "" when nothing to say
};
// detected: the core OpenBLAS picked by itself, or for source "user" the OPENBLAS_CORETYPE it
// was given (OpenBLAS ignores a name it does not know, and stands another core in for one it was
// built without); used: the core it runs now; source: as in CpuInfo; asis: --openblas-core=asis.
OpenblasCorePlan openblas_core_plan(const std::string& detected, const std::string& used,
                                    const std::string& source, const std::vector<std::string>& isa,
                                    bool asis);
// The plan for this process's CPU and OpenBLAS.
OpenblasCorePlan openblas_core_plan(const CpuInfo& cpu, bool asis);

// --- AMX: advertised is not always usable
// ---------------------------------------------------------
struct CpuidRegs {
  std::uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};
// absent: no AMX flags; usable: flags and a valid tile palette; broken: the flags are there but
// CPUID leaf 0x1D (the tile palettes) describes none, as on VMs that pass the flags through
// without the state: AMX code dies there with SIGILL, so oneDNN is capped below AMX.
// max_leaf: CPUID leaf 0's EAX; leaf1d_0, leaf1d_1: leaf 0x1D subleaves 0 and 1.
AmxState amx_state(bool amx_flags, std::uint32_t max_leaf, const CpuidRegs& leaf1d_0,
                   const CpuidRegs& leaf1d_1);
const char* to_string(AmxState s);

}  // namespace pb::cpu
