#include "core/conv.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

const char* to_string(ConvDir d) {
  return d == ConvDir::fwd ? "fwd" : d == ConvDir::bwd_data ? "bwd_data" : "bwd_filter";
}

std::string describe(const ConvShape& s) {
  std::ostringstream os;
  os << to_string(s.dir) << " " << to_string(s.dtype) << " " << s.n << "x" << s.c << "x" << s.h
     << "x" << s.w << " * " << s.k << "x" << s.c << "x" << s.r << "x" << s.s << ", stride "
     << s.stride_h;
  if (s.stride_w != s.stride_h) os << "x" << s.stride_w;
  os << ", pad " << s.pad_h;
  if (s.pad_w != s.pad_h) os << "x" << s.pad_w;
  return os.str();
}

std::string conv_shape_problem(const ConvShape& s) {
  for (auto [v, name] : {std::pair{s.n, "batch"},
                         {s.c, "c"},
                         {s.h, "h"},
                         {s.w, "w"},
                         {s.k, "k"},
                         {s.r, "r"},
                         {s.s, "s"}})
    if (v < 1) return std::string(name) + " must be at least 1";
  if (s.stride_h < 1 || s.stride_w < 1) return "the stride must be at least 1";
  const double big = 0x1p40;  // elements in one tensor; far beyond any memory, inside int64
  const auto d = [](std::int64_t v) { return static_cast<double>(v); };
  if (d(s.n) * d(s.c) * d(s.h) * d(s.w) > big || d(s.k) * d(s.c) * d(s.r) * d(s.s) > big ||
      d(s.n) * d(s.k) * d(s.h + 2 * s.pad_h) * d(s.w + 2 * s.pad_w) > big)
    return "the tensors would hold more than 2^40 elements";
  if (s.pad_h < 0 || s.pad_w < 0) return "the padding must not be negative";
  if (s.r > s.h + 2 * s.pad_h || s.s > s.w + 2 * s.pad_w) {
    std::ostringstream os;
    os << "the " << s.r << "x" << s.s << " filter is larger than the padded " << s.h + 2 * s.pad_h
       << "x" << s.w + 2 * s.pad_w << " input";
    return os.str();
  }
  return "";
}

const std::vector<ConvLayer>& conv_layers() {
  static const std::vector<ConvLayer> layers = {
      // ResNet-50 (He et al. 2015): the stem, a 3x3 of stage 2, its 1x1 reduction, stage 4's 3x3.
      {"resnet50_conv1", 3, 224, 224, 64, 7, 7, 2, 3},
      {"resnet50_3x3_56", 64, 56, 56, 64, 3, 3, 1, 1},
      {"resnet50_1x1_56", 256, 56, 56, 64, 1, 1, 1, 0},
      {"resnet50_3x3_14", 256, 14, 14, 256, 3, 3, 1, 1},
      // DeepBench training set (conv_problems.h lines 17, 23, 44, 47, 72, 79): strided 3x3 on a
      // small input, VGG's 3x3 on 112x112, strided and plain 1x1 bottlenecks, a deep 7x7 layer.
      {"deepbench_17", 3, 108, 108, 64, 3, 3, 2, 1},
      {"deepbench_23", 64, 112, 112, 128, 3, 3, 1, 1},
      {"deepbench_44", 128, 28, 28, 512, 1, 1, 2, 0},
      {"deepbench_47", 256, 14, 14, 1024, 1, 1, 2, 0},
      {"deepbench_72", 512, 28, 28, 128, 1, 1, 1, 0},
      {"deepbench_79", 512, 7, 7, 512, 3, 3, 1, 1},
  };
  return layers;
}

std::vector<ConvShape> conv_suite(ConvDir dir, int level) {
  std::vector<ConvShape> out;
  auto add = [&](const ConvLayer& l, std::int64_t n) {
    ConvShape s;
    s.dir = dir, s.n = n, s.c = l.c, s.h = l.h, s.w = l.w, s.k = l.k, s.r = l.r, s.s = l.s;
    s.stride_h = s.stride_w = l.stride;
    s.pad_h = s.pad_w = l.pad;
    out.push_back(s);
  };
  for (const ConvLayer& l : conv_layers()) {
    const bool resnet = std::string(l.name).rfind("resnet50", 0) == 0;
    const bool stem = std::string(l.name) == "resnet50_conv1";
    if (level == 0) {
      if (!resnet) continue;
      for (std::int64_t n : {1, 8})
        if (!(stem && n > 1)) add(l, n);
    } else if (resnet || level == 2) {
      for (std::int64_t n : {1, 8, 32}) add(l, n);
    } else {
      add(l, 8);
    }
  }
  return out;
}

