#include "bench/progress.hpp"

#include <regex.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace pb {

std::string duration_text(double s) {
  char buf[64];
  if (!(s >= 0)) s = 0;
  if (s < 10)
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  else if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0f s", std::floor(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%d min %02d s", static_cast<int>(s / 60),
                  static_cast<int>(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%d h %02d min", static_cast<int>(s / 3600),
                  static_cast<int>(s / 60) % 60);
  return buf;
}

std::string progress_line(std::size_t index, std::size_t total, const std::string& op,
                          double elapsed_s, double left_s, const std::string& name) {
  std::string line = "[" + std::to_string(index) + "/" + std::to_string(total) + "] " + op + ", " +
                     duration_text(elapsed_s) + " elapsed";
  if (left_s >= 0) line += ", about " + duration_text(left_s) + " left";
  return line + ": " + name;
}

void ProgressEstimate::Rate::add(double s, double w) {
  ++count, seconds += s;
  if (w > 0) work += w, seconds_with_work += s;
}

double ProgressEstimate::Rate::at(double w) const {
  if (count == 0) return 0;
  return w > 0 && work > 0 ? seconds_with_work / work * w : seconds / static_cast<double>(count);
}

void ProgressEstimate::finished(const Pending& c, double seconds, double setup_seconds) {
  Seen& seen = by_kind_[c.kind];
  seen.cases.add(std::max(0.0, seconds - setup_seconds), c.work);
  if (c.first) seen.setups.add(setup_seconds, c.work);
  ++count_, seconds_ += seconds;
}

double ProgressEstimate::left(const std::vector<Pending>& cases) const {
  double left = 0;
  for (const Pending& c : cases) {
    const auto it = by_kind_.find(c.kind);
    if (it != by_kind_.end()) {
      const Seen& seen = it->second;
      left += seen.cases.at(c.work) + (c.first ? seen.setups.at(c.work) : 0);
      continue;
    }
    const double expected = expected_seconds(c, suite_);
    if (expected >= 0)
      left += expected;
    else if (count_ > 0)
      left += seconds_ / static_cast<double>(count_);
    else
      return -1;
  }
  return left;
}

bool filter_selects(const std::string& filter, const std::string& name) {
  if (filter.empty() || filter == "all") return true;
  const bool negated = filter[0] == '-';
  const std::string pattern = negated ? filter.substr(1) : filter;
  regex_t re;
  if (regcomp(&re, pattern.c_str(), REG_EXTENDED | REG_NOSUB) != 0) return true;  // GB says why
  const bool found = regexec(&re, (name + "/manual_time").c_str(), 0, nullptr, 0) == 0;
  regfree(&re);
  return found != negated;
}

std::string estimate_kind(const std::string& op, const std::string& device,
                          const std::string& model) {
  return op + "/" + device + (model.empty() ? "" : "/model=" + model);
}

std::string expected_line(const std::vector<ProgressEstimate::Pending>& cases,
                          const std::string& suite) {
  std::string line =
      std::to_string(cases.size()) + (cases.size() == 1 ? " case" : " cases") + " to run";
  const double s = ProgressEstimate(suite).left(cases);
  if (s < 0 || cases.empty()) return line;
  return line + ", about " + duration_text(s) + " expected (each at its kind's mean in the " +
         suite + " suite on a 2-vCPU VM without a GPU; the progress lines follow the run)";
}

double expected_seconds(const ProgressEstimate::Pending& c, const std::string& suite) {
  // Seconds per GFLOP of a CPU training case's work, by model: each model's wall time over the
  // FLOPs of its CPU cases (their workloads' inputs and references included) in one run of
  // `pairbench --ops=train --devices=cpu` per suite on this project's development VM of
  // 2026-12-06 (2 vCPUs, AMD EPYC with AVX2, no bf16, no GPU): quick 26 s, standard 4.4 min, of
  // which ResNet-50's six cases took 3.9 min. A GPU's step, or a faster CPU's, takes less.
  struct Row {
    const char* model;
    double quick, standard;
  };
  static const Row table[] = {{"mlp", 0.64, 0.65}, {"cnn", 0.30, 0.34}, {"resnet50", 0.43, 0.15}};
  const bool in_table = suite == "quick" || suite == "standard" || suite == "full";
  if (c.work > 0 && in_table)
    for (const Row& r : table)
      if (c.kind == estimate_kind("train", "cpu", r.model))
        return (suite == "quick" ? r.quick : r.standard) * c.work / 1e9;
  return expected_case_seconds(c.kind.substr(0, c.kind.find('/')), suite);
}

double expected_case_seconds(const std::string& op, const std::string& suite) {
  // Seconds per case, by op family: each family's wall time over its cases in one run of the
  // suite on this project's development VM of 2026-12-02 (2 vCPUs, Intel Xeon with AVX-512
  // and AMX, no GPU; GPU cases listed as skipped, which take nothing): quick 97 s, standard
  // 7.3 min without ResNet-50's training step at batch 32, which took 91 s more in another.
  // transfer's cases are GPU cases. batchnorm and collective (two ranks under mpirun, their
  // cases skipped on one): measured alone on the AMD EPYC VM of expected_seconds' table.
  struct Row {
    const char* op;
    double quick, standard;
  };
  static const Row table[] = {
      {"gemm", 0.25, 0.64},       {"conv", 0.59, 0.97},       {"stream", 1.17, 2.17},
      {"transfer", 0, 0},         {"activation", 0.20, 0.89}, {"softmax", 0.25, 0.78},
      {"loss", 0.12, 0.67},       {"train", 0.65, 3.78},      {"batchnorm", 0.23, 0.99},
      {"collective", 0.24, 0.78},
  };
  const bool quick = suite == "quick";
  if (!quick && suite != "standard" && suite != "full") return -1;
  for (const Row& r : table)
    if (op == r.op) return quick ? r.quick : r.standard;
  return -1;
}

}  // namespace pb
