#include "bench/harness.hpp"

#include <benchmark/benchmark.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <numeric>
#include <set>

#include "bench/progress.hpp"
#include "bench/ranks.hpp"
#include "cpu_ref/cpu.hpp"
#include "kernels/gpu.hpp"

namespace pb {

report::json pct_of_peak(double gflops, double peak) {
  if (!(peak > 0) || !(gflops > 0)) return report::json::object();  // no FLOPs: no percentage
  const double pct = 100.0 * gflops / peak;
  if (pct <= 100) return {{"pct_peak", pct}};
  return {{"pct_peak", 100.0}, {"beat_peak_by", pct / 100 - 1}};
}

namespace {

using report::json;

// Testing hook: PAIRBENCH_INJECT_FAULT=TEXT corrupts one element of the result of every case
// whose name contains TEXT, so tests can watch a verification failure go through the harness.
// What a rank whose first run failed tells the others, in place of its time.
constexpr double kFailedOnARank = 1e300;

// The ranks a case runs over (its shape's ranks=N; 1 where it has none).
int ranks_of(const Case& c) {
  for (const auto& [key, value] : c.shape.items)
    if (key == "ranks") return std::stoi(value);
  return 1;
}

bool inject_fault(const std::string& name) {
  const char* pattern = std::getenv("PAIRBENCH_INJECT_FAULT");
  return pattern && *pattern && name.find(pattern) != std::string::npos;
}

// The test hook's fault: 1 added to the middle element of the last f32 output (the second of
// two, where a case has two, so that verification is seen to check every output).
void corrupt(Tensors& outputs) {
  for (auto t = outputs.rbegin(); t != outputs.rend(); ++t) {
    if (t->elem() != Elem::f32 || t->numel() == 0) continue;
    t->f32()[t->f32().size() / 2] += 1.0f;
    return;
  }
}

// The terminal's columns on stderr (a progress line longer than that would wrap and not be
// redrawn in place); 120 where it cannot be read.
std::size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) return ws.ws_col;
  return 120;
}

struct CaseRun {
  const Case* c = nullptr;
  ProgressEstimate::Pending pending;  // its kind and work, for the progress estimate
  std::unique_ptr<Impl> impl;
  bool selected = true;  // by --benchmark_filter
  bool started = false;
  // Not run: an earlier case left its device unusable, or the implementation found itself
  // unavailable (Unavailable); error says why.
  bool skipped = false;
  std::string error;
  Check check;
  double transfer_s = 0;
  std::string detail;  // what a library chose (Impl::detail)
  // Seconds per iteration, one list per call of the body: Google Benchmark's trial batches
  // (while it finds the iteration count), then one per repetition.
  std::vector<std::vector<double>> batches;
  double pct_copy_bw = 0;  // GB/s as % of this run's STREAM copy on the device, if known
  // The energy meter's readings around each batch, beside `batches`; the error of a failed read.
  struct Metered {
    energy::Mark before, after;
    long iterations = 0;
  };
  std::vector<Metered> metered;
  std::string meter_error;
  report::json energy;  // the record's `energy`, made when the case is reported
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The time statistics of a case over every timed iteration of its repetitions: the last
// `repetitions` batches (the ones before them were Google Benchmark's trials).
json time_stats(const CaseRun& r, std::size_t repetitions) {
  const std::size_t first = r.batches.size() - std::min(repetitions, r.batches.size());
  std::vector<double> t, medians;
  for (std::size_t b = first; b < r.batches.size(); ++b) {
    t.insert(t.end(), r.batches[b].begin(), r.batches[b].end());
    medians.push_back(median(r.batches[b]));
  }
  const double n = static_cast<double>(t.size());
  const double mean = std::accumulate(t.begin(), t.end(), 0.0) / n;
  double var = 0;
  for (double x : t) var += (x - mean) * (x - mean);
  const double stddev = t.size() > 1 ? std::sqrt(var / (n - 1)) : 0.0;
  // The same spread measured robustly, from the median absolute deviation (x 1.4826, which
  // equals the standard deviation for normal noise): one preempted iteration among thousands
  // inflates the cv, not this.
  const double med = median(t);
  std::vector<double> dev(t.size());
  for (std::size_t k = 0; k < t.size(); ++k) dev[k] = std::fabs(t[k] - med);
  return {{"median_s", med},
          {"min_s", *std::min_element(t.begin(), t.end())},
          {"mean_s", mean},
          {"stddev_s", stddev},
          {"cv", stddev / mean},
          {"robust_cv", 1.4826 * median(dev) / med},
          {"iterations", t.size()},
          {"repetitions", medians.size()},
          {"repetition_medians_s", medians}};
}

}  // namespace

