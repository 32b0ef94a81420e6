// Batch normalization as an op (core/batchnorm.hpp): the double reference's backward pass
// against central differences of its forward pass, each CPU implementation in each direction
// through the workload's check on awkward shapes, oneDNN's with the ReLU fused in training
// against it unfused, a wrong output caught, bad shapes refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "core/batchnorm.hpp"
#include "core/layers.hpp"
#include "core/rng.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

// The loss L = sum(g * y) of the training-mode forward pass, in double.
double loss(const BnShape& s, std::vector<double> x, const std::vector<double>& w,
            const std::vector<double>& b, const std::vector<double>& g) {
  const auto c = static_cast<std::size_t>(s.c);
  std::vector<double> y(x.size()), mean(c), invstd(c), rm(c, 0.0), rv(c, 1.0);
  batchnorm_forward(s, true, x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                    rm.data(), rv.data());
  double l = 0;
  for (std::size_t i = 0; i < y.size(); ++i) l += g[i] * y[i];
  return l;
}

TEST(BatchNorm, TheReferenceBackwardPassIsTheForwardPassesDerivative) {
  for (bool nhwc : {false, true}) {
    BnShape s;
    s.n = 3, s.c = 2, s.hw = 5, s.channels_last = nhwc;
    const auto size = static_cast<std::size_t>(s.size()), c = static_cast<std::size_t>(s.c);
    Rng rng(11);
    std::vector<double> x(size), g(size), w(c), b(c);
    for (double& v : x) v = 1.5 + rng.uniform();
    for (double& v : g) v = rng.uniform();
    for (double& v : w) v = 1 + 0.5 * rng.uniform();
    for (double& v : b) v = rng.uniform();
    std::vector<double> y(size), mean(c), invstd(c), rm(c, 0.0), rv(c, 1.0), dx(size), dw(c), db(c);
    batchnorm_forward(s, true, x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                      rm.data(), rv.data());
    batchnorm_backward(s, x.data(), w.data(), mean.data(), invstd.data(), g.data(), dx.data(),
                       dw.data(), db.data());
    const double h = 1e-6;
    auto central = [&](std::vector<double>& v, std::size_t i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = loss(s, x, w, b, g);
      v[i] = keep - h;
      const double down = loss(s, x, w, b, g);
      v[i] = keep;
      return (up - down) / (2 * h);
    };
    for (std::size_t i = 0; i < size; ++i) EXPECT_NEAR(dx[i], central(x, i), 1e-7) << i;
    for (std::size_t ch = 0; ch < c; ++ch) {
      EXPECT_NEAR(dw[ch], central(w, ch), 1e-7) << ch;
      EXPECT_NEAR(db[ch], central(b, ch), 1e-7) << ch;
    }
  }
}

// Every output of an implementation's one run, checked by the workload.
Check run_and_check(const std::string& impl, const BatchNormShape& s, int threads,
                    bool corrupt = false) {
  const BatchNormWorkload w(s);
  const Tensors in = w.make_inputs();
  auto i = testing::find_impl(cpu::batchnorm_impls(), impl).make(w, threads);
  i->activate();
  i->prepare(in);
  i->run();
  Tensors out = i->result();
  if (corrupt) out.back().f32()[0] += 0.01f;  // the last output: running_var, dbias or y
  return w.verify(in, out);
}

TEST(BatchNorm, EachCpuImplementationPassesTheCheckInEachDirection) {
  const BatchNormShape shapes[] = {{BnDir::fwd, 1, 3, 7, 5},   // one image, odd sizes
                                   {BnDir::fwd, 4, 17, 1, 1},  // BatchNorm1d-like: hw 1
                                   {BnDir::fwd, 2, 64, 14, 14},
                                   // two values a channel: dx's terms cancel wholly
                                   {BnDir::fwd, 2, 1, 1, 1}};
  for (const char* impl : {"omp", "onednn"}) {
    if (impl == std::string("onednn") && !cpu::onednn::built()) continue;
    for (BatchNormShape s : shapes)
      for (BnDir d : {BnDir::fwd, BnDir::bwd, BnDir::infer}) {
        s.dir = d;
        for (int threads : {1, 3}) {
          const Check chk = run_and_check(impl, s, threads);
          EXPECT_TRUE(chk.ok) << impl << " " << BatchNormWorkload(s).shape().to_string() << " "
                              << chk.detail;
        }
      }
  }
}

