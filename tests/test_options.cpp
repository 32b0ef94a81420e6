// Command-line parsing and case building: every bad input is a UsageError (exit code 2).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "bench/cases.hpp"
#include "bench/options.hpp"
#include "bench/progress.hpp"
#include "bench/ranks.hpp"
#include "core/gemm.hpp"
#include "cpu_ref/cpu.hpp"
#include "core/train_step.hpp"
#include "bench/ops/family.hpp"

namespace pb {
namespace {

Options parse(std::vector<std::string> args) {
  args.insert(args.begin(), "pairbench");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

Resources no_gpu() {
  Resources r;
  r.gpu_reason = "test machine";
  r.host_available_bytes = 8e9;
  r.cores = 2;
  return r;
}

TEST(Options, ParsesLists) {
  const Options o = parse({"--suite=quick", "--devices=cpu", "--threads=1,2", "--dtypes=fp32,bf16",
                           "--impls=openblas,gpu/naive", "--shape=m=4,n=5,k=6", "--cold"});
  EXPECT_EQ(o.suite, "quick");
  EXPECT_EQ(o.devices, std::vector<Device>{Device::cpu});
  EXPECT_EQ(o.threads, (std::vector<int>{1, 2}));
  EXPECT_EQ(o.dtypes.size(), 2u);
  EXPECT_EQ(o.shapes.size(), 1u);
  EXPECT_TRUE(o.cold);
  EXPECT_EQ(o.epochs, 90);  // torchvision's recipe, without --epochs
  EXPECT_EQ(parse({"--epochs=30"}).epochs, 30);
  EXPECT_LT(o.price_cpu, 0);  // no price unless given: the report then has no dollars
  EXPECT_LT(o.price_gpu, 0);
  const Options priced = parse({"--price=cpu=0.85,gpu=3.2"});
  EXPECT_DOUBLE_EQ(priced.price_cpu, 0.85);
  EXPECT_DOUBLE_EQ(priced.price_gpu, 3.2);
  EXPECT_DOUBLE_EQ(parse({"--price=gpu=0"}).price_gpu, 0.0);
  EXPECT_LT(parse({"--price=gpu=0"}).price_cpu, 0);
}

TEST(Options, RejectsBadInput) {
  for (const char* bad : {"--frobnicate",
                          "--suite=huge",
                          "--suite",
                          "--devices=tpu",
                          "--threads=0",
                          "--threads=-1",
                          "--threads=two",
                          "--threads=1,,2",
                          "--dtypes=fp64",
                          "--list=yes",
                          "--shape=m",
                          "--shape=",
                          "positional",
                          "--benchmark_nonsense=1",
                          "--epochs=0",
                          "--epochs=ten",
                          "--epochs",
                          "--price=cpu=-1",
                          "--price=cpu=x",
                          "--price=cpu=inf",
                          "--price=cpu=",
                          "--price=tpu=1",
                          "--price=1",
                          "--price=cpu=1.5.2",
                          "--price=cpu=1,cpu=2"}) {
    EXPECT_THROW(parse({bad}), UsageError) << bad;
  }
  EXPECT_FALSE(std::signbit(parse({"--price=cpu=-0"}).price_cpu));
}

// Google Benchmark reads BENCHMARK_REPETITIONS where --benchmark_repetitions is not given: a
// bad value there ran nothing and exited 0.
TEST(Options, GoogleBenchmarksVariablesAreCheckedAsItsFlags) {
  std::string exe = "pairbench", reps = "--benchmark_repetitions=2",
              out = "--benchmark_out=/tmp/line.json";
  char* bare[] = {exe.data(), nullptr};
  char* with_reps[] = {exe.data(), reps.data(), nullptr};
  char* with_out[] = {exe.data(), out.data(), nullptr};
  setenv("BENCHMARK_REPETITIONS", "0", 1);
  const std::string why = check_benchmark_flags(1, bare);
  EXPECT_NE(why.find("BENCHMARK_REPETITIONS"), std::string::npos) << why;
  EXPECT_EQ(check_benchmark_flags(2, with_reps), "");  // the command line's value wins
  unsetenv("BENCHMARK_REPETITIONS");
  EXPECT_EQ(check_benchmark_flags(1, bare), "");
  setenv("BENCHMARK_OUT", "/tmp/variable.json", 1);
  EXPECT_EQ(benchmark_flag(1, bare, "--benchmark_out"), "/tmp/variable.json");
  EXPECT_EQ(benchmark_flag(2, with_out, "--benchmark_out"), "/tmp/line.json");
  unsetenv("BENCHMARK_OUT");
  EXPECT_EQ(benchmark_flag(1, bare, "--benchmark_out"), "");
}

// Each suite's default min time, where the user gives none; a --shape run keeps Google
// Benchmark's 0.5 s whatever --suite says (--suite=quick --shape=... took the quick suite's).
TEST(Options, TheSuitesMinTimeIsADefaultTheUserOverrides) {
  auto min_time = [](std::vector<std::string> args) {
    args.insert(args.begin(), "pairbench");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return default_min_time(static_cast<int>(args.size()), argv.data());
  };
  EXPECT_EQ(min_time({}), "--benchmark_min_time=0.25");
  EXPECT_EQ(min_time({"--suite=standard"}), "--benchmark_min_time=0.25");
  EXPECT_EQ(min_time({"--suite=quick"}), "--benchmark_min_time=0.1");
  EXPECT_EQ(min_time({"--suite=full"}), "");
  EXPECT_EQ(min_time({"--suite=quick", "--ops=gemm", "--shape=m=8,n=8,k=8"}), "");
  EXPECT_EQ(min_time({"--ops=gemm", "--shape=m=8,n=8,k=8"}), "");
  EXPECT_EQ(min_time({"--suite=quick", "--benchmark_min_time=2"}), "");
  setenv("BENCHMARK_MIN_TIME", "2", 1);
  EXPECT_EQ(min_time({"--suite=quick"}), "");
  unsetenv("BENCHMARK_MIN_TIME");
}

// The report goes in by a rename: a device, pipe, link or folder at its path (or at its
// temporary file's) would be replaced (--report=/dev/null replaced /dev/null).
TEST(Options, TheReportReplacesOnlyAFile) {
  const std::string dir = ::testing::TempDir() + "pb_report_paths/";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "t.json.tmp");
  std::ofstream(dir + "old.json") << "{}";
  ASSERT_EQ(mkfifo((dir + "fifo.json").c_str(), 0600), 0);
  std::filesystem::create_symlink("old.json", dir + "link.json");
  EXPECT_EQ(report_path_problem(dir + "new.json"), "");
  EXPECT_EQ(report_path_problem(dir + "old.json"), "");
  EXPECT_NE(report_path_problem(dir + "fifo.json").find("a device, pipe or socket"),
            std::string::npos);
  EXPECT_NE(report_path_problem(dir + "link.json").find("a symbolic link"), std::string::npos);
  EXPECT_NE(report_path_problem(dir + "t.json").find("t.json.tmp is a directory"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Cases, NamesAreStableAndCarryThreadsOnTheCpu) {
  const auto cases = build_cases(parse({"--suite=quick", "--threads=1,2"}), no_gpu());
  bool saw = false;
  for (const auto& c : cases) {
    if (c.name == "gemm/cpu/openblas/m=256,n=256,k=256,dtype=fp32,threads=2") {
      saw = true;
      EXPECT_EQ(c.skip, "");
    }
    if (c.impl.device == Device::gpu)
      EXPECT_EQ(c.skip, "no GPU: test machine") << c.name;
    else if (c.impl.unavailable)
      // oneDNN's bf16 and fp16 run where this CPU has the instructions (not on an AVX2-only
      // EPYC, say); elsewhere the case is skipped with its implementation's reason, no other.
      EXPECT_EQ(c.skip, c.impl.unavailable(*c.workload)) << c.name;
    else
      EXPECT_EQ(c.skip, "") << c.name;
  }
  EXPECT_TRUE(saw);
}

TEST(Cases, NaiveCpuLeavesLargeShapesOutUnlessNamed) {
  auto has_naive = [](const std::vector<Case>& cases) {
    for (const auto& c : cases)
      if (c.impl.name == "naive" && c.impl.device == Device::cpu) return true;
    return false;
  };
  EXPECT_FALSE(
      has_naive(build_cases(parse({"--shape=m=4096,n=4096,k=4096", "--ops=gemm"}), no_gpu())));
  EXPECT_TRUE(has_naive(build_cases(
      parse({"--shape=m=4096,n=4096,k=4096", "--ops=gemm", "--impls=cpu/naive"}), no_gpu())));
}

TEST(Cases, RejectsUnknownNamesImpossibleShapesAndTooLittleMemory) {
  auto bad = [](std::vector<std::string> args) {
    EXPECT_THROW(build_cases(parse(args), no_gpu()), UsageError);
  };
  bad({"--ops=conv9d"});
  bad({"--impls=magic"});
  bad({"--shape=m=0,n=4,k=4", "--ops=gemm"});
  bad({"--shape=m=4,n=4", "--ops=gemm"});
  bad({"--shape=m=100000,n=100000,k=100000", "--ops=gemm"});  // 120 GB of host memory
  try {
    build_cases(parse({"--shape=m=100000,n=100000,k=100000", "--ops=gemm"}), no_gpu());
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos);
  }
}

// A suite's case this machine cannot hold is listed as skipped, saying why; the rest run.
TEST(Cases, SuiteCasesTooBigForTheMachineAreSkipped) {
  Resources r = no_gpu();
  r.host_available_bytes = 8e9;  // ResNet-50 trains at batch 8 on 224x224 in it, not at 32
  const auto cases = build_cases(parse({"--suite=full", "--ops=train", "--devices=cpu"}), r);
  int big = 0, small = 0;
  for (const auto& c : cases) {
    // fp32 only: a CPU without bf16 skips those cases for that reason first.
    if (c.name.find("dtype=fp32") == std::string::npos) continue;
    if (c.name.find("model=resnet50,pass=train,batch=32,") != std::string::npos) {
      ++big;
      EXPECT_NE(c.skip.find("this machine is too small: needs"), std::string::npos) << c.skip;
      EXPECT_NE(c.skip.find("of host memory"), std::string::npos) << c.skip;
    }
    if (c.name.find("model=resnet50,pass=train,batch=8,") != std::string::npos) {
      ++small;
      EXPECT_EQ(c.skip.find("too small"), std::string::npos) << c.skip;
    }
  }
  EXPECT_GT(big, 0);
  EXPECT_GT(small, 0);
}

// ResNet-50's batches in the suites, on a machine that holds them all: the standard suite on
// 224x224 at batch 8 and 32 on both devices and 256 on the GPU alone; the full one from batch 1
// to 256 on both devices.
TEST(Cases, ResNet50RunsAtTheSuitesBatchesOnEachDevice) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.gpu_free_bytes = 1e12;
  r.gpu_l2_bytes = 50e6;
  r.gpu_sms = 132;
  r.host_available_bytes = 1e13;
  auto batches = [&r](const std::string& suite, const std::string& device,
                      const std::string& pass) {
    std::set<std::int64_t> out;
    const Options o = parse(
        {"--suite=" + suite, "--ops=train", "--dtypes=fp32", "--devices=" + device, "--threads=2"});
    for (const Case& c : build_cases(o, r)) {
      const auto at = c.name.find("model=resnet50,pass=" + pass + ",batch=");
      if (at == std::string::npos) continue;
      EXPECT_EQ(c.name.find("image=64"), std::string::npos);  // 224x224 beyond the quick suite
      out.insert(std::stoll(c.name.substr(c.name.find("batch=", at) + 6)));
    }
    return out;
  };
  using Batches = std::set<std::int64_t>;
  EXPECT_EQ(batches("standard", "cpu", "train"), (Batches{8, 32}));
  EXPECT_EQ(batches("standard", "gpu", "train"), (Batches{8, 32, 256}));
  EXPECT_EQ(batches("standard", "gpu", "infer"), (Batches{8, 32, 256}));
  for (const char* device : {"cpu", "gpu"}) {
    EXPECT_EQ(batches("full", device, "train"), (Batches{1, 8, 32, 64, 128, 256})) << device;
    EXPECT_EQ(batches("full", device, "infer"), (Batches{1, 8, 32, 64, 128, 256})) << device;
  }
}

// Host memory is counted with headroom for what no count sees (the process, its libraries'
// scratch, the allocator): ResNet-50's CPU step at batch 128 on 224x224, counted below a
// 22.9 GiB VM's available memory without it, was killed there by the kernel; at batch 96 it ran.
// Since the walk writes its ReLUs and residual adds in place and shares gradient buffers, batch
// 200 is counted at 20.2 GiB and fits there; batch 216, counted at 21.7 GiB, would fit but for
// the headroom.
TEST(Cases, HostMemoryKeepsHeadroom) {
  Resources r = no_gpu();
  r.host_available_bytes = 16.0 * (1u << 30);
  const double headroom = host_headroom(r);
  EXPECT_DOUBLE_EQ(headroom, 512.0 * (1 << 20) + 0.05 * r.host_available_bytes);
  EXPECT_TRUE(fits_host(r.host_available_bytes - headroom, r));
  EXPECT_FALSE(fits_host(r.host_available_bytes - headroom + 1e6, r));
  r.host_available_bytes = 22.87 * (1u << 30);
  auto resnet50 = [&r](const std::string& batch) {
    return build_cases(parse({"--shape=model=resnet50,batch=" + batch, "--ops=train",
                              "--devices=cpu", "--impls=onednn", "--dtypes=fp32"}),
                       r);
  };
  EXPECT_THROW(resnet50("216"), UsageError);
  EXPECT_NO_THROW(resnet50("200"));
  r.host_available_bytes += 0.05 * r.host_available_bytes + 512.0 * (1 << 20);
  EXPECT_NO_THROW(resnet50("216"));
}

TEST(Cases, ChecksGpuMemoryBeforeAllocating) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.gpu_free_bytes = 1e6;
  r.host_available_bytes = 1e12;
  EXPECT_THROW(
      build_cases(parse({"--shape=m=1000,n=1000,k=1000", "--ops=gemm", "--devices=gpu"}), r),
      UsageError);
}

TEST(Cases, GpuMemoryCountsWorkspaceFlushAndHeadroom) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.host_available_bytes = 1e12;
  r.gpu_l2_bytes = 50e6;  // an H100's L2
  // 1024^3 fp32: A, B and C are 12 MiB; cuBLAS adds 64 MiB of workspace; the headroom 256 MiB
  // and 5% of what is free.
  const auto gemm = parse({"--shape=m=1024,n=1024,k=1024", "--ops=gemm", "--devices=gpu",
                           "--impls=cublas", "--dtypes=fp32"});
  const GemmWorkload w(GemmShape{1024, 1024, 1024});
  const ImplSpec cublas = ops::gemm_family().impls.back();
  EXPECT_DOUBLE_EQ(gpu_bytes_needed(w, cublas, r, false), w.device_bytes() + 64.0 * (1 << 20));
  EXPECT_DOUBLE_EQ(gpu_bytes_needed(w, cublas, r, true),
                   w.device_bytes() + 64.0 * (1 << 20) + 100e6);  // + twice the L2
  r.gpu_free_bytes = 300e6;  // the operands fit, with workspace and headroom they do not
  EXPECT_LT(w.device_bytes(), r.gpu_free_bytes);
  EXPECT_THROW(build_cases(gemm, r), UsageError);
  r.gpu_free_bytes = 400e6;
  EXPECT_NO_THROW(build_cases(gemm, r));
  auto cold = gemm;
  cold.cold = true;  // the flush buffer no longer fits
  EXPECT_THROW(build_cases(cold, r), UsageError);
}

