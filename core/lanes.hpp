// Lane types for the per-element math of core/activation.hpp, whose functions are templates on
// the lane type V:
//   float - one value: the scalar CPU reference and each CUDA thread;
//   Pack  - host code only: kLanes floats in kRegs SIMD registers (GCC vectors: 8 registers of
//           16 floats with AVX-512, 4 of 8 with AVX, 4 of 4 otherwise). This is the CPU's SIMD math
//           path. Every operation on a Pack is kRegs independent register operations issued side by
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
// x, or lo where x < lo; NaN passes. (One instruction on a Pack: x86's max(lo, x).)
HD inline float at_least(float x, float lo) { return x < lo ? lo : x; }
// x, or hi where x > hi; NaN passes.
HD inline float at_most(float x, float hi) { return x > hi ? hi : x; }
HD inline float div(float a, float b) { return a / b; }
HD inline float fma(float a, float b, float c) { return fmaf(a, b, c); }
HD inline float abs(float x) { return fabsf(x); }
HD inline float copysign(float x, float sign) { return copysignf(x, sign); }

#if !defined(__CUDACC__)
}  // namespace pb::lanes

#include <immintrin.h>

namespace pb::lanes {

// The register width is part of the names (an inline namespace), so that translation units
// built for different ISAs never share a definition.
#if defined(__AVX512F__)
#define PB_LANES_ISA avx512
constexpr int kWidth = 16;
#elif defined(__AVX__)
#define PB_LANES_ISA avx
#define PB_X86(op) _mm256_##op
constexpr int kWidth = 8;
#else
#define PB_LANES_ISA sse
#define PB_X86(op) _mm_##op
constexpr int kWidth = 4;
#endif

inline namespace PB_LANES_ISA {

typedef float RegF __attribute__((vector_size(4 * kWidth)));
typedef std::int32_t RegI __attribute__((vector_size(4 * kWidth)));  // a comparison's result
typedef std::uint32_t RegU __attribute__((vector_size(4 * kWidth)));

// The instructions the math needs that GCC's vector operations do not express. x86's max(a, b)
// and min(a, b) are a > b ? a : b and a < b ? a : b (b where either is NaN). (AVX-512's
// unmasked intrinsics trip GCC 12's maybe-uninitialized warning: hence the full masks.)
#if defined(__AVX512F__)
inline RegF x86_max(RegF a, RegF b) { return _mm512_maskz_max_ps(0xffff, a, b); }
inline RegF x86_min(RegF a, RegF b) { return _mm512_maskz_min_ps(0xffff, a, b); }
inline RegF reciprocal_estimate(RegF b) { return _mm512_maskz_rcp14_ps(0xffff, b); }  // 2^-14
#else
inline RegF x86_max(RegF a, RegF b) { return PB_X86(max_ps)(a, b); }
inline RegF x86_min(RegF a, RegF b) { return PB_X86(min_ps)(a, b); }
inline RegF reciprocal_estimate(RegF b) { return PB_X86(rcp_ps)(b); }  // 1.5 * 2^-12
#endif

// Registers a pack: independent chains in flight. 8 measured fastest with AVX-512's 32 registers
// (exp: 4 -> 8 -> 12 -> 16 registers took 13.1 -> 11.7 -> 13.1 -> 14.9 cycles per 16 floats, in
// L1, on a Cascade Lake); AVX and SSE have 16 registers, so 4.
constexpr int kRegs = kWidth == 16 ? 8 : 4;
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
inline Pack at_least(const Pack& x, float lo) {
  return lanewise<Pack>([lo](RegF v) { return x86_max(RegF{} + lo, v); }, x);
}
inline Pack at_most(const Pack& x, float hi) {
  return lanewise<Pack>([hi](RegF v) { return x86_min(RegF{} + hi, v); }, x);
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

// a / b as a times 1/b, 1/b from the hardware's reciprocal estimate (relative error below 2^-14
// with AVX-512, 1.5 * 2^-12 otherwise) and one Newton step, r (2 - b r), which squares its
// error: within about 2 ulp (the tests hold it to the functors' tolerances). A division costs a
// tenth of the FMA throughput on AVX-512 cores; this costs four FMA-port operations. Where the
// step is undefined (b = 0, +-inf, NaN: the estimate is +-inf, 0, NaN) the estimate is exact.
inline Pack div(const Pack& a, const Pack& b) {
  return lanewise<Pack>(
      [](RegF x, RegF y) {
        const RegF r = reciprocal_estimate(y), e = 1.0f - y * r, refined = r * e + r;
        return x * (e == e ? refined : r);
      },
      a, b);
}

// Loads and stores of kLanes floats, a register at a time, through a register type that may be
// unaligned and may alias floats. With AVX-512 they move 256 bits at a time: streaming DRAM
// that way is 5-8 % faster on Skylake-SP and Cascade Lake (measured here), for a shuffle each.
typedef float RegFLoose __attribute__((vector_size(4 * kWidth), aligned(4), may_alias));
#if defined(__AVX512F__)
typedef float HalfLoose __attribute__((vector_size(2 * kWidth), aligned(4), may_alias));
inline RegF load_reg(const float* p) {
  const HalfLoose* h = reinterpret_cast<const HalfLoose*>(p);
  return __builtin_shufflevector(h[0], h[1], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
inline void store_reg(float* p, RegF v) {
  HalfLoose* h = reinterpret_cast<HalfLoose*>(p);
  h[0] = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  h[1] = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
#else
inline RegF load_reg(const float* p) { return *reinterpret_cast<const RegFLoose*>(p); }
inline void store_reg(float* p, RegF v) { *reinterpret_cast<RegFLoose*>(p) = v; }
#endif

inline Pack load(const float* p) {
  Pack v;
  for (int i = 0; i < kRegs; ++i) v.r[i] = load_reg(p + i * kWidth);
  return v;
}
inline void store(float* p, const Pack& v) {
  for (int i = 0; i < kRegs; ++i) store_reg(p + i * kWidth, v.r[i]);
}

}  // namespace PB_LANES_ISA

#endif  // !__CUDACC__

}  // namespace pb::lanes