// The loops tuned for the CPU (cpu::tuned_batchnorm_*: the omp cases' and the fp32 training
// steps') against core/layers.hpp's loops in double, in both layouts, on maps whose mean is far
// from zero against their spread (where a one-pass variance without the shift would cancel), in
// training and inference (with and without the ReLU), with and without dx, on 1 and 3 threads;
// shapes whose row count (NHWC) or plane (NCHW) is not a multiple of the kernel's block, and a
// plane over two blocks.
TEST(BatchNorm, TheTunedLoopsEqualTheLoopsInDouble) {
  for (const auto& [n, c, hw, channels_last] : {std::tuple<int, int, int, bool>{2, 64, 49, true},
                                                {1, 3, 35, true},
                                                {5, 17, 1, true},
                                                {2, 64, 49, false},
                                                {1, 3, 35, false},
                                                {5, 17, 1, false},
                                                {3, 4, 1100, false}}) {
    BnShape s;
    s.n = n, s.c = c, s.hw = hw, s.channels_last = channels_last;
    const auto size = static_cast<std::size_t>(s.size()), cs = static_cast<std::size_t>(c);
    Rng rng(5);
    std::vector<float> x(size), dy(size), w(cs), b(cs), rm(cs), rv(cs);
    for (std::size_t i = 0; i < size; ++i) x[i] = 100.0f + 0.01f * rng.uniform() * (1 + i % cs);
    for (float& v : dy) v = rng.uniform();
    for (std::size_t ch = 0; ch < cs; ++ch) {
      w[ch] = 1 + 0.5f * rng.uniform(), b[ch] = rng.uniform();
      rm[ch] = 100 + rng.uniform(), rv[ch] = 1 + 0.5f * rng.uniform();
    }
    auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    for (bool train : {true, false})
      for (bool relu : {false, true})
        for (int threads : {1, 3}) {
          if (train && relu) continue;  // the fused ReLU is inference's
          s.relu = relu;
          std::vector<double> yd(size), md(cs), isd(cs), rmd = d(rm), rvd = d(rv);
          batchnorm_forward(s, train, d(x).data(), d(w).data(), d(b).data(), yd.data(), md.data(),
                            isd.data(), rmd.data(), rvd.data());
          std::vector<float> y(size), mean(cs), invstd(cs), rmf = rm, rvf = rv;
          cpu::tuned_batchnorm_forward(s, train, x.data(), w.data(), b.data(), y.data(),
                                       mean.data(), invstd.data(), rmf.data(), rvf.data(), threads);
          const std::string at = std::to_string(n) + "x" + std::to_string(c) + "x" +
                                 std::to_string(hw) + (channels_last ? " NHWC" : " NCHW") +
                                 (train ? " train" : " infer") + (relu ? " relu" : "") +
                                 " threads " + std::to_string(threads);
          for (std::size_t i = 0; i < size; ++i) ASSERT_NEAR(y[i], yd[i], 2e-3) << at << " y " << i;
          if (!train) continue;
          for (std::size_t ch = 0; ch < cs; ++ch) {
            ASSERT_NEAR(mean[ch], md[ch], 1e-5 * std::fabs(md[ch])) << at;
            ASSERT_NEAR(invstd[ch], isd[ch], 1e-3 * isd[ch]) << at;
            ASSERT_NEAR(rmf[ch], rmd[ch], 1e-5 * std::fabs(rmd[ch])) << at;
            ASSERT_NEAR(rvf[ch], rvd[ch], 1e-3 * std::fabs(rvd[ch])) << at;
          }
          // Backward from the statistics in float (as the step keeps them), both ways.
          const std::vector<float> mf(md.begin(), md.end()), isf(isd.begin(), isd.end());
          std::vector<double> dxd(size), dwd(cs), dbd(cs);
          batchnorm_backward(s, d(x).data(), d(w).data(), d(mf).data(), d(isf).data(), d(dy).data(),
                             dxd.data(), dwd.data(), dbd.data());
          for (bool with_dx : {true, false}) {
            std::vector<float> dx(size, -7.0f), dw(cs), db(cs);
            cpu::tuned_batchnorm_backward(s, x.data(), w.data(), mf.data(), isf.data(), dy.data(),
                                          with_dx ? dx.data() : nullptr, dw.data(), db.data(),
                                          threads);
            for (std::size_t ch = 0; ch < cs; ++ch) {
              ASSERT_NEAR(db[ch], dbd[ch], 1e-4 * (1 + std::fabs(dbd[ch]))) << at;
              ASSERT_NEAR(dw[ch], dwd[ch], 2e-3 * (1 + std::fabs(dwd[ch]))) << at;
            }
            for (std::size_t i = 0; i < size; ++i) {
              if (with_dx) {
                ASSERT_NEAR(dx[i], dxd[i], 2e-3 * (1 + std::fabs(dxd[i]))) << at << " dx " << i;
              } else {
                ASSERT_EQ(dx[i], -7.0f) << at;
              }
            }
          }
        }
  }
}

