// Device-neutral vocabulary: devices, element types, shapes (tensors: core/tensor.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace pb {

enum class Device { cpu, gpu };

// fp32: IEEE single everywhere; tf32: fp32 storage, tensor-core products on 10-bit mantissas;
// fp16 / bf16: half-width inputs, fp32 accumulation and output.
enum class Dtype { fp32, tf32, fp16, bf16 };

const char* to_string(Device d);
const char* to_string(Dtype t);
bool parse_device(const std::string& s, Device* out);
bool parse_dtype(const std::string& s, Dtype* out);
const std::vector<Dtype>& all_dtypes();

// Unit roundoff of the values a dtype stores (inputs are generated already representable).
double unit_roundoff(Dtype t);
// Rounds an fp32 value to the nearest value representable in t (round to nearest even).
float round_to(Dtype t, float x);
// Bytes one element of an input operand of type t occupies in memory.
int input_bytes(Dtype t);

// bf16 storage on the host: the upper half of an fp32's bits (to_bf16 rounds to nearest even).
using Bf16 = std::uint16_t;
inline Bf16 to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<Bf16>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16(Bf16 b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The value among `all` whose to_string() is s (an enum's name as flags and shapes spell it).
template <class E>
bool parse_name(const std::vector<E>& all, const std::string& s, E* out) {
  for (E e : all) {
    if (s == to_string(e)) {
      *out = e;
      return true;
    }
  }
  return false;
}

// What a GPU of compute capability cc_major.cc_minor actually runs for a dtype that names a kind
// of arithmetic, "" when it is what the name says: tf32 needs tensor cores of compute capability
// 8.0 or later and is turned off by NVIDIA_TF32_OVERRIDE=0 (tf32_override: that variable's
// value, "" when unset); bf16 has tensor cores from 8.0 on (before, cuBLAS computes it without
// them); fp16 from 7.0.
std::string gpu_math_note(Dtype t, int cc_major, int cc_minor, const std::string& tf32_override);

// An ordered list of key=value pairs; to_string() gives "k1=v1,k2=v2".
struct Shape {
  std::vector<std::pair<std::string, std::string>> items;
  void add(const std::string& key, const std::string& value) { items.emplace_back(key, value); }
  void add(const std::string& key, std::int64_t value) { add(key, std::to_string(value)); }
  std::string to_string() const;
};

}  // namespace pb
