// Parsing --shape values: one-line std::invalid_argument messages that name the key.
#pragma once

#include <cstdint>
#include <string>

namespace pb {

// An integer in [min, max].
std::int64_t parse_count(const std::string& key, const std::string& v,
                         std::int64_t max = 2147483647, std::int64_t min = 1);
float parse_finite(const std::string& key, const std::string& v);
bool parse_bool(const std::string& key, const std::string& v);  // 0/1/false/true
// ranks=v of an op's shape, which must be the run's `ranks` (they come from the launch).
void check_ranks(const std::string& op, const std::string& v, int ranks);

}  // namespace pb