FirstRun first_run(const Case& c, const Tensors& inputs, bool corrupt_result, bool across_ranks) {
  auto slowest_rank = [across_ranks](double t) { return across_ranks ? ranks::max_over(t) : t; };
  FirstRun f;
  std::exception_ptr failure;
  double first_s = 0;
  try {
    f.impl = c.impl.make(*c.workload, c.units);
    f.impl->activate();
    f.impl->prepare(inputs);
    f.detail = f.impl->detail();
  } catch (...) {
    failure = std::current_exception();
  }
  // Over several ranks, every rank ready before any runs: run() may be a collective, which a
  // rank that failed to prepare would never call.
  const bool all_ready = across_ranks ? ranks::all(!failure) : !failure;
  if (all_ready) try {
      const auto first = std::chrono::steady_clock::now();
      f.impl->run();
      Tensors out = f.impl->result();
      first_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
      f.detail = f.impl->detail();  // again: some choose their kernels in the first run
      if (corrupt_result) corrupt(out);
      f.check = c.workload->verify(inputs, out);
      f.transfer_s = f.impl->transfer_seconds();
    } catch (...) {
      failure = std::current_exception();
    }
  // Over several ranks, one agreement: whether every rank's first run passed, and the slowest
  // one's time. Every time that decides how often run() is called is the slowest rank's: run()
  // may be a collective, which every rank must call alike.
  const bool passed = all_ready && !failure && f.check.ok;
  const double slowest = slowest_rank(passed ? first_s : kFailedOnARank);
  if (failure) std::rethrow_exception(failure);
  if (!all_ready) {
    f.check.ok = false;
    f.check.detail = "another rank failed before the first run (its messages say why)";
    return f;
  }
  if (passed && slowest >= kFailedOnARank) {
    f.check.ok = false;
    f.check.detail = "the first run failed on another rank (its messages say why)";
  }
  if (f.check.ok && slowest < 0.5) {
    // Warm up (clocks, caches, library heuristics): up to 3 more runs, at most ~50 ms. A first
    // run of half a second or more (a ResNet-50 step) has done all that already.
    auto timer = f.impl->make_timer();
    double spent = 0;
    for (int n = 0; n < 3 && spent < 0.05; ++n) {
      timer->start();
      f.impl->run();
      spent += slowest_rank(timer->stop());
    }
  }
  return f;
}

namespace {

// A run's time, which must be above 0: a region with no work the timer can see (CUDA's events
// resolve about 0.5 us) has no figure, and Google Benchmark would grow its iterations without
// end to fill its minimum time with nothing.
double nonzero(double t) {
  if (!(t > 0))
    throw std::runtime_error("the timer read " + std::to_string(t) +
                             " s for a run: it saw no work to time");
  return t;
}

}  // namespace

