// core/: dtype rounding, the index math GPU kernels share, the FLOP and byte models,
// Freivalds' verification, shape parsing; OpenBLAS's core, AMX and oneDNN's dtypes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/gemm.hpp"
#include "core/activation.hpp"
#include "core/stream.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "kernels/gpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

TEST(Dtype, RoundsToNearestEven) {
  EXPECT_EQ(round_to(Dtype::fp32, 0.1f), 0.1f);
  EXPECT_EQ(round_to(Dtype::bf16, 1.0f + 0x1.0p-8f), 1.0f);              // tie, to even
  EXPECT_EQ(round_to(Dtype::bf16, 1.0f + 0x1.8p-8f), 1.0f + 0x1.0p-7f);  // above the tie
  EXPECT_EQ(round_to(Dtype::fp16, 1.0f + 0x1.0p-12f), 1.0f);
  EXPECT_EQ(round_to(Dtype::tf32, 1.0f + 0x1.0p-10f), 1.0f + 0x1.0p-10f);
  EXPECT_TRUE(std::isnan(round_to(Dtype::bf16, NAN)));
  EXPECT_DOUBLE_EQ(unit_roundoff(Dtype::fp32), 0x1.0p-24);
  EXPECT_DOUBLE_EQ(unit_roundoff(Dtype::bf16), 0x1.0p-8);
}

TEST(Dtype, ParsesItsOwnNames) {
  for (Dtype t : all_dtypes()) {
    Dtype back = Dtype::fp32;
    EXPECT_TRUE(parse_dtype(to_string(t), &back));
    EXPECT_EQ(back, t);
  }
  Dtype x;
  EXPECT_FALSE(parse_dtype("fp64", &x));
}

TEST(GemmIndex, OpIndexReadsTheTransposeFromStorage) {
  // X stored 2 x 3 row-major; op(X) = X^T is 3 x 2 with ld 3.
  const float x[] = {0, 1, 2, 3, 4, 5};
  EXPECT_EQ(x[op_index(false, 1, 2, 3)], 5);
  EXPECT_EQ(x[op_index(true, 2, 1, 3)], 5);  // X^T[2][1] = X[1][2]
  EXPECT_EQ(op_load(x, true, 2, 1, 3, 2, 3), 5);
  EXPECT_EQ(op_load(x, true, 3, 0, 3, 2, 3), 0);  // outside: zero padding for edge tiles
  EXPECT_EQ(op_load(x, false, 0, 3, 2, 3, 3), 0);
}

TEST(GemmModel, FlopsAndBytes) {
  GemmShape s;
  s.m = 2, s.n = 3, s.k = 4;
  EXPECT_DOUBLE_EQ(GemmWorkload(s).flops(), 48);
  EXPECT_DOUBLE_EQ(GemmWorkload(s).min_bytes(), 4.0 * (8 + 12 + 6));
  s.beta = 1;  // C is read as well as written
  EXPECT_DOUBLE_EQ(GemmWorkload(s).min_bytes(), 4.0 * (8 + 12 + 12));
  s.beta = 0, s.dtype = Dtype::fp16;
  EXPECT_DOUBLE_EQ(GemmWorkload(s).min_bytes(), 2.0 * (8 + 12) + 4.0 * 6);
  EXPECT_EQ(s.lda(), 4);
  s.ta = true;
  EXPECT_EQ(s.lda(), 2);
}

TEST(GemmVerify, AcceptsTheReferenceAndRejectsSmallMistakes) {
  GemmShape s;
  s.m = 96, s.n = 80, s.k = 300, s.tb = true, s.alpha = 0.5f, s.beta = -1.0f;
  const GemmWorkload w(s);
  const auto in = w.make_inputs();
  testing::Floats c = testing::reference(w);
  EXPECT_TRUE(testing::verify(w, in, c).ok);

  testing::Floats one_wrong = c;
  one_wrong[17 * s.n + 33] += 0.05f;  // a single element off by a few percent of its size
  EXPECT_FALSE(testing::verify(w, in, one_wrong).ok);

  testing::Floats no_beta = c;  // forgot beta * C0
  for (std::size_t i = 0; i < c.size(); ++i) no_beta[i] -= s.beta * in[2].f32()[i];
  EXPECT_FALSE(testing::verify(w, in, no_beta).ok);

  testing::Floats nan = c;
  nan[5] = NAN;
  const Check bad = testing::verify(w, in, nan);
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.detail.find("not finite"), std::string::npos);

  EXPECT_FALSE(testing::verify(w, in, testing::Floats(3)).ok);
}

