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
  c["flops"] = 1024.0;
  c["min_bytes"] = 768.0;
  c["metric"] = "GFLOP/s";
  c["role"] = "compute_reference";
  c["time"] = {{"median_s", seconds}};
  c["gflops"] = 1024 / seconds / 1e9;
  c["gbs"] = 768 / seconds / 1e9;
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

TEST(Speedup, ComparesLikePrecisionWithLike) {
  const json cases = {
      make_case("cpu", "openblas", "fp32", 0.1), make_case("cpu", "onednn", "fp32", 0.08),
      make_case("cpu", "onednn", "bf16", 0.02),  make_case("gpu", "cublas", "fp32", 0.01),
      make_case("gpu", "cublas", "tf32", 0.004), make_case("gpu", "cublas", "bf16", 0.001),
      make_case("gpu", "cublas", "fp16", 0.0009)};
  const json s = report::speedup(cases);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_DOUBLE_EQ(s[0]["speedup_fp32"].get<double>(), 8.0);   // onednn fp32 / cublas fp32
  EXPECT_DOUBLE_EQ(s[0]["speedup_bf16"].get<double>(), 20.0);  // bf16 against bf16
  EXPECT_FALSE(s[0].contains("speedup_fp16"));                 // the CPU ran no fp16
  EXPECT_DOUBLE_EQ(s[0]["speedup_gpu_tf32_vs_cpu_fp32"].get<double>(), 20.0);
  // Best of each device, whatever its dtype, dtype named.
  EXPECT_EQ(s[0]["cpu"]["dtype"], "bf16");
  EXPECT_EQ(s[0]["gpu"]["dtype"], "fp16");
  EXPECT_NEAR(s[0]["speedup"].get<double>(), 0.02 / 0.0009, 1e-9);
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("fp32 8.0x, bf16 20.0x, GPU tf32 vs CPU fp32 20.0x"), std::string::npos)
      << text;
}

TEST(Speedup, SameAlgorithmBesideBestAvailable) {
  const json cases = {
      make_case("cpu", "im2col", "fp32", 0.2), make_case("cpu", "onednn", "fp32", 0.1),
      make_case("gpu", "im2col", "fp32", 0.01), make_case("gpu", "cudnn", "fp32", 0.002)};
  const json s = report::speedup(cases);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_DOUBLE_EQ(s[0]["speedup"].get<double>(), 50.0);  // best available: onednn vs cudnn
  ASSERT_EQ(s[0]["same_algorithm"].size(), 1u);           // im2col on both; onednn/cudnn differ
  EXPECT_EQ(s[0]["same_algorithm"][0]["impl"], "im2col");
  EXPECT_DOUBLE_EQ(s[0]["same_algorithm"][0]["speedup"].get<double>(), 20.0);
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("fp32 im2col vs im2col 20.0x"), std::string::npos) << text;
  EXPECT_FALSE(report::speedup(json::array(
      {make_case("cpu", "im2col", "fp32", 0.2), make_case("gpu", "cudnn", "fp32", 0.01)}))[0]
                   .contains("same_algorithm"));
}

json train_case(const std::string& device, const std::string& impl, int batch, double sps) {
  json c = make_case(device, impl, "fp32", batch / sps);
  c["op"] = "train";
  c["shape"] = {{"model", "mlp"}, {"pass", "train"}, {"batch", std::to_string(batch)}};
  c["role"] = "training";
  c["metric"] = "samples/s";
  c["samples_per_s"] = sps;
  return c;
}