// oneDNN's batch norm with the ReLU after it fused in training (OnednnBatchNorm with
// BnShape::relu, the training steps' fusion): forward writes relu of the unfused pass's output,
// the same statistics; backward, given the ReLU's output's gradient and the forward pass's mask,
// equals the unfused backward pass of that gradient masked where the output was not positive
// (the ReLU's backward pass), in fp32 (NCHW and NHWC) and in bf16 (NHWC) where the CPU has it,
// through oneDNN's plain kernels and its JIT ones;
// zero outputs and negative ones among them. A fused pass without its mask is refused.
TEST(BatchNorm, OnednnFusesTheReluInTraining) {
  if (!cpu::onednn::built()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  // 35 channels take oneDNN's plain C++ kernels, 64 its JIT ones (the steps' shapes) where the
  // ISA has them.
  for (const auto& [t, channels_last, channels] : {std::tuple{Dtype::fp32, false, 35},
                                                   {Dtype::fp32, true, 35},
                                                   {Dtype::fp32, true, 64},
                                                   {Dtype::bf16, true, 35},
                                                   {Dtype::bf16, true, 64}}) {
    if (!cpu::onednn::unavailable(t).empty()) {
      std::cout << to_string(t) << " not run: " << cpu::onednn::unavailable(t) << "\n";
      continue;
    }
    BnShape s;
    s.n = 3, s.c = channels, s.hw = 13, s.channels_last = channels_last;
    const auto size = static_cast<std::size_t>(s.size()), cs = static_cast<std::size_t>(s.c);
    Rng rng(11);
    std::vector<float> xf(size), dyf(size), w(cs), b(cs), rm(cs, 0.0f), rv(cs, 1.0f);
    for (float& v : xf) v = rng.uniform() * 4 - 2;
    for (float& v : dyf) v = rng.uniform() * 2 - 1;
    for (std::size_t ch = 0; ch < cs; ++ch)
      w[ch] = 0.5f + rng.uniform(), b[ch] = rng.uniform() - 0.5f;
    b[0] = -100.0f;  // a channel the ReLU zeroes everywhere
    const bool low = t == Dtype::bf16;
    const std::size_t bytes = low ? 2 : 4;
    // The maps in t's storage, and a value of it as float.
    auto stored = [&](const std::vector<float>& v) {
      std::vector<std::uint8_t> out(v.size() * bytes);
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (low) {
          const cpu::Bf16 h = cpu::to_bf16(v[i]);
          std::memcpy(out.data() + 2 * i, &h, 2);
        } else {
          std::memcpy(out.data() + 4 * i, &v[i], 4);
        }
      }
      return out;
    };
    auto value = [&](const std::vector<std::uint8_t>& m, std::size_t i) {
      if (!low) {
        float f;
        std::memcpy(&f, m.data() + 4 * i, 4);
        return f;
      }
      cpu::Bf16 h;
      std::memcpy(&h, m.data() + 2 * i, 2);
      return cpu::from_bf16(h);
    };
    const std::vector<std::uint8_t> x = stored(xf), dy = stored(dyf);
    cpu::OnednnBatchNorm bn(t, channels_last);
    BnShape fused = s;
    fused.relu = true;
    const std::string at = std::string(to_string(t)) + (channels_last ? " NHWC " : " NCHW ") +
                           std::to_string(channels) + " channels";
    std::vector<std::uint8_t> y(x.size()), yr(x.size());
    std::vector<float> mean(cs), var(cs), mean_r(cs), var_r(cs), rm1 = rm, rv1 = rv, rm2 = rm,
                                                                 rv2 = rv;
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(bn.relu_mask_bytes(s)));
    ASSERT_GT(mask.size(), 0u) << at;
    bn.forward(s, true, x.data(), w.data(), b.data(), y.data(), mean.data(), var.data(), rm1.data(),
               rv1.data());
    bn.forward(fused, true, x.data(), w.data(), b.data(), yr.data(), mean_r.data(), var_r.data(),
               rm2.data(), rv2.data(), mask.data());
    EXPECT_EQ(mean_r, mean) << at;
    EXPECT_EQ(var_r, var) << at;
    EXPECT_EQ(rm2, rm1) << at;
    std::vector<float> masked(size);  // the ReLU's backward pass of dy
    int zeroed = 0;
    for (std::size_t i = 0; i < size; ++i) {
      const float unfused = value(y, i);
      ASSERT_EQ(value(yr, i), std::max(unfused, 0.0f)) << at << " y " << i;
      masked[i] = unfused > 0 ? value(dy, i) : 0.0f;
      zeroed += unfused <= 0;
    }
    EXPECT_GT(zeroed, static_cast<int>(size) / 4) << at;
    const std::vector<std::uint8_t> dy_masked = stored(masked);
    std::vector<std::uint8_t> dx(x.size()), dxr(x.size());
    std::vector<float> dw(cs), db(cs), dwr(cs), dbr(cs);
    bn.backward(s, x.data(), w.data(), mean.data(), var.data(), nullptr, dy_masked.data(),
                dx.data(), dw.data(), db.data());
    bn.backward(fused, x.data(), w.data(), mean.data(), var.data(), mask.data(), dy.data(),
                dxr.data(), dwr.data(), dbr.data());
    for (std::size_t ch = 0; ch < cs; ++ch) {
      EXPECT_NEAR(dbr[ch], db[ch], 1e-5f * (1 + std::fabs(db[ch]))) << at << " db " << ch;
      EXPECT_NEAR(dwr[ch], dw[ch], 1e-5f * (1 + std::fabs(dw[ch]))) << at << " dw " << ch;
    }
    EXPECT_EQ(db[0], 0.0f) << at;  // nothing passed the ReLU there
    const float ulp = low ? 1.0f / 128 : 1e-5f;
    for (std::size_t i = 0; i < size; ++i)
      ASSERT_NEAR(value(dxr, i), value(dx, i), ulp * (1 + std::fabs(value(dx, i)))) << at << i;
    EXPECT_THROW(bn.forward(fused, true, x.data(), w.data(), b.data(), yr.data(), mean_r.data(),
                            var_r.data(), rm2.data(), rv2.data()),
                 std::invalid_argument);
    EXPECT_THROW(bn.backward(fused, x.data(), w.data(), mean.data(), var.data(), nullptr, dy.data(),
                             dxr.data(), dwr.data(), dbr.data()),
                 std::invalid_argument);
  }
}