// ResNet-50 at batch 256 on 224x224, the GPU target's case, in every dtype fits an 80 GB GPU
// (an H100's, about 79 GiB free): the check counts what the step allocates (the walk's buffers,
// 26 GB in fp32 and 13 GB in 16 bits), where it had counted three fp32 copies of every
// activation (116 GB in any dtype) and refused the case. Batch 512 fits in fp32; 1024 does not.
TEST(Cases, ResNet50AtTheGpusBatchFitsAnH100) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.host_available_bytes = 1e12;
  r.gpu_l2_bytes = 50e6;
  r.gpu_free_bytes = 79.0 * (1u << 30);
  double bytes[2] = {};
  for (Dtype t : {Dtype::fp32, Dtype::tf32, Dtype::bf16, Dtype::fp16}) {
    const std::string d = to_string(t);
    EXPECT_NO_THROW(build_cases(parse({"--shape=model=resnet50,batch=256", "--ops=train",
                                       "--devices=gpu", "--impls=cudnn", "--dtypes=" + d}),
                                r))
        << d;
    TrainShape s;
    s.model = "resnet50", s.batch = 256, s.image = 224, s.dtype = t;
    const TrainWorkload w(s);
    const bool low = input_bytes(t) == 2;
    const double walk = walk_bytes(w.model(), s, low, Device::gpu);
    EXPECT_GT(w.device_bytes(), walk) << d;  // and the case's own buffers
    EXPECT_LT(w.device_bytes(), walk + 1.2e9) << d;
    bytes[low] = w.device_bytes();
  }
  EXPECT_GT(bytes[1], 0.45 * bytes[0]);  // 16-bit maps: about half
  EXPECT_LT(bytes[1], 0.55 * bytes[0]);
  auto fp32 = [&r](const std::string& batch) {
    return build_cases(parse({"--shape=model=resnet50,batch=" + batch, "--ops=train",
                              "--devices=gpu", "--impls=cudnn", "--dtypes=fp32"}),
                       r);
  };
  EXPECT_NO_THROW(fp32("512"));
  EXPECT_THROW(fp32("1024"), UsageError);
}

