// Host<->device copies with cudaMemcpyAsync on the case's stream: host to device and device to
// host from pageable (malloc'd) or pinned (cudaMallocHost) memory, and device to device.
#include <cstring>

#include "core/stream.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

class Memcpy : public GpuImpl {
 public:
  explicit Memcpy(const TransferShape& s)
      : s_(s), bytes_(static_cast<std::size_t>(s.bytes)), dev_(bytes_) {
    if (s_.dir == CopyDir::d2d) dev2_ = DeviceMem(bytes_);
    if (s_.dir != CopyDir::d2d) {
      if (s_.pinned)
        pinned_ = std::make_unique<PinnedMem>(bytes_);
      else
        pageable_.resize(bytes_ / sizeof(float));
    }
  }

  void prepare(const Tensors& in) override {
    const Tensor& src = at(in, "src");
    if (s_.dir == CopyDir::h2d)
      std::memcpy(host(), src.data(), bytes_);
    else
      upload(dev_.as<void>(), src);
  }

  void run() override {
    switch (s_.dir) {
      case CopyDir::h2d:
        PB_CUDA(cudaMemcpyAsync(dev_.as<void>(), host(), bytes_, cudaMemcpyHostToDevice, stream_));
        break;
      case CopyDir::d2h:
        PB_CUDA(cudaMemcpyAsync(host(), dev_.as<void>(), bytes_, cudaMemcpyDeviceToHost, stream_));
        break;
      case CopyDir::d2d:
        PB_CUDA(cudaMemcpyAsync(dev2_.as<void>(), dev_.as<void>(), bytes_, cudaMemcpyDeviceToDevice,
                                stream_));
        break;
    }
  }

  Tensors result() override {
    const auto n = static_cast<std::int64_t>(bytes_ / sizeof(float));
    if (s_.dir != CopyDir::d2h)
      return {download("dst", {n}, (s_.dir == CopyDir::d2d ? dev2_ : dev_).as<void>())};
    PB_CUDA(cudaStreamSynchronize(stream_));
    Tensor out("dst", {n});
    std::memcpy(out.f32().data(), host(), bytes_);
    return {out};
  }

 private:
  void* host() { return pinned_ ? pinned_->as<void>() : static_cast<void*>(pageable_.data()); }

  TransferShape s_;
  std::size_t bytes_;
  DeviceMem dev_, dev2_;
  std::unique_ptr<PinnedMem> pinned_;
  std::vector<float> pageable_;
};

std::unique_ptr<Impl> make_transfer(const std::string&, const std::string& name, const Workload& w,
                                    int) {
  if (name != "memcpy") throw std::runtime_error("unknown GPU transfer implementation: " + name);
  return std::make_unique<Memcpy>(static_cast<const TransferWorkload&>(w).transfer());
}

[[maybe_unused]] const bool registered = register_factory("transfer", make_transfer);

}  // namespace

}  // namespace pb::gpu
