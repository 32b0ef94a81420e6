// STREAM and transfer workloads: byte and FLOP models, verification, shape parsing; the CPU
// STREAM implementation against them on awkward lengths and thread counts.
#include <gtest/gtest.h>

#include <cmath>

#include "core/stream.hpp"
#include "cpu_ref/cpu.hpp"
#include "tests/gemm_testing.hpp"

namespace pb {
namespace {

testing::Floats run_cpu(const StreamWorkload& w, int threads) {
  auto impl = cpu::stream_impls().at(0).make(w, threads);
  impl->activate();
  impl->prepare(w.make_inputs());
  impl->run();
  return at(impl->result(), w.outputs()[0]).f32();
}

TEST(StreamModel, CountsBytesAsStreamDoes) {
  const std::int64_t n = 1000;
  auto bytes = [&](StreamKernel k) { return StreamWorkload({k, n}).min_bytes(); };
  EXPECT_DOUBLE_EQ(bytes(StreamKernel::copy), 8.0 * n);
  EXPECT_DOUBLE_EQ(bytes(StreamKernel::scale), 8.0 * n);
  EXPECT_DOUBLE_EQ(bytes(StreamKernel::add), 12.0 * n);
  EXPECT_DOUBLE_EQ(bytes(StreamKernel::triad), 12.0 * n);
  EXPECT_DOUBLE_EQ(bytes(StreamKernel::dot), 8.0 * n);
  EXPECT_DOUBLE_EQ(StreamWorkload({StreamKernel::triad, n}).write_allocate_bytes(), 4.0 * n);
  EXPECT_DOUBLE_EQ(StreamWorkload({StreamKernel::dot, n}).write_allocate_bytes(), 0.0);
  EXPECT_DOUBLE_EQ(StreamWorkload({StreamKernel::triad, n}).flops(), 2.0 * n);
  EXPECT_DOUBLE_EQ(StreamWorkload({StreamKernel::copy, n}).flops(), 0.0);
}

TEST(StreamModel, ReadsExactlyTheArraysItsElementUses) {
  // stream_reads decides what the GPU kernel loads and what is uploaded (and counted in
  // transfer_s): a NaN in an array the kernel reads shows in its element, one in any other not.
  for (StreamKernel k : all_stream_kernels()) {
    for (int j = 0; j < 3; ++j) {
      float arrays[3][1] = {{1.0f}, {2.0f}, {3.0f}};
      arrays[j][0] = NAN;
      const float v = stream_element(k, arrays[0], arrays[1], arrays[2], 0);
      EXPECT_EQ(std::isnan(v), stream_reads(k, j)) << to_string(k) << " array " << j;
    }
  }
}

TEST(Transfer, DeviceToDeviceCountsReadAndWriteLikeStreamCopy) {
  const TransferWorkload d2d({CopyDir::d2d, false, 4096});
  EXPECT_DOUBLE_EQ(d2d.min_bytes(), 2.0 * 4096);
  EXPECT_DOUBLE_EQ(d2d.min_bytes(), StreamWorkload({StreamKernel::copy, 1024}).min_bytes());
  EXPECT_DOUBLE_EQ(TransferWorkload({CopyDir::h2d, true, 4096}).min_bytes(), 4096);
}

TEST(StreamModel, SuiteArraysExceedTheCaches) {
  EXPECT_GE(4.0 * stream_suite_n(0), 4.0 * 32 * (1 << 20));  // >= 4 x a 32 MiB LLC
  EXPECT_LT(stream_suite_n(0), stream_suite_n(1));
  EXPECT_LT(stream_suite_n(1), stream_suite_n(2));
}

TEST(StreamElement, IsStreamsArithmetic) {
  const float a[] = {1}, b[] = {2}, c[] = {4};
  EXPECT_EQ(stream_element(StreamKernel::copy, a, b, c, 0), 1);
  EXPECT_EQ(stream_element(StreamKernel::scale, a, b, c, 0), 12);
  EXPECT_EQ(stream_element(StreamKernel::add, a, b, c, 0), 3);
  EXPECT_EQ(stream_element(StreamKernel::triad, a, b, c, 0), 14);
  EXPECT_EQ(stream_element(StreamKernel::dot, a, b, c, 0), 2);
}

class CpuStream : public ::testing::TestWithParam<StreamKernel> {};

TEST_P(CpuStream, VerifiesOnAwkwardLengthsAndThreads) {
  for (std::int64_t n : {1, 17, 1000003}) {
    for (int threads : {1, 2, 3}) {
      const StreamWorkload w({GetParam(), n});
      const Check c = testing::verify(w, w.make_inputs(), run_cpu(w, threads));
      EXPECT_TRUE(c.ok) << to_string(GetParam()) << " n=" << n << " threads=" << threads << ": "
                        << c.detail;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, CpuStream, ::testing::ValuesIn(all_stream_kernels()));

TEST(StreamVerify, RejectsWrongResults) {
  const StreamWorkload triad({StreamKernel::triad, 1000});
  const auto in = triad.make_inputs();
  testing::Floats out = run_cpu(triad, 2);
  EXPECT_TRUE(testing::verify(triad, in, out).ok);
  out[999] += 1e-4f;
  EXPECT_FALSE(testing::verify(triad, in, out).ok);
  out[999] = NAN;
  EXPECT_FALSE(testing::verify(triad, in, out).ok);
  EXPECT_FALSE(testing::verify(triad, in, testing::Floats(999)).ok);

  const StreamWorkload dot({StreamKernel::dot, 100000});
  const auto din = dot.make_inputs();
  testing::Floats s = run_cpu(dot, 2);
  EXPECT_TRUE(testing::verify(dot, din, s).ok);
  const auto &da = din[0].f32(), &db = din[1].f32();
  s[0] -= da[5] * db[5] + da[6] * db[6] + 1.0f;  // as if terms were missed
  EXPECT_FALSE(testing::verify(dot, din, s).ok);
}

TEST(StreamShapeParse, AcceptsKeysAndRejectsBadOnes) {
  const StreamShape s = parse_stream_shape({{"kernel", "dot"}, {"n", "12"}});
  EXPECT_EQ(s.kernel, StreamKernel::dot);
  EXPECT_EQ(s.n, 12);
  for (auto kv : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"kernel", "triad"}, {"n", "0"}},
           {{"kernel", "triad"}, {"n", "-5"}},
           {{"kernel", "triad"}, {"n", "99999999999999999999"}},
           {{"kernel", "fma"}, {"n", "4"}},
           {{"n", "4"}},
           {{"kernel", "triad"}, {"n", "4"}, {"m", "4"}}})
    EXPECT_THROW(parse_stream_shape(kv), std::invalid_argument);
}

TEST(Transfer, ModelShapeAndVerification) {
  const TransferWorkload w({CopyDir::h2d, true, 4096});
  EXPECT_EQ(w.shape().to_string(), "dir=h2d,host=pinned,bytes=4096");
  EXPECT_EQ(TransferWorkload({CopyDir::d2d, false, 8}).shape().to_string(), "dir=d2d,bytes=8");
  EXPECT_DOUBLE_EQ(w.min_bytes(), 4096);
  EXPECT_DOUBLE_EQ(w.flops(), 0);
  const auto in = w.make_inputs();
  ASSERT_EQ(in[0].numel(), 1024);
  EXPECT_TRUE(testing::verify(w, in, in[0].f32()).ok);
  testing::Floats bad = in[0].f32();
  bad[1023] = -bad[1023] + 1;
  EXPECT_FALSE(testing::verify(w, in, bad).ok);
  const auto sizes = transfer_suite_bytes(1);
  EXPECT_EQ(sizes.front(), 4096);
  EXPECT_EQ(sizes.back(), 1LL << 30);
}

TEST(TransferShapeParse, RejectsBadOnes) {
  EXPECT_EQ(parse_transfer_shape({{"dir", "d2h"}, {"bytes", "64"}}).dir, CopyDir::d2h);
  for (auto kv : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"dir", "h2d"}, {"bytes", "6"}},
           {{"dir", "h2d"}, {"bytes", "0"}},
           {{"dir", "up"}, {"bytes", "64"}},
           {{"dir", "d2d"}, {"host", "pinned"}, {"bytes", "64"}},
           {{"dir", "h2d"}, {"host", "mmap"}, {"bytes", "64"}},
           {{"bytes", "64"}}})
    EXPECT_THROW(parse_transfer_shape(kv), std::invalid_argument);
}

}  // namespace
}  // namespace pb
