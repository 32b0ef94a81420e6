// The GPU side as the rest of pairbench sees it: plain C++, no CUDA headers, the same API
// whether CUDA is built in or not. The CUDA code lives in a shared library of its own,
// libpairbench_gpu.so, that kernels/loader.cpp loads on first use: the program itself links no
// CUDA library, so it starts, and runs its CPU cases, where the CUDA libraries are missing (the
// GPU cases then say why they are skipped).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/workload.hpp"

namespace pb::gpu {

struct DeviceInfo {
  bool available = false;
  std::string reason;  // why there is no usable GPU, e.g. "cudaErrorInsufficientDriver: ..."
  std::string name;
  int cc_major = 0, cc_minor = 0, sms = 0;
  double total_bytes = 0, free_bytes = 0, l2_bytes = 0;
  double clock_khz = 0, mem_clock_khz = 0, bus_width_bits = 0;
  double peak_fp32_gflops = 0, peak_bandwidth_gbs = 0;  // theoretical, from device attributes
  int driver_version = 0, runtime_version = 0, cublas_version = 0;
  std::string pci_bus_id;  // "0000:65:00.0", how NVML finds the same GPU (bench/energy.hpp)
  int ordinal = 0, device_count = 0;  // which of the host's GPUs this process uses, of how many
  // Built without CUDA on a machine whose NVIDIA GPU is visible: an error, not a skip.
  bool gpu_visible_but_not_built = false;
};

// Why the CUDA runtime found no GPU, in words a user can act on. error_name and error_text:
// cudaGetDeviceCount's error; driver_version: cudaDriverGetVersion's (0 where no driver library
// could be loaded); runtime_version: the runtime's (13000 is CUDA 13.0); device_node: whether
// /dev/nvidia0 exists. The runtime says cudaErrorInsufficientDriver both where the driver is
// older than the runtime and where there is no driver at all; the two are told apart here.
inline std::string no_gpu_reason(const std::string& error_name, const std::string& error_text,
                                 int driver_version, int runtime_version, bool device_node) {
  auto cuda = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  const std::string why = " (" + error_name + ")";  // its text would say "insufficient driver"
  if (error_name != "cudaErrorInsufficientDriver") return error_name + ": " + error_text;
  if (driver_version == 0 && !device_node)
    return "no NVIDIA GPU or driver on this machine (no /dev/nvidia0, no libcuda.so.1)" + why;
  if (driver_version == 0)
    return "an NVIDIA device (/dev/nvidia0) but no driver library (libcuda.so.1) this process "
           "can load: install the NVIDIA driver" +
           why;
  return "the NVIDIA driver supports CUDA " + cuda(driver_version) +
         ", older than this build's CUDA " + cuda(runtime_version) + " runtime: update the driver" +
         (runtime_version / 1000 == 13 ? " (CUDA 13 needs 580 or later)" : "") +
         ", or build with a toolkit the driver supports" + why;
}

// Probes once; any CUDA error, or a GPU library that cannot be loaded, means "no GPU", with
// the error as the reason.
const DeviceInfo& probe();
// Whether this build has the GPU implementations (CUDA on): a CPU-only build runs the same CPU
// cases, but is another build.
bool built_with_cuda();

// The host's GPU this process uses (several ranks on a host: its local rank's), before the
// first probe(); GPU 0 otherwise.
void select_device(int ordinal);

// NCCL, loaded on first use (libnccl.so.2; never linked). nccl_load: "" or why it cannot be.
// nccl_unique_id: rank 0's id for the communicator (bytes; "" on failure). nccl_init: this
// rank's communicator from rank 0's id, a collective call on every rank ("" or why not).
std::string nccl_load();
std::string nccl_unique_id();
std::string nccl_init(const std::string& id, int ranks, int rank);

// A GPU implementation as an op's family lists it (bench/ops/<op>.cpp): listed even without a
// GPU, so that runs can show it as skipped; make() builds it through the GPU library.
ImplSpec spec(const std::string& op, const std::string& name,
              std::function<bool(const Workload&)> supports, bool sweeps_sms = false);

// Why conv/gpu/cudnn cannot run in this build ("" when it can: cuDNN was found and linked).
std::string cudnn_unavailable();

// "" while the device is usable; after a fault that leaves the CUDA context unusable (an
// illegal address, a watchdog timeout), the error every later call would fail with.
std::string sticky_error();

// Builds one (throws std::runtime_error when CUDA is not built in or the device fails).
// units: streaming multiprocessors to use for implementations that sweep them; 0 means all.
std::unique_ptr<Impl> make_impl(const std::string& op, const std::string& name, const Workload& w,
                                int units);

// What libpairbench_gpu.so gives the loader: its one exported symbol,
// `pairbench_gpu_module`, returns this table.
struct GpuModule {
  const DeviceInfo& (*probe)();
  std::unique_ptr<Impl> (*make_impl)(const std::string& op, const std::string& name,
                                     const Workload& w, int units);
  std::string (*sticky_error)();
  void (*select_device)(int ordinal);
  std::string (*nccl_load)();
  std::string (*nccl_unique_id)();
  std::string (*nccl_init)(const std::string& id, int ranks, int rank);
};
constexpr const char* kGpuModuleFile = "libpairbench_gpu.so";
constexpr const char* kGpuModuleEntry = "pairbench_gpu_module";

}  // namespace pb::gpu