// A workstation with 24 GiB of host memory runs that case on its GPU: the step's maps live in
// device memory, and the host holds the inputs, the reference and the results. The same step
// on its CPU does not fit (its walk's buffers: about 27 GB).
TEST(Cases, ResNet50OnTheGpuNeedsNoHostWalk) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.gpu_l2_bytes = 50e6;
  r.gpu_free_bytes = 79.0 * (1u << 30);
  r.host_available_bytes = 24.0 * (1u << 30);
  auto cases_on = [&](const char* devices) {
    return build_cases(parse({"--shape=model=resnet50,batch=256", "--ops=train", devices,
                              "--impls=cudnn,onednn", "--dtypes=bf16"}),
                       r);
  };
  EXPECT_NO_THROW(cases_on("--devices=gpu"));
  EXPECT_THROW(cases_on("--devices=cpu"), UsageError);
  TrainShape s;
  s.model = "resnet50", s.batch = 256, s.image = 224, s.dtype = Dtype::bf16;
  const TrainWorkload w(s);
  EXPECT_LT(w.host_bytes(Device::gpu), 20e9);
  EXPECT_GT(w.host_bytes(Device::cpu), 25e9);
}

// The machine a GPU session is lent (an H100 80GB: about 79 GiB free; 16 cores, 128 GiB of host
// memory) runs every GPU case of the standard and full suites: none is skipped for memory.
TEST(Cases, EverySuiteGpuCaseFitsAnH100Machine) {
  Resources r = no_gpu();
  r.gpu_available = true;
  r.gpu_free_bytes = 79.0 * (1u << 30);
  r.gpu_l2_bytes = 50e6;
  r.gpu_sms = 132;
  r.host_available_bytes = 120.0 * (1u << 30);
  r.cores = 16;
  for (const char* suite : {"--suite=standard", "--suite=full"}) {
    int gpu = 0;
    for (const auto& c : build_cases(parse({suite, "--devices=gpu"}), r)) {
      ++gpu;
      EXPECT_EQ(c.skip.find("too small"), std::string::npos) << c.name << ": " << c.skip;
    }
    EXPECT_GT(gpu, 100) << suite;
  }
}