BestTime measure_best(const Case& c, int runs) {
  BestTime b;
  try {
    const Tensors inputs = c.workload->make_inputs();
    FirstRun f = first_run(c, inputs, false, false);  // this rank's own probe
    if (!f.check.ok) {
      b.error = "verification failed: " + f.check.detail;
      return b;
    }
    auto timer = f.impl->make_timer();
    b.seconds = 1e300;
    for (int n = 0; n < runs; ++n) {
      timer->start();
      f.impl->run();
      b.seconds = std::min(b.seconds, nonzero(timer->stop()));
    }
  } catch (const std::exception& e) {
    b.seconds = 0;
    b.error = e.what();
  }
  return b;
}

bool selected_by_filter(const std::string& name) {
  return filter_selects(benchmark::GetBenchmarkFilter(), name);
}

ProgressEstimate::Pending progress_pending(const Case& c) {
  std::string model;
  for (const auto& [key, value] : c.shape.items)
    if (key == "model") model = value;
  return {estimate_kind(c.workload->op(), to_string(c.impl.device), model),
          model.empty() ? 0 : c.workload->flops()};
}

namespace {

class Runner {
 public:
  Runner(const std::vector<Case>& cases, const HarnessConfig& cfg, report::Log& log)
      : cfg_(cfg), log_(log), estimate_(cfg.suite) {
    for (const Case& c : cases) {
      runs_.emplace_back();
      runs_.back().c = &c;
      runs_.back().pending = progress_pending(c);
    }
  }

  std::vector<CaseRun>& runs() { return runs_; }
  void set_total(std::size_t n) { total_ = n; }

  void body(benchmark::State& st, std::size_t i) {
    CaseRun& r = runs_[i];
    probe_if_op_changes(*r.c);
    // The first time; or again when random interleaving ran another case in between, which
    // released this one's buffers.
    if (!r.impl && r.error.empty()) start(r);
    if (!r.error.empty()) {
      st.SkipWithError(r.error.c_str());
      return;
    }
    try {
      r.impl->activate();
      auto timer = r.impl->make_timer();
      r.batches.emplace_back();
      std::vector<double>& batch = r.batches.back();
      const energy::Calibrated* meter = meter_for(*r.c);
      energy::Mark before;
      if (meter) before = read_meter(r, *meter);
      for (auto _ : st) {
        if (cfg_.cold) r.impl->flush_cache();
        timer->start();
        r.impl->run();
        // Over several ranks, the slowest rank's time, so that every rank decides alike.
        const double t = nonzero(ranks::max_over(timer->stop()));
        st.SetIterationTime(t);
        batch.push_back(t);
      }
      if (meter && r.meter_error.empty())
        r.metered.push_back({before, read_meter(r, *meter), static_cast<long>(batch.size())});
    } catch (const std::exception& e) {
      r.error = e.what();
      r.impl.reset();
      note_if_device_unusable(*r.c);
      st.SkipWithError(r.error.c_str());
      return;
    }
    // The counters use the same statistic as the case's record: the median iteration.
    const double per_iter = median(r.batches.back());
    const Workload& w = *r.c->workload;
    st.counters["GFLOP/s"] = w.flops() / per_iter / 1e9;
    st.counters["GB/s"] = w.min_bytes() / per_iter / 1e9;
    st.counters["bytes_per_second"] = w.min_bytes() / per_iter;
    if (w.items() > 0) st.counters["items_per_second"] = w.items() / per_iter;
    const report::json pct = pct_of_peak(w.flops() / per_iter / 1e9, peak_gflops(*r.c));
    if (pct.contains("pct_peak") && !pct.contains("beat_peak_by"))  // the column shows no cap
      st.counters["pct_peak"] = pct["pct_peak"].get<double>();
    double& copy = copy_gbs_[static_cast<int>(r.c->impl.device)];
    const double gbs = w.min_bytes() / per_iter / 1e9;
    if (w.role() == Role::bandwidth_reference) copy = std::max(copy, gbs);
    if (w.bandwidth_bound() && copy > 0) {
      r.pct_copy_bw = 100.0 * gbs / copy;
      st.counters["pct_copy_bw"] = r.pct_copy_bw;
    }
  }