// One oneDNN batch norm given one shape with two epsilons builds a plan for each: every pass,
// in inference and training, equals the loops in double with its own eps (variances of 0.01,
// so eps = 0.5 moves every output).
TEST(BatchNorm, OnednnKeepsAPlanForEachEpsilon) {
  if (!cpu::onednn::built()) GTEST_SKIP() << cpu::onednn::unavailable(Dtype::fp32);
  BnShape s;
  s.n = 2, s.c = 8, s.hw = 9, s.channels_last = true;
  const auto size = static_cast<std::size_t>(s.size()), cs = static_cast<std::size_t>(s.c);
  Rng rng(3);
  std::vector<float> x(size), w(cs), b(cs), rm(cs), rv(cs);
  for (float& v : x) v = 0.1f * rng.uniform();
  for (std::size_t ch = 0; ch < cs; ++ch)
    w[ch] = 1 + rng.uniform(), b[ch] = rng.uniform(), rm[ch] = 0.05f, rv[ch] = 0.01f;
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  cpu::OnednnBatchNorm bn(Dtype::fp32, true);
  for (bool train : {false, true})
    for (float eps : {1e-5f, 0.5f, 1e-5f}) {
      s.eps = eps;
      std::vector<double> yd(size), md(cs), isd(cs), rmd = d(rm), rvd = d(rv);
      batchnorm_forward(s, train, d(x).data(), d(w).data(), d(b).data(), yd.data(), md.data(),
                        isd.data(), rmd.data(), rvd.data());
      std::vector<float> y(size), mean(cs), var(cs), rmf = rm, rvf = rv;
      bn.forward(s, train, x.data(), w.data(), b.data(), y.data(), mean.data(), var.data(),
                 rmf.data(), rvf.data());
      for (std::size_t i = 0; i < size; ++i)
        ASSERT_NEAR(y[i], yd[i], 1e-4 * (1 + std::fabs(yd[i])))
            << (train ? "train" : "infer") << " eps " << eps << " y " << i;
    }
}