// OpenBLAS runs at most its build's MAX_THREADS (Debian's: 64); a case asking for more would
// be named for threads it does not run.
TEST(Cases, OpenblasCasesAboveItsMostThreadsAreSkipped) {
  EXPECT_EQ(cpu::openblas_max_threads_in("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake "
                                         "MAX_THREADS=64"),
            64);
  EXPECT_EQ(cpu::openblas_max_threads_in("OpenBLAS 0.3.21"), 0);
  Resources r = no_gpu();
  r.openblas_max_threads = 1;
  const auto cases = build_cases(parse({"--ops=gemm", "--shape=m=8,n=8,k=8", "--devices=cpu",
                                        "--dtypes=fp32", "--threads=1,2"}),
                                 r);
  int openblas = 0;
  for (const auto& c : cases) {
    const bool capped = c.impl.library == "openblas" && c.units > 1;
    openblas += c.impl.library == "openblas";
    if (capped)
      EXPECT_NE(c.skip.find("at most 1 threads"), std::string::npos) << c.name << ": " << c.skip;
    else
      EXPECT_EQ(c.skip, "") << c.name;
  }
  EXPECT_EQ(openblas, 2);
}

TEST(Cases, GemmScalarsThatOverflowOrUnderflowFp32AreRefused) {
  for (const char* bad : {"--shape=m=8,n=8,k=8,alpha=3e38", "--shape=m=8,n=8,k=8,beta=1e39",
                          "--shape=m=8,n=8,k=8,alpha=1e-50"})
    EXPECT_THROW(build_cases(parse({"--ops=gemm", bad}), no_gpu()), UsageError) << bad;
  // 1e-40 is below fp32's normal numbers and still one of its values (std::stof refused it).
  EXPECT_NO_THROW(build_cases(parse({"--ops=gemm", "--shape=m=8,n=8,k=8,alpha=1e-40"}), no_gpu()));
}

