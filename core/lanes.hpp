// Lane types for the per-element math of core/activation.hpp, whose functions are templates on
// the lane type V:
//   float - one value: the scalar CPU reference and each CUDA thread;
//   PackT<R> - host code only: R SIMD registers of floats (GCC vectors: 16 floats a register
//           with AVX-512, 8 with AVX, 4 otherwise); Pack is PackT<kRegs>. This is the CPU's SIMD
//           math path. Every operation on a pack is R independent register operations issued
//           side by side, so a long chain such as exp's polynomial runs R times over in
//           parallel: one register at a time, the out-of-order window (not the FMA units) would be
//           the limit. No auto-vectorizer stands in between to turn the clamps into branches.
// Arithmetic and comparisons read the same for both; a choice is lanes::select(mask, a, b), and
// the other operations that differ (clamps, division, bit casts, fma, abs, copysign) are
// overloaded here. Float constants convert to a pack, so the math is written once for both.
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
// a / b for b finite and not 0 (cheaper on a pack).
HD inline float div_in_range(float a, float b) { return a / b; }
HD inline float fma(float a, float b, float c) { return fmaf(a, b, c); }
HD inline float abs(float x) { return fabsf(x); }
HD inline float copysign(float x, float sign) { return copysignf(x, sign); }

// x + 1.5 * 2^23, for |x| < 2^22, is x rounded to an integer, and that integer is in the sum's
// low bits (two's complement against the constant's): no float-to-int conversion, which C++
// leaves undefined for NaN.
constexpr float kRoundToInt = 12582912.0f;

// v 2^n for an integral n (a float) from -126 to 128, where 2^n alone may overflow: (2 v) 2^(n-1),
// 2^(n-1) from its bits, those of n + 1.5 * 2^23 + 126 shifted into the exponent (the constant's
// own bits shift out). n = -126 gives 0: results below |2 v| 2^-126 flush to 0.
template <class V>
HD V times_pow2_from_bits(const V& v, const V& n) {
  return (v + v) * from_bits(to_bits(n + (kRoundToInt + 126.0f)) << 23);
}
HD inline float times_pow2(float v, float n) { return times_pow2_from_bits(v, n); }
// The same for any integral n up to 128: n below -126 counts as -126 here (one more operation).
HD inline float times_pow2_clamped(float v, float n) {
  return times_pow2_from_bits(v, at_least(n, -126.0f));
}

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

// Registers a pack, R: independent chains in flight. 4 for the transcendental functions: at
// 2^26 floats they stream as fast as or faster than 8 (tanh 16.1 vs 14.4 GB/s, gelu_erf 12.9 vs
// 12.5, median of 21, 2 threads, on a Cascade Lake), though 8 is faster in L1 (exp 13.1 -> 11.7
// cycles per 16 floats). Loops that only stream use packs of one (cpu_ref/activation.cpp).
constexpr int kRegs = 4;

template <int R>
struct MaskT {
  RegI r[R];
};
template <int R>
struct BitsT {
  RegU r[R];
  BitsT() = default;
  BitsT(std::uint32_t c) {  // NOLINT: implicit, as for PackT
    for (RegU& x : r) x = RegU{} + c;
  }
};
template <int R>
struct PackT {
  static constexpr int kLanes = R * kWidth;
  RegF r[R];
  PackT() = default;
  PackT(float c) {  // NOLINT: implicit, so that the math's float constants work on packs
    for (RegF& x : r) x = RegF{} + c;
  }
};
using Pack = PackT<kRegs>;

// out.r[i] = f(a.r[i], ...) for each register.
template <class Out, class F, class... In>
inline Out lanewise(F f, const In&... in) {
  Out out;
  constexpr int n = sizeof out.r / sizeof out.r[0];
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) out.r[i] = f(in.r[i]...);
  return out;
}