// The GPU's NCHW sums (kernels/batchnorm.cu's nchw_sums_kernel) walk a channel as rows of
// Maps::piece_at: its loops, replayed here over every block and thread of a few grid heights,
// visit each value of the channel once and nothing else, for planes under, at and over a piece
// (7x7, 32x32, 32x32 + 1, 112x112) and batches smaller and larger than a block's row groups.
TEST(BatchNorm, TheGpuChannelRowsCoverEachChannelOnce) {
  constexpr int kRowGroups = 8, kWarp = 32;  // nchw_sums_kernel's block: 32 x kRowGroups
  for (const auto& [n, c, hw] : {std::tuple<int, int, int>{3, 2, 49},
                                 {1, 3, 1024},
                                 {9, 2, 1025},
                                 {2, 1, 12544},
                                 {20, 3, 1}}) {
    Maps s;
    s.n = n, s.c = c, s.hw = hw;
    for (std::int64_t down : {std::int64_t{1}, std::int64_t{3}, std::int64_t{64}})
      for (std::int64_t ch = 0; ch < c; ++ch) {
        std::vector<int> seen(static_cast<std::size_t>(s.size()), 0);
        const std::int64_t rows = s.piece_rows();
        for (std::int64_t by = 0; by < down; ++by)
          for (std::int64_t ty = 0; ty < kRowGroups; ++ty)
            for (std::int64_t r = by * kRowGroups + ty; r < rows; r += down * kRowGroups) {
              std::int64_t len = 0;
              const std::int64_t first = s.piece_at(ch, r, &len);
              for (std::int64_t tx = 0; tx < kWarp; ++tx)
                for (std::int64_t j = tx; j < len; j += kWarp) ++seen.at(first + j);
            }
        for (std::int64_t i = 0; i < s.count(); ++i) {
          ASSERT_EQ(seen[s.at(ch, i)], 1) << n << "x" << c << "x" << hw << " down " << down;
          seen[s.at(ch, i)] = 0;
        }
        for (int v : seen) ASSERT_EQ(v, 0) << "another channel's value, " << n << "x" << c;
      }
  }
}