// The projection's energy and dollars: joules per sample times the images; the hours times the
// price; the CPU over the GPU where both have them; the reason where a device was not metered.
TEST(Projection, EnergyAndCostOfAnEpochAndOfTheTraining) {
  json cpu = train_case("cpu", "onednn", 32, 1000);
  json gpu = train_case("gpu", "cublas", 256, 20000);
  cpu["energy"] = {{"status", "ok"},
                   {"joules_per_iter", 3.2},
                   {"mean_power_w", 100.0},
                   {"region_s", 1.0},
                   {"iterations", 31},
                   {"joules_per_sample", 0.1},
                   {"above_idle_joules_per_sample", 0.06}};
  gpu["energy"] = {{"status", "ok"},
                   {"joules_per_iter", 12.8},
                   {"mean_power_w", 500.0},
                   {"region_s", 1.0},
                   {"iterations", 78},
                   {"joules_per_sample", 0.025},
                   {"above_idle_joules_per_sample", 0.02}};
  const json context = {{"epochs", 90}, {"price_usd_per_hour", {{"cpu", 1.0}, {"gpu", 4.0}}}};
  const json p = report::projection(json::array({cpu, gpu}), context);
  const json &pc = p["devices"]["cpu"], &pg = p["devices"]["gpu"];
  const double images = report::kImagenetImages;
  EXPECT_NEAR(pc["epoch_kwh"].get<double>(), 0.1 * images / 3.6e6, 1e-12);
  EXPECT_NEAR(pc["training_kwh"].get<double>(), 90 * 0.1 * images / 3.6e6, 1e-9);
  EXPECT_NEAR(pc["epoch_above_idle_kwh"].get<double>(), 0.06 * images / 3.6e6, 1e-12);
  EXPECT_NEAR(pg["epoch_kwh"].get<double>(), 0.025 * images / 3.6e6, 1e-12);
  EXPECT_NEAR(pc["epoch_usd"].get<double>(), 1.0 * images / 1000 / 3600, 1e-9);
  EXPECT_NEAR(pg["training_usd"].get<double>(), 90 * 4.0 * images / 20000 / 3600, 1e-9);
  // 1000 vs 20000 images/s at $1 vs $4 an hour: the CPU's epoch costs 5x the GPU's.
  EXPECT_NEAR(p["cost_cpu_over_gpu"].get<double>(), 5.0, 1e-9);
  EXPECT_NEAR(p["energy_cpu_over_gpu"].get<double>(), 4.0, 1e-9);
  const std::string text = report::summary(report::build(context, json::array(), {cpu, gpu}));
  EXPECT_NE(text.find("cpu: 0.0356 kWh an epoch, 3.2 kWh the training (100 W); $0.36 an epoch, "
                      "$32.03 the training at $1.00/h"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("an epoch costs 5.00x as much on the CPU as on the GPU"), std::string::npos)
      << text;

  // No meter, no price: no energy, no dollars, and the reason.
  cpu["energy"] = {{"status", "unavailable"}, {"reason", "no RAPL counters"}};
  const json q = report::projection(json::array({cpu, gpu}));
  EXPECT_FALSE(q["devices"]["cpu"].contains("epoch_kwh"));
  EXPECT_EQ(q["devices"]["cpu"]["energy"]["reason"], "no RAPL counters");
  EXPECT_FALSE(q["devices"]["gpu"].contains("epoch_usd"));
  EXPECT_FALSE(q.contains("cost_cpu_over_gpu"));
  EXPECT_FALSE(q.contains("energy_cpu_over_gpu"));
}

// The energy analysis: each meter, the cases metered and their power, the GPU's throttled
// cases, and the CPU's effective clock (or why it is unknown).
TEST(EnergyAnalysis, MetersPowerThrottlingAndClock) {
  json a = make_case("gpu", "cublas", "fp32", 0.01), b = make_case("gpu", "cudnn", "fp32", 0.01),
       c = make_case("cpu", "onednn", "fp32", 0.1);
  a["energy"] = {{"status", "ok"},    {"mean_power_w", 650.0},
                 {"region_s", 0.5},   {"clock_event_reasons", {"sw_power_cap"}},
                 {"throttled", true}, {"held_below_clocks_s", {{"power", 0.2}, {"any", 0.2}}}};
  b["energy"] = {{"status", "ok"},
                 {"mean_power_w", 300.0},
                 {"region_s", 0.5},
                 {"clock_event_reasons", json::array()},
                 {"throttled", false}};
  c["energy"] = {{"status", "unavailable"}, {"reason", "no RAPL counters"}};
  const json context = {
      {"energy",
       {{"cpu", {{"status", "unavailable"}, {"reason", "no RAPL counters"}}},
        {"gpu", {{"status", "ok"}, {"source", "NVML"}, {"idle_power_w", 90.0}}}}},
      {"machine_probes",
       {{{"when", "start"}, {"effective_ghz_unavailable", "perf_event_open(cycles) failed"}}}}};
  const json e = report::energy(json::array({a, b, c}), context);
  const json& g = e["devices"]["gpu"];
  EXPECT_EQ(g["cases_metered"], 2);
  EXPECT_EQ(g["power_w"]["max"], 650.0);
  EXPECT_EQ(g["power_w"]["min"], 300.0);
  ASSERT_EQ(g["throttled_cases"].size(), 1u);
  EXPECT_EQ(g["throttled_cases"][0]["name"], a["name"]);
  EXPECT_EQ(e["devices"]["cpu"]["cases_unmetered"]["no RAPL counters"], 1);
  EXPECT_EQ(e["cpu_effective_clock"]["status"], "unavailable");
  const std::string text = report::summary(report::build(context, json::array(), {a, b, c}));
  EXPECT_NE(text.find("Energy, gpu: idle 90.0 W; 2 cases metered, 300.0-650.0 W"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("the GPU was throttled during 1 case(s): sw_power_cap (1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("Energy, cpu: unavailable (no RAPL counters)"), std::string::npos) << text;
  // Where the cycle counter could be read: the clock before each op family.
  const json clocks =
      report::energy(json::array(), {{"machine_probes",
                                      {{{"when", "start"}, {"effective_ghz", 3.1}},
                                       {{"when", "before gemm"}, {"effective_ghz", 2.7}}}}});
  ASSERT_EQ(clocks["cpu_effective_clock"].size(), 2u);
  EXPECT_EQ(clocks["cpu_effective_clock"][1]["effective_ghz"], 2.7);
}

// The collectives' algbw and busbw by size, as nccl-tests defines them, and their console line.
TEST(Collectives, AlgbwAndBusbwBySize) {
  auto coll = [](const std::string& kind, std::int64_t bytes, double seconds) {
    json c = make_case("cpu", "mpi", "fp32", seconds);
    c["op"] = "collective";
    c["role"] = "collective";
    c["metric"] = "GB/s";
    c["shape"] = {{"coll", kind}, {"bytes", std::to_string(bytes)}, {"ranks", "4"}};
    c["gbs"] = bytes / seconds / 1e9;
    return c;
  };
  const json cases = {coll("allreduce", 1 << 20, 1e-3), coll("allreduce", 4096, 1e-5),
                      coll("allgather", 1 << 20, 1e-3), coll("broadcast", 1 << 20, 1e-3)};
  const json a = report::collectives(cases);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0]["coll"], "allreduce");
  ASSERT_EQ(a[0]["points"].size(), 2u);
  EXPECT_EQ(a[0]["points"][0]["bytes"], 4096);  // sorted by size
  const json& mib = a[0]["points"][1];
  EXPECT_NEAR(mib["algbw_gbs"].get<double>(), 1.048576, 1e-9);
  EXPECT_NEAR(mib["busbw_gbs"].get<double>(), 1.048576 * 2 * 3 / 4, 1e-9);            // 2(n-1)/n
  EXPECT_NEAR(a[1]["points"][0]["busbw_gbs"].get<double>(), 1.048576 * 3 / 4, 1e-9);  // (n-1)/n
  EXPECT_NEAR(a[2]["points"][0]["busbw_gbs"].get<double>(), 1.048576, 1e-9);          // 1
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("Collective, cpu mpi allreduce fp32, 4 ranks (busbw): 4096 B 0.61 GB/s; "
                      "1048576 B 1.57 GB/s;"),
            std::string::npos)
      << text;
}

TEST(Scaling, EfficiencyAgainstTheLocalTwinAndTheRingModel) {
  auto step = [](const std::string& impl, bool local, double seconds) {
    json c = make_case("cpu", impl, "fp32", seconds);
    c["op"] = "train";
    c["role"] = "training";
    c["metric"] = "samples/s";
    c["shape"] = {{"model", "mlp"}, {"batch", "32"}, {"ranks", "2"}};
    if (local) c["shape"]["grads"] = "local";
    c["samples_per_s"] = 64 / seconds;
    c["gradient_bytes"] = 8e6;
    return c;
  };
  json ar = make_case("cpu", "mpi", "fp32", 4e-3);  // 8 MB at 2 GB/s algbw: busbw 2 GB/s
  ar["role"] = "collective";
  ar["metric"] = "GB/s";
  ar["shape"] = {{"coll", "allreduce"}, {"bytes", "8000000"}, {"ranks", "2"}};
  ar["gbs"] = 2.0;
  const json cases = {step("onednn", false, 0.014), step("onednn", true, 0.010),
                      step("onednn_overlap", false, 0.011), ar};
  const json a = report::scaling(cases);
  ASSERT_EQ(a["steps"].size(), 2u);
  const json& plain = a["steps"][0];
  EXPECT_NEAR(plain["efficiency"].get<double>(), 0.010 / 0.014, 1e-12);
  EXPECT_NEAR(plain["reduce_s"].get<double>(), 0.004, 1e-12);
  // ring: 2(n-1)/n x 8 MB / 2 GB/s = 4 ms on top of the local 10 ms
  EXPECT_NEAR(plain["predicted_step_s"].get<double>(), 0.014, 1e-12);
  EXPECT_NEAR(plain["measured_over_predicted"].get<double>(), 1.0, 1e-12);
  const json& overlapped = a["steps"][1];
  EXPECT_TRUE(overlapped["overlapped"].get<bool>());
  EXPECT_NEAR(overlapped["predicted_overlapped_step_s"].get<double>(), 0.010, 1e-12);
  EXPECT_NEAR(overlapped["measured_over_predicted"].get<double>(), 1.1, 1e-12);
  ASSERT_EQ(a["cluster"].size(), 1u);  // one per device and model
  const json& sizes = a["cluster"][0]["sizes"];
  EXPECT_EQ(sizes[3]["ranks"], 8);
  EXPECT_NEAR(sizes[3]["step_s"].get<double>(), 0.010 + 2.0 * 7 / 8 * 8e6 / 2e9, 1e-12);
  EXPECT_NEAR(sizes[3]["samples_per_s"].get<double>(), 8 * 32 / sizes[3]["step_s"].get<double>(),
              1e-9);
  // A user's bus bandwidth replaces the run's own.
  const json given = report::scaling(cases, {{"cluster_busbw_gbs", {{"cpu", 100.0}}}});
  EXPECT_EQ(given["cluster"][0]["busbw_source"], "--busbw");
  // Multi-rank steps stay out of the single-device projection.
  EXPECT_TRUE(report::projection(cases)["devices"].empty());
  // The console gives a cluster's epoch in a readable unit (an epoch of 1,281,167 images at
  // 3,200 samples/s on one device: 6.7 min, not "400.36 s").
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find(" 1: 6.7 min (100%); 8: 1.4 min"), std::string::npos) << text;
}

