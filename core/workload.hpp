// The one abstraction: a workload (what to compute) and an implementation (how, where).
// The harness in bench/ pairs them: prepare, run once, verify, and only then time run().
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "core/types.hpp"

namespace pb {

// The figure a case is read by (its record's `metric`, the analyses' throughput): declared by
// the workload, never guessed from its FLOPs and bytes.
enum class Metric { gflops, gbs, samples };
inline const char* to_string(Metric m) {
  return m == Metric::gflops ? "GFLOP/s" : m == Metric::gbs ? "GB/s" : "samples/s";
}

// What the analyses use a case for, so that they find reference cases by role, not by op name:
// the STREAM kernels (memory_bandwidth, the roofline's bandwidth ceiling), the STREAM copy among
// them (the bandwidth other cases are compared with), GEMM (the roofline's compute ceiling, per
// dtype), host<->device copies, a model's training step (the batch-size analysis and the epoch
// projection), a collective across ranks (algbw and busbw).
enum class Role {
  none,
  bandwidth,
  bandwidth_reference,
  compute_reference,
  transfer,
  training,
  collective
};
inline const char* to_string(Role r) {
  switch (r) {
    case Role::bandwidth:
      return "bandwidth";
    case Role::bandwidth_reference:
      return "bandwidth_reference";
    case Role::compute_reference:
      return "compute_reference";
    case Role::transfer:
      return "transfer";
    case Role::training:
      return "training";
    case Role::collective:
      return "collective";
    default:
      return "none";
  }
}

struct Check {
  bool ok = false;
  double max_error = 0;  // in the workload's own error unit (see its verify())
  double tolerance = 0;
  std::string detail;  // why it failed, for the report
  // How the result was checked, where a workload checks some of its shapes or dtypes otherwise
  // than its usual way (the report's `verification`); empty for the usual way.
  std::string method;
};

class Workload {
 public:
  virtual ~Workload() = default;
  virtual std::string op() const = 0;
  virtual Shape shape() const = 0;  // includes dtype
  virtual Dtype dtype() const = 0;
  virtual double flops() const = 0;
  virtual double min_bytes() const = 0;  // compulsory traffic: read inputs once, write output once
  // What a cache that allocates on write adds: reading each written line before it is written.
  virtual double write_allocate_bytes() const { return 0; }
  // Work that memory bandwidth bounds: its GB/s is also given as % of the STREAM copy's.
  virtual bool bandwidth_bound() const { return false; }
  virtual Role role() const { return Role::none; }
  // Samples one run processes (the images of a batch); 0 for work that has no batch.
  virtual double items() const { return 0; }
  // The bytes of a training step's gradients: what a data-parallel step all-reduces (0: none).
  virtual double gradient_bytes() const { return 0; }
  virtual Metric metric() const {
    return items() > 0 ? Metric::samples : bandwidth_bound() ? Metric::gbs : Metric::gflops;
  }
  // Host memory one case needs (inputs, output, copies) with its implementation on `device`.
  virtual double host_bytes(Device device) const = 0;
  virtual double device_bytes() const = 0;
  virtual Tensors make_inputs() const = 0;  // named, e.g. {"a", "b", "c"} for GEMM
  // The names of the outputs an implementation's result() gives, in order ({"c"} for GEMM;
  // {"dw", "db"} for a backward pass that computes two).
  virtual std::vector<std::string> outputs() const { return {"out"}; }
  // Checks the outputs, looked up by name, against a reference computed from the inputs.
  virtual Check verify(const Tensors& inputs, const Tensors& outputs) const = 0;
  // Computes (and keeps) what verify() needs from the inputs alone, so that the harness can do
  // it before any implementation allocates: a large reference and a large case then need the
  // memory one after the other, not together. verify() computes it where this was not called.
  virtual void prepare_reference(const Tensors& /*inputs*/) const {}
  // Its check runs OpenBLAS (a reference through dgemm): OpenBLAS's kernels matter to a case of
  // any implementation, on either device.
  virtual bool verifies_through_openblas() const { return false; }
};

// The f32 output called `name` when it holds `count` elements; otherwise nullptr, with the
// reason in chk.detail (for verify()).
inline const float* output_f32(const Tensors& outputs, const std::string& name, std::int64_t count,
                               Check& chk) {
  const Tensor* t = find(outputs, name);
  if (!t || t->elem() != Elem::f32) {
    chk.detail = "the implementation gave no f32 output named " + name;
    return nullptr;
  }
  if (t->numel() != count) {
    chk.detail = "output " + name + " has " + std::to_string(t->numel()) + " elements, not " +
                 std::to_string(count);
    return nullptr;
  }
  return t->f32().data();
}

// Measures one iteration. CPU: steady clock. GPU: CUDA events on the case's stream.
class Timer {
 public:
  virtual ~Timer() = default;
  virtual void start() = 0;
  virtual double stop() = 0;  // seconds since start(), the work finished
};

// Thrown by an implementation that finds, once it asks its library, that it cannot run this
// workload well on this machine (oneDNN offering only its reference code): the case is listed
// as skipped with the reason, not failed.
class Unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Impl {
 public:
  virtual ~Impl() = default;
  virtual void prepare(const Tensors& inputs) = 0;  // allocate, upload; not timed
  virtual void activate() {}     // called before each timed batch (e.g. sets the thread count)
  virtual void run() = 0;        // the timed work (GPU: enqueued on the case's stream)
  virtual Tensors result() = 0;  // the workload's outputs(), read back to the host
  virtual std::unique_ptr<Timer> make_timer() = 0;
  virtual void flush_cache() = 0;  // --cold: evict the last-level cache / GPU L2
  // Host<->device copies of inputs and output, measured in prepare() and result(); 0 on the CPU.
  virtual double transfer_seconds() const { return 0; }
  // What a library chose for this case, known after prepare() (e.g. oneDNN's implementation,
  // "brg:avx512_core_amx"); "" when there is nothing to say.
  virtual std::string detail() const { return ""; }
};

// What a workload's verification computes from its inputs alone (its reference result), kept
// for the inputs it came from (by fingerprint), so that every case of the workload
// (implementations, thread counts, repetitions) is checked against one computation of it.
template <class R>
class ReferenceMemo {
 public:
  template <class Make>
  const R& get(const Tensors& inputs, Make make) const {
    const std::uint64_t key = fingerprint(inputs);
    if (!value_ || key_ != key) value_ = std::make_shared<const R>(make()), key_ = key;
    return *value_;
  }

 private:
  mutable std::shared_ptr<const R> value_;
  mutable std::uint64_t key_ = 0;
};

// One implementation of one op on one device, as the registry knows it.
struct ImplSpec {
  std::string op, name;
  Device device = Device::cpu;
  // CPU: runs on the cores, once per thread count (--threads, all cores, or the suite's thread
  // sweep on its sweep shapes), threads=N in its name; otherwise on one thread.
  bool threaded = false;
  // GPU: also runs limited to 1, 2, 4, ... SMs on the suite's sweep shapes (sms=K in its name);
  // otherwise on the whole GPU only.
  bool sm_sweep = false;
  double max_flops = 0;  // > 0: suites leave larger shapes out unless the impl is asked for by name
  std::string library;   // the library run() calls, if any: "openblas", "onednn", "cublas"
  double workspace_bytes = 0;  // device memory the library may take beside the operands
  std::function<bool(const Workload&)> supports;
  // Why this machine or build cannot run a workload it supports ("" when it can): a library
  // that is missing, an ISA the CPU lacks. Such cases are listed as skipped with the reason.
  std::function<std::string(const Workload&)> unavailable;
  std::function<std::unique_ptr<Impl>(const Workload&, int units)> make;
};

}  // namespace pb
