// Lane types for the per-element math of core/activation.hpp, whose functions are templates on
// the lane type V:
//   float - one value: the scalar CPU reference and each CUDA thread;
//   Pack  - host code only: kLanes floats in kRegs SIMD registers (GCC vectors: 16 floats a
//           register with AVX-512, 8 with AVX, 4 otherwise). This is the CPU's SIMD math path.
//           Every operation on a Pack is kRegs independent register operations issued side by
//           side, so a long chain such as exp's polynomial runs kRegs times over in parallel:
//           one register at a time, the out-of-order window (not the FMA units) would be the
//           limit. No auto-vectorizer stands in between to turn the clamps into branches.
// Arithmetic and comparisons read the same for both; a choice is lanes::select(mask, a, b), and
// the other operations that differ (bit casts, fma, abs, copysign) are overloaded here. Float
// constants convert to a Pack implicitly, so the math is written once for both.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hd.hpp"

namespace pb::lanes {

HD inline std::uint32_t to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
#endif
}

HD inline float from_bits(std::uint32_t i) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
#endif
}

HD inline float select(bool m, float a, float b) { return m ? a : b; }
HD inline float fma(float a, float b, float c) { return fmaf(a, b, c); }
HD inline float abs(float x) { return fabsf(x); }
HD inline float copysign(float x, float sign) { return copysignf(x, sign); }

#if !defined(__CUDACC__)

// The register width is part of the names (an inline namespace), so that translation units
// built for different ISAs never share a definition.
#if defined(__AVX512F__)
#define PB_LANES_ISA avx512
constexpr int kWidth = 16;
#elif defined(__AVX__)
#define PB_LANES_ISA avx
constexpr int kWidth = 8;
#else
#define PB_LANES_ISA sse
constexpr int kWidth = 4;
#endif

inline namespace PB_LANES_ISA {

typedef float RegF __attribute__((vector_size(4 * kWidth)));
typedef std::int32_t RegI __attribute__((vector_size(4 * kWidth)));  // a comparison's result
typedef std::uint32_t RegU __attribute__((vector_size(4 * kWidth)));

constexpr int kRegs = 4;
constexpr int kLanes = kRegs * kWidth;

template <class Reg>
struct Regs {
  Reg r[kRegs];
};
struct Mask : Regs<RegI> {};
struct Bits : Regs<RegU> {
  Bits() = default;
  Bits(std::uint32_t c) {  // NOLINT: implicit, as for Pack
    for (RegU& x : r) x = RegU{} + c;
  }
};
struct Pack : Regs<RegF> {
  Pack() = default;
  Pack(float c) {  // NOLINT: implicit, so that the math's float constants work on packs
    for (RegF& x : r) x = RegF{} + c;
  }
};

// out.r[i] = f(a.r[i], ...) for each register.
template <class Out, class F, class... In>
inline Out lanewise(F f, const In&... in) {
  Out out;
#pragma GCC unroll 16
  for (int i = 0; i < kRegs; ++i) out.r[i] = f(in.r[i]...);
  return out;
}

#define PB_LANES_BINARY(Out, In, op)                                   \
  inline Out operator op(const In& a, const In& b) {                   \
    return lanewise<Out>([](auto x, auto y) { return x op y; }, a, b); \
  }
PB_LANES_BINARY(Pack, Pack, +)
PB_LANES_BINARY(Pack, Pack, -)
PB_LANES_BINARY(Pack, Pack, *)
PB_LANES_BINARY(Pack, Pack, /)
PB_LANES_BINARY(Mask, Pack, <)
PB_LANES_BINARY(Mask, Pack, >)
PB_LANES_BINARY(Mask, Pack, >=)
PB_LANES_BINARY(Mask, Pack, ==)
PB_LANES_BINARY(Bits, Bits, +)
PB_LANES_BINARY(Bits, Bits, -)
PB_LANES_BINARY(Bits, Bits, &)
PB_LANES_BINARY(Bits, Bits, |)
#undef PB_LANES_BINARY

inline Pack operator-(const Pack& a) {
  return lanewise<Pack>([](RegF x) { return -x; }, a);
}
inline Bits operator<<(const Bits& a, int s) {
  return lanewise<Bits>([s](RegU x) { return x << s; }, a);
}
inline Pack select(const Mask& m, const Pack& a, const Pack& b) {
  return lanewise<Pack>([](RegI k, RegF x, RegF y) { return k ? x : y; }, m, a, b);
}
inline Bits to_bits(const Pack& a) {
  return lanewise<Bits>([](RegF x) { return reinterpret_cast<RegU>(x); }, a);
}
inline Pack from_bits(const Bits& a) {
  return lanewise<Pack>([](RegU x) { return reinterpret_cast<RegF>(x); }, a);
}
inline Pack fma(const Pack& a, const Pack& b, const Pack& c) { return a * b + c; }  // contracted
inline Pack abs(const Pack& x) { return from_bits(to_bits(x) & 0x7fffffffu); }
inline Pack copysign(const Pack& x, const Pack& sign) {
  return from_bits((to_bits(x) & 0x7fffffffu) | (to_bits(sign) & 0x80000000u));
}

// Loads and stores of kLanes floats, a register at a time, through a register type that may be
// unaligned and may alias floats.
typedef float RegFLoose __attribute__((vector_size(4 * kWidth), aligned(4), may_alias));

inline Pack load(const float* p) {
  Pack v;
  for (int i = 0; i < kRegs; ++i) v.r[i] = reinterpret_cast<const RegFLoose*>(p)[i];
  return v;
}
inline void store(float* p, const Pack& v) {
  for (int i = 0; i < kRegs; ++i) reinterpret_cast<RegFLoose*>(p)[i] = v.r[i];
}

}  // namespace PB_LANES_ISA

#endif  // !__CUDACC__

}  // namespace pb::lanes