TEST(GemmVerify, RejectsTheWrongTranspose) {
  GemmShape s;
  s.m = s.n = s.k = 64;
  const GemmWorkload w(s);
  GemmShape t = s;
  t.ta = true;  // same buffers, A read transposed
  EXPECT_FALSE(testing::verify(w, w.make_inputs(), testing::reference(GemmWorkload(t))).ok);
}

TEST(GemmVerify, ToleranceGrowsWithKAndLowerPrecision) {
  GemmShape s;
  s.m = s.n = 8, s.k = 100;
  const double small = GemmWorkload(s).tolerance();
  s.k = 10000;
  EXPECT_GT(GemmWorkload(s).tolerance(), small);
  const double fp32 = GemmWorkload(s).tolerance();
  s.dtype = Dtype::bf16;
  EXPECT_GT(GemmWorkload(s).tolerance(), fp32);
  EXPECT_LT(GemmWorkload(s).tolerance(), 1e-2);  // still catches a wrong element at n = 4096
}

TEST(GemmInputs, AreDeterministicAndRepresentable) {
  GemmShape s;
  s.m = s.n = s.k = 16, s.dtype = Dtype::bf16;
  const auto a = GemmWorkload(s).make_inputs(), b = GemmWorkload(s).make_inputs();
  EXPECT_EQ(a, b);
  for (float v : a[0].f32()) EXPECT_EQ(round_to(Dtype::bf16, v), v);
}

TEST(GemmShapeParse, AcceptsKeysAndRejectsBadOnes) {
  const GemmShape s =
      parse_gemm_shape({{"m", "3"}, {"n", "4"}, {"k", "5"}, {"ta", "1"}, {"beta", "0.5"}});
  EXPECT_EQ(s.m, 3);
  EXPECT_TRUE(s.ta);
  EXPECT_FLOAT_EQ(s.beta, 0.5f);
  auto bad = [](std::vector<std::pair<std::string, std::string>> kv) {
    EXPECT_THROW(parse_gemm_shape(kv), std::invalid_argument);
  };
  bad({{"m", "0"}, {"n", "4"}, {"k", "5"}});
  bad({{"m", "-3"}, {"n", "4"}, {"k", "5"}});
  bad({{"m", "3x"}, {"n", "4"}, {"k", "5"}});
  bad({{"m", "99999999999999999999"}, {"n", "4"}, {"k", "5"}});
  bad({{"m", "3000000000"}, {"n", "4"}, {"k", "5"}});
  bad({{"m", "3"}, {"n", "4"}});
  bad({{"m", "3"}, {"n", "4"}, {"k", "5"}, {"q", "1"}});
  bad({{"m", "3"}, {"n", "4"}, {"k", "5"}, {"ta", "2"}});
  bad({{"m", "3"}, {"n", "4"}, {"k", "5"}, {"alpha", "nan"}});
}

TEST(GemmSuite, GrowsWithTheSuiteAndIncludesTransposedDeepBenchShapes) {
  const auto quick = gemm_suite(0), standard = gemm_suite(1), full = gemm_suite(2);
  EXPECT_LT(quick.size(), standard.size());
  EXPECT_LT(standard.size(), full.size());
  bool transposed = false;
  std::int64_t largest = 0;
  for (const auto& s : full) transposed |= s.ta || s.tb, largest = std::max(largest, s.m);
  EXPECT_TRUE(transposed);
  EXPECT_GE(largest, 4096);
}