namespace {

std::int64_t parse_pad(const std::string& key, const std::string& v) {
  return parse_count(key, v, 1 << 20, 0);
}

}  // namespace

ConvShape parse_conv_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  ConvShape s;
  bool seen[7] = {};
  bool has_s = false;
  // stride (pad) sets both sides, stride_h and stride_w (pad_h, pad_w) one: a shape gives one
  // kind, or the order of the keys would decide.
  std::string both[2], one[2];  // [0] stride, [1] pad: the key given
  const char* required[] = {"batch", "c", "h", "w", "k", "r"};
  std::int64_t* fields[] = {&s.n, &s.c, &s.h, &s.w, &s.k, &s.r};
  for (const auto& [k, v] : kv) {
    bool done = false;
    for (int i = 0; i < 6 && !done; ++i)
      if (k == required[i]) *fields[i] = parse_count(k, v, 1 << 20), seen[i] = done = true;
    if (done) continue;
    for (int i = 0; i < 2; ++i) {
      const std::string name = i == 0 ? "stride" : "pad";
      if (k == name) both[i] = k;
      if (k == name + "_h" || k == name + "_w") one[i] = k;
      if (!both[i].empty() && !one[i].empty())
        throw std::invalid_argument(both[i] + "= sets both sides and " + one[i] +
                                    "= one: give one or the other");
    }
    if (k == "s") {
      s.s = parse_count(k, v, 1 << 20), has_s = true;
    } else if (k == "stride") {
      s.stride_h = s.stride_w = parse_count(k, v, 1 << 20);
    } else if (k == "stride_h") {
      s.stride_h = parse_count(k, v, 1 << 20);
    } else if (k == "stride_w") {
      s.stride_w = parse_count(k, v, 1 << 20);
    } else if (k == "pad") {
      s.pad_h = s.pad_w = parse_pad(k, v);
    } else if (k == "pad_h") {
      s.pad_h = parse_pad(k, v);
    } else if (k == "pad_w") {
      s.pad_w = parse_pad(k, v);
    } else if (k == "dir") {
      if (v == "fwd")
        s.dir = ConvDir::fwd;
      else if (v == "bwd_data")
        s.dir = ConvDir::bwd_data;
      else if (v == "bwd_filter")
        s.dir = ConvDir::bwd_filter;
      else
        throw std::invalid_argument("dir=" + v + " is not one of fwd, bwd_data, bwd_filter");
    } else {
      throw std::invalid_argument("unknown conv shape key '" + k +
                                  "' (batch, c, h, w, k, r, s, stride, pad, dir)");
    }
  }
  for (int i = 0; i < 6; ++i)
    if (!seen[i])
      throw std::invalid_argument(std::string("conv shape needs ") + required[i] +
                                  "= (batch, c, h, w, k, r are required)");
  if (!has_s) s.s = s.r;
  const std::string problem = conv_shape_problem(s);
  if (!problem.empty()) throw std::invalid_argument("conv shape: " + problem);
  return s;
}

ConvWorkload::ConvWorkload(ConvShape s, std::uint64_t seed) : s_(s), seed_(seed) {
  const std::string problem = conv_shape_problem(s_);
  if (!problem.empty()) throw std::invalid_argument("conv shape: " + problem);
}

Shape ConvWorkload::shape() const {
  Shape sh;
  sh.add("dir", to_string(s_.dir));
  sh.add("batch", s_.n);
  sh.add("c", s_.c);
  sh.add("h", s_.h);
  sh.add("w", s_.w);
  sh.add("k", s_.k);
  sh.add("r", s_.r);
  if (s_.s != s_.r) sh.add("s", s_.s);
  if (s_.stride_h == s_.stride_w) {
    sh.add("stride", s_.stride_h);
  } else {
    sh.add("stride_h", s_.stride_h);
    sh.add("stride_w", s_.stride_w);
  }
  if (s_.pad_h == s_.pad_w) {
    sh.add("pad", s_.pad_h);
  } else {
    sh.add("pad_h", s_.pad_h);
    sh.add("pad_w", s_.pad_w);
  }
  sh.add("dtype", to_string(s_.dtype));
  return sh;
}

double ConvWorkload::flops() const {
  return 2.0 * static_cast<double>(s_.n) * static_cast<double>(s_.k) *
         static_cast<double>(s_.crs()) * static_cast<double>(s_.pq());
}

double ConvWorkload::min_bytes() const {
  const double x = static_cast<double>(s_.x_size()), y = static_cast<double>(s_.y_size()),
               w = static_cast<double>(s_.w_size()), k = static_cast<double>(s_.k);
  const double in = input_bytes(s_.dtype);
  switch (s_.dir) {
    case ConvDir::fwd:
      return in * (x + w) + 4.0 * (k + y);
    case ConvDir::bwd_data:
      return in * (y + w) + 4.0 * x;
    default:
      return in * (x + y) + 4.0 * (w + k);
  }
}

