#include "bench/progress.hpp"

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

void ProgressEstimate::finished(const std::string& op, double seconds) {
  auto& [count, sum] = by_op_[op];
  ++count, sum += seconds;
  ++count_, seconds_ += seconds;
}

double ProgressEstimate::left(const std::vector<std::string>& ops) const {
  if (count_ == 0) return -1;
  const double overall = seconds_ / static_cast<double>(count_);
  double left = 0;
  for (const std::string& op : ops) {
    const auto it = by_op_.find(op);
    left +=
        it == by_op_.end() ? overall : it->second.second / static_cast<double>(it->second.first);
  }
  return left;
}

}  // namespace pb