TEST(GemmTile, EveryElementOnceAndConsecutiveThreadsReadConsecutiveAddresses) {
  // The tiled GPU kernel's load order (tile_element): a 64 x 16 tile of op(A) and a 16 x 64
  // tile of op(B), stored as is or transposed in operands of leading dimension 1000.
  for (bool transposed : {false, true}) {
    for (auto [rows, cols] : {std::pair{64, 16}, std::pair{16, 64}}) {
      std::vector<int> seen(static_cast<std::size_t>(rows * cols), 0);
      int contiguous = 0;
      for (int e = 0; e < rows * cols; ++e) {
        int r, c, r2, c2;
        tile_element(transposed, e, rows, cols, &r, &c);
        ASSERT_TRUE(r >= 0 && r < rows && c >= 0 && c < cols);
        ++seen[static_cast<std::size_t>(r * cols + c)];
        if (e + 1 == rows * cols) break;
        tile_element(transposed, e + 1, rows, cols, &r2, &c2);
        contiguous += op_index(transposed, r2, c2, 1000) == op_index(transposed, r, c, 1000) + 1;
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
      // All but the steps from one row (or column) of the tile to the next.
      const int runs = rows * cols / (transposed ? rows : cols);
      EXPECT_EQ(contiguous, rows * cols - runs) << transposed << " " << rows << "x" << cols;
    }
  }
}

TEST(Workload, DeclaresItsMetricAndRole) {
  GemmShape g;
  g.m = g.n = g.k = 64;
  EXPECT_EQ(GemmWorkload(g).metric(), Metric::gflops);
  EXPECT_EQ(GemmWorkload(g).role(), Role::compute_reference);
  EXPECT_EQ(StreamWorkload(StreamShape{StreamKernel::copy, 1024}).role(),
            Role::bandwidth_reference);
  EXPECT_EQ(StreamWorkload(StreamShape{StreamKernel::triad, 1024}).role(), Role::bandwidth);
  EXPECT_EQ(StreamWorkload(StreamShape{StreamKernel::triad, 1024}).metric(), Metric::gbs);
  // More FLOPs than bytes, yet read by its bandwidth: declared, not guessed.
  const ActivationWorkload gelu(ActivationShape{Act::gelu_erf, false, 1 << 20});
  EXPECT_GT(gelu.flops(), gelu.min_bytes());
  EXPECT_EQ(gelu.metric(), Metric::gbs);
  const TransferWorkload copy(TransferShape{CopyDir::h2d, true, 4096});
  EXPECT_EQ(copy.metric(), Metric::gbs);
  EXPECT_EQ(copy.role(), Role::transfer);
}

const std::vector<std::string> kAvx512 = {"avx", "avx2", "fma", "avx512f"};

TEST(OpenblasCore, TheCoreForEachIsa) {
  EXPECT_EQ(cpu::openblas_core_for_isa(kAvx512), "SkylakeX");
  EXPECT_EQ(cpu::openblas_core_for_isa({"avx", "avx2", "fma"}), "Haswell");
  EXPECT_EQ(cpu::openblas_core_for_isa({"avx"}), "Sandybridge");
  EXPECT_EQ(cpu::openblas_core_for_isa({"sse4_2"}), "");
}

TEST(OpenblasCore, AFallbackCoreIsReplacedByReexecution) {
  const auto p = cpu::openblas_core_plan("Prescott", "Prescott", "openblas", kAvx512, false);
  EXPECT_TRUE(p.reexec);
  EXPECT_EQ(p.target, "SkylakeX");
  EXPECT_EQ(p.note, "");  // said by the re-executed process, once
  const auto avx2 = cpu::openblas_core_plan("Sandybridge", "Sandybridge", "openblas",
                                            {"avx", "avx2", "fma"}, false);
  EXPECT_TRUE(avx2.reexec);
  EXPECT_EQ(avx2.target, "Haswell");
}

TEST(OpenblasCore, TheRightCoreOrAnUnknownOneIsLeftAlone) {
  for (const char* core : {"SkylakeX", "Cooperlake", "SapphireRapids", "SomeFutureCore"}) {
    const auto p = cpu::openblas_core_plan(core, core, "openblas", kAvx512, false);
    EXPECT_FALSE(p.reexec) << core;
    EXPECT_EQ(p.note, "") << core;
  }
  EXPECT_FALSE(
      cpu::openblas_core_plan("Haswell", "Haswell", "openblas", {"avx", "avx2", "fma"}, false)
          .reexec);
  EXPECT_FALSE(cpu::openblas_core_plan("Prescott", "Prescott", "openblas", {"sse4_2"}, false)
                   .reexec);  // nothing better to run
}

TEST(OpenblasCore, AsisKeepsTheFallbackAndWarns) {
  const auto p = cpu::openblas_core_plan("Prescott", "Prescott", "openblas", kAvx512, true);
  EXPECT_FALSE(p.reexec);
  EXPECT_EQ(p.note.rfind("warning: ", 0), 0u) << p.note;
  EXPECT_NE(p.note.find("--openblas-core=asis"), std::string::npos);
  EXPECT_NE(p.note.find("SkylakeX"), std::string::npos);
}

TEST(OpenblasCore, TheUsersOwnCoretypeWins) {
  const auto slow = cpu::openblas_core_plan("Haswell", "Haswell", "user", kAvx512, false);
  EXPECT_FALSE(slow.reexec);
  EXPECT_NE(slow.note.find("OPENBLAS_CORETYPE"), std::string::npos);
  const auto fine = cpu::openblas_core_plan("skylakex", "SkylakeX", "user", kAvx512, false);
  EXPECT_FALSE(fine.reexec);
  EXPECT_EQ(fine.note, "");  // OpenBLAS reads the name without regard to case
}

TEST(OpenblasCore, ACoretypeThatDidNotTakeIsSaid) {
  // OpenBLAS ignores a name it does not know and runs the core it detects: the report must not
  // call that core the user's.
  const auto p = cpu::openblas_core_plan("BOGUS", "Cooperlake", "user", kAvx512, false);
  EXPECT_FALSE(p.reexec);
  EXPECT_EQ(p.note.rfind("warning: ", 0), 0u) << p.note;
  EXPECT_NE(p.note.find(std::string("OPENBLAS_CORETYPE") + "=BOGUS"), std::string::npos) << p.note;
  EXPECT_NE(p.note.find("did not take"), std::string::npos) << p.note;
  EXPECT_NE(p.note.find("Cooperlake"), std::string::npos) << p.note;
}

TEST(OpenblasCore, TheReexecutedProcessSaysWhatItDid) {
  const auto p = cpu::openblas_core_plan("Prescott", "SkylakeX", "pairbench", kAvx512, false);
  EXPECT_FALSE(p.reexec);  // never twice
  EXPECT_EQ(p.note.find("warning"), std::string::npos) << p.note;
  EXPECT_NE(p.note.find("Prescott"), std::string::npos);
  EXPECT_NE(p.note.find(std::string("OPENBLAS_CORETYPE") + "=SkylakeX"), std::string::npos);
  // A library that does not have the core keeps running the fallback: a warning.
  const auto stuck = cpu::openblas_core_plan("Prescott", "Prescott", "pairbench", kAvx512, false);
  EXPECT_FALSE(stuck.reexec);
  EXPECT_EQ(stuck.note.rfind("warning: ", 0), 0u) << stuck.note;
}

// CPUID leaf 0x1D as a Sapphire Rapids reports it: palette 1 = 8192 tile bytes, 1024 bytes per
// tile, 64 bytes per row, 8 tiles, 16 rows.
const cpu::CpuidRegs kPaletteCount{1, 0, 0, 0}, kPalette1{0x04002000, 0x00080040, 0x10, 0};

TEST(Amx, UsableWhenTheTilePaletteIsThere) {
  EXPECT_EQ(cpu::amx_state(true, 0x20, kPaletteCount, kPalette1), cpu::AmxState::usable);
  EXPECT_EQ(cpu::amx_state(false, 0x20, kPaletteCount, kPalette1), cpu::AmxState::absent);
}

TEST(Amx, AdvertisedWithoutAPaletteIsBroken) {
  const cpu::CpuidRegs zeros{};
  // The Emerald Rapids VM: flags present, leaf 0x1D all zeros.
  EXPECT_EQ(cpu::amx_state(true, 0x20, zeros, zeros), cpu::AmxState::broken);
  EXPECT_EQ(cpu::amx_state(true, 0x1C, kPaletteCount, kPalette1), cpu::AmxState::broken);
  for (int field = 0; field < 5; ++field) {  // any field of palette 1 zero
    cpu::CpuidRegs p = kPalette1;
    std::uint32_t* reg = field < 2 ? &p.eax : field < 4 ? &p.ebx : &p.ecx;
    *reg &= field % 2 ? 0x0000ffffu : 0xffff0000u;
    EXPECT_EQ(cpu::amx_state(true, 0x20, kPaletteCount, p), cpu::AmxState::broken) << field;
  }
}

TEST(Onednn, ReducedPrecisionNeedsItsInstructions) {
  using cpu::onednn::dtype_unavailable;
  const auto absent = cpu::AmxState::absent, usable = cpu::AmxState::usable,
             broken = cpu::AmxState::broken;
  EXPECT_EQ(dtype_unavailable(Dtype::fp32, {"sse4_2"}, absent), "");
  EXPECT_NE(dtype_unavailable(Dtype::bf16, kAvx512, absent), "");
  EXPECT_EQ(dtype_unavailable(Dtype::bf16, {"avx512f", "avx512_bf16"}, absent), "");
  EXPECT_EQ(dtype_unavailable(Dtype::bf16, {"avx512f", "amx_tile", "amx_bf16"}, usable), "");
  EXPECT_NE(dtype_unavailable(Dtype::bf16, {"avx512f", "amx_tile", "amx_bf16"}, broken), "");
  // The Emerald Rapids VM: broken AMX, but AVX512-BF16 runs bf16.
  EXPECT_EQ(dtype_unavailable(Dtype::bf16, {"avx512_bf16", "amx_tile", "amx_bf16"}, broken), "");
  EXPECT_NE(dtype_unavailable(Dtype::fp16, {"avx512f", "avx512_bf16"}, absent).find("fp16"),
            std::string::npos);
  EXPECT_EQ(dtype_unavailable(Dtype::fp16, {"avx512f", "avx512_fp16"}, absent), "");
  EXPECT_NE(dtype_unavailable(Dtype::tf32, kAvx512, usable), "");
}

// cudaErrorInsufficientDriver means "no driver at all" as often as "an old driver": the reason a
// run gives for having no GPU says which, and what to do.
TEST(GpuProbe, TheReasonTellsAMissingDriverFromAnOldOne) {
  const std::string e = "cudaErrorInsufficientDriver", text = "CUDA driver version is insufficient";
  const std::string none = gpu::no_gpu_reason(e, text, 0, 13000, false);
  EXPECT_NE(none.find("no NVIDIA GPU or driver on this machine"), std::string::npos) << none;
  EXPECT_EQ(none.find("update"), std::string::npos) << none;
  const std::string no_library = gpu::no_gpu_reason(e, text, 0, 13000, true);
  EXPECT_NE(no_library.find("install the NVIDIA driver"), std::string::npos) << no_library;
  const std::string old = gpu::no_gpu_reason(e, text, 12040, 13000, true);
  EXPECT_NE(old.find("supports CUDA 12.4, older than this build's CUDA 13.0 runtime"),
            std::string::npos)
      << old;
  EXPECT_NE(old.find("580"), std::string::npos) << old;
  EXPECT_EQ(gpu::no_gpu_reason(e, text, 12020, 12080, true).find("580"), std::string::npos);
  for (const std::string& r : {none, no_library, old})
    EXPECT_NE(r.find("(" + e + ")"), std::string::npos) << r;
  EXPECT_EQ(gpu::no_gpu_reason("cudaErrorNoDevice", "no CUDA-capable device is detected", 13000,
                               13000, false),
            "cudaErrorNoDevice: no CUDA-capable device is detected");
}

}  // namespace
}  // namespace pb

