#include "core/batchnorm.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

const char* to_string(BnDir d) {
  return d == BnDir::fwd ? "fwd" : d == BnDir::bwd ? "bwd" : "infer";
}

BnShape BatchNormShape::maps() const {
  BnShape m;
  m.n = batch, m.c = c, m.hw = h * w;
  return m;
}

std::vector<BatchNormShape> batchnorm_suite(int level) {
  std::vector<BatchNormShape> maps = {{BnDir::fwd, 8, 64, 56, 56}};
  if (level >= 1) maps.push_back({BnDir::fwd, 32, 256, 56, 56});
  if (level >= 2)
    maps.push_back({BnDir::fwd, 32, 2048, 7, 7}), maps.push_back({BnDir::fwd, 64, 256, 56, 56});
  std::vector<BatchNormShape> out;
  for (BatchNormShape s : maps)
    for (BnDir d : {BnDir::fwd, BnDir::bwd, BnDir::infer}) s.dir = d, out.push_back(s);
  return out;
}

BatchNormShape parse_batchnorm_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  BatchNormShape s;
  bool have[4] = {false, false, false, false}, have_dir = false;
  for (const auto& [key, v] : kv) {
    if (key == "dir") {
      have_dir = true;
      if (v == "fwd")
        s.dir = BnDir::fwd;
      else if (v == "bwd")
        s.dir = BnDir::bwd;
      else if (v == "infer")
        s.dir = BnDir::infer;
      else
        throw std::invalid_argument("dir=" + v + " is not one of fwd, bwd, infer");
    } else if (key == "batch" || key == "c" || key == "h" || key == "w") {
      const int i = key == "batch" ? 0 : key == "c" ? 1 : key == "h" ? 2 : 3;
      (i == 0 ? s.batch : i == 1 ? s.c : i == 2 ? s.h : s.w) = parse_count(key, v, 1LL << 20);
      have[i] = true;
    } else {
      throw std::invalid_argument("batchnorm has no shape key '" + key +
                                  "' (keys: dir, batch, c, h, w)");
    }
  }
  if (!have_dir || !std::all_of(have, have + 4, [](bool b) { return b; }))
    throw std::invalid_argument("a batchnorm shape needs dir, batch, c, h and w");
  if (static_cast<double>(s.batch) * static_cast<double>(s.h) * static_cast<double>(s.w) < 2)
    throw std::invalid_argument(
        "batchnorm needs at least 2 values per channel (batch x h x w): the variance of one "
        "value is 0 and its unbiased estimate undefined");
  if (static_cast<double>(s.batch) * static_cast<double>(s.c) * static_cast<double>(s.h) *
          static_cast<double>(s.w) >
      static_cast<double>(1LL << 40))
    throw std::invalid_argument("batchnorm maps beyond 2^40 elements");
  return s;
}

Shape BatchNormWorkload::shape() const {
  Shape sh;
  sh.add("dir", to_string(s_.dir));
  sh.add("batch", s_.batch);
  sh.add("c", s_.c);
  sh.add("h", s_.h);
  sh.add("w", s_.w);
  sh.add("dtype", "fp32");
  return sh;
}

double BatchNormWorkload::flops() const {
  return (s_.dir == BnDir::fwd ? 7.0 : s_.dir == BnDir::bwd ? 11.0 : 4.0) * elements();
}

double BatchNormWorkload::min_bytes() const {
  return (s_.dir == BnDir::bwd ? 12.0 : 8.0) * elements();
}

Tensors BatchNormWorkload::make_inputs() const {
  Rng rng(static_cast<std::uint64_t>(s_.batch) * 7919 + static_cast<std::uint64_t>(s_.c) * 31 +
          static_cast<std::uint64_t>(s_.h * s_.w) + static_cast<std::uint64_t>(s_.dir));
  const BnShape m = s_.maps();
  const std::int64_t c = s_.c;
  auto vec = [&](const char* name, float lo, float hi) {
    Tensor t(name, {c});
    for (float& v : t.f32()) v = lo + (hi - lo) * 0.5f * (rng.uniform() + 1.0f);
    return t;
  };
  Tensors in;
  in.push_back(vec("weight", 0.5f, 1.5f));
  in.push_back(vec("bias", -0.5f, 0.5f));
  in.push_back(vec("running_mean", -2.0f, 2.0f));
  in.push_back(vec("running_var", 0.5f, 2.0f));
  const std::vector<float> offset = vec("offset", -2.0f, 2.0f).f32(),
                           spread = vec("spread", 0.25f, 2.25f).f32();
  Tensor x("x", {s_.batch, c, s_.h, s_.w});
  std::vector<float>& xv = x.f32();
  for (std::int64_t e = 0; e < m.size(); ++e)
    xv[e] = offset[m.channel(e)] + spread[m.channel(e)] * rng.uniform();
  if (s_.dir == BnDir::bwd) {
    Tensor dy("dy", {s_.batch, c, s_.h, s_.w});
    for (float& v : dy.f32()) v = rng.uniform();
    // The forward pass's batch statistics, as it would have kept them.
    Tensor mean("mean", {c}), var("var", {c});
    for (std::int64_t ch = 0; ch < c; ++ch) {
      double sum = 0, sq = 0;
      for (std::int64_t i = 0; i < m.count(); ++i) sum += xv[m.at(ch, i)];
      const double mu = sum / static_cast<double>(m.count());
      for (std::int64_t i = 0; i < m.count(); ++i)
        sq += (xv[m.at(ch, i)] - mu) * (xv[m.at(ch, i)] - mu);
      mean.f32()[ch] = static_cast<float>(mu);
      var.f32()[ch] = static_cast<float>(sq / static_cast<double>(m.count()));
    }
    in.push_back(std::move(dy));
    in.push_back(std::move(mean));
    in.push_back(std::move(var));
  }
  in.insert(in.begin(), std::move(x));
  return in;
}

