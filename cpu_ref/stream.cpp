// CPU STREAM: one OpenMP loop per kernel, static schedule, the per-element math from
// core/stream.hpp inlined and vectorized (the kernel is a template argument, so the switch in
// stream_element folds away).
#include "core/stream.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::cpu {

namespace {

template <StreamKernel K>
void elementwise(const float* a, const float* b, const float* c, float* out, std::int64_t n,
                 int threads) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = stream_element(K, a, b, c, i);
}

float dot(const float* a, const float* b, std::int64_t n, int threads) {
  float sum = 0;
#pragma omp parallel for simd num_threads(threads) schedule(static) reduction(+ : sum)
  for (std::int64_t i = 0; i < n; ++i) sum += stream_element(StreamKernel::dot, a, b, nullptr, i);
  return sum;
}

}  // namespace

float stream_omp(StreamKernel k, float* a, float* b, float* c, std::int64_t n, int threads) {
  switch (k) {
    case StreamKernel::copy:
      elementwise<StreamKernel::copy>(a, b, c, c, n, threads);
      break;
    case StreamKernel::scale:
      elementwise<StreamKernel::scale>(a, b, c, b, n, threads);
      break;
    case StreamKernel::add:
      elementwise<StreamKernel::add>(a, b, c, c, n, threads);
      break;
    case StreamKernel::triad:
      elementwise<StreamKernel::triad>(a, b, c, a, n, threads);
      break;
    case StreamKernel::dot:
      return dot(a, b, n, threads);
  }
  return 0;
}

namespace {

class OmpStream : public CpuImpl {
 public:
  OmpStream(const StreamShape& s, int threads) : CpuImpl(threads), s_(s) {}

  void prepare(const Tensors& in) override {
    // First touch by the threads that will stream the arrays, with the same static schedule,
    // so each page lives near the core that uses it.
    for (int j = 0; j < 3; ++j) {
      x_[j].reset(new float[static_cast<std::size_t>(s_.n)]);
      float* dst = x_[j].get();
      const float* src = at(in, std::string(1, static_cast<char>('a' + j))).f32().data();
#pragma omp parallel for simd num_threads(threads_) schedule(static)
      for (std::int64_t i = 0; i < s_.n; ++i) dst[i] = src[i];
    }
  }

  void run() override {
    sum_ = stream_omp(s_.kernel, x_[0].get(), x_[1].get(), x_[2].get(), s_.n, threads_);
  }

  Tensors result() override {
    const std::string name = StreamWorkload(s_).outputs()[0];
    const int out = stream_output(s_.kernel);
    if (out < 0) return {Tensor::of(name, std::vector<float>{sum_})};
    const float* p = x_[out].get();
    return {Tensor::of(name, std::vector<float>(p, p + s_.n))};
  }

 private:
  StreamShape s_;
  std::unique_ptr<float[]> x_[3];  // a, b, c; not std::vector, whose zero-fill would touch them
  float sum_ = 0;
};

}  // namespace

std::vector<ImplSpec> stream_impls() {
  ImplSpec sp;
  sp.op = "stream";
  sp.name = "omp";
  sp.device = Device::cpu;
  sp.threaded = true;
  sp.supports = [](const Workload&) { return true; };
  sp.make = [](const Workload& w, int threads) -> std::unique_ptr<Impl> {
    return std::make_unique<OmpStream>(static_cast<const StreamWorkload&>(w).stream(), threads);
  };
  return {sp};
}

}  // namespace pb::cpu
