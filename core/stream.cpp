#include "core/stream.hpp"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"

namespace pb {

namespace {
const char* const kKernelNames[] = {"copy", "scale", "add", "triad", "dot"};
}

const char* to_string(StreamKernel k) { return kKernelNames[static_cast<int>(k)]; }

const std::vector<StreamKernel>& all_stream_kernels() {
  static const std::vector<StreamKernel> all = {StreamKernel::copy, StreamKernel::scale,
                                                StreamKernel::add, StreamKernel::triad,
                                                StreamKernel::dot};
  return all;
}

bool parse_stream_kernel(const std::string& s, StreamKernel* out) {
  return parse_name(all_stream_kernels(), s, out);
}

int stream_output(StreamKernel k) {
  switch (k) {
    case StreamKernel::copy:
      return 2;
    case StreamKernel::scale:
      return 1;
    case StreamKernel::add:
      return 2;
    case StreamKernel::triad:
      return 0;
    case StreamKernel::dot:
      return -1;
  }
  return -1;
}

std::int64_t stream_suite_n(int level) {
  return level == 0 ? (1LL << 25) : level == 1 ? (1LL << 26) : (1LL << 28);
}

StreamShape parse_stream_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  StreamShape s;
  bool have_kernel = false, have_n = false;
  for (const auto& [key, v] : kv) {
    if (key == "kernel") {
      if (!parse_stream_kernel(v, &s.kernel))
        throw std::invalid_argument("kernel=" + v + " is not one of copy, scale, add, triad, dot");
      have_kernel = true;
    } else if (key == "n") {
      s.n = parse_count(key, v, 1LL << 40);
      have_n = true;
    } else {
      throw std::invalid_argument("stream has no shape key '" + key + "' (keys: kernel, n)");
    }
  }
  if (!have_kernel || !have_n) throw std::invalid_argument("a stream shape needs kernel and n");
  return s;
}

Shape StreamWorkload::shape() const {
  Shape sh;
  sh.add("kernel", to_string(s_.kernel));
  sh.add("n", s_.n);
  sh.add("dtype", "fp32");
  return sh;
}

double StreamWorkload::flops() const {
  const double n = static_cast<double>(s_.n);
  switch (s_.kernel) {
    case StreamKernel::copy:
      return 0;
    case StreamKernel::scale:
      return n;
    case StreamKernel::add:
      return n;
    case StreamKernel::triad:
      return 2 * n;
    case StreamKernel::dot:
      return 2 * n;
  }
  return 0;
}

double StreamWorkload::min_bytes() const {
  const int arrays = (s_.kernel == StreamKernel::add || s_.kernel == StreamKernel::triad) ? 3 : 2;
  return 4.0 * arrays * static_cast<double>(s_.n);
}

double StreamWorkload::write_allocate_bytes() const {
  return s_.kernel == StreamKernel::dot ? 0.0 : 4.0 * static_cast<double>(s_.n);
}

double StreamWorkload::host_bytes(Device) const {
  // Inputs, the implementation's copies, the result.
  return 4.0 * 7.0 * static_cast<double>(s_.n);
}

double StreamWorkload::device_bytes() const { return 4.0 * 3.0 * static_cast<double>(s_.n); }

Tensors StreamWorkload::make_inputs() const {
  Rng rng(seed_);
  Tensors in;
  for (const char* name : {"a", "b", "c"}) {
    in.emplace_back(name, std::vector<std::int64_t>{s_.n});
    for (float& v : in.back().f32()) v = rng.uniform();
  }
  return in;
}

std::vector<std::string> StreamWorkload::outputs() const {
  const int j = stream_output(s_.kernel);
  return {j < 0 ? "sum" : std::string(1, static_cast<char>('a' + j))};
}