// Binary operators on two packs (or masks, bits), or a pack and a scalar on either side.
#define PB_LANES_BINARY(Out, In, Scalar, op)                              \
  template <int R>                                                        \
  inline Out<R> operator op(const In<R>& a, const In<R>& b) {             \
    return lanewise<Out<R>>([](auto x, auto y) { return x op y; }, a, b); \
  }                                                                       \
  template <int R>                                                        \
  inline Out<R> operator op(const In<R>& a, Scalar b) {                   \
    return a op In<R>(b);                                                 \
  }                                                                       \
  template <int R>                                                        \
  inline Out<R> operator op(Scalar a, const In<R>& b) {                   \
    return In<R>(a) op b;                                                 \
  }
PB_LANES_BINARY(PackT, PackT, float, +)
PB_LANES_BINARY(PackT, PackT, float, -)
PB_LANES_BINARY(PackT, PackT, float, *)
PB_LANES_BINARY(PackT, PackT, float, /)
PB_LANES_BINARY(MaskT, PackT, float, <)
PB_LANES_BINARY(MaskT, PackT, float, >)
PB_LANES_BINARY(MaskT, PackT, float, >=)
PB_LANES_BINARY(MaskT, PackT, float, ==)
PB_LANES_BINARY(BitsT, BitsT, std::uint32_t, +)
PB_LANES_BINARY(BitsT, BitsT, std::uint32_t, -)
PB_LANES_BINARY(BitsT, BitsT, std::uint32_t, &)
PB_LANES_BINARY(BitsT, BitsT, std::uint32_t, |)
#undef PB_LANES_BINARY

template <int R>
inline PackT<R> operator-(const PackT<R>& a) {
  return lanewise<PackT<R>>([](RegF x) { return -x; }, a);
}
template <int R>
inline BitsT<R> operator<<(const BitsT<R>& a, int s) {
  return lanewise<BitsT<R>>([s](RegU x) { return x << s; }, a);
}
template <int R>
inline PackT<R> select(const MaskT<R>& m, const PackT<R>& a, const PackT<R>& b) {
  return lanewise<PackT<R>>([](RegI k, RegF x, RegF y) { return k ? x : y; }, m, a, b);
}
template <int R>
inline PackT<R> at_least(const PackT<R>& x, float lo) {
  return lanewise<PackT<R>>([lo](RegF v) { return x86_max(RegF{} + lo, v); }, x);
}
template <int R>
inline PackT<R> at_most(const PackT<R>& x, float hi) {
  return lanewise<PackT<R>>([hi](RegF v) { return x86_min(RegF{} + hi, v); }, x);
}
template <int R>
inline BitsT<R> to_bits(const PackT<R>& a) {
  return lanewise<BitsT<R>>([](RegF x) { return reinterpret_cast<RegU>(x); }, a);
}
template <int R>
inline PackT<R> from_bits(const BitsT<R>& a) {
  return lanewise<PackT<R>>([](RegU x) { return reinterpret_cast<RegF>(x); }, a);
}
template <int R>
inline PackT<R> fma(const PackT<R>& a, const PackT<R>& b, const PackT<R>& c) {
  return a * b + c;  // contracted to an FMA
}
template <int R>
inline PackT<R> abs(const PackT<R>& x) {
  return from_bits(to_bits(x) & 0x7fffffffu);
}
template <int R>
inline PackT<R> copysign(const PackT<R>& x, const PackT<R>& sign) {
  return from_bits((to_bits(x) & 0x7fffffffu) | (to_bits(sign) & 0x80000000u));
}