// FastDiv divides exactly: every n below 2^16 and the edges of every quotient up to 2^32 by
// divisors from 1 to 2^32 - 1 (the maps' plane sizes and channel counts among them), and random
// n; ChannelOf (which the GPU's per-value kernels use) gives Maps::channel in both layouts, and
// Maps::channel itself for maps of 2^32 values or more.
TEST(BatchNorm, FastDivisionAndTheChannelOfAValue) {
  Rng rng(3);
  auto random_u32 = [&] { return static_cast<std::uint32_t>(rng.next()); };
  std::vector<std::uint32_t> divisors = {1,
                                         2,
                                         3,
                                         5,
                                         7,
                                         49,
                                         64,
                                         196,
                                         784,
                                         3136,
                                         12544,
                                         65535,
                                         65536,
                                         65537,
                                         1000,
                                         2048,
                                         4095,
                                         1u << 31,
                                         (1u << 31) + 1,
                                         0xfffffffeu,
                                         0xffffffffu};
  for (int i = 0; i < 40; ++i) divisors.push_back(random_u32() >> (i % 32) | 1u);
  for (std::uint32_t d : divisors) {
    const FastDiv div(d);
    std::vector<std::uint32_t> ns = {0u, 1u, d - 1, d, d + 1, 0xffffffffu, 0xfffffffeu};
    for (std::uint32_t n = 0; n < (1u << 16); n += d <= 64 ? 1 : 7) ns.push_back(n);
    for (std::uint64_t q = 1; q * d <= 0xffffffffu && q < (1u << 20); q = q * 3 + 1)
      for (std::uint64_t n : {q * d - 1, q * d, q * d + 1})
        if (n <= 0xffffffffu) ns.push_back(static_cast<std::uint32_t>(n));
    for (int i = 0; i < 2000; ++i) ns.push_back(random_u32());
    for (std::uint32_t n : ns) ASSERT_EQ(div(n), n / d) << n << " / " << d;
  }
  for (bool last : {false, true})
    for (const auto& [n, c, hw] : {std::tuple<int, int, int>{2, 3, 49}, {3, 64, 7}, {1, 5, 1}}) {
      Maps m;
      m.n = n, m.c = c, m.hw = hw, m.channels_last = last;
      const ChannelOf of(m);
      ASSERT_TRUE(of.fast);
      for (std::int64_t e = 0; e < m.size(); ++e) ASSERT_EQ(of(e), m.channel(e)) << e;
    }
  Maps big;
  big.n = 2, big.c = 64, big.hw = std::int64_t{1} << 26;  // 2^33 values
  const ChannelOf of(big);
  ASSERT_FALSE(of.fast);
  for (std::int64_t e : {std::int64_t{0}, (std::int64_t{1} << 32) + 5, big.size() - 1})
    ASSERT_EQ(of(e), big.channel(e));
}

TEST(BatchNorm, AWrongOutputIsCaughtInEachDirection) {
  for (BnDir d : {BnDir::fwd, BnDir::bwd, BnDir::infer}) {
    const Check chk = run_and_check("omp", {d, 2, 8, 6, 6}, 2, true);
    EXPECT_FALSE(chk.ok) << to_string(d);
    EXPECT_FALSE(chk.detail.empty());
  }
}

TEST(BatchNorm, BadShapesAreOneLineErrors) {
  using KV = std::vector<std::pair<std::string, std::string>>;
  // Each shape below lacks one thing or has one wrong, and has everything else.
  EXPECT_THROW(
      parse_batchnorm_shape(KV{{"dir", "fwd"}, {"batch", "1"}, {"c", "4"}, {"h", "1"}, {"w", "1"}}),
      std::invalid_argument);  // one value per channel: no variance
  EXPECT_THROW(parse_batchnorm_shape(KV{{"dir", "fwd"}, {"batch", "2"}, {"c", "4"}, {"h", "1"}}),
               std::invalid_argument);
  EXPECT_THROW(parse_batchnorm_shape(KV{{"batch", "2"}, {"c", "4"}, {"h", "1"}, {"w", "1"}}),
               std::invalid_argument);  // no dir: the forward is not assumed
  EXPECT_THROW(
      parse_batchnorm_shape(KV{{"dir", "up"}, {"batch", "2"}, {"c", "4"}, {"h", "1"}, {"w", "1"}}),
      std::invalid_argument);
  EXPECT_THROW(
      parse_batchnorm_shape(KV{{"dir", "fwd"}, {"batch", "0"}, {"c", "4"}, {"h", "1"}, {"w", "1"}}),
      std::invalid_argument);
  EXPECT_THROW(parse_batchnorm_shape(KV{
                   {"dir", "fwd"}, {"batch", "2"}, {"c", "4"}, {"h", "1"}, {"w", "1"}, {"k", "3"}}),
               std::invalid_argument);
  const BatchNormShape s =
      parse_batchnorm_shape(KV{{"dir", "bwd"}, {"batch", "2"}, {"c", "4"}, {"h", "3"}, {"w", "5"}});
  EXPECT_EQ(BatchNormWorkload(s).shape().to_string(), "dir=bwd,batch=2,c=4,h=3,w=5,dtype=fp32");
}

}  // namespace
}  // namespace pb
