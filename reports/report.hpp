// The report model: a Google Benchmark JSON document plus a "pairbench" key with one record per
// case and the analyses. Knows nothing of how cases were run.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace pb::report {

// Ordered: keys stay in the order they were written (shape keys m, n, k read as written).
using json = nlohmann::ordered_json;

inline constexpr int kSchemaVersion = 1;

// speedup: per op and shape (dtype and threads aside), the best CPU and best GPU case, GPU over
// CPU kernel-only and with host<->device transfers, and the same comparison at equal dtype.
json speedup(const json& cases);

// memory_bandwidth: per device, the best GB/s of each STREAM kernel, as % of the best and of the
// theoretical peak where one is known; the host<->device copy curves with latency and peak.
json memory_bandwidth(const json& cases, const json& context);

// parallelism: every sweep of CPU threads or GPU SMs: throughput, speedup over the fewest
// units, parallel efficiency; the GPU's sweeps beside the same work at full occupancy.
json parallelism(const json& cases);

// roofline: per device, the measured ceilings (best GEMM GFLOP/s, best STREAM GB/s) and the
// theoretical ones, and for every case its arithmetic intensity, GFLOP/s and whether it sits
// left of the ridge (memory-bound).
json roofline(const json& cases, const json& context);

// The whole document from the context, Google Benchmark's run entries and the case records.
json build(const json& context, const json& benchmarks, const json& cases);

// The console summary: one line per op and shape.
std::string summary(const json& report);

// Writes PATH.tmp, then renames it over PATH; throws std::runtime_error.
void write_atomic(const std::string& path, const std::string& text);

// The crash-safe log beside a report: one JSON object a line, {"context": ...} first, then
// {"benchmark": ...} and {"case": ...} as they are measured, flushed at once.
class Log {
 public:
  explicit Log(const std::string& path);  // throws std::runtime_error if it cannot be written
  void append(const char* kind, const json& value);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

std::string log_path_for(const std::string& report_path);

// Rebuilds the report from a log; a torn last line is ignored. Throws std::runtime_error.
json recover(const std::string& log_path);

}  // namespace pb::report
