#include "core/gemm.hpp"

#include <cfloat>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

namespace {
std::string num(float v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace

Shape GemmWorkload::shape() const {
  Shape sh;
  sh.add("m", s_.m);
  sh.add("n", s_.n);
  sh.add("k", s_.k);
  if (s_.ta) sh.add("ta", "1");
  if (s_.tb) sh.add("tb", "1");
  if (s_.alpha != 1.0f) sh.add("alpha", num(s_.alpha));
  if (s_.beta != 0.0f) sh.add("beta", num(s_.beta));
  sh.add("dtype", to_string(s_.dtype));
  return sh;
}

double GemmWorkload::flops() const {
  return 2.0 * static_cast<double>(s_.m) * static_cast<double>(s_.n) * static_cast<double>(s_.k);
}

double GemmWorkload::min_bytes() const {
  const double m = static_cast<double>(s_.m), n = static_cast<double>(s_.n),
               k = static_cast<double>(s_.k);
  const double c_passes = s_.beta != 0.0f ? 2.0 : 1.0;
  return input_bytes(s_.dtype) * (m * k + k * n) + 4.0 * c_passes * m * n;
}

double GemmWorkload::write_allocate_bytes() const {
  return s_.beta == 0.0f ? 4.0 * static_cast<double>(s_.m) * static_cast<double>(s_.n) : 0.0;
}

double GemmWorkload::host_bytes(Device) const {
  const double m = static_cast<double>(s_.m), n = static_cast<double>(s_.n),
               k = static_cast<double>(s_.k);
  // A, B, C0 inputs; the implementation's own A, B, C; the result copied out.
  return 4.0 * (2.0 * (m * k + k * n) + 3.0 * m * n);
}

double GemmWorkload::device_bytes() const {
  const double m = static_cast<double>(s_.m), n = static_cast<double>(s_.n),
               k = static_cast<double>(s_.k);
  return input_bytes(s_.dtype) * (m * k + k * n) + 4.0 * m * n;
}

Tensors GemmWorkload::make_inputs() const {
  Rng rng(seed_);
  auto fill = [&](const char* name, std::int64_t rows, std::int64_t cols, Dtype t) {
    Tensor x(name, {rows, cols});
    for (float& v : x.f32()) v = round_to(t, rng.uniform());
    return x;
  };
  Tensors in;
  in.push_back(fill("a", s_.ta ? s_.k : s_.m, s_.ta ? s_.m : s_.k, s_.dtype));
  in.push_back(fill("b", s_.tb ? s_.n : s_.k, s_.tb ? s_.k : s_.n, s_.dtype));
  in.push_back(fill("c", s_.m, s_.n, Dtype::fp32));
  return in;
}

double GemmWorkload::tolerance() const {
  // Inputs are exactly representable in the dtype, so the only error is fp32 accumulation,
  // which grows like sqrt(k) unit roundoffs in units of the row's error scale. Tensor cores
  // accumulate with less care (truncation, reordering), hence the wider factor.
  const double u32 = unit_roundoff(Dtype::fp32);
  const double factor = s_.dtype == Dtype::fp32 ? 16.0 : 256.0;
  return factor * u32 * (std::sqrt(static_cast<double>(s_.k)) + 1.0);
}

Check GemmWorkload::verify(const Tensors& in, const Tensors& out) const {
  Check chk;
  chk.tolerance = tolerance();
  const auto m = s_.m, n = s_.n, k = s_.k;
  const float* c = output_f32(out, "c", m * n, chk);
  if (!c) return chk;
  const float *a = at(in, "a").f32().data(), *b = at(in, "b").f32().data(),
              *c0 = at(in, "c").f32().data();
  Rng rng(seed_ ^ 0xF4E1u);
  std::vector<double> x(static_cast<std::size_t>(n)), bx(static_cast<std::size_t>(k)),
      b2(static_cast<std::size_t>(k));
  double worst = 0;
  for (int trial = 0; trial < 2; ++trial) {
    for (double& v : x) v = rng.sign();
    for (std::int64_t l = 0; l < k; ++l) {
      double s = 0, s2 = 0;
      for (std::int64_t j = 0; j < n; ++j) {
        const double v = b[op_index(s_.tb, l, j, s_.ldb())];
        s += v * x[j];
        s2 += v * v;
      }
      bx[l] = s;
      b2[l] = s2;
    }
    for (std::int64_t i = 0; i < m; ++i) {
      double abx = 0, scale2 = 0;
      for (std::int64_t l = 0; l < k; ++l) {
        const double v = a[op_index(s_.ta, i, l, s_.lda())];
        abx += v * bx[l];
        scale2 += v * v * b2[l];
      }
      double cx = 0, c0x = 0, c2 = 0, c02 = 0;
      for (std::int64_t j = 0; j < n; ++j) {
        const double cv = c[i * n + j], c0v = c0[i * n + j];
        cx += cv * x[j];
        c0x += c0v * x[j];
        c2 += cv * cv;
        c02 += c0v * c0v;
      }
      const double alpha = s_.alpha, beta = s_.beta;
      const double ref = alpha * abx + beta * c0x;
      const double scale = std::sqrt(alpha * alpha * scale2 + beta * beta * c02 + c2) + 1e-30;
      const double e = std::fabs(cx - ref) / scale;
      if (!std::isfinite(cx)) {
        chk.detail = "row " + std::to_string(i) + " of the result is not finite";
        chk.max_error = 0;
        return chk;
      }
      if (e > worst) worst = e;
    }
  }
  chk.max_error = worst;
  chk.ok = worst <= chk.tolerance;
  if (!chk.ok) {
    std::ostringstream os;
    os << "Freivalds residual " << worst << " exceeds tolerance " << chk.tolerance;
    chk.detail = os.str();
  }
  return chk;
}

}  // namespace pb

namespace pb {

std::vector<GemmShape> gemm_suite(int level) {
  std::vector<GemmShape> out;
  const std::int64_t largest = level == 0 ? 512 : level == 1 ? 2048 : 4096;
  for (std::int64_t n = 256; n <= largest; n *= 2) out.push_back({n, n, n});
  struct Row {
    int line, level;
    std::int64_t m, n, k;
    bool ta, tb;
  };
  // DeepBench gemm_problems.h training set: source line, the suite it joins, m, n, k, a_t, b_t.
  static const Row deepbench[] = {
      {4, 0, 1760, 32, 1760, false, false},   {24, 0, 1760, 32, 1760, true, false},
      {6, 1, 1760, 128, 1760, false, false},  {26, 1, 1760, 128, 1760, true, false},
      {43, 1, 1760, 7133, 1760, false, true}, {74, 1, 3072, 128, 1024, false, false},
      {7, 2, 1760, 7000, 1760, false, false}, {22, 2, 4096, 7000, 4096, false, false},
      {48, 2, 35, 8457, 1760, false, false},  {80, 2, 7680, 5481, 2560, false, true},
  };
  for (const Row& r : deepbench) {
    if (r.level > level) continue;
    GemmShape s;
    s.m = r.m, s.n = r.n, s.k = r.k, s.ta = r.ta, s.tb = r.tb;
    out.push_back(s);
  }
  return out;
}

GemmShape parse_gemm_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  GemmShape s;
  bool have_m = false, have_n = false, have_k = false;
  for (const auto& [key, v] : kv) {
    if (key == "m")
      s.m = parse_count(key, v), have_m = true;
    else if (key == "n")
      s.n = parse_count(key, v), have_n = true;
    else if (key == "k")
      s.k = parse_count(key, v), have_k = true;
    else if (key == "ta")
      s.ta = parse_bool(key, v);
    else if (key == "tb")
      s.tb = parse_bool(key, v);
    else if (key == "alpha")
      s.alpha = parse_finite(key, v);
    else if (key == "beta")
      s.beta = parse_finite(key, v);
    else
      throw std::invalid_argument(
          "gemm has no shape key '" + key +
          "' (keys: m, n, k, ta, tb, alpha, beta; dtypes come from --dtypes)");
  }
  if (!have_m || !have_n || !have_k) throw std::invalid_argument("a gemm shape needs m, n and k");
  // The operands' values lie in (-1, 1): C's in |alpha| k + |beta| at most, which fp32 holds.
  if (std::fabs(double(s.alpha)) * double(s.k) + std::fabs(double(s.beta)) > FLT_MAX)
    throw std::invalid_argument(
        "alpha=" + num(s.alpha) + " with k=" + std::to_string(s.k) +
        ": the result could overflow fp32 (|alpha| k + |beta| above 3.4e38)");
  return s;
}

}  // namespace pb
