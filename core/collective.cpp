#include "core/collective.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/parse.hpp"

namespace pb {

const char* to_string(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::allreduce:
      return "allreduce";
    case CollectiveKind::allgather:
      return "allgather";
    case CollectiveKind::reduce_scatter:
      return "reduce_scatter";
    case CollectiveKind::broadcast:
      return "broadcast";
  }
  return "?";
}

const std::vector<CollectiveKind>& all_collectives() {
  static const std::vector<CollectiveKind> all = {
      CollectiveKind::allreduce, CollectiveKind::allgather, CollectiveKind::reduce_scatter,
      CollectiveKind::broadcast};
  return all;
}

double bus_factor(CollectiveKind k, int ranks) {
  const double n = ranks;
  switch (k) {
    case CollectiveKind::allreduce:
      return 2.0 * (n - 1) / n;
    case CollectiveKind::allgather:
    case CollectiveKind::reduce_scatter:
      return (n - 1) / n;
    case CollectiveKind::broadcast:
      return 1.0;
  }
  return 1.0;
}

std::vector<std::int64_t> collective_suite_bytes(int level) {
  if (level == 0) return {4 << 10, 1 << 20, 16 << 20};
  std::vector<std::int64_t> out;
  const std::int64_t last = level == 1 ? std::int64_t{256} << 20 : std::int64_t{1} << 30;
  for (std::int64_t b = 4; b <= last; b *= level == 1 ? 4 : 2) out.push_back(b);
  return out;
}

namespace {

// The whole-buffer size every rank's chunk divides: elements a multiple of the ranks.
void check_divides(const CollectiveShape& s) {
  const std::int64_t unit = input_bytes(s.dtype) * static_cast<std::int64_t>(s.ranks);
  if (s.bytes % unit != 0)
    throw std::invalid_argument("collective: bytes=" + std::to_string(s.bytes) +
                                " is not a multiple of " + std::to_string(unit) + " (" +
                                std::to_string(input_bytes(s.dtype)) + "-byte elements x " +
                                std::to_string(s.ranks) + " ranks)");
}

}  // namespace

CollectiveShape parse_collective_shape(const std::vector<std::pair<std::string, std::string>>& kv,
                                       Dtype dtype, int ranks, int rank) {
  CollectiveShape s;
  s.dtype = dtype, s.ranks = ranks, s.rank = rank;
  bool kind = false, bytes = false;
  for (const auto& [k, v] : kv) {
    if (k == "coll") {
      bool found = false;
      for (CollectiveKind c : all_collectives())
        if (v == to_string(c)) s.kind = c, found = true;
      if (!found)
        throw std::invalid_argument("collective: unknown coll=" + v +
                                    " (allreduce, allgather, reduce_scatter, broadcast)");
      kind = true;
    } else if (k == "bytes") {
      s.bytes = parse_count(k, v, std::int64_t{1} << 40);
      bytes = true;
    } else if (k == "ranks") {
      check_ranks("collective", v, ranks);
    } else if (k != "dtype") {
      throw std::invalid_argument("collective: unknown key '" + k + "' (coll=, bytes=)");
    }
  }
  if (!kind || !bytes) throw std::invalid_argument("collective: needs coll= and bytes=");
  check_divides(s);
  return s;
}

CollectiveWorkload::CollectiveWorkload(const CollectiveShape& s) : s_(s) {
  if (s.dtype != Dtype::fp32 && s.dtype != Dtype::bf16)
    throw std::invalid_argument("collective: fp32 and bf16 only");
  check_divides(s);
}

Shape CollectiveWorkload::shape() const {
  Shape sh;
  sh.add("coll", to_string(s_.kind));
  sh.add("bytes", s_.bytes);
  sh.add("ranks", s_.ranks);
  sh.add("dtype", pb::to_string(s_.dtype));
  return sh;
}

Tensors CollectiveWorkload::make_inputs() const {
  const std::int64_t n = s_.elements(), chunk = n / s_.ranks;
  Tensor buf("buf", {n});
  float* b = buf.f32().data();
  for (std::int64_t i = 0; i < n; ++i) {
    switch (s_.kind) {
      case CollectiveKind::allgather:  // its own chunk in place; the rest is overwritten
        b[i] = i / chunk == s_.rank ? collective_input(s_.rank, i) : 0.0f;
        break;
      case CollectiveKind::broadcast:
        b[i] = s_.rank == 0 ? collective_input(0, i) : 0.0f;
        break;
      default:
        b[i] = collective_input(s_.rank, i);
    }
  }
  return {buf};
}

Check CollectiveWorkload::verify(const Tensors&, const Tensors& outputs) const {
  Check c;
  const std::int64_t n = s_.elements(), chunk = n / s_.ranks;
  const bool scattered = s_.kind == CollectiveKind::reduce_scatter;
  const float* out = output_f32(outputs, "out", scattered ? chunk : n, c);
  if (!out) return c;
  auto sum = [&](std::int64_t i) {
    float total = 0;
    for (int r = 0; r < s_.ranks; ++r) total += collective_input(r, i);
    return total;
  };
  for (std::int64_t j = 0; j < (scattered ? chunk : n); ++j) {
    float want = 0;
    switch (s_.kind) {
      case CollectiveKind::allreduce:
        want = sum(j);
        break;
      case CollectiveKind::reduce_scatter:
        want = sum(s_.rank * chunk + j);
        break;
      case CollectiveKind::allgather:
        want = collective_input(static_cast<int>(j / chunk), j);
        break;
      case CollectiveKind::broadcast:
        want = collective_input(0, j);
        break;
    }
    if (out[j] != want) {
      c.detail = "element " + std::to_string(j) + " is " + std::to_string(out[j]) + ", not " +
                 std::to_string(want) + " (rank " + std::to_string(s_.rank) + ")";
      c.max_error = 1;
      return c;
    }
  }
  c.ok = true;
  return c;
}

std::vector<std::pair<std::int64_t, std::int64_t>> gradient_buckets(std::int64_t n,
                                                                    std::int64_t cap) {
  if (cap < 1) throw std::invalid_argument("a gradient bucket holds at least one element");
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  for (std::int64_t end = n; end > 0; end -= cap)
    out.emplace_back(std::max<std::int64_t>(0, end - cap), end);
  return out;
}

}  // namespace pb