  // The machine probe: at the start, before each op family, at the end (see probe_machine).
  void probe(const std::string& when) {
    const cpu::MachineProbe p = cpu::probe_machine();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    json entry = {
        {"when", when}, {"t_s", t}, {"copy_gbs", p.copy_gbs}, {"compute_gflops", p.compute_gflops}};
    if (p.effective_ghz > 0)
      entry["effective_ghz"] = p.effective_ghz;
    else if (probes_.empty())  // said once, on the first
      entry["effective_ghz_unavailable"] = cpu::clock_unavailable();
    probes_.push_back(entry);
    log_.append("probe", entry);  // as it is taken: a run cut short keeps its probes
    last_probe_s_ = t;
  }
  const json& probes() const { return probes_; }
  bool metering() const { return cfg_.cpu_energy || cfg_.gpu_energy; }

  // The case's `energy`: from the meter's readings around its last `repetitions` batches (the
  // timed ones); where those lasted less than the meter's shortest region, from a further run of
  // the case, iteration after iteration as timed, lasting that long.
  report::json energy_of(CaseRun& r, std::size_t repetitions) {
    const energy::Calibrated* meter = meter_for(*r.c);
    if (!meter) {
      const energy::Calibrated* m =
          r.c->impl.device == Device::cpu ? cfg_.cpu_energy : cfg_.gpu_energy;
      return energy::unavailable(m ? m->context().value("reason", "") : "no meter");
    }
    const std::string shared = energy::shared_meter_reason(r.c->impl.device == Device::cpu,
                                                           ranks_of(*r.c), ranks::world().size);
    if (!shared.empty()) return energy::unavailable(shared);
    const Workload& w = *r.c->workload;
    energy::CaseEnergy e;
    const std::size_t n = r.metered.size(), first = n - std::min(repetitions, n);
    for (std::size_t b = first; b < n; ++b)
      e.add(r.metered[b].before, r.metered[b].after, r.metered[b].iterations);
    bool lengthened = false;
    // (Not across ranks: each rank's meter is its own, and a rank that ran on alone would wait
    // in its collectives.)
    if (e.seconds() < meter->min_region_s() && r.impl && r.meter_error.empty() &&
        ranks::world().size == 1) {
      e.clear();
      lengthened = true;
      try {
        r.impl->activate();
        auto timer = r.impl->make_timer();
        const energy::Mark before = energy::mark(*meter->meter);
        const auto t0 = std::chrono::steady_clock::now();
        long iterations = 0;
        do {  // the meter is read at the ends only: NVML's reads take tens of microseconds
          if (cfg_.cold) r.impl->flush_cache();
          timer->start();
          r.impl->run();
          timer->stop();
          ++iterations;
        } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() <
                 meter->min_region_s());
        e.add(before, energy::mark(*meter->meter), iterations);
      } catch (const std::exception& ex) {
        r.meter_error = ex.what();
      }
    }
    if (!r.meter_error.empty()) return energy::unavailable(r.meter_error);
    return e.record(*meter, w.flops(), w.min_bytes(), w.items(), w.metric() == Metric::gbs,
                    lengthened);
  }

  // Over several ranks a case's figure is every rank's together, each on a device (or a share
  // of the cores, whose peak is this process's) of its own: the peak is theirs together.
  double peak_gflops(const Case& c) const {
    if (c.workload->dtype() != Dtype::fp32) return 0;
    return ranks_of(c) *
           (c.impl.device == Device::cpu ? cfg_.cpu_peak_gflops : cfg_.gpu_peak_gflops);
  }

