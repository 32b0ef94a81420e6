#include "core/parse.hpp"

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace pb {

std::int64_t parse_count(const std::string& key, const std::string& v, std::int64_t max,
                         std::int64_t min) {
  std::size_t used = 0;
  long long x = 0;
  bool huge = false;  // an integer beyond 64 bits
  try {
    x = std::stoll(v, &used);
  } catch (const std::out_of_range&) {
    huge = true, used = v.size();
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty())
    throw std::invalid_argument(key + "=" + v + " is not an integer");
  if (huge ? v[0] == '-' : x < min)
    throw std::invalid_argument(key + "=" + v + " must be at least " + std::to_string(min));
  if (huge || x > max)
    throw std::invalid_argument(key + "=" + v + " exceeds " + std::to_string(max));
  return x;
}

float parse_finite(const std::string& key, const std::string& v) {
  char* end = nullptr;
  const double d = v.empty() ? NAN : std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d) || std::fabs(d) > FLT_MAX)
    throw std::invalid_argument(key + "=" + v + " is not a finite number in fp32's range");
  const auto x = static_cast<float>(d);
  if (d != 0 && x == 0)
    throw std::invalid_argument(key + "=" + v + " is below fp32's smallest value (it would be 0)");
  return x;
}

bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "0" || v == "false") return false;
  if (v == "1" || v == "true") return true;
  throw std::invalid_argument(key + "=" + v + " must be 0 or 1");
}

void check_ranks(const std::string& op, const std::string& v, int ranks) {
  if (parse_count("ranks", v, 1 << 20) != ranks)
    throw std::invalid_argument(op + ": ranks=" + v + " but this run has " + std::to_string(ranks) +
                                " (ranks come from the launch: mpirun -np N or srun)");
}

}  // namespace pb