Check StreamWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check chk;
  const float *a = at(in, "a").f32().data(), *b = at(in, "b").f32().data(),
              *c = at(in, "c").f32().data();
  const double u = unit_roundoff(Dtype::fp32);
  const float* out = output_f32(outs, outputs()[0], s_.kernel == StreamKernel::dot ? 1 : s_.n, chk);
  if (!out) return chk;
  if (s_.kernel == StreamKernel::dot) {
    chk.tolerance = 16.0 * u * (std::sqrt(static_cast<double>(s_.n)) + 1.0);
    double ref = 0, scale2 = 0;
    for (std::int64_t i = 0; i < s_.n; ++i) {
      const double p = static_cast<double>(a[i]) * b[i];
      ref += p;
      scale2 += p * p;
    }
    if (!std::isfinite(out[0])) {
      chk.detail = "dot is not finite";
      return chk;
    }
    chk.max_error = std::fabs(out[0] - ref) / (std::sqrt(scale2) + 1e-30);
  } else {
    // Two roundings of the largest term: a fused b + q c rounds once, a split one twice.
    chk.tolerance = 2.0 * u;
    double worst = 0;
    for (std::int64_t i = 0; i < s_.n; ++i) {
      double ref = 0, mag = 0;
      switch (s_.kernel) {
        case StreamKernel::copy:
          ref = a[i], mag = std::fabs(a[i]);
          break;
        case StreamKernel::scale:
          ref = kStreamScalar * static_cast<double>(c[i]), mag = std::fabs(ref);
          break;
        case StreamKernel::add:
          ref = static_cast<double>(a[i]) + b[i], mag = std::fabs(a[i]) + std::fabs(b[i]);
          break;
        default:
          ref = b[i] + kStreamScalar * static_cast<double>(c[i]);
          mag = std::fabs(b[i]) + std::fabs(kStreamScalar * c[i]);
      }
      const double e = std::fabs(out[i] - ref) / (mag + 1e-30);
      if (!(e <= worst)) worst = e;  // keeps a NaN
      if (std::isnan(worst)) break;
    }
    if (std::isnan(worst)) {
      chk.detail = "result is not finite";
      return chk;
    }
    chk.max_error = worst;
  }
  chk.ok = chk.max_error <= chk.tolerance;
  if (!chk.ok) {
    std::ostringstream os;
    os << "error " << chk.max_error << " exceeds tolerance " << chk.tolerance;
    chk.detail = os.str();
  }
  return chk;
}

const char* to_string(CopyDir d) {
  return d == CopyDir::h2d ? "h2d" : d == CopyDir::d2h ? "d2h" : "d2d";
}

std::vector<std::int64_t> transfer_suite_bytes(int level) {
  if (level == 0) return {4LL << 10, 1LL << 20, 64LL << 20};
  std::vector<std::int64_t> out;
  for (std::int64_t b = 4LL << 10; b <= (1LL << 30); b *= 4) out.push_back(b);
  return out;
}

TransferShape parse_transfer_shape(const std::vector<std::pair<std::string, std::string>>& kv) {
  TransferShape s;
  bool have_dir = false, have_bytes = false;
  for (const auto& [key, v] : kv) {
    if (key == "dir") {
      if (v == "h2d")
        s.dir = CopyDir::h2d;
      else if (v == "d2h")
        s.dir = CopyDir::d2h;
      else if (v == "d2d")
        s.dir = CopyDir::d2d;
      else
        throw std::invalid_argument("dir=" + v + " is not one of h2d, d2h, d2d");
      have_dir = true;
    } else if (key == "host") {
      if (v != "pageable" && v != "pinned")
        throw std::invalid_argument("host=" + v + " is not pageable or pinned");
      s.pinned = v == "pinned";
    } else if (key == "bytes") {
      s.bytes = parse_count(key, v, 1LL << 40);
      if (s.bytes % 4) throw std::invalid_argument("bytes=" + v + " is not a multiple of 4");
      have_bytes = true;
    } else {
      throw std::invalid_argument("transfer has no shape key '" + key +
                                  "' (keys: dir, host, bytes)");
    }
  }
  if (!have_dir || !have_bytes) throw std::invalid_argument("a transfer shape needs dir and bytes");
  if (s.dir == CopyDir::d2d && s.pinned)
    throw std::invalid_argument("host=pinned means nothing for dir=d2d");
  return s;
}

Shape TransferWorkload::shape() const {
  Shape sh;
  sh.add("dir", to_string(s_.dir));
  if (s_.dir != CopyDir::d2d) sh.add("host", s_.pinned ? "pinned" : "pageable");
  sh.add("bytes", s_.bytes);
  return sh;
}

Tensors TransferWorkload::make_inputs() const {
  Rng rng(static_cast<std::uint64_t>(s_.bytes));
  Tensor src("src", {s_.bytes / 4});
  for (float& v : src.f32()) v = rng.uniform();
  return {src};
}

Check TransferWorkload::verify(const Tensors& in, const Tensors& outs) const {
  Check chk;
  const Tensor& src = at(in, "src");
  const float* dst = output_f32(outs, "dst", src.numel(), chk);
  if (!dst) return chk;
  chk.ok = std::memcmp(dst, src.f32().data(), src.bytes()) == 0;
  if (!chk.ok) chk.detail = "the copy differs from its source";
  return chk;
}

}  // namespace pb
