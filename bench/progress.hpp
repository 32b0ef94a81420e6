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

// "437 cases to run, about 9 min 40 s expected (...)": the cases of these op families (one entry
// a case) at their expected_case_seconds in `suite`; without an expected time for each, the
// count alone.
std::string expected_line(const std::vector<std::string>& ops, const std::string& suite);

// What is left, from the cases that finished: each case still to run is expected to take the
// mean time of the finished cases of its op family; where its family has none yet, its
// expected_case_seconds in `suite`, or the mean of all finished cases. A case's time is from
// its start to the next case's (its verification, warm-up and timing together).
class ProgressEstimate {
 public:
  explicit ProgressEstimate(std::string suite = "") : suite_(std::move(suite)) {}
  void finished(const std::string& op, double seconds);
  // Seconds for cases of these op families (one entry a case); below 0 while a family has
  // neither finished cases nor an expected time, and no case has finished.
  double left(const std::vector<std::string>& ops) const;

 private:
  std::string suite_;
  std::map<std::string, std::pair<std::size_t, double>> by_op_;  // count, seconds
  std::size_t count_ = 0;
  double seconds_ = 0;
};

}  // namespace pb
