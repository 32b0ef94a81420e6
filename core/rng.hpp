// Deterministic data: the same seed gives the same inputs on every machine and compiler.
#pragma once

#include <cstdint>

namespace pb {

// SplitMix64: tiny, fast, and fully specified (std:: distributions are not portable).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float uniform() {
    return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0);
  }
  // +1 or -1 with equal probability.
  double sign() { return (next() >> 63) ? 1.0 : -1.0; }

 private:
  std::uint64_t state_;
};

}  // namespace pb
