// The report model: a Google Benchmark JSON document plus a "pairbench" key with one record per
// case and the analyses. Knows nothing of how cases were run.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace pb::report {

// Ordered: keys stay in the order they were written (shape keys m, n, k read as written).
using json = nlohmann::ordered_json;

inline constexpr int kSchemaVersion = 1;

// A case whose timed iterations spread more than this is marked `noisy` in its record. The
// spread is the robust coefficient of variation (1.4826 x median absolute deviation / median):
// the plain one (stddev / mean, also recorded) is dominated by a single preempted iteration.
inline constexpr double kNoisyCv = 0.05;
// The machine probes of a run (see cpu::probe_machine) more than this far apart (1 - min / max,
// STREAM copy or compute) mean the machine itself changed speed under the run.
inline constexpr double kDriftThreshold = 0.20;

// A case whose median iteration is shorter than this measures launch or call latency as much as
// work (`latency_bound`): GPU cases, and CPU cases on more than one thread (a parallel region's
// fork and join).
inline constexpr double kLatencyBoundS = 20e-6;
// Where the CPU's compute probe before an op family read under this fraction of the run's best,
// the family's speedups are marked `host_throttled`.
inline constexpr double kThrottledFraction = 0.5;

// The case records as a report keeps them: each measured case labelled `latency_bound` and
// `cache_resident` (its compulsory bytes fit the device's last-level cache, without --cold), and
// its GFLOP/s (or GB/s, for work read in GB/s) checked against its device's bound in
// context.ceilings: above it, the case is an error whose `above_ceiling` names the figure, the
// bound and its source.
json checked_cases(const json& cases, const json& context);
// The CPU's memory has no peak, so its bound rests on measurements: where the machine probes'
// best STREAM copy over the run, doubled, is above the bound (the ceiling probe ran while the
// memory was slow: shared machines halve it for minutes), it becomes the bound.
void widen_cpu_memory_bound(json& context);
// The cases of a built report whose figure was above its ceiling.
int impossible_count(const json& doc);

// machine_drift: the spread of the machine probes over the run, per metric, and whether it
// crossed kDriftThreshold.
json machine_drift(const json& probes);

// speedup: per op and shape (dtype and threads aside), the best CPU and best GPU case, GPU over
// CPU kernel-only and with host<->device transfers, and the same comparison at equal dtype;
// `apart` lists the labels of its cases that make it mean less (latency_bound, cache_resident),
// `host_throttled` says when the machine probe before its op family read a slowed CPU.
json speedup(const json& cases, const json& probes = json::array());

// memory_bandwidth: per device, the best GB/s of each STREAM kernel, as % of the best and of the
// theoretical peak where one is known; the host<->device copy curves with latency and peak.
json memory_bandwidth(const json& cases, const json& context);

// One sweep analysis for any axis of the shape (threads, sms, batch): per op, implementation and
// problem, throughput in the cases' own metric against the axis, speedup over the smallest value
// and efficiency (speedup per unit of the axis).
json sweeps(const json& cases, const std::string& device, const std::string& axis);

// parallelism: every sweep of CPU threads or GPU SMs: throughput, speedup over the fewest
// units, parallel efficiency; the GPU's sweeps beside the same work at full occupancy.
json parallelism(const json& cases);

// batch: every sweep of the batch size (shape key `batch`), per device: throughput (and
// samples/s) against the batch, speedup over the smallest batch.
json batch(const json& cases);

// The images of one epoch of ImageNet-1k, what the projection divides by samples/s.
constexpr double kImagenetImages = 1281167;

// batch_size: the training steps (role `training`) of one model, per device, the best samples/s
// at each batch size, the best batch, and the smallest batch at which the GPU overtakes the CPU
// (crossover_batch; null when it never does or a device is missing): at the top level for the
// projection's model (`model`), and under `models` for each model run.
json batch_size(const json& cases);

// projection: per device, the time one epoch of ImageNet-1k would take at the best training
// throughput measured on the model closest to an image classifier (the most FLOPs per sample
// among those run), and a whole training of context.epochs epochs (90 without one), naming the
// model and batch, beside the claim this project exists to measure. No figure is scaled: on a
// model other than ResNet-50 the note says it is not the claim's model. Where the case was
// metered, the energy of an epoch and of the training in kWh; with context.price_usd_per_hour
// for the device, their dollars; with both devices, the CPU's cost and energy over the GPU's.
json projection(const json& cases, const json& context = json::object());

// collectives: per device, implementation, collective, dtype and number of ranks, each size's
// time, algbw (bytes / time) and busbw (algbw x 2(n-1)/n for all-reduce, (n-1)/n for all-gather
// and reduce-scatter, 1 for broadcast), as nccl-tests defines them.
json collectives(const json& cases);

// scaling: the data-parallel training steps over several ranks (shape ranks=N): each one's
// samples/s beside its grads=local twin's (the same step with no all-reduce, on every rank at
// once), the efficiency (local step time / step time), and the time the model predicts from the
// local step and this run's fp32 all-reduce at the gradients' size (ring: 2(N-1)/N x
// gradient_bytes / busbw), with measured / predicted. And `cluster`: per device, the epoch time,
// samples/s and efficiency on 1 to 1024 devices from a single-device step (the projection's,
// and each grads=local step) and a bus bandwidth (--busbw, else this run's all-reduce).
json scaling(const json& cases, const json& context = json::object());

// energy: per device, its meter (context.energy: the source, idle power and update period, or
// why there is none), how many cases were metered (the others by reason), their power (min,
// median, max), and on the GPU the cases during which it was throttled (a clock-event reason
// that lowers clocks under load, or held below its clocks for over 1% of the region) with the
// reasons and seconds; and the CPU's effective clock before each op family, or why it is
// unknown.
json energy(const json& cases, const json& context);

// roofline: per device, the ceilings of context.ceilings (the probes' GEMM per dtype and STREAM
// triad; the peaks beside them), and for every case its arithmetic intensity, GFLOP/s, whether
// it sits left of the ridge (memory-bound) and its % of the attainable (at most 100: a case that
// beat its probe says by how much).
json roofline(const json& cases, const json& context);

// The whole document from the context, Google Benchmark's run entries, the case records and the
// machine probes (added to the context, with their drift).
json build(const json& context, const json& benchmarks, const json& cases,
           const json& probes = json::array());

// One line (without "pairbench: ") when the machine changed speed under the run, else "".
std::string drift_warning(const json& drift);

// The console summary: one line per op and shape.
std::string summary(const json& report);

// Writes PATH.tmp, then renames it over PATH; throws std::runtime_error.
void write_atomic(const std::string& path, const std::string& text);

// The crash-safe log beside a report: one JSON object a line, {"context": ...} first, then
// {"benchmark": ...}, {"case": ...} and the machine probes ({"probe": ...}) as they are
// measured, each flushed at once.
class Log {
 public:
  // Throws std::runtime_error if it cannot be written; an empty path keeps no log (the ranks
  // other than 0).
  explicit Log(const std::string& path);
  void append(const char* kind, const json& value);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

std::string log_path_for(const std::string& report_path);

// The name of the case a benchmark entry measured: its run_name less "/manual_time".
std::string case_of_entry(const json& benchmark);

// Rebuilds the report from a log (a torn last line is ignored), or from a whole report (its
// records and probes through this version's checks and analyses; context.rebuilt_from names
// it). Throws std::runtime_error.
json recover(const std::string& log_path);

}  // namespace pb::report