TEST(BatchSize, BestBatchCrossoverAndProjection) {
  const json cases = {
      train_case("cpu", "openblas", 1, 900),  train_case("cpu", "onednn", 1, 1000),
      train_case("cpu", "onednn", 32, 8000),  train_case("cpu", "onednn", 128, 9000),
      train_case("gpu", "cublas", 1, 500),    train_case("gpu", "cublas", 32, 12000),
      train_case("gpu", "cublas", 128, 40000)};
  const json b = report::batch_size(cases);
  ASSERT_EQ(b["devices"]["cpu"].size(), 3u);
  EXPECT_EQ(b["devices"]["cpu"][0]["impl"], "onednn");  // the best at batch 1
  EXPECT_EQ(b["best_batch"]["cpu"], 128);
  EXPECT_EQ(b["best_batch"]["gpu"], 128);
  EXPECT_EQ(b["crossover_batch"], 32);  // the GPU loses at 1, wins from 32
  EXPECT_EQ(b["devices"]["cpu"][1]["dtype"], "fp32");
  // A series keeps to the model's largest images: a faster batch of smaller ones (--shape) is
  // not the same work.
  json images = json::array();
  for (json c : cases) c["shape"]["image"] = "224", images.push_back(c);
  json small_fast = train_case("cpu", "onednn", 32, 1e6);
  small_fast["shape"]["image"] = "64";
  images.push_back(small_fast);
  const json bi = report::batch_size(images);
  EXPECT_EQ(bi["devices"]["cpu"][1]["samples_per_s"], 8000);
  EXPECT_EQ(bi["devices"]["cpu"][1]["image"], 224);
  EXPECT_FALSE(b.contains("gpu_ahead_at_smallest_batch"));
  // Ahead at every batch both ran: no crossover was measured (the H100 sample's said 32, its
  // smallest batch).
  json ahead = cases;
  ahead[4] = train_case("gpu", "cublas", 1, 5000);
  const json a = report::batch_size(ahead);
  EXPECT_TRUE(a["crossover_batch"].is_null());
  EXPECT_EQ(a["gpu_ahead_at_smallest_batch"], true);
  const json p = report::projection(cases);
  EXPECT_DOUBLE_EQ(p["devices"]["cpu"]["epoch_s"].get<double>(), report::kImagenetImages / 9000);
  EXPECT_EQ(p["devices"]["gpu"]["batch"], 128);
  EXPECT_EQ(p["devices"]["cpu"]["model"], "mlp");
  EXPECT_EQ(p["devices"]["cpu"]["dtype"], "fp32");  // the precision of the step it came from
  EXPECT_NE(p["claim"].get<std::string>().find("week"), std::string::npos);
  // A whole training: 90 epochs, or --epochs (in the context); no figure scaled to ResNet-50.
  EXPECT_EQ(p["epochs"], 90);
  EXPECT_DOUBLE_EQ(p["devices"]["cpu"]["training_h"].get<double>(),
                   90 * p["devices"]["cpu"]["epoch_h"].get<double>());
  EXPECT_DOUBLE_EQ(
      report::projection(cases, {{"epochs", 10}})["devices"]["gpu"]["training_h"].get<double>(),
      10 * p["devices"]["gpu"]["epoch_h"].get<double>());
  EXPECT_NE(p["note"].get<std::string>().find("(mlp), which is not the claim's model"),
            std::string::npos)
      << p["note"];
  json resnet50 = cases;
  for (json& c : resnet50) c["shape"]["model"] = "resnet50", c["shape"]["image"] = "224";
  EXPECT_NE(report::projection(resnet50)["note"].get<std::string>().find(
                "ResNet-50 v1.5, the claim's model; nothing is scaled"),
            std::string::npos);
  // Smaller images beside: the projection keeps to the 224x224 cases, however fast the others.
  json small = train_case("gpu", "cublas", 128, 1e6);
  small["shape"]["model"] = "resnet50", small["shape"]["image"] = "64";
  resnet50.push_back(small);
  EXPECT_EQ(report::projection(resnet50)["devices"]["gpu"]["samples_per_s"], 40000);
  EXPECT_EQ(report::projection(resnet50)["devices"]["gpu"]["image"], 224);
  // Only smaller images: said so, nothing scaled.
  const json only_small = report::projection(json::array({small}));
  EXPECT_EQ(only_small["devices"]["gpu"]["image"], 64);
  EXPECT_NE(only_small["note"].get<std::string>().find(
                "but on 64x64 images, not ImageNet's 224x224: an epoch of these is not the "
                "claim's epoch"),
            std::string::npos)
      << only_small["note"];
  EXPECT_FALSE(p["devices"]["gpu"].contains("end_to_end"));
  json with_copies = cases;  // the end-to-end step is reported beside, never as, the best
  with_copies.push_back(train_case("gpu", "cublas_h2d", 128, 30000));
  with_copies.push_back(train_case("gpu", "cublas_h2d", 32, 10000));
  const json pe = report::projection(with_copies)["devices"]["gpu"];
  EXPECT_EQ(pe["impl"], "cublas");
  EXPECT_DOUBLE_EQ(pe["end_to_end"]["samples_per_s"].get<double>(), 30000);
  EXPECT_EQ(pe["end_to_end"]["batch"], 128);
  EXPECT_NE(report::summary(report::build(json::object(), json::array(), with_copies))
                .find("end to end, the batch copied from host memory"),
            std::string::npos);
  json two_models = cases;  // a heavier model measured too: the projection is made on it
  json cnn = train_case("cpu", "onednn", 32, 500);
  cnn["shape"]["model"] = "cnn";
  cnn["flops"] = 1e9;  // per sample, far more than the synthetic MLP cases' 1024 / batch
  two_models.push_back(cnn);
  EXPECT_EQ(report::projection(two_models)["devices"]["cpu"]["model"], "cnn");
  // The batch series never mix models: the projection's model at the top, each under models.
  const json bm = report::batch_size(two_models);
  EXPECT_EQ(bm["model"], "cnn");
  ASSERT_EQ(bm["devices"]["cpu"].size(), 1u);
  EXPECT_EQ(bm["devices"]["cpu"][0]["samples_per_s"], 500);
  EXPECT_FALSE(bm["devices"].contains("gpu"));
  EXPECT_EQ(bm["models"]["mlp"]["crossover_batch"], 32);
  EXPECT_EQ(bm["models"]["mlp"]["devices"]["cpu"].size(), 3u);
  EXPECT_FALSE(report::projection(two_models)["devices"].contains("gpu"));  // no GPU CNN case
  EXPECT_TRUE(
      report::batch_size(json::array({train_case("cpu", "onednn", 8, 10)}))["crossover_batch"]
          .is_null());
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("Projection: one epoch of ImageNet-1k"), std::string::npos) << text;
  // In a unit that keeps it readable: 1281167 / 9000 s and / 40000 s, not "0.04 h", "0.01 h".
  EXPECT_NE(text.find(" cpu 2.4 min, 90 epochs 3.56 h (mlp, onednn fp32, batch 128"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(" gpu 32.0 s, 90 epochs 48.0 min (mlp, cublas fp32, batch 128"),
            std::string::npos)
      << text;
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

// A problem that ran on neither device (collectives on one rank) says why in cpu_missing, and
// the summary gives one line per op and reason instead of rows of dashes; a training step's
// side says its samples/s.
TEST(Speedup, ProblemsThatRanNowhereAreOneLineEach) {
  json cases = json::array();
  for (const char* m : {"8", "16", "32"}) {
    json c = make_case("cpu", "mpi", "fp32", 0, "skipped");
    c["op"] = "collective";
    c["shape"] = {{"bytes", m}, {"ranks", "1"}};
    c["message"] = "one rank: a collective needs several";
    cases.push_back(c);
    json g = make_case("gpu", "nccl", "fp32", 0, "skipped");
    g["op"] = "collective";
    g["shape"] = c["shape"];
    cases.push_back(g);
  }
  cases.push_back(train_case("cpu", "onednn", 32, 1234.4));
  json conv = make_case("cpu", "onednn", "fp32", 1e-3);  // items too, but its images/s say little
  conv["op"] = "conv";
  conv["samples_per_s"] = 8000.0;
  cases.push_back(conv);
  const json s = report::speedup(cases);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_FALSE(s[4]["cpu"].contains("samples_per_s"));
  EXPECT_EQ(s[0]["cpu_missing"], "one rank: a collective needs several");
  EXPECT_EQ(s[0]["gpu_missing"], "no GPU: test");
  EXPECT_FALSE(s[3].contains("cpu_missing"));
  EXPECT_EQ(s[3]["cpu"]["samples_per_s"], 1234.4);
  const std::string text = report::summary(report::build(json::object(), json::array(), cases));
  EXPECT_NE(text.find("Not run on either device:\n  collective, 3 shapes: one rank: a collective "
                      "needs several\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("collective bytes=8"), std::string::npos) << text;
  EXPECT_NE(text.find("(1234 samples/s, "), std::string::npos) << text;
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
    const json c = make_case("cpu", "openblas", "fp32", 0.1);
    const std::string entry = c["name"].get<std::string>() + "/manual_time";
    log.append("context", {{"host_name", "x"}});
    log.append("benchmark", {{"name", entry}, {"run_name", entry}, {"real_time", 1.0}});
    log.append("case", c);
    // The crash came between the next case's entry and its record: the entry goes.
    const std::string orphan = "gemm/cpu/omp/m=8,n=8,k=8,dtype=fp32/manual_time";
    log.append("benchmark", {{"name", orphan}, {"run_name", orphan}, {"real_time", 1.0}});
  }
  std::ofstream(p, std::ios::app) << "{\"case\": {\"name\": \"cut sh";  // the crash
  const json doc = report::recover(p);
  EXPECT_EQ(doc["benchmarks"].size(), 1u);
  EXPECT_EQ(doc["pairbench"]["cases"].size(), 1u);
  EXPECT_EQ(doc["context"]["recovered_from"], p);
  EXPECT_EQ(doc["pairbench"]["analyses"]["speedup"][0]["cpu"]["impl"], "openblas");
}

TEST(Recover, RebuildsAWholeReportThroughThisVersionsChecks) {
  // A report written before the ceilings: the rebuild labels and checks its records.
  json fast = make_case("gpu", "cublas", "fp32", 1e-6);
  fast["gflops"] = 1e6;
  const json old = report::build({{"host_name", "x"}, {"gpu_l2_bytes", 5e7}}, json::array(),
                                 {make_case("cpu", "openblas", "fp32", 0.1), fast},
                                 {{{"when", "start"}, {"compute_gflops", 100.0}}});
  const std::string p = temp_path("pb_old_report.json");
  json ctx = old["context"];
  ctx["ceilings"] = {{"cpu", json::object()}, {"gpu", {{"fp32", {{"bound", 66900.0}}}}}};
  json with_ceilings = old;
  with_ceilings["context"] = ctx;
  std::ofstream(p) << with_ceilings.dump(2);
  const json doc = report::recover(p);
  EXPECT_EQ(doc["context"]["rebuilt_from"], p);
  EXPECT_EQ(doc["context"]["machine_probes"].size(), 1u);
  EXPECT_TRUE(doc["pairbench"]["cases"][1]["latency_bound"].get<bool>());
  EXPECT_EQ(doc["pairbench"]["cases"][1]["status"], "error");  // 1 PFLOP/s on a 66.9 TFLOP/s part
  EXPECT_EQ(report::impossible_count(doc), 1);
}

// A log whose records are not what pairbench writes is one line naming the file and the line,
// never a report of what it could not have measured.
TEST(Recover, RejectsMalformedRecordsSayingWhere) {
  const std::string p = temp_path("pb_bad_records.jsonl");
  const json ok = make_case("cpu", "openblas", "fp32", 0.1);
  const std::string entry = ok["name"].get<std::string>() + "/manual_time";
  json negative = {{"name", entry}, {"run_name", entry}, {"real_time", -5.0}};
  json no_time = ok;
  no_time["time"]["median_s"] = "fast";
  json odd_status = ok;
  odd_status["status"] = "banana";
  json wrong_type = ok, not_a_number = ok;
  wrong_type["shape"] = "m=8";
  not_a_number["flops"] = "many";
  const std::vector<std::pair<std::vector<json>, std::string>> logs = {
      {{{{"benchmark", negative}}}, ":2: the benchmark entry's real_time is not a number >= 0"},
      {{{{"benchmark", json::object()}}}, ":2: the record has no 'name' string"},
      {{{{"case", no_time}}}, "is ok but has no time.median_s above 0"},
      {{{{"case", odd_status}}}, "has status 'banana'"},
      {{{{"case", ok}}, {{"case", ok}}},
       ":3: case " + ok["name"].get<std::string>() + " is recorded twice"},
      {{{{"case", wrong_type}}}, "a record lacks a field or has one of the wrong type"},
      {{{{"case", not_a_number}}}, "'s flops is not a number"},
  };
  for (const auto& [records, why] : logs) {
    {
      std::ofstream f(p);
      f << json{{"context", {{"host_name", "x"}}}}.dump() << "\n";
      for (const json& r : records) f << r.dump() << "\n";
    }
    try {
      report::recover(p);
      ADD_FAILURE() << "recovered a log that should fail with: " << why;
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(why), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

// A report's references (PyTorch's figures from scripts/reference) and their entries survive a
// rebuild; entries of neither a case nor a reference do not.
TEST(Recover, ARebuildKeepsTheReferences) {
  const json c = make_case("cpu", "openblas", "fp32", 0.1);
  const std::string mine = c["name"].get<std::string>() + "/manual_time",
                    torch = "gemm/cpu/torch/m=8,n=8,k=8,dtype=fp32/manual_time",
                    stray = "gemm/cpu/omp/m=8,n=8,k=8,dtype=fp32/manual_time";
  json doc = report::build({{"host_name", "x"}},
                           {{{"name", mine}, {"run_name", mine}, {"real_time", 1.0}},
                            {{"name", torch}, {"run_name", torch}, {"real_time", 1.0}},
                            {{"name", stray}, {"run_name", stray}, {"real_time", 1.0}}},
                           json::array({c}), json::array());
  EXPECT_EQ(doc["benchmarks"].size(), 1u);  // build keeps the entries of its cases alone
  doc["benchmarks"].push_back({{"name", torch}, {"run_name", torch}, {"real_time", 1.0}});
  json ref_case = json::object(), torch_ref = json::object();
  ref_case["name"] = "gemm/cpu/torch/m=8,n=8,k=8,dtype=fp32";
  torch_ref["cases"] = json::array({ref_case});
  doc["pairbench"]["references"] = json::object({{"torch", torch_ref}});
  const std::string p = temp_path("pb_with_refs.json");
  std::ofstream(p) << doc.dump(2);
  const json back = report::recover(p);
  EXPECT_EQ(back["pairbench"]["references"], doc["pairbench"]["references"]);
  ASSERT_EQ(back["benchmarks"].size(), 2u);
  EXPECT_EQ(back["benchmarks"][1]["name"], torch);
}

TEST(Recover, RejectsWhatIsNotALog) {
  const std::string p = temp_path("pb_notalog.jsonl");
  std::ofstream(p) << "hello\nworld\n";
  EXPECT_THROW(report::recover(p), std::runtime_error);
  std::ofstream(p) << "{\"case\": {}}\n";
  EXPECT_THROW(report::recover(p), std::runtime_error);  // no context
  EXPECT_THROW(report::recover(temp_path("pb_missing.jsonl")), std::runtime_error);
}

json stream_case(const std::string& device, const std::string& kernel, double gbs,
                 const std::string& units_key = "", int units = 0) {
  const double n = 1 << 20, bytes = (kernel == "triad" || kernel == "add" ? 12 : 8) * n;
  json c = {{"name", "stream/" + device + "/x/kernel=" + kernel},
            {"op", "stream"},
            {"device", device},
            {"impl", units_key == "sms" ? "sm_limited"
                     : device == "cpu"  ? "omp"
                                        : "cuda"},
            {"shape", {{"kernel", kernel}, {"n", "1048576"}, {"dtype", "fp32"}}},
            {"dtype", "fp32"},
            {"threads", device == "cpu" ? units : 0},
            {"status", "ok"},
            {"flops", kernel == "triad" ? 2 * n : 0.0},
            {"min_bytes", bytes},
            {"write_allocate_bytes", kernel == "dot" ? 0.0 : 4 * n},
            {"metric", "GB/s"},
            {"role", kernel == "copy" ? "bandwidth_reference" : "bandwidth"},
            {"time", {{"median_s", bytes / gbs / 1e9}}},
            {"gflops", kernel == "triad" ? 2 * n / (bytes / gbs) : 0.0},
            {"gbs", gbs},
            {"transfer_s", 0.0}};
  if (!units_key.empty()) c["shape"][units_key] = std::to_string(units);
  return c;
}

TEST(MemoryBandwidth, BestPerKernelAgainstMeasuredAndTheoreticalPeaks) {
  const json cases = {stream_case("cpu", "copy", 10), stream_case("cpu", "triad", 12, "threads", 1),
                      stream_case("cpu", "triad", 20, "threads", 2),
                      stream_case("gpu", "triad", 1500)};
  const json m = report::memory_bandwidth(cases, {{"gpu_peak_bandwidth_gbs", 2000.0}});
  ASSERT_EQ(m["cpu"]["stream"].size(), 2u);
  EXPECT_EQ(m["cpu"]["measured_ceiling_gbs"], 20.0);
  EXPECT_EQ(m["cpu"]["stream"][1]["kernel"], "triad");
  EXPECT_DOUBLE_EQ(m["cpu"]["stream"][0]["pct_of_best"].get<double>(), 50.0);
  EXPECT_TRUE(m["cpu"]["theoretical_gbs"].is_null());
  EXPECT_TRUE(m["cpu"].contains("theoretical_note"));
  // Triad moves 12 bytes per element; write-allocate adds 4 more.
  EXPECT_NEAR(m["cpu"]["stream"][1]["gbs_with_write_allocate"].get<double>(), 20.0 * 16 / 12, 1e-9);
  EXPECT_DOUBLE_EQ(m["gpu"]["stream"][0]["pct_of_theoretical"].get<double>(), 75.0);
  // A GPU's L2 writes whole lines without reading them: no write-allocate traffic, even where
  // an older record carries some.
  EXPECT_EQ(m["gpu"]["stream"][0]["write_allocate_bytes"], 0.0);
  EXPECT_DOUBLE_EQ(m["gpu"]["stream"][0]["gbs_with_write_allocate"].get<double>(), 1500.0);
}

// Write-allocate traffic that would put a kernel above the memory's bound (checks.cpp's) did
// not happen (its stores bypassed the cache): the analysis does not claim it. validate_report.py
// holds gbs_with_write_allocate to that bound, so a report pairbench wrote must pass it.
TEST(MemoryBandwidth, NoWriteAllocateTrafficAboveTheMemorysBound) {
  const json cases = {stream_case("cpu", "triad", 20, "threads", 2)};
  auto with_bound = [&](double gbs) {
    const json ctx = {{"ceilings", {{"cpu", {{"memory", {{"bound", gbs}}}}}}}};
    return report::memory_bandwidth(cases, ctx)["cpu"]["stream"][0];
  };
  const json counted = with_bound(30);  // 20 * 16 / 12 = 26.7 GB/s with it: possible
  EXPECT_NEAR(counted["gbs_with_write_allocate"].get<double>(), 20.0 * 16 / 12, 1e-9);
  EXPECT_FALSE(counted.contains("write_allocate_note"));
  const json bypassed = with_bound(25);
  EXPECT_DOUBLE_EQ(bypassed["gbs_with_write_allocate"].get<double>(), 20.0);
  EXPECT_EQ(bypassed["write_allocate_bytes"], 0.0);
  EXPECT_NE(bypassed.value("write_allocate_note", "").find("memory's bound"), std::string::npos);
  // Inside the cache, no memory bound holds: its write-allocate traffic is counted.
  json in_cache = cases;
  in_cache[0]["cache_resident"] = true;
  const json ctx = {{"ceilings", {{"cpu", {{"memory", {{"bound", 25.0}}}}}}}};
  const json e = report::memory_bandwidth(in_cache, ctx)["cpu"]["stream"][0];
  EXPECT_NEAR(e["gbs_with_write_allocate"].get<double>(), 20.0 * 16 / 12, 1e-9);
  EXPECT_FALSE(e.contains("write_allocate_note"));
}

TEST(MemoryBandwidth, TransferCurvesWithLatencyAndPeak) {
  auto copy = [](std::int64_t bytes, double seconds) {
    return json{{"op", "transfer"},
                {"role", "transfer"},
                {"metric", "GB/s"},
                {"device", "gpu"},
                {"status", "ok"},
                {"shape", {{"dir", "h2d"}, {"host", "pinned"}, {"bytes", std::to_string(bytes)}}},
                {"time", {{"median_s", seconds}}},
                {"gbs", bytes / seconds / 1e9}};
  };
  const json m = report::memory_bandwidth({copy(1 << 20, 1e-4), copy(4096, 5e-6)}, json::object());
  ASSERT_EQ(m["transfer"].size(), 1u);
  const json& t = m["transfer"][0];
  EXPECT_EQ(t["points"][0]["bytes"], 4096.0);  // sorted by size
  EXPECT_DOUBLE_EQ(t["latency_s"].get<double>(), 5e-6);
  EXPECT_NEAR(t["peak_gbs"].get<double>(), (1 << 20) / 1e-4 / 1e9, 1e-9);
}

TEST(Parallelism, SpeedupAndEfficiencyPerSweep) {
  const json cases = {stream_case("cpu", "triad", 10, "threads", 1),
                      stream_case("cpu", "triad", 15, "threads", 2),
                      stream_case("gpu", "triad", 20, "sms", 1),
                      stream_case("gpu", "triad", 60, "sms", 4),
                      stream_case("gpu", "triad", 1000),
                      stream_case("cpu", "copy", 10)};
  const json p = report::parallelism(cases);
  ASSERT_EQ(p["cpu"].size(), 1u);
  const json& cpu = p["cpu"][0];
  EXPECT_EQ(cpu["metric"], "GB/s");
  EXPECT_DOUBLE_EQ(cpu["points"][1]["speedup"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(cpu["points"][1]["efficiency"].get<double>(), 0.75);
  ASSERT_EQ(p["gpu"].size(), 1u);
  EXPECT_DOUBLE_EQ(p["gpu"][0]["points"][1]["efficiency"].get<double>(), 0.75);
  EXPECT_EQ(p["gpu"][0]["full_occupancy"]["throughput"], 1000.0);
}

// context.ceilings as bench/ceilings.cpp writes it, reduced to what the report reads.
json ceiling(double measured, double bound, double peak = 0) {
  return {{"unit", "GFLOP/s"},
          {"peak", peak > 0 ? json(peak) : json(nullptr)},
          {"peak_source", "test"},
          {"measured", measured > 0 ? json(measured) : json(nullptr)},
          {"measured_source", "test probe"},
          {"bound", bound > 0 ? json(bound) : json(nullptr)},
          {"bound_source", "test bound"}};
}

TEST(Roofline, CeilingsComeFromTheProbesNeverFromASuiteCase) {
  json gemm = make_case("cpu", "openblas", "fp32", 1e-3);
  gemm["flops"] = 2e8;      // 200 GFLOP/s
  gemm["min_bytes"] = 1e6;  // intensity 200
  gemm["gflops"] = 200.0;
  const json cases = {gemm, stream_case("cpu", "triad", 20)};
  const json context = {
      {"ceilings", {{"cpu", {{"fp32", ceiling(250, 500, 400)}, {"memory", ceiling(25, 50)}}}}}};
  const json r = report::roofline(cases, context);
  const json& cpu = r["cpu"];
  EXPECT_EQ(cpu["measured_gflops"], 250.0);  // the probe's, not the suite GEMM's 200
  EXPECT_EQ(cpu["measured_gbs"], 25.0);
  EXPECT_EQ(cpu["theoretical_gflops"], 400.0);
  EXPECT_DOUBLE_EQ(cpu["ridge_intensity"].get<double>(), 10.0);
  ASSERT_EQ(cpu["points"].size(), 2u);
  EXPECT_FALSE(cpu["points"][0]["memory_bound"].get<bool>());  // GEMM, intensity 200
  EXPECT_NEAR(cpu["points"][0]["pct_of_attainable"].get<double>(), 80.0, 1e-9);
  EXPECT_TRUE(cpu["points"][1]["memory_bound"].get<bool>());  // triad, 1/6 FLOP per byte
  EXPECT_NEAR(cpu["points"][1]["pct_of_attainable"].get<double>(), 80.0, 1e-9);
  EXPECT_FALSE(r.contains("gpu"));
  // A report without ceilings falls back to the context's peaks, never to a suite case.
  const json old = report::roofline(cases, {{"cpu_peak_fp32_gflops", 400.0}});
  EXPECT_EQ(old["cpu"]["measured_gflops"], 400.0);
  EXPECT_NEAR(old["cpu"]["points"][0]["pct_of_attainable"].get<double>(), 50.0, 1e-9);
}

TEST(Roofline, EachPointMeetsTheCeilingOfItsOwnDtype) {
  // The GPU's bf16 GEMM runs on tensor cores at 8x its fp32: an fp32 point is judged against
  // the fp32 probe, a bf16 point against the bf16 probe.
  json fp32 = make_case("gpu", "cublas", "fp32", 1e-3),
       bf16 = make_case("gpu", "cublas", "bf16", 1e-3);
  fp32["flops"] = bf16["flops"] = 1e10;
  fp32["min_bytes"] = bf16["min_bytes"] = 1e7;  // intensity 1000
  fp32["gflops"] = 40000.0;
  bf16["gflops"] = 160000.0;
  const json context = {{"ceilings",
                         {{"cpu", json::object()},
                          {"gpu",
                           {{"fp32", ceiling(40000, 60000)},
                            {"bf16", ceiling(320000, 900000)},
                            {"memory", ceiling(2000, 3000)}}}}}};
  const json r = report::roofline({fp32, bf16}, context);
  const json& gpu = r["gpu"];
  EXPECT_EQ(gpu["measured_gflops"], 40000.0);
  EXPECT_EQ(gpu["measured_gflops_by_dtype"]["bf16"], 320000.0);
  const json& points = gpu["points"];  // in the order of the cases
  EXPECT_EQ(points[0]["ceiling_gflops"], 40000.0);
  EXPECT_NEAR(points[0]["pct_of_attainable"].get<double>(), 100.0, 1e-9);
  EXPECT_EQ(points[1]["ceiling_gflops"], 320000.0);
  EXPECT_NEAR(points[1]["pct_of_attainable"].get<double>(), 50.0, 1e-9);
}

TEST(Roofline, APointFasterThanItsProbeStaysAtTheCeilingAndSaysByHowMuch) {
  json gemm = make_case("cpu", "onednn", "fp32", 1e-3);
  gemm["flops"] = 3e8;
  gemm["min_bytes"] = 1e6;
  gemm["gflops"] = 300.0;
  // A memory-bound activation whose working set is in the cache: not held to the memory roof.
  json act = stream_case("cpu", "triad", 60);
  act["cache_resident"] = true;
  const json context = {
      {"ceilings", {{"cpu", {{"fp32", ceiling(250, 500)}, {"memory", ceiling(25, 50)}}}}}};
  const json r = report::roofline({gemm, act}, context);
  const json& pts = r["cpu"]["points"];
  EXPECT_EQ(pts[0]["pct_of_attainable"], 100.0);
  EXPECT_NEAR(pts[0]["beat_measured_ceiling_by"].get<double>(), 0.2, 1e-9);
  EXPECT_TRUE(pts[1]["cache_resident"].get<bool>());
  EXPECT_LT(pts[1]["pct_of_attainable"].get<double>(), 100.0);  // against 250 GFLOP/s alone
  EXPECT_FALSE(pts[1].contains("beat_measured_ceiling_by"));
}

TEST(Checks, AFigureAboveItsCeilingMakesTheCaseAnErrorWithoutATime) {
  json fast = make_case("gpu", "cublas", "fp32", 1e-3), fine = make_case("gpu", "naive", "fp32", 1);
  fast["gflops"] = 70000.0;  // above the bound
  fast["min_bytes"] = 1e9;   // not in the cache
  json copy = stream_case("gpu", "copy", 4000);
  copy["min_bytes"] = 1e9;
  const json context = {
      {"gpu_l2_bytes", 5e7},
      {"ceilings",
       {{"cpu", json::object()},
        {"gpu", {{"fp32", ceiling(50000, 66900)}, {"memory", ceiling(3000, 3352)}}}}}};
  const json benchmarks = {{{"name", fast["name"].get<std::string>() + "/manual_time"},
                            {"run_name", fast["name"].get<std::string>() + "/manual_time"}},
                           {{"name", fine["name"].get<std::string>() + "/manual_time"},
                            {"run_name", fine["name"].get<std::string>() + "/manual_time"}}};
  const json doc = report::build(context, benchmarks, {fast, fine, copy});
  const json& cases = doc["pairbench"]["cases"];
  EXPECT_EQ(cases[0]["status"], "error");
  EXPECT_EQ(cases[0]["above_ceiling"]["ceiling"], "fp32");
  EXPECT_EQ(cases[0]["above_ceiling"]["bound"], 66900.0);
  EXPECT_NE(cases[0]["message"].get<std::string>().find("impossible: 70000.0 GFLOP/s"),
            std::string::npos);
  EXPECT_EQ(cases[1]["status"], "ok");
  EXPECT_EQ(cases[2]["above_ceiling"]["ceiling"], "memory");
  EXPECT_EQ(report::impossible_count(doc), 2);
  ASSERT_EQ(doc["benchmarks"].size(), 1u);  // no time is left for CI tools to read
  EXPECT_EQ(doc["benchmarks"][0]["run_name"], fine["name"].get<std::string>() + "/manual_time");
}

// A case that failed after timing some repetitions (a later repetition threw, the ranks timed
// different iterations) had those repetitions and their aggregates left in `benchmarks`, where
// CI tools read them as its time; what --keep-error-entries keeps (error_occurred, no time) stays.
TEST(Report, ACaseThatFailedLeavesNoTimedEntryBehind) {
  json failed = make_case("cpu", "omp", "fp32", 1e-3), fine = make_case("cpu", "naive", "fp32", 1);
  failed["status"] = "error";
  failed["message"] = "repetition 2: injected";
  auto entry = [](const json& c, const char* type, bool error = false) {
    json e = {{"name", c["name"].get<std::string>() + "/manual_time"},
              {"run_name", c["name"].get<std::string>() + "/manual_time"},
              {"run_type", type}};
    if (error) e["error_occurred"] = true;
    return e;
  };
  const json benchmarks = {entry(failed, "iteration"), entry(failed, "iteration", true),
                           entry(failed, "aggregate"), entry(fine, "iteration"),
                           entry(fine, "aggregate")};
  const json doc = report::build(json::object(), benchmarks, {failed, fine});
  ASSERT_EQ(doc["benchmarks"].size(), 3u);
  EXPECT_EQ(doc["benchmarks"][0], benchmarks[1]);  // the failed repetition, without a time
  EXPECT_EQ(doc["benchmarks"][1], benchmarks[3]);
  EXPECT_EQ(doc["benchmarks"][2], benchmarks[4]);
}

// A convolution computed by Winograd or FFT does fewer multiplications than the direct form
// its FLOPs count: its effective rate is labelled and held to no compute ceiling; the same
// figure by an algorithm that does them all is impossible.
TEST(Checks, AWinogradConvolutionsEffectiveRateIsLabelledNotImpossible) {
  json wino = make_case("gpu", "cudnn", "fp32", 1e-3), direct = wino;
  wino["op"] = direct["op"] = "conv";
  wino["gflops"] = direct["gflops"] = 80000.0;
  wino["min_bytes"] = direct["min_bytes"] = 1e9;
  wino["impl_detail"] = "cudnn 91400: winograd_nonfused, fma math, workspace 28311552";
  direct["impl_detail"] = "cudnn 91400: implicit_precomp_gemm, fma math, workspace 0";
  const json context = {{"gpu_l2_bytes", 5e7},
                        {"ceilings", {{"gpu", {{"fp32", ceiling(50000, 66900)}}}}}};
  const json c = report::checked_cases({wino, direct}, context);
  EXPECT_EQ(c[0]["status"], "ok");
  EXPECT_TRUE(c[0]["effective_flops"].get<bool>());
  EXPECT_EQ(c[1]["status"], "error");
  EXPECT_FALSE(c[1].contains("effective_flops"));
}

TEST(Checks, TheCpuMemoryBoundRestsOnTheBestProbeOfTheRun) {
  // The ceiling probe ran while the memory was slow (20 GB/s bound); the machine probes saw 15
  // GB/s of copy later, and a STREAM case 25 GB/s: a fast moment, not an impossible figure.
  json triad = stream_case("cpu", "triad", 25, "threads", 2);
  triad["min_bytes"] = 1e9;
  json mem = ceiling(10, 20);
  mem["unit"] = "GB/s";
  const json context = {{"cpu_l3_bytes", 1e8}, {"ceilings", {{"cpu", {{"memory", mem}}}}}};
  const json probes = {{{"when", "start"}, {"copy_gbs", 15.0}, {"compute_gflops", 100.0}}};
  const json doc = report::build(context, json::array(), json::array({triad}), probes);
  EXPECT_EQ(doc["pairbench"]["cases"][0]["status"], "ok");
  EXPECT_EQ(doc["context"]["ceilings"]["cpu"]["memory"]["bound"], 30.0);
  // Without the probes, the same figure is above the bound.
  EXPECT_EQ(report::impossible_count(report::build(context, json::array(), json::array({triad}))),
            1);
}

TEST(Checks, LabelsLatencyBoundAndCacheResidentCases) {
  json tiny = make_case("gpu", "cublas", "fp32", 5e-6),
       big = make_case("gpu", "cublas", "fp32", 1e-3);
  big["min_bytes"] = 1e9;
  json one_thread = make_case("cpu", "naive", "fp32", 5e-6);
  one_thread["threads"] = 1;
  const json context = {{"gpu_l2_bytes", 5e7}, {"cpu_l3_bytes", 1e8}};
  const json c = report::checked_cases({tiny, big, one_thread}, context);
  EXPECT_TRUE(c[0]["latency_bound"].get<bool>());
  EXPECT_TRUE(c[0]["cache_resident"].get<bool>());  // 768 bytes
  EXPECT_FALSE(c[1]["latency_bound"].get<bool>());
  EXPECT_FALSE(c[1]["cache_resident"].get<bool>());
  EXPECT_FALSE(c[2]["latency_bound"].get<bool>());  // no launch, no fork-join on one thread
  // --cold flushes the cache before each iteration: nothing is resident.
  json cold = context;
  cold["cold_cache"] = true;
  EXPECT_FALSE(report::checked_cases(json::array({tiny}), cold)[0]["cache_resident"].get<bool>());
  // A copy between host and device crosses the link whatever its size; one on the device may
  // stay in its L2.
  json h2d = tiny, d2d = tiny;
  h2d["role"] = d2d["role"] = "transfer";
  h2d["shape"]["dir"] = "h2d", d2d["shape"]["dir"] = "d2d";
  const json copies = report::checked_cases({h2d, d2d}, context);
  EXPECT_FALSE(copies[0]["cache_resident"].get<bool>());
  EXPECT_TRUE(copies[1]["cache_resident"].get<bool>());
}

TEST(Speedup, SetsApartWhatMeansLessAndMarksAThrottledHost) {
  json cpu = stream_case("cpu", "copy", 10, "threads", 2), gpu = stream_case("gpu", "copy", 1000);
  gpu["cache_resident"] = true;
  json act = make_case("cpu", "openblas", "fp32", 1e-3),
       act_gpu = make_case("gpu", "cublas", "fp32", 1e-4);
  act["op"] = act_gpu["op"] = "conv";
  const json probes = {{{"when", "start"}, {"compute_gflops", 100.0}},
                       {{"when", "before stream"}, {"compute_gflops", 90.0}},
                       {{"when", "before conv"}, {"compute_gflops", 30.0}}};
  const json rows = report::speedup({cpu, gpu, act, act_gpu}, probes);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["apart"], json::array({"cache_resident"}));
  EXPECT_FALSE(rows[0].contains("host_throttled"));
  EXPECT_FALSE(rows[1].contains("apart"));
  EXPECT_DOUBLE_EQ(rows[1]["host_throttled"]["fraction"].get<double>(), 0.3);
  const std::string text = report::summary(report::build(
      {{"ceilings", {{"cpu", json::object()}}}}, json::array(), {cpu, gpu, act, act_gpu}, probes));
  EXPECT_NE(text.find("Apart: figures that mean less"), std::string::npos) << text;
  EXPECT_NE(text.find("30% of the run's best 100"), std::string::npos) << text;
}

// Each family is probed before its first case; with random interleaving it may be probed
// again, and the slowest of its probes decides. The CPU's epoch carries the training family's
// mark, as its speedups do.
TEST(Speedup, AThrottledHostMarksTheFamilysSlowestProbeAndTheCpusEpoch) {
  json cpu = train_case("cpu", "onednn", 32, 1000), gpu = train_case("gpu", "cublas", 32, 9000);
  const json probes = {{{"when", "start"}, {"compute_gflops", 100.0}},
                       {{"when", "before train"}, {"compute_gflops", 95.0}},
                       {{"when", "before gemm"}, {"compute_gflops", 90.0}},
                       {{"when", "before train"}, {"compute_gflops", 20.0}}};
  const json rows = report::speedup({cpu, gpu}, probes);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0]["host_throttled"]["fraction"].get<double>(), 0.2);
  const json doc = report::build(json::object(), json::array(), {cpu, gpu}, probes);
  const json& epoch = doc["pairbench"]["analyses"]["projection"]["devices"];
  EXPECT_FALSE(epoch["gpu"].contains("host_throttled"));
  ASSERT_TRUE(epoch["cpu"].contains("host_throttled"));
  const std::string note = epoch["cpu"]["host_throttled"]["note"];
  EXPECT_EQ(note,
            "the CPU probe before train read 20 GFLOP/s, 20% of the run's best 100: this epoch "
            "was measured on a slowed host");
  EXPECT_NE(report::summary(doc).find("[" + note + "]"), std::string::npos);
  // A steady host marks nothing.
  const json steady =
      report::build(json::object(), json::array(), {cpu, gpu}, json::array({probes[0], probes[1]}));
  EXPECT_FALSE(
      steady["pairbench"]["analyses"]["projection"]["devices"]["cpu"].contains("host_throttled"));
}

// Under mpirun every training step runs over the ranks: no one-device epoch, and the note says
// why (it used to say ResNet-50 did not run).
TEST(Projection, StepsOverSeveralRanksAreLeftToTheScalingAnalysis) {
  json step = train_case("cpu", "onednn", 32, 1000);
  step["shape"]["model"] = "resnet50", step["shape"]["ranks"] = "2";
  const json p = report::projection(json::array({step}));
  EXPECT_TRUE(p["devices"].empty());
  EXPECT_NE(p["note"].get<std::string>().find(
                "no training step ran on one device (this run's ran over several ranks"),
            std::string::npos)
      << p["note"];
  EXPECT_EQ(p["note"].get<std::string>().find("did not run"), std::string::npos) << p["note"];
}

// A figure of several ranks is every rank's together: its roofline point is one rank's share,
// held to one device's ceiling (8 ranks at half their ceiling read 50%, not 400%).
TEST(Roofline, APointOfSeveralRanksIsOneRanksShare) {
  json gemm = make_case("cpu", "openblas", "fp32", 1e-3);
  gemm["flops"] = 1e9;
  gemm["min_bytes"] = 1e6;
  gemm["gflops"] = 1000.0;
  gemm["shape"]["ranks"] = "8";
  const json context = {{"ceilings", {{"cpu", {{"fp32", ceiling(250, 500, 400)}}}}}};
  const json r = report::roofline(json::array({gemm}), context);
  const json& point = r["cpu"]["points"][0];
  EXPECT_DOUBLE_EQ(point["gflops"].get<double>(), 125.0);
  EXPECT_DOUBLE_EQ(point["pct_of_attainable"].get<double>(), 50.0);
  EXPECT_EQ(point["ranks"], 8);
  EXPECT_FALSE(point.contains("beat_measured_ceiling_by"));
}

TEST(Sweeps, AnyAxisInTheCasesOwnMetric) {
  // A batch sweep in samples/s, as the training step will have: one analysis serves every axis.
  auto step = [](int batch, double samples_per_s) {
    json c = make_case("cpu", "mlp", "fp32", batch / samples_per_s);
    c["op"] = "train";
    c["shape"] = {{"model", "mlp"}, {"batch", std::to_string(batch)}, {"threads", "2"}};
    c["metric"] = "samples/s";
    c["samples_per_s"] = samples_per_s;
    return c;
  };
  const json s = report::sweeps({step(8, 1000), step(1, 200), step(32, 2400)}, "cpu", "batch");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0]["metric"], "samples/s");
  EXPECT_EQ(s[0]["unit"], "batch");
  EXPECT_EQ(s[0]["shape"], "model=mlp,threads=2");
  EXPECT_EQ(s[0]["points"][0]["batch"], 1);  // sorted by the axis
  EXPECT_DOUBLE_EQ(s[0]["points"][2]["speedup"].get<double>(), 12.0);
  EXPECT_DOUBLE_EQ(s[0]["points"][2]["efficiency"].get<double>(), 12.0 / 32);
}

TEST(Speedup, LeavesOutWorkWithoutACpuSide) {
  json copy = make_case("gpu", "memcpy", "fp32", 1e-3);
  copy["op"] = "transfer";
  EXPECT_TRUE(report::speedup(json::array({copy})).empty());
}

TEST(MachineDrift, ASteadyMachineSaysNothing) {
  const json probes = {{{"when", "start"}, {"copy_gbs", 20.0}, {"compute_gflops", 300.0}},
                       {{"when", "end"}, {"copy_gbs", 19.0}, {"compute_gflops", 290.0}}};
  const json d = report::machine_drift(probes);
  EXPECT_FALSE(d["changed"].get<bool>());
  EXPECT_NEAR(d["copy_gbs"]["spread"].get<double>(), 0.05, 1e-12);
  EXPECT_EQ(report::drift_warning(d), "");
}

TEST(MachineDrift, BandwidthHalvingUnderTheRunIsOneWarning) {
  // STREAM copy as measured minutes apart on a shared VM here: 22.4 and 9.0 GB/s.
  const json probes = {{{"when", "start"}, {"copy_gbs", 22.4}, {"compute_gflops", 300.0}},
                       {{"when", "before stream"}, {"copy_gbs", 9.0}, {"compute_gflops", 301.0}},
                       {{"when", "end"}, {"copy_gbs", 9.5}, {"compute_gflops", 299.0}}};
  const json d = report::machine_drift(probes);
  EXPECT_TRUE(d["changed"].get<bool>());
  EXPECT_EQ(d["probes"], 3);
  const std::string w = report::drift_warning(d);
  EXPECT_EQ(w.rfind("warning: the machine changed speed", 0), 0u) << w;
  EXPECT_NE(w.find("9.0-22.4 GB/s"), std::string::npos) << w;
  EXPECT_EQ(w.find('\n'), std::string::npos);  // one line
  // The report carries probes and drift in its context.
  const json doc = report::build(json::object(), json::array(), json::array(), probes);
  EXPECT_EQ(doc["context"]["machine_probes"].size(), 3u);
  EXPECT_TRUE(doc["context"]["machine_drift"]["changed"].get<bool>());
}

TEST(MachineDrift, OneProbeIsNoDrift) {
  const json one = {{{"when", "start"}, {"copy_gbs", 20.0}, {"compute_gflops", 300.0}}};
  EXPECT_FALSE(report::machine_drift(one)["changed"].get<bool>());
  EXPECT_FALSE(report::machine_drift(json::array())["changed"].get<bool>());
}

}  // namespace
}  // namespace pb