TEST(Cases, RepeatedShapesRunOnce) {
  const auto cases = build_cases(parse({"--shape=m=4,n=4,k=4", "--shape=m=4,n=4,k=4", "--ops=gemm",
                                        "--devices=cpu", "--impls=openblas"}),
                                 no_gpu());
  EXPECT_EQ(cases.size(), 1u);
}

// The progress line: the count, the op, the elapsed time and (once a case finished) what is
// left, then the case; durations in a unit a person reads.
TEST(Progress, TheLineSaysHowFarAndWhatIsLeft) {
  EXPECT_EQ(duration_text(0.42), "0.4 s");
  EXPECT_EQ(duration_text(45.7), "45 s");
  EXPECT_EQ(duration_text(133), "2 min 13 s");
  EXPECT_EQ(duration_text(3725), "1 h 02 min");
  EXPECT_EQ(progress_line(137, 401, "conv", 133, 220, "conv/cpu/onednn/x"),
            "[137/401] conv, 2 min 13 s elapsed, about 3 min 40 s left: conv/cpu/onednn/x");
  EXPECT_EQ(progress_line(1, 5, "gemm", 0.3, -1, "g"), "[1/5] gemm, 0.3 s elapsed: g");
  EXPECT_TRUE(parse({"--quiet"}).quiet);
  EXPECT_FALSE(parse({}).quiet);
}