 private:
  // Prepare, run once, verify against the reference; only a verified case is timed.
  void start(CaseRun& r) {
    if (current_ && current_ != &r) current_->impl.reset();  // free the previous case's buffers
    current_ = &r;
    if (!r.started) progress(r);
    r.started = true;
    if (r.c->impl.device == Device::gpu && !gpu_unusable_.empty()) {
      r.skipped = true;
      r.error = "an earlier GPU case left the device unusable (" + gpu_unusable_ +
                "): the rest of the GPU cases are skipped";
      return;
    }
    try {
      FirstRun f = first_run(*r.c, inputs_of(*r.c->workload), inject_fault(r.c->name));
      r.impl = std::move(f.impl);
      r.detail = f.detail;
      r.check = f.check;
      r.transfer_s = f.transfer_s;
      if (!r.check.ok) r.error = "verification failed: " + r.check.detail;
    } catch (const Unavailable& e) {
      r.skipped = true;
      r.error = e.what();
    } catch (const std::exception& e) {
      r.error = e.what();
      note_if_device_unusable(*r.c);
    }
    if (!r.error.empty()) r.impl.reset();
  }

  // A workload's inputs, made once for its cases while they run one after another (its
  // implementations and thread counts; its repetitions unless random interleaving runs another
  // workload in between). The workload keeps its reference for them (ReferenceMemo).
  const Tensors& inputs_of(const Workload& w) {
    if (inputs_for_ != &w) {
      const auto t = std::chrono::steady_clock::now();
      inputs_for_ = nullptr;
      inputs_ = w.make_inputs();
      w.prepare_reference(inputs_);  // before an implementation takes its memory
      inputs_for_ = &w;
      // The progress estimate counts this apart (the case that made it is its workload's first).
      set_up_.insert(&w);
      setup_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
      setup_made_ = true;
    }
    return inputs_;
  }

  // After a GPU case failed: if the CUDA context is now unusable (a fault in a kernel), every
  // later GPU case would fail with the same error; they are skipped with one reason instead.
  void note_if_device_unusable(const Case& c) {
    if (c.impl.device != Device::gpu || !gpu_unusable_.empty()) return;
    gpu_unusable_ = gpu::sticky_error();
  }

  // The case's device's meter where it can be read; null where it cannot (or energy is off).
  const energy::Calibrated* meter_for(const Case& c) const {
    const energy::Calibrated* m = c.impl.device == Device::cpu ? cfg_.cpu_energy : cfg_.gpu_energy;
    return m && m->usable() ? m : nullptr;
  }

  energy::Mark read_meter(CaseRun& r, const energy::Calibrated& m) {
    try {
      return energy::mark(*m.meter);
    } catch (const std::exception& e) {
      r.meter_error = e.what();
      return {};
    }
  }

  // Before each op family's first case, and between families at most every few seconds after
  // (random interleaving alternates them): every family has the probe its speedups are weighed
  // by (a host throttled under it, reports/analyses.cpp).
  void probe_if_op_changes(const Case& c) {
    const std::string op = c.workload->op();
    if (op == last_op_) return;
    last_op_ = op;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const bool first = probed_ops_.insert(op).second;
    if (first || t - last_probe_s_ >= 5.0) probe("before " + op);
  }

  // A case starts: the one before it finished (the estimate learns its time), and the progress
  // line names this one, with what is left: the cases not started yet, this one included.
  void progress(const CaseRun& run) {
    ++started_;
    const double now =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (last_started_) {
      ProgressEstimate::Pending done = *last_started_;
      done.first = setup_made_;
      estimate_.finished(done, now - last_start_s_, setup_s_);
    }
    setup_s_ = 0, setup_made_ = false;
    last_op_started_ = run.c->workload->op(), last_started_ = &run.pending, last_start_s_ = now;
    if (cfg_.quiet) return;
    // The cases not started yet; the first of each workload whose inputs are not made yet will
    // make them (this one's are made once it has started).
    std::vector<ProgressEstimate::Pending> left;
    std::set<const Workload*> making = set_up_;
    making.insert(run.c->workload.get());
    for (const CaseRun& r : runs_) {
      if (r.started || !r.selected || !r.c->skip.empty()) continue;
      left.push_back(r.pending);
      left.back().first = making.insert(r.c->workload.get()).second;
    }
    line_ =
        progress_line(started_, total_, last_op_started_, now, estimate_.left(left), run.c->name);
    draw_progress();
  }