double ConvWorkload::write_allocate_bytes() const {
  const double out = s_.dir == ConvDir::fwd        ? static_cast<double>(s_.y_size())
                     : s_.dir == ConvDir::bwd_data ? static_cast<double>(s_.x_size())
                                                   : static_cast<double>(s_.w_size() + s_.k);
  return 4.0 * out;
}

double ConvWorkload::host_bytes(Device) const {
  // The inputs, an implementation's copies of them, its outputs and their copies read back.
  const double all = static_cast<double>(s_.x_size() + s_.y_size() + s_.w_size() + s_.k);
  return 4.0 * 3.0 * all;
}

double ConvWorkload::device_bytes() const {
  // Operands, plus im2col's column matrix for one image (the im2col implementation's); in bf16
  // and fp16, cuDNN's 16-bit copies of the operands and the output beside the fp32 ones.
  const double all = static_cast<double>(s_.x_size() + s_.y_size() + s_.w_size() + s_.k);
  const int copy = input_bytes(s_.dtype) < 4 ? input_bytes(s_.dtype) : 0;  // a 16-bit element
  return 4.0 * (all + static_cast<double>(s_.crs() * s_.pq())) + copy * all;
}

Tensors ConvWorkload::make_inputs() const {
  Rng rng(seed_ + static_cast<std::uint64_t>(s_.dir));
  auto fill = [&](const char* name, std::vector<std::int64_t> dims, Dtype t = Dtype::fp32) {
    Tensor x(name, std::move(dims));
    for (float& v : x.f32()) v = round_to(t, rng.uniform());
    return x;
  };
  const Dtype t = s_.dtype;  // the bias is fp32 in every backend
  const std::int64_t p = s_.p(), q = s_.q();
  switch (s_.dir) {
    case ConvDir::fwd: {
      Tensors in{fill("x", {s_.n, s_.c, s_.h, s_.w}, t), fill("w", {s_.k, s_.c, s_.r, s_.s}, t)};
      in.push_back(fill("b", {s_.k}));
      return in;
    }
    case ConvDir::bwd_data:
      return {fill("dy", {s_.n, s_.k, p, q}, t), fill("w", {s_.k, s_.c, s_.r, s_.s}, t)};
    default:
      return {fill("x", {s_.n, s_.c, s_.h, s_.w}, t), fill("dy", {s_.n, s_.k, p, q}, t)};
  }
}

std::pair<const char*, const char*> conv_operands(ConvDir d) {
  return d == ConvDir::fwd        ? std::pair{"x", "w"}
         : d == ConvDir::bwd_data ? std::pair{"dy", "w"}
                                  : std::pair{"x", "dy"};
}

Tensors conv_outputs(const ConvShape& s) {
  switch (s.dir) {
    case ConvDir::fwd:
      return {Tensor("y", {s.n, s.k, s.p(), s.q()})};
    case ConvDir::bwd_data:
      return {Tensor("dx", {s.n, s.c, s.h, s.w})};
    default:
      return {Tensor("dw", {s.k, s.c, s.r, s.s}), Tensor("db", {s.k})};
  }
}

std::vector<std::string> ConvWorkload::outputs() const {
  ConvShape tiny;  // the names without the elements
  tiny.dir = s_.dir;
  std::vector<std::string> names;
  for (const Tensor& t : conv_outputs(tiny)) names.push_back(t.name());
  return names;
}

double ConvWorkload::terms() const {
  switch (s_.dir) {
    case ConvDir::fwd:
      return static_cast<double>(s_.crs());
    case ConvDir::bwd_data:  // the taps that reach one input pixel, at most
      return static_cast<double>(s_.k) *
             std::ceil(static_cast<double>(s_.r) / static_cast<double>(s_.stride_h)) *
             std::ceil(static_cast<double>(s_.s) / static_cast<double>(s_.stride_w));
    default:
      return static_cast<double>(s_.n * s_.pq());
  }
}

double ConvWorkload::tolerance() const {
  const double factor = s_.dtype == Dtype::fp32 ? 64.0 : 256.0;
  return factor * unit_roundoff(Dtype::fp32) * (std::sqrt(terms()) + 1.0);
}

namespace {

// A point's value and rounding scale from its sum.
ConvPoint point(const DoubleSum& sum) { return {sum.value, std::sqrt(sum.scale2)}; }

}  // namespace