// The count and the estimate are of the cases --benchmark_filter runs, matched as Google
// Benchmark matches them; and before any case has run, the suite's expected time.
TEST(Progress, CountsTheCasesTheFilterRunsAndExpectsTheirTime) {
  const std::string name = "gemm/cpu/openblas/m=256,n=256,k=256,dtype=fp32,threads=2";
  EXPECT_TRUE(filter_selects("", name));
  EXPECT_TRUE(filter_selects("all", name));
  EXPECT_TRUE(filter_selects("openblas", name));
  EXPECT_TRUE(filter_selects("^gemm/.*threads=2/manual_time$", name));
  EXPECT_FALSE(filter_selects("^conv", name));
  EXPECT_FALSE(filter_selects("-openblas", name));
  EXPECT_TRUE(filter_selects("-onednn|naive", name));
  const std::vector<ProgressEstimate::Pending> ops = {"gemm/cpu", "gemm/cpu", "train/gpu"};
  EXPECT_DOUBLE_EQ(
      ProgressEstimate("quick").left(ops),
      2 * expected_case_seconds("gemm", "quick") + expected_case_seconds("train", "quick"));
  EXPECT_GT(expected_case_seconds("conv", "standard"), 0);
  EXPECT_EQ(expected_case_seconds("conv", "standard"), expected_case_seconds("conv", "full"));
  // Every op family has its row: one without would leave a whole suite's run with no expected
  // time (batch norm's and the collectives' had none, so the quick suite's had none).
  for (const OpFamily& f : op_families())
    for (const char* suite : {"quick", "standard"})
      EXPECT_GE(expected_case_seconds(f.name, suite), 0) << f.name << " in " << suite;
  // --shape runs: no table, nothing finished
  EXPECT_LT(ProgressEstimate("").left(ops), 0);
  EXPECT_EQ(expected_line(ops, "quick").rfind("3 cases to run, about ", 0), 0u)
      << expected_line(ops, "quick");
  EXPECT_EQ(expected_line(ops, ""), "3 cases to run");
}

