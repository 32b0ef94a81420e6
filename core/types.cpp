#include "core/types.hpp"

#include <cmath>
#include <cstring>

namespace pb {

const char* to_string(Device d) { return d == Device::cpu ? "cpu" : "gpu"; }

const char* to_string(Dtype t) {
  switch (t) {
    case Dtype::fp32:
      return "fp32";
    case Dtype::tf32:
      return "tf32";
    case Dtype::fp16:
      return "fp16";
    case Dtype::bf16:
      return "bf16";
  }
  return "?";
}

bool parse_device(const std::string& s, Device* out) {
  if (s == "cpu")
    *out = Device::cpu;
  else if (s == "gpu")
    *out = Device::gpu;
  else
    return false;
  return true;
}

const std::vector<Dtype>& all_dtypes() {
  static const std::vector<Dtype> all = {Dtype::fp32, Dtype::tf32, Dtype::fp16, Dtype::bf16};
  return all;
}

bool parse_dtype(const std::string& s, Dtype* out) { return parse_name(all_dtypes(), s, out); }

namespace {
int mantissa_bits(Dtype t) {
  switch (t) {
    case Dtype::fp32:
      return 23;
    case Dtype::tf32:
      return 10;
    case Dtype::fp16:
      return 10;
    case Dtype::bf16:
      return 7;
  }
  return 23;
}
}  // namespace

double unit_roundoff(Dtype t) { return std::ldexp(1.0, -(mantissa_bits(t) + 1)); }

int input_bytes(Dtype t) { return (t == Dtype::fp16 || t == Dtype::bf16) ? 2 : 4; }

float round_to(Dtype t, float x) {
  const int drop = 23 - mantissa_bits(t);
  if (drop == 0 || !std::isfinite(x)) return x;
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const std::uint32_t half = 1u << (drop - 1);
  const std::uint32_t odd = (u >> drop) & 1u;
  u = (u + half - 1 + odd) & ~((1u << drop) - 1);
  float r;
  std::memcpy(&r, &u, sizeof r);
  // fp16 also has a narrower exponent range; pairbench's inputs stay within [-1, 1].
  return r;
}

std::string Shape::to_string() const {
  std::string s;
  for (const auto& [k, v] : items) {
    if (!s.empty()) s += ',';
    s += k + '=' + v;
  }
  return s;
}

std::string gpu_math_note(Dtype t, int cc_major, int cc_minor, const std::string& tf32_override) {
  const std::string sm = "sm_" + std::to_string(cc_major) + std::to_string(cc_minor);
  if (t == Dtype::tf32 && tf32_override == "0")
    return "tf32 asked for, but NVIDIA_TF32_OVERRIDE=0 turns it off: plain fp32 ran";
  if (t == Dtype::tf32 && cc_major < 8)
    return "tf32 asked for, but this GPU (" + sm + ") has no tf32 tensor cores: plain fp32 ran";
  if (t == Dtype::bf16 && cc_major < 8)
    return "this GPU (" + sm + ") has no bf16 tensor cores: cuBLAS computed bf16 without them";
  if (t == Dtype::fp16 && cc_major < 7)
    return "this GPU (" + sm + ") has no tensor cores: fp16 ran on the FP16 units";
  return "";
}

}  // namespace pb