// v 2^n for an integral n: with AVX-512 one instruction (scalef), exact to the smallest
// subnormal and for any n; otherwise from 2^(n-1)'s bits, as for floats above: times_pow2 for n
// in [-126, 128], times_pow2_clamped for any n up to 128.
#if defined(__AVX512F__)
template <int R>
inline PackT<R> times_pow2(const PackT<R>& v, const PackT<R>& n) {
  return lanewise<PackT<R>>([](RegF x, RegF e) { return _mm512_maskz_scalef_ps(0xffff, x, e); }, v,
                            n);
}
template <int R>
inline PackT<R> times_pow2_clamped(const PackT<R>& v, const PackT<R>& n) {
  return times_pow2(v, n);
}
#else
template <int R>
inline PackT<R> times_pow2(const PackT<R>& v, const PackT<R>& n) {
  return times_pow2_from_bits(v, n);
}
template <int R>
inline PackT<R> times_pow2_clamped(const PackT<R>& v, const PackT<R>& n) {
  return times_pow2_from_bits(v, at_least(n, -126.0f));
}
#endif

// a / b as a times 1/b, 1/b from the hardware's reciprocal estimate (relative error below 2^-14
// with AVX-512, 1.5 * 2^-12 otherwise) and one Newton step, r + r (1 - b r), which squares its
// error: within about 2 ulp with AVX-512 (the tests hold it to the functors' tolerances). A
// division costs a tenth of the FMA throughput on AVX-512 cores; this costs four FMA-port
// operations. The step is undefined where b is 0 or +-inf (the estimate, +-inf or 0, is exact
// there): div keeps the estimate where 1 - b r is NaN; div_in_range, for b finite and not 0 and
// a finite, does not check.
// Without AVX-512 the squared error is still about 2^-23, so that 1 / 1 came out 0.99999994
// (sigmoid(inf) below 1): one more step, on the quotient, q + (a - b q) r, whose residual is
// exact where the FMA is there (AVX2), makes it about 1/2 ulp.
template <bool kChecked, int R>
inline PackT<R> div_by_estimate(const PackT<R>& a, const PackT<R>& b) {
  return lanewise<PackT<R>>(
      [](RegF x, RegF y) {
        const RegF r = reciprocal_estimate(y), e = 1.0f - y * r, refined = r * e + r;
        const RegF q = x * (kChecked ? (e == e ? refined : r) : refined);
#if defined(__AVX512F__)
        return q;
#else
        const RegF residual = x - y * q;  // NaN where a or b is infinite or b is 0: q stands
        return kChecked ? (residual == residual ? residual * refined + q : q)
                        : residual * refined + q;
#endif
      },
      a, b);
}
template <int R>
inline PackT<R> div(const PackT<R>& a, const PackT<R>& b) {
  return div_by_estimate<true>(a, b);
}
template <int R>
inline PackT<R> div_in_range(const PackT<R>& a, const PackT<R>& b) {
  return div_by_estimate<false>(a, b);
}

// op folded over a pack's lanes: lanes::reduce(v, std::plus<>{}) is their sum.
template <int R, class Op>
inline float reduce(const PackT<R>& v, Op op) {
  RegF total = v.r[0];
  for (int i = 1; i < R; ++i) total = op(total, v.r[i]);
  float s = total[0];
  for (int k = 1; k < kWidth; ++k) s = op(s, total[k]);
  return s;
}

// Loads and stores of a register, through register types that may be unaligned and may alias
// floats. With AVX-512 they move 256 bits at a time: streaming DRAM that way is 5-8 % faster on
// Skylake-SP and Cascade Lake (measured here), for a shuffle each.
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
typedef float RegFLoose __attribute__((vector_size(4 * kWidth), aligned(4), may_alias));
inline RegF load_reg(const float* p) { return *reinterpret_cast<const RegFLoose*>(p); }
inline void store_reg(float* p, RegF v) { *reinterpret_cast<RegFLoose*>(p) = v; }
#endif

// P::kLanes floats from p, or to p.
template <class P>
inline P load(const float* p) {
  P v;
  for (RegF& r : v.r) r = load_reg(p), p += kWidth;
  return v;
}
template <int R>
inline void store(float* p, const PackT<R>& v) {
  for (const RegF& r : v.r) store_reg(p, r), p += kWidth;
}

}  // namespace PB_LANES_ISA
#undef PB_LANES_ISA
#undef PB_X86

#endif  // !__CUDACC__

}  // namespace pb::lanes