// The estimate: nothing before a case finished; then each case left at its family's mean, or
// the mean of all finished cases where its family has none yet.
TEST(Progress, TheEstimateLearnsPerOpFamily) {
  ProgressEstimate e;
  EXPECT_LT(e.left({"gemm"}), 0);
  e.finished("gemm", 1.0);
  e.finished("gemm", 3.0);
  e.finished("conv", 8.0);
  EXPECT_DOUBLE_EQ(e.left({}), 0);
  EXPECT_DOUBLE_EQ(e.left({"gemm", "gemm"}), 4.0);  // 2 s each
  EXPECT_DOUBLE_EQ(e.left({"conv"}), 8.0);          // its own family's
  EXPECT_DOUBLE_EQ(e.left({"train"}), 4.0);         // all finished cases': 12 s / 3
}

// A training case is of its device's and its model's kind, and its time goes with its work: the
// ResNet-50 cases left are expected at ResNet-50's seconds per FLOP on that device, not at a mean
// the MLP's milliseconds pull down; a model not run yet on the CPU at its table's seconds per
// GFLOP (ResNet-50's step at 224x224 takes tens of seconds to minutes on two cores, not the
// family's few), elsewhere at its family's table time; a kind without work at its mean per case.
TEST(Progress, TrainingCasesAreEstimatedPerDeviceModelAndWork) {
  const std::string mlp = estimate_kind("train", "cpu", "mlp"),
                    r50 = estimate_kind("train", "cpu", "resnet50");
  EXPECT_EQ(estimate_kind("gemm", "gpu", ""), "gemm/gpu");
  EXPECT_EQ(r50, "train/cpu/model=resnet50");
  ProgressEstimate e("quick");
  for (int i = 0; i < 9; ++i) e.finished({mlp, 1e6}, 0.1);
  e.finished({r50, 3e9}, 12.0);  // a step: 4 s per GFLOP
  e.finished("gemm/cpu", 1.0), e.finished("gemm/cpu", 3.0);
  EXPECT_DOUBLE_EQ(e.left({{r50, 3e9}, {r50, 1e9}, {mlp, 2e6}, {"gemm/cpu"}}), 12 + 4 + 0.2 + 2);
  // A model not run yet on the CPU: at its table's seconds per GFLOP; on the GPU, or one the
  // table does not have, at the family's table time.
  const std::string cnn = estimate_kind("train", "cpu", "cnn");
  EXPECT_DOUBLE_EQ(e.left({{cnn, 2e9}}), 2 * e.left({{cnn, 1e9}}));
  EXPECT_DOUBLE_EQ(e.left({{cnn, 1e9}}), expected_seconds({cnn, 1e9}, "quick"));
  EXPECT_GT(expected_seconds({cnn, 1e9}, "quick"), 0);
  EXPECT_GT(expected_seconds({r50, 194e9}, "standard"),  // batch 8 at 224x224
            5 * expected_case_seconds("train", "standard"));
  for (const std::string& unseen :
       {estimate_kind("train", "gpu", "resnet50"), estimate_kind("train", "cpu", "vit")})
    EXPECT_DOUBLE_EQ(e.left({{unseen, 1e9}}), expected_case_seconds("train", "quick")) << unseen;
  EXPECT_DOUBLE_EQ(e.left({r50, mlp}), 12.1);  // no work given: each at its kind's mean
}

