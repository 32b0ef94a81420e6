// STREAM (McCalpin): copy c = a, scale b = q c, add c = a + b, triad a = b + q c, and dot
// s = sum a b, over arrays far larger than the caches. Bytes are counted as STREAM counts them
// (each array read or written once); write-allocate traffic is stated separately.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/hd.hpp"
#include "core/workload.hpp"

namespace pb {

enum class StreamKernel { copy, scale, add, triad, dot };

const char* to_string(StreamKernel k);
bool parse_stream_kernel(const std::string& s, StreamKernel* out);
const std::vector<StreamKernel>& all_stream_kernels();

constexpr float kStreamScalar = 3.0f;  // STREAM's q

// One element of a STREAM kernel, shared by the CPU and GPU code: a, b, c are the arrays, i the
// index; returns the value written (the dot's product term for dot).
HD inline float stream_element(StreamKernel k, const float* a, const float* b, const float* c,
                               std::int64_t i) {
  switch (k) {
    case StreamKernel::copy:
      return a[i];
    case StreamKernel::scale:
      return kStreamScalar * c[i];
    case StreamKernel::add:
      return a[i] + b[i];
    case StreamKernel::triad:
      return b[i] + kStreamScalar * c[i];
    case StreamKernel::dot:
      return a[i] * b[i];
  }
  return 0;
}

// Whether the kernel reads array j of {a, b, c} (0, 1, 2): the arrays its GPU kernel loads and
// the inputs a GPU implementation uploads (and counts in transfer_s).
HD constexpr bool stream_reads(StreamKernel k, int j) {
  return j == 0   ? k == StreamKernel::copy || k == StreamKernel::add || k == StreamKernel::dot
         : j == 1 ? k == StreamKernel::add || k == StreamKernel::triad || k == StreamKernel::dot
                  : k == StreamKernel::scale || k == StreamKernel::triad;
}

// Which of {a, b, c} (0, 1, 2) the kernel writes; -1 for dot, which writes one number.
int stream_output(StreamKernel k);

struct StreamShape {
  StreamKernel kernel = StreamKernel::triad;
  std::int64_t n = 0;  // elements per array
};

// Array lengths by suite (0 quick, 1 standard, 2 full): 128 MiB, 256 MiB and 1 GiB per fp32
// array, at least four times the last-level cache of most CPUs and the L2 of current GPUs.
std::int64_t stream_suite_n(int level);

// --shape keys: kernel (copy, scale, add, triad, dot), n. Throws std::invalid_argument.
StreamShape parse_stream_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class StreamWorkload : public Workload {
 public:
  explicit StreamWorkload(StreamShape s, std::uint64_t seed = 7) : s_(s), seed_(seed) {}
  const StreamShape& stream() const { return s_; }

  std::string op() const override { return "stream"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  double flops() const override;
  double min_bytes() const override;  // STREAM's count
  double write_allocate_bytes() const override;
  bool bandwidth_bound() const override { return true; }
  Role role() const override {
    return s_.kernel == StreamKernel::copy ? Role::bandwidth_reference : Role::bandwidth;
  }
  double host_bytes(Device) const override;
  double device_bytes() const override;
  Tensors make_inputs() const override;  // a, b, c
  // The array the kernel writes ("a", "b" or "c"), or "sum" for dot.
  std::vector<std::string> outputs() const override;
  // Elementwise kernels: every element within two roundings (an FMA may fuse b + q c). Dot: the
  // error in units of sqrt(sum (a b)^2), within 16 roundoffs x sqrt(n), as GEMM's check.
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  StreamShape s_;
  std::uint64_t seed_;
};

// Host<->device copies: cudaMemcpyAsync of `bytes` from pageable or pinned host memory.
enum class CopyDir { h2d, d2h, d2d };

struct TransferShape {
  CopyDir dir = CopyDir::h2d;
  bool pinned = false;  // host memory from cudaMallocHost (h2d and d2h only)
  std::int64_t bytes = 0;
};

const char* to_string(CopyDir d);
// Sizes by suite: 4 KiB to 1 GiB in steps of 4 (quick: 4 KiB, 1 MiB, 64 MiB).
std::vector<std::int64_t> transfer_suite_bytes(int level);
// --shape keys: dir (h2d, d2h, d2d), host (pageable, pinned), bytes (a multiple of 4).
TransferShape parse_transfer_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class TransferWorkload : public Workload {
 public:
  explicit TransferWorkload(TransferShape s) : s_(s) {}
  const TransferShape& transfer() const { return s_; }

  std::string op() const override { return "transfer"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  double flops() const override { return 0; }
  // A device-to-device copy reads and writes device memory: both counted, as STREAM's copy
  // counts them, so that `transfer d2d` and `stream copy` compare.
  double min_bytes() const override {
    return (s_.dir == CopyDir::d2d ? 2.0 : 1.0) * static_cast<double>(s_.bytes);
  }
  Role role() const override { return Role::transfer; }
  Metric metric() const override { return Metric::gbs; }
  double host_bytes(Device) const override { return 4.0 * static_cast<double>(s_.bytes); }
  double device_bytes() const override {
    return (s_.dir == CopyDir::d2d ? 2.0 : 1.0) * static_cast<double>(s_.bytes);
  }
  Tensors make_inputs() const override;  // src: the data to copy
  std::vector<std::string> outputs() const override { return {"dst"}; }
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;

 private:
  TransferShape s_;
};

}  // namespace pb