 public:
  // On a terminal the line is redrawn in place: cleared before Google Benchmark prints a row to
  // the same screen, drawn again after it. Elsewhere, one plain line per case.
  void draw_progress() {
    if (line_.empty()) return;
    if (!tty_) {
      std::fprintf(stderr, "%s\n", line_.c_str());
      return;
    }
    std::fprintf(stderr, "\r\x1b[K%s", line_.substr(0, width_ - 1).c_str());
    std::fflush(stderr);
  }
  void redraw_progress() {
    if (tty_) draw_progress();
  }
  void clear_progress() {
    if (!tty_ || line_.empty()) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
  }

 private:
  HarnessConfig cfg_;
  report::Log& log_;
  std::vector<CaseRun> runs_;
  CaseRun* current_ = nullptr;
  const Workload* inputs_for_ = nullptr;  // whose inputs_ are
  Tensors inputs_;
  std::string gpu_unusable_;  // the sticky CUDA error, once there is one
  json probes_ = json::array();
  std::string last_op_;
  std::set<std::string> probed_ops_;  // the op families probed before
  double last_probe_s_ = -1e9;
  double copy_gbs_[2] = {0, 0};  // the best STREAM copy measured so far, per device
  std::size_t started_ = 0, total_ = 0;
  ProgressEstimate estimate_;
  std::set<const Workload*> set_up_;  // the workloads whose inputs and reference were made
  double setup_s_ = 0;                // the time the case now running spent making them
  bool setup_made_ = false;
  std::string last_op_started_, line_;
  const ProgressEstimate::Pending* last_started_ = nullptr;
  double last_start_s_ = 0;
  bool tty_ = isatty(STDERR_FILENO) != 0;
  std::size_t width_ = terminal_width();
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

json shape_json(const Shape& s) {
  json j = json::object();
  for (const auto& [k, v] : s.items) j[k] = v;
  return j;
}

// repetitions: how many repetitions Google Benchmark reported for an "ok" case.
json case_record(const CaseRun& r, const std::string& status, const std::string& message,
                 double peak, std::size_t repetitions = 0) {
  const Case& c = *r.c;
  const Workload& w = *c.workload;
  json j = {{"name", c.name},
            {"op", w.op()},
            {"device", to_string(c.impl.device)},
            {"impl", c.impl.name},
            {"shape", shape_json(c.shape)},
            {"dtype", to_string(w.dtype())},
            {"threads", c.impl.device == Device::cpu ? c.units : 0},
            {"status", status},
            {"flops", w.flops()},
            {"min_bytes", w.min_bytes()},
            // A CPU cache reads a line before a write to it; a GPU's L2 does not read a line
            // that is written whole, as STREAM's and every written array's lines are.
            {"write_allocate_bytes", c.impl.device == Device::cpu ? w.write_allocate_bytes() : 0.0},
            {"metric", to_string(w.metric())}};
  if (w.role() != Role::none) j["role"] = to_string(w.role());
  if (w.items() > 0) j["items"] = w.items();
  if (w.gradient_bytes() > 0) j["gradient_bytes"] = w.gradient_bytes();
  if (c.impl.device == Device::gpu && c.units > 0) j["sms"] = c.units;
  if (!c.impl.library.empty()) j["library"] = c.impl.library;
  if (!r.detail.empty()) j["impl_detail"] = r.detail;
  if (!message.empty()) j["message"] = message;
  j["verified"] = r.started && r.check.ok;
  if (r.started && !r.check.method.empty()) j["verification"] = r.check.method;
  if (r.started && (r.check.ok || !r.check.detail.empty())) {
    j["max_error"] = r.check.max_error;
    j["tolerance"] = r.check.tolerance;
  }
  if (status != "ok") return j;
  j["time"] = time_stats(r, repetitions);
  j["noisy"] = j["time"]["robust_cv"].get<double>() > report::kNoisyCv;
  const double median = j["time"]["median_s"];
  j["transfer_s"] = r.transfer_s;
  j["gflops"] = w.flops() / median / 1e9;
  j["gbs"] = w.min_bytes() / median / 1e9;
  j.update(pct_of_peak(w.flops() / median / 1e9, peak));
  if (w.items() > 0) j["samples_per_s"] = w.items() / median;
  if (r.pct_copy_bw > 0) j["pct_copy_bw"] = r.pct_copy_bw;
  if (!r.energy.is_null()) j["energy"] = r.energy;
  return j;
}

// Google Benchmark's own JSON entry for a run, field for field as its JSONReporter writes it.
json benchmark_entry(const benchmark::BenchmarkReporter::Run& run) {
  using Run = benchmark::BenchmarkReporter::Run;
  json j = {{"name", run.benchmark_name()},
            {"family_index", run.family_index},
            {"per_family_instance_index", run.per_family_instance_index},
            {"run_name", run.run_name.str()},
            {"run_type", run.run_type == Run::RT_Iteration ? "iteration" : "aggregate"},
            {"repetitions", run.repetitions},
            {"threads", run.threads}};
  const bool aggregate = run.run_type == Run::RT_Aggregate;
  if (!aggregate) j["repetition_index"] = run.repetition_index;
  const bool time_unit = !aggregate || run.aggregate_unit == benchmark::StatisticUnit::kTime;
  if (aggregate) {
    j["aggregate_name"] = run.aggregate_name;
    j["aggregate_unit"] = time_unit ? "time" : "percentage";
  }
  if (run.error_occurred) {
    j["error_occurred"] = true;
    j["error_message"] = run.error_message;
  }
  j["iterations"] = run.iterations;
  if (time_unit) {
    j["real_time"] = run.GetAdjustedRealTime();
    j["cpu_time"] = run.GetAdjustedCPUTime();
  } else {  // a percentage (the cv aggregate)
    j["real_time"] = run.real_accumulated_time;
    j["cpu_time"] = run.cpu_accumulated_time;
  }
  j["time_unit"] = benchmark::GetTimeUnitString(run.time_unit);  // on every entry, as GB writes
  for (const auto& [name, counter] : run.counters)
    if (std::isfinite(counter.value)) j[name] = counter.value;
  return j;
}

// Prints as the console reporter does, and records every run as it arrives.
class Recorder : public benchmark::ConsoleReporter {
 public:
  Recorder(Runner& runner, report::Log& log, HarnessResult& out, bool keep_errors)
      : runner_(runner), log_(log), out_(out), keep_errors_(keep_errors) {
    for (std::size_t i = 0; i < runner.runs().size(); ++i) index_[runner.runs()[i].c->name] = i;
  }

