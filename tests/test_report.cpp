// The report model on synthetic cases: speedup analysis, summary, atomic write, recovery.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "reports/report.hpp"

namespace pb {
namespace {

using report::json;

json make_case(const std::string& device, const std::string& impl, const std::string& dtype,
               double seconds, const std::string& status = "ok", double transfer = 0) {
  json c = {{"name", "gemm/" + device + "/" + impl + "/m=8,n=8,k=8,dtype=" + dtype},
            {"op", "gemm"},
            {"device", device},
            {"impl", impl},
            {"shape", {{"m", "8"}, {"n", "8"}, {"k", "8"}, {"dtype", dtype}}},
            {"dtype", dtype},
            {"threads", device == "cpu" ? 2 : 0},
            {"status", status}};
  if (device == "cpu") c["shape"]["threads"] = "2";
  if (status != "ok") {
    c["message"] = "no GPU: test";
    return c;
  }
  c["time"] = {{"median_s", seconds}};
  c["gflops"] = 1024 / seconds / 1e9;
  c["transfer_s"] = transfer;
  return c;
}

TEST(Speedup, PicksTheBestOfEachDeviceAndAddsTransfers) {
  const json cases = {make_case("cpu", "naive", "fp32", 1.0),
                      make_case("cpu", "openblas", "fp32", 0.1),
                      make_case("gpu", "cublas", "fp32", 0.01, "ok", 0.04),
                      make_case("gpu", "cublas", "fp16", 0.002, "ok", 0.02)};
  const json s = report::speedup(cases);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0]["shape"], "m=8,n=8,k=8");
  EXPECT_EQ(s[0]["cpu"]["impl"], "openblas");
  EXPECT_EQ(s[0]["gpu"]["dtype"], "fp16");
  EXPECT_DOUBLE_EQ(s[0]["speedup"].get<double>(), 50.0);
  EXPECT_NEAR(s[0]["speedup_with_transfer"].get<double>(), 0.1 / 0.022, 1e-9);
  EXPECT_DOUBLE_EQ(s[0]["speedup_fp32"].get<double>(), 10.0);
}

TEST(Speedup, SaysWhyThereIsNoGpuNumber) {
  const json cases = {make_case("cpu", "openblas", "fp32", 0.1),
                      make_case("gpu", "cublas", "fp32", 0, "skipped")};
  const json s = report::speedup(cases);
  EXPECT_TRUE(s[0]["gpu"].is_null());
  EXPECT_FALSE(s[0].contains("speedup"));
  EXPECT_EQ(s[0]["gpu_missing"], "no GPU: test");
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("no GPU: test"), std::string::npos);
  EXPECT_NE(text.find("openblas"), std::string::npos);
}

TEST(Report, IsAGoogleBenchmarkDocumentWithAPairbenchKey) {
  const json doc = report::build({{"host_name", "x"}}, json::array(), json::array());
  EXPECT_TRUE(doc.contains("context"));
  EXPECT_TRUE(doc["benchmarks"].is_array());
  EXPECT_EQ(doc["pairbench"]["schema_version"], report::kSchemaVersion);
  EXPECT_FALSE(doc["context"].contains("json_schema_version"));
}

TEST(Report, NeverWritesNanOrInfinity) {
  json j = {{"a", NAN}, {"b", INFINITY}};
  const std::string s = j.dump();
  EXPECT_EQ(s.find("nan"), std::string::npos);
  EXPECT_EQ(s.find("inf"), std::string::npos);
  EXPECT_EQ(s.find("NaN"), std::string::npos);
}

std::string temp_path(const char* name) { return ::testing::TempDir() + name; }

TEST(Report, WriteAtomicReplacesTheFileWhole) {
  const std::string p = temp_path("pb_atomic.json");
  report::write_atomic(p, "first");
  report::write_atomic(p, "second");
  std::ifstream f(p);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(s, "second");
  EXPECT_FALSE(std::ifstream(p + ".tmp").good());
  EXPECT_THROW(report::write_atomic("/nonexistent-dir/x.json", "x"), std::runtime_error);
}

TEST(Recover, RebuildsTheReportFromALogWithATornLastLine) {
  const std::string p = temp_path("pb_recover.partial.jsonl");
  {
    report::Log log(p);
    log.append("context", {{"host_name", "x"}});
    log.append("benchmark", {{"name", "gemm/cpu/openblas/m=8/manual_time"}, {"real_time", 1.0}});
    log.append("case", make_case("cpu", "openblas", "fp32", 0.1));
  }
  std::ofstream(p, std::ios::app) << "{\"case\": {\"name\": \"cut sh";  // the crash
  const json doc = report::recover(p);
  EXPECT_EQ(doc["benchmarks"].size(), 1u);
  EXPECT_EQ(doc["pairbench"]["cases"].size(), 1u);
  EXPECT_EQ(doc["context"]["recovered_from"], p);
  EXPECT_EQ(doc["pairbench"]["analyses"]["speedup"][0]["cpu"]["impl"], "openblas");
}

TEST(Recover, RejectsWhatIsNotALog) {
  const std::string p = temp_path("pb_notalog.jsonl");
  std::ofstream(p) << "hello\nworld\n";
  EXPECT_THROW(report::recover(p), std::runtime_error);
  std::ofstream(p) << "{\"case\": {}}\n";
  EXPECT_THROW(report::recover(p), std::runtime_error);  // no context
  EXPECT_THROW(report::recover(temp_path("pb_missing.jsonl")), std::runtime_error);
}

}  // namespace
}  // namespace pb