ConvPoint conv_point(const ConvShape& s, const float* in0, const float* in1, const float* b,
                     std::int64_t i) {
  DoubleSum sum;
  conv_terms(s, in0, in1, b, i, sum);
  return point(sum);
}

ConvPoint conv_bias_grad_point(const ConvShape& s, const float* dy, std::int64_t k) {
  DoubleSum sum;
  conv_bias_grad_terms(s, dy, k, sum);
  return point(sum);
}

Check ConvWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check chk;
  chk.tolerance = tolerance();
  const std::string name = outputs()[0];
  const std::int64_t count = s_.dir == ConvDir::fwd        ? s_.y_size()
                             : s_.dir == ConvDir::bwd_data ? s_.x_size()
                                                           : s_.w_size();
  const float* out = output_f32(outs, name, count, chk);
  const float* db = s_.dir == ConvDir::bwd_filter ? output_f32(outs, "db", s_.k, chk) : nullptr;
  if (!out || (s_.dir == ConvDir::bwd_filter && !db)) return chk;

  // The reference points (their indices and values), once per workload's inputs (the memo):
  // every point when that costs under 2e8 terms; else a random sample of that many terms' worth
  // of points (at least 4096): a wrong element is found with the sample's probability, a wrong
  // row, plane or index rule almost surely. And every db[k]: the sum of dy over its channel.
  const ConvReference& ref = reference_.get(in, [&] {
    ConvReference r;
    const double per_point = std::max(1.0, terms());
    const auto budget = static_cast<std::int64_t>(std::max(2e8 / per_point, 4096.0));
    if (count <= budget) {
      for (std::int64_t i = 0; i < count; ++i) r.points.push_back(i);
    } else {
      Rng rng(seed_ ^ 0xC0411u);
      for (std::int64_t j = 0; j < budget; ++j)
        r.points.push_back(
            static_cast<std::int64_t>(rng.next() % static_cast<std::uint64_t>(count)));
    }
    const auto [name0, name1] = conv_operands(s_.dir);
    const float* in0 = at(in, name0).f32().data();
    const float* in1 = at(in, name1).f32().data();
    const float* b = s_.dir == ConvDir::fwd ? at(in, "b").f32().data() : nullptr;
    r.values.resize(r.points.size());
    const auto npoints = static_cast<std::int64_t>(r.points.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (std::int64_t j = 0; j < npoints; ++j)
      r.values[static_cast<std::size_t>(j)] =
          conv_point(s_, in0, in1, b, r.points[static_cast<std::size_t>(j)]);
    if (s_.dir == ConvDir::bwd_filter)
      for (std::int64_t k = 0; k < s_.k; ++k) r.db.push_back(conv_bias_grad_point(s_, in1, k));
    return r;
  });
  double worst = 0;
  std::int64_t worst_at = -1;
  bool nan = false;
  // A 16-bit output's one rounding (fwd: and its bias's, which a 16-bit y holds before the
  // convolution is added to it), in the point's units: its share of the tolerance.
  const double rounded = s_.dtype == Dtype::bf16 || s_.dtype == Dtype::fp16
                             ? unit_roundoff(s_.dtype) / chk.tolerance
                             : 0.0;
  const float* bias = s_.dir == ConvDir::fwd ? at(in, "b").f32().data() : nullptr;
  for (std::size_t j = 0; j < ref.points.size(); ++j) {
    const std::int64_t i = ref.points[j];
    const ConvPoint& pt = ref.values[j];
    const double size = std::fabs(pt.value) + (bias ? std::fabs(bias[i / s_.pq() % s_.k]) : 0.0);
    const double e = std::fabs(out[i] - pt.value) / (pt.scale + rounded * size + 1e-30);
    if (std::isnan(e) || !std::isfinite(out[i])) nan = true;
    if (e > worst) worst = e, worst_at = i;
  }
  std::string where = name;
  if (db) {
    for (std::int64_t k = 0; k < s_.k; ++k) {
      const ConvPoint& pt = ref.db[static_cast<std::size_t>(k)];
      const double e = std::fabs(db[k] - pt.value) / (pt.scale + 1e-30);
      if (std::isnan(e) || !std::isfinite(db[k])) nan = true;
      if (e > worst) worst = e, worst_at = k, where = "db";
    }
  }
  if (nan) {
    chk.detail = "the result is not finite";
    return chk;
  }
  chk.max_error = worst;
  chk.ok = worst <= chk.tolerance;
  if (!chk.ok) {
    std::ostringstream os;
    os << where << "[" << worst_at << "] is off by " << worst << " of its terms' size (tolerance "
       << chk.tolerance << ")";
    chk.detail = os.str();
  }
  return chk;
}

}  // namespace pb
