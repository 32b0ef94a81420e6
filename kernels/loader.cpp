// Loads libpairbench_gpu.so, the CUDA half of pairbench, on first use. The program links no
// CUDA library itself: where the driver, the CUDA runtime or cuBLAS is missing, it still starts
// and runs its CPU cases, and every GPU case is skipped with the loader's reason.
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gpu.hpp"

namespace pb::gpu {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

bool built_with_cuda() {
#ifdef PAIRBENCH_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

namespace {

#ifdef PAIRBENCH_HAVE_CUDA
// Where the library is looked for: PAIRBENCH_GPU_MODULE (a path) when set; else beside the
// executable; else where the build put it (so the test programs in build/*/tests find it).
std::vector<std::string> candidates() {
  if (!env("PAIRBENCH_GPU_MODULE").empty()) return {env("PAIRBENCH_GPU_MODULE")};
  std::vector<std::string> out;
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {  // beside the program, or one folder up (the test programs in build/*/tests)
    const std::string exe(self, static_cast<std::size_t>(n));
    const std::string dir = exe.substr(0, exe.rfind('/') + 1);
    out.push_back(dir + kGpuModuleFile);
    out.push_back(dir + "../" + kGpuModuleFile);
  }
#ifdef PAIRBENCH_GPU_MODULE_PATH
  out.push_back(PAIRBENCH_GPU_MODULE_PATH);  // where the build put it
#endif
  return out;
}
#endif

#ifndef PAIRBENCH_HAVE_CUDA
// An NVIDIA GPU is visible (or the test hook says so): a CPU-only build is then a mistake.
bool gpu_visible() {
  return access("/dev/nvidia0", F_OK) == 0 || !env("PAIRBENCH_FAKE_NVIDIA_DEVICE").empty();
}
#endif

// The table of the loaded library, or nullptr with the reason in *why.
const GpuModule* module(std::string* why) {
  static std::string reason;
  static const GpuModule* loaded = []() -> const GpuModule* {
#ifndef PAIRBENCH_HAVE_CUDA
    reason = "pairbench was built without CUDA (-DPAIRBENCH_CUDA=OFF or no nvcc)";
    if (gpu_visible())
      reason +=
          ", but this machine has an NVIDIA GPU (/dev/nvidia0): run scripts/setup (it "
          "installs a CUDA toolkit) and scripts/build, or pass --devices=cpu";
    return nullptr;
#else
    const std::string what = std::string("the GPU part of pairbench (") + kGpuModuleFile + ")";
    std::string looked;
    for (const std::string& path : candidates()) {
      if (access(path.c_str(), F_OK) != 0) {
        looked += (looked.empty() ? "" : ", ") + path;
        continue;
      }
      // The first copy found decides: a CUDA library it needs may be missing (dlerror names it).
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) {
        const char* e = dlerror();
        reason = what + " could not be loaded: " + (e ? e : path);
        return nullptr;
      }
      using Entry = const GpuModule* (*)();
      if (auto entry = reinterpret_cast<Entry>(dlsym(handle, kGpuModuleEntry))) return entry();
      reason = what + " could not be loaded: " + path + " has no " + kGpuModuleEntry;
      return nullptr;
    }
    reason = what + " was not found: looked for " + looked;
    return nullptr;
#endif
  }();
  if (why) *why = reason;
  return loaded;
}

}  // namespace

const DeviceInfo& probe() {
  static const DeviceInfo info = [] {
    std::string why;
    if (const GpuModule* m = module(&why)) return m->probe();
    DeviceInfo d;
    d.reason = why;
#ifndef PAIRBENCH_HAVE_CUDA
    d.gpu_visible_but_not_built = gpu_visible();
#endif
    return d;
  }();
  return info;
}

std::unique_ptr<Impl> make_impl(const std::string& op, const std::string& name, const Workload& w,
                                int units) {
  std::string why;
  if (const GpuModule* m = module(&why)) return m->make_impl(op, name, w, units);
  throw std::runtime_error(why);
}

std::string sticky_error() {
  const GpuModule* m = module(nullptr);
  return m ? m->sticky_error() : "";
}

void select_device(int ordinal) {
  if (const GpuModule* m = module(nullptr)) m->select_device(ordinal);
}

std::string nccl_load() {
  std::string why;
  const GpuModule* m = module(&why);
  return m ? m->nccl_load() : why;
}

std::string nccl_unique_id() {
  const GpuModule* m = module(nullptr);
  return m ? m->nccl_unique_id() : "";
}

std::string nccl_init(const std::string& id, int ranks, int rank) {
  std::string why;
  const GpuModule* m = module(&why);
  return m ? m->nccl_init(id, ranks, rank) : why;
}

}  // namespace pb::gpu
