// The run's progress on stderr, so that a long run says how far it is and what is left: one line
// per case as it starts, "[137/401] conv, 2 min 13 s elapsed, about 3 min 40 s left: NAME",
// refreshed in place on a terminal and written as plain lines elsewhere (a CI log); none under
// --quiet. The report and stdout are not touched.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pb {

// "0.4 s", "45 s", "2 min 13 s", "1 h 02 min".
std::string duration_text(double seconds);

// One progress line; left_s below 0: no estimate yet.
std::string progress_line(std::size_t index, std::size_t total, const std::string& op,
                          double elapsed_s, double left_s, const std::string& name);

// The seconds a case of op family `op` takes in `suite` (quick; standard, and full, as
// standard) before any of them has run: the family's mean per case in a run of that suite on
// a 2-vCPU VM without a GPU (the table in progress.cpp, and the machine it names). Below 0 for
// a family or suite the table does not have. A simple model: a GPU case, or a faster machine,
// takes less, and --shape cases what their shapes take.
double expected_case_seconds(const std::string& op, const std::string& suite);

// Whether Google Benchmark's --benchmark_filter runs the case called `name`: an extended regular
// expression searched in the name as Google Benchmark registers it (with "/manual_time"); empty
// or "all" runs every case, and a leading '-' the cases the rest does not match.
bool filter_selects(const std::string& filter, const std::string& name);

// The kind of case the estimate below averages over: its op family and device ("gemm/cpu"),
// and for a training case its model too ("train/cpu/model=resnet50"): a ResNet-50 step takes
// seconds where an MLP's takes milliseconds, and a GPU's step a fraction of a CPU's.
std::string estimate_kind(const std::string& op, const std::string& device,
                          const std::string& model);

// What is left, from the cases that finished: each case still to run is expected to take the
// mean time of the finished cases of its kind (estimate_kind), or, where it and they give their
// work (a training case's FLOPs: its batch and its pass move its time as much as its model
// does), that kind's seconds per unit of work times its own; where its kind has no finished
// case yet, its expected_seconds in `suite` (below), or the mean of all finished cases. A case's
// time is from its start to the next case's (its verification, warm-up and timing together). A
// workload's first case also makes its inputs and reference, which the cases of its other
// implementations reuse (ResNet-50's at 224x224 take seconds to a minute): that setup is learnt
// apart, per kind in the same way, and counted for the cases still to run that will make their
// workload's.
class ProgressEstimate {
 public:
  struct Pending {
    Pending(std::string kind_ = "", double work_ = 0, bool first_ = false)
        : kind(std::move(kind_)), work(work_), first(first_) {}
    Pending(const char* kind_) : kind(kind_) {}
    std::string kind;
    double work = 0;     // 0: a case's time is its kind's mean per case
    bool first = false;  // it makes its workload's inputs and reference
  };
  explicit ProgressEstimate(std::string suite = "") : suite_(std::move(suite)) {}
  // A case took `seconds`, of which `setup_seconds` made its workload's (c.first).
  void finished(const Pending& c, double seconds, double setup_seconds = 0);
  // Seconds for these cases still to run; below 0 while a kind has neither finished cases nor
  // an expected time, and no case has finished.
  double left(const std::vector<Pending>& cases) const;

 private:
  // Seconds of one kind: a mean per case, and per unit of work where work was given.
  struct Rate {
    std::size_t count = 0;
    double seconds = 0, work = 0, seconds_with_work = 0;
    void add(double s, double w);
    double at(double w) const;  // for a case of work w (0: unknown)
  };
  struct Seen {
    Rate cases, setups;  // cases: without their setup
  };
  std::string suite_;
  std::map<std::string, Seen> by_kind_;
  std::size_t count_ = 0;
  double seconds_ = 0;
};

// The seconds a case of this kind and work takes before any case of its kind has run: a CPU
// training case of a model the table in progress.cpp has, at that model's seconds per GFLOP of
// its work in the suite (its workloads' setup spread over its cases); any other case at its op
// family's expected_case_seconds. Below 0 where neither is known.
double expected_seconds(const ProgressEstimate::Pending& c, const std::string& suite);

// "437 cases to run, about 9 min 40 s expected (...)": the cases (one entry a case) at their
// expected_seconds in `suite`; without an expected time for each, the count alone.
std::string expected_line(const std::vector<ProgressEstimate::Pending>& cases,
                          const std::string& suite);

}  // namespace pb