// The caches from sysfs, each counted once: two CPUs with an L2 each and one L3 between them
// (the 2-vCPU AMD EPYC VM's 1 MiB L2s and 32 MiB L3, where glibc's sysconf said 320 MiB of L3);
// the instruction cache and other levels left out; a CPU not in the list not counted.
TEST(CpuInfo, CachesAreCountedOnceFromSysfs) {
  const std::string root = ::testing::TempDir() + "pb-sysfs-caches-" + std::to_string(::getpid());
  auto cache = [&](int cpu, int index, int level, const char* type, const char* size,
                   const char* shared) {
    const std::string dir = root + "/devices/system/cpu/cpu" + std::to_string(cpu) +
                            "/cache/index" + std::to_string(index);
    std::filesystem::create_directories(dir);
    auto put = [&](const char* name, const std::string& text) {
      std::ofstream(dir + "/" + name) << text << "\n";
    };
    put("level", std::to_string(level));
    put("type", type);
    put("size", size);
    put("shared_cpu_list", shared);
  };
  for (int cpu : {0, 1, 2}) {
    const std::string self = std::to_string(cpu);
    cache(cpu, 0, 1, "Data", "32K", self.c_str());
    cache(cpu, 1, 1, "Instruction", "32K", self.c_str());
    cache(cpu, 2, 2, "Unified", "1024K", self.c_str());
    cache(cpu, 3, 3, "Unified", cpu < 2 ? "32768K" : "16M", cpu < 2 ? "0-1" : "2");
  }
  EXPECT_EQ(pb::cpu::cache_bytes(root, {0, 1}, 3), 32L << 20);
  EXPECT_EQ(pb::cpu::cache_bytes(root, {0, 1}, 2), 2L << 20);
  EXPECT_EQ(pb::cpu::cache_bytes(root, {0, 1}, 1), 64L << 10);  // two L1d, no L1i
  EXPECT_EQ(pb::cpu::cache_bytes(root, {0, 1, 2}, 3), 48L << 20);
  EXPECT_EQ(pb::cpu::cache_bytes(root + "/none", {0, 1}, 3), 0);  // no sysfs: the caller's fallback
  std::filesystem::remove_all(root);
}