  // Google Benchmark reports a case once all its repetitions ran: a call with their runs, then
  // (with repetitions) a call with the aggregates. The case's record comes with its runs.
  void ReportRuns(const std::vector<Run>& runs) override {
    runner_.clear_progress();
    ConsoleReporter::ReportRuns(runs);
    GetOutputStream().flush();
    runner_.redraw_progress();
    std::vector<std::size_t> seen;
    std::map<std::size_t, std::size_t> repetitions;
    for (const Run& run : runs) {
      auto it = index_.find(run.run_name.function_name);
      if (it != index_.end() && run.run_type == Run::RT_Iteration) {
        if (std::find(seen.begin(), seen.end(), it->second) == seen.end())
          seen.push_back(it->second);
        if (!run.error_occurred) ++repetitions[it->second];
      }
      // A case that failed never reaches the CI tools as a time: it stays in pairbench.cases.
      if (run.error_occurred && !keep_errors_) continue;
      const json entry = benchmark_entry(run);
      log_.append("benchmark", entry);
      out_.benchmarks.push_back(entry);
    }
    for (std::size_t i : seen) {
      const CaseRun& r = runner_.runs()[i];
      bool ok = r.error.empty() && repetitions[i] > 0 && !r.batches.empty();
      // Over several ranks: each rank's timed iterations, which must be the same.
      json by_rank = json::array();
      if (ranks::world().size > 1) {
        std::size_t n = 0;
        for (std::size_t b = r.batches.size() - std::min(repetitions[i], r.batches.size());
             b < r.batches.size(); ++b)
          n += r.batches[b].size();
        for (const std::string& v : ranks::gather(std::to_string(ok ? n : 0)))
          by_rank.push_back(std::stoll(v));
        if (ok && std::adjacent_find(by_rank.begin(), by_rank.end(), std::not_equal_to<>()) !=
                      by_rank.end()) {
          ok = false;
          runner_.runs()[i].error = "the ranks timed different iterations: " + by_rank.dump();
        }
      }
      const char* status = ok ? "ok" : r.skipped ? "skipped" : "error";
      if (ok && runner_.metering())
        runner_.runs()[i].energy = runner_.energy_of(runner_.runs()[i], repetitions[i]);
      json rec =
          case_record(r, status, ok ? "" : r.error, runner_.peak_gflops(*r.c), repetitions[i]);
      if (!ok && !r.skipped) ++out_.failed;
      if (!ok && !r.skipped && ranks::world().rank > 0) {  // its console is shut: say it here
        const std::string line = "pairbench: rank " + std::to_string(ranks::world().rank) + ": " +
                                 r.c->name + ": " + r.error + "\n";
        std::fputs(line.c_str(), stderr);
      }
      if (!by_rank.empty()) rec["iterations_by_rank"] = by_rank;
      log_.append("case", rec);
      out_.cases.push_back(rec);
      runner_.runs()[i].batches = {};  // recorded: a tiny case keeps 10^5 samples or more
      runner_.runs()[i].metered = {};
    }
  }

