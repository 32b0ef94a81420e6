// A stand-in for libnvidia-ml.so.1, built by the tests: it exports the NVML functions pairbench
// reads (bench/energy.cpp), so that the GPU side of energy, clocks and throttling runs on a
// machine with no GPU. Its board draws PAIRBENCH_FAKE_NVML_WATTS (300 W unless set); its energy
// counter moves every 10 ms, as a real one moves every 20-100 ms; it is held below its clocks
// by its power cap a quarter of the time. PAIRBENCH_FAKE_NVML_NO_ENERGY=1: a GPU whose counter
// cannot be read (NVML_ERROR_NOT_SUPPORTED).
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kSuccess = 0, kNotSupported = 3, kNotFound = 6, kUninitialized = 1;
bool g_initialised = false;
std::chrono::steady_clock::time_point g_t0;
int g_device = 0;  // the one GPU's handle points here

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - g_t0).count();
}

double watts() {
  const char* w = std::getenv("PAIRBENCH_FAKE_NVML_WATTS");
  return w && *w ? std::atof(w) : 300.0;
}

struct ViolationTime {
  unsigned long long reference_time;
  unsigned long long violation_time;
};

}  // namespace

extern "C" {

int nvmlInit_v2() {
  g_initialised = true;
  g_t0 = std::chrono::steady_clock::now();
  return kSuccess;
}

int nvmlShutdown() {
  g_initialised = false;
  return kSuccess;
}

const char* nvmlErrorString(int r) {
  return r == kNotSupported ? "Not Supported" : r == kNotFound ? "Not Found" : "Unknown Error";
}

int nvmlDeviceGetHandleByPciBusId_v2(const char* bus, void** device) {
  if (!g_initialised) return kUninitialized;
  if (std::strncmp(bus, "0000:65:00", 10) != 0) return kNotFound;
  *device = &g_device;
  return kSuccess;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (!g_initialised) return kUninitialized;
  if (index != 0) return kNotFound;
  *device = &g_device;
  return kSuccess;
}

int nvmlDeviceGetTotalEnergyConsumption(void*, unsigned long long* mj) {
  if (std::getenv("PAIRBENCH_FAKE_NVML_NO_ENERGY")) return kNotSupported;
  const double t = std::floor(seconds() / 0.01) * 0.01;  // moves every 10 ms
  *mj = 5000000ull + static_cast<unsigned long long>(t * watts() * 1e3);
  return kSuccess;
}

int nvmlDeviceGetClockInfo(void*, unsigned type, unsigned* mhz) {
  *mhz = type == 1 ? 1755 : type == 2 ? 2619 : 0;
  return type <= 2 ? kSuccess : kNotSupported;
}

int nvmlDeviceGetCurrentClocksEventReasons(void*, unsigned long long* reasons) {
  *reasons = 0x4;  // sw_power_cap
  return kSuccess;
}

int nvmlDeviceGetViolationStatus(void*, unsigned policy, ViolationTime* v) {
  // Held by the power limit (policy 0) a quarter of the time, and so by any limiter (10); the
  // reliability limit (5) is not counted by this board.
  if (policy == 5) return kNotSupported;
  v->reference_time = static_cast<unsigned long long>(seconds() * 1e6);
  v->violation_time =
      policy == 0 || policy == 10 ? static_cast<unsigned long long>(0.25 * seconds() * 1e9) : 0ull;
  return kSuccess;
}

int nvmlDeviceGetTemperature(void*, unsigned, unsigned* celsius) {
  *celsius = 64;
  return kSuccess;
}

}  // extern "C"