std::vector<std::string> BatchNormWorkload::outputs() const {
  if (s_.dir == BnDir::fwd) return {"y", "running_mean", "running_var"};
  if (s_.dir == BnDir::bwd) return {"dx", "dweight", "dbias"};
  return {"y"};
}

void BatchNormWorkload::prepare_reference(const Tensors& inputs) const { reference(inputs); }

const BatchNormWorkload::Reference& BatchNormWorkload::reference(const Tensors& in) const {
  return ref_.get(in, [&] {
    auto d = [&](const char* name) {
      const std::vector<float>& v = at(in, name).f32();
      return std::vector<double>(v.begin(), v.end());
    };
    const BnShape m = s_.maps();
    const auto size = static_cast<std::size_t>(m.size()), c = static_cast<std::size_t>(s_.c);
    const std::vector<double> x = d("x"), w = d("weight");
    if (s_.dir == BnDir::bwd) {
      const std::vector<double> dy = d("dy"), mean = d("mean"), var = d("var");
      std::vector<double> invstd(c), dx(size), dw(c), db(c);
      for (std::size_t ch = 0; ch < c; ++ch) invstd[ch] = 1 / std::sqrt(var[ch] + double(m.eps));
      batchnorm_backward(m, x.data(), w.data(), mean.data(), invstd.data(), dy.data(), dx.data(),
                         dw.data(), db.data());
      return Reference{dx, dw, db};
    }
    const std::vector<double> b = d("bias");
    std::vector<double> rm = d("running_mean"), rv = d("running_var"), y(size), mean(c), invstd(c);
    batchnorm_forward(m, s_.dir == BnDir::fwd, x.data(), w.data(), b.data(), y.data(), mean.data(),
                      invstd.data(), rm.data(), rv.data());
    return s_.dir == BnDir::fwd ? Reference{y, rm, rv} : Reference{y};
  });
}

// The size of the terms dx is computed from, w / sqrt(var + eps) x |dy| at their largest:
// dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)) cancels them, wholly where a channel has
// two values (xhat = +-1), so dx's error is held to them, not to dx's own largest value.
double BatchNormWorkload::dx_term_scale(const Tensors& in) const {
  const std::vector<float>&w = at(in, "weight").f32(), &var = at(in, "var").f32(),
        &dy = at(in, "dy").f32();
  double dy_max = 0, w_invstd = 0;
  for (float v : dy) dy_max = std::max(dy_max, std::fabs(double(v)));
  for (std::size_t ch = 0; ch < w.size(); ++ch)
    w_invstd = std::max(
        w_invstd, std::fabs(double(w[ch])) / std::sqrt(double(var[ch]) + double(s_.maps().eps)));
  return w_invstd * dy_max;
}

Check BatchNormWorkload::verify(const Tensors& inputs, const Tensors& outputs) const {
  Check chk;
  const double m = static_cast<double>(s_.batch * s_.h * s_.w);
  chk.tolerance = 16.0 * unit_roundoff(Dtype::fp32) * (std::sqrt(m) + 16.0);
  const Reference& ref = reference(inputs);
  const std::vector<std::string> names = BatchNormWorkload::outputs();
  for (std::size_t k = 0; k < names.size(); ++k) {
    const std::vector<double>& r = ref[k];
    const float* out = output_f32(outputs, names[k], static_cast<std::int64_t>(r.size()), chk);
    if (!out) return chk;
    double big = 0, worst = 0;
    for (double v : r) big = std::max(big, std::fabs(v));
    if (s_.dir == BnDir::bwd && names[k] == "dx") big = std::max(big, dx_term_scale(inputs));
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (!std::isfinite(out[i])) {
        chk.detail = names[k] + "[" + std::to_string(i) + "] is not finite";
        chk.max_error = 0;
        return chk;
      }
      worst = std::max(worst, std::fabs(out[i] - r[i]));
    }
    const double e = worst / (big + 1e-30);
    chk.max_error = std::max(chk.max_error, e);
    if (e > chk.tolerance && chk.detail.empty()) {
      std::ostringstream os;
      os << names[k] << ": largest difference " << e << " of its scale exceeds " << chk.tolerance;
      chk.detail = os.str();
    }
  }
  chk.ok = chk.detail.empty();
  return chk;
}

}  // namespace pb