 private:
  Runner& runner_;
  report::Log& log_;
  HarnessResult& out_;
  bool keep_errors_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace

HarnessResult run_cases(const std::vector<Case>& cases, const HarnessConfig& cfg,
                        report::Log& log) {
  HarnessResult out;
  Runner runner(cases, cfg, log);
  std::size_t runnable = 0;
  std::vector<ProgressEstimate::Pending> pending;  // the cases that will run
  const std::string filter = benchmark::GetBenchmarkFilter();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    runner.runs()[i].selected = filter_selects(filter, c.name);
    if (!c.skip.empty()) {
      const json rec = case_record(runner.runs()[i], "skipped", c.skip, 0);
      log.append("case", rec);
      out.cases.push_back(rec);
      continue;
    }
    if (runner.runs()[i].selected) ++runnable, pending.push_back(runner.runs()[i].pending);
    auto* b = benchmark::RegisterBenchmark(
        c.name.c_str(), [&runner, i](benchmark::State& st) { runner.body(st, i); });
    b->UseManualTime()->Unit(c.workload->flops() > 2e9 ? benchmark::kMillisecond
                                                       : benchmark::kMicrosecond);
  }
  runner.set_total(runnable);
  if (!cfg.quiet && runnable > 0)
    std::fprintf(stderr, "pairbench: %s\n", expected_line(pending, cfg.suite).c_str());
  if (runnable > 0) {
    Recorder recorder(runner, log, out, cfg.keep_error_entries);
    runner.probe("start");
    benchmark::RunSpecifiedBenchmarks(&recorder);
    runner.clear_progress();
    runner.probe("end");
    out.probes = runner.probes();
  }
  benchmark::ClearRegisteredBenchmarks();
  return out;
}

}  // namespace pb