// A workload's first case also makes its inputs and reference (ResNet-50's at 224x224: seconds
// to a minute), which its other cases reuse: that time is learnt apart, so the cases left are
// not each charged with it, and a case still to make its workload's is.
TEST(Progress, AWorkloadsSetupIsCountedForTheCaseThatMakesIt) {
  const std::string r50 = estimate_kind("train", "cpu", "resnet50");
  ProgressEstimate e("quick");
  e.finished({r50, 2e9, true}, 20.0, 12.0);     // 8 s of step (4 s per GFLOP), 12 s of setup (6)
  EXPECT_DOUBLE_EQ(e.left({{r50, 2e9}}), 8.0);  // the same workload's next implementation
  EXPECT_DOUBLE_EQ(e.left({{r50, 1e9, true}}), 4.0 + 6.0);  // a workload not made yet
  e.finished({r50, 2e9}, 6.0);  // a case that reused the inputs: 3 s per GFLOP now
  EXPECT_DOUBLE_EQ(e.left({{r50, 1e9}}), 14.0 / 4e9 * 1e9);
  EXPECT_DOUBLE_EQ(e.left({{r50, 1e9, true}}), 3.5 + 6.0);
  // A kind whose first case made nothing (its setup too short to time) adds none.
  e.finished({"gemm/cpu", 0, true}, 1.0, 0.0);
  EXPECT_DOUBLE_EQ(e.left({{"gemm/cpu", 0, true}}), 1.0);
}

}  // namespace
// NCCL's bootstrap over the ranks (bench/main.cpp): on one rank, its own id reaches init, and
// a library that cannot load or a communicator that fails is the reason, with init never called
// after a failed load.
TEST(Ranks, BootstrapGivesRankZerosIdToInitAndSaysWhyNot) {
  std::string got;
  auto init = [&got](const std::string& id) {
    got = id;
    return std::string();
  };
  EXPECT_EQ(ranks::bootstrap(
                "NCCL", [] { return std::string(); }, [] { return std::string("\0id", 3); }, init),
            "");
  EXPECT_EQ(got, std::string("\0id", 3));  // bytes, NULs included
  got = "untouched";
  EXPECT_EQ(ranks::bootstrap(
                "NCCL", [] { return std::string("no libnccl.so.2"); },
                [] { return std::string("id"); }, init),
            "no libnccl.so.2");
  EXPECT_EQ(got, "untouched");
  EXPECT_EQ(ranks::bootstrap(
                "NCCL", [] { return std::string(); }, [] { return std::string("id"); },
                [](const std::string&) { return std::string("ncclCommInitRank failed"); }),
            "ncclCommInitRank failed");
}

TEST(Ranks, TwoRanksOnOneGpuIsOneErrorNamingThem) {
  EXPECT_EQ(ranks::shared_gpu({"a 0000:01:00.0", "a 0000:02:00.0", "b 0000:01:00.0"}), "");
  EXPECT_EQ(ranks::shared_gpu({"", ""}), "");  // no GPU on either
  const std::string e = ranks::shared_gpu({"a 0000:01:00.0", "a 0000:02:00.0", "a 0000:01:00.0"});
  EXPECT_EQ(e.rfind("ranks 0 and 2 share the GPU a 0000:01:00.0: one GPU per rank", 0), 0u) << e;
}

}  // namespace pb
