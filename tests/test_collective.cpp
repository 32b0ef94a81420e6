// The collectives' workload, on one process: nccl-tests' bus factors, the suite's sizes, shapes
// that cannot be (a size that does not divide among the ranks, another number of ranks), and the
// exact check of each collective's result, right and wrong. Runs across ranks: tests/test_mpi.py.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "core/collective.hpp"
#include "core/deadline.hpp"

namespace pb {
namespace {

CollectiveShape shape(CollectiveKind k, std::int64_t bytes, int ranks, int rank,
                      Dtype t = Dtype::fp32) {
  CollectiveShape s;
  s.kind = k, s.bytes = bytes, s.ranks = ranks, s.rank = rank, s.dtype = t;
  return s;
}

TEST(Collective, BusFactorsAreNcclTests) {
  EXPECT_DOUBLE_EQ(bus_factor(CollectiveKind::allreduce, 2), 1.0);
  EXPECT_DOUBLE_EQ(bus_factor(CollectiveKind::allreduce, 8), 1.75);
  EXPECT_DOUBLE_EQ(bus_factor(CollectiveKind::allgather, 4), 0.75);
  EXPECT_DOUBLE_EQ(bus_factor(CollectiveKind::reduce_scatter, 8), 0.875);
  EXPECT_DOUBLE_EQ(bus_factor(CollectiveKind::broadcast, 8), 1.0);
}

// On one rank (NCCL's collectives run there) nothing moves between ranks: no bytes, so no
// bandwidth that a ceiling or a chart could take for one.
TEST(Collective, OneRankMovesNoBytes) {
  const auto one =
      parse_collective_shape({{"coll", "allreduce"}, {"bytes", "4096"}}, Dtype::fp32, 1, 0);
  const auto two =
      parse_collective_shape({{"coll", "allreduce"}, {"bytes", "4096"}}, Dtype::fp32, 2, 0);
  EXPECT_DOUBLE_EQ(CollectiveWorkload(one).min_bytes(), 0.0);
  EXPECT_DOUBLE_EQ(CollectiveWorkload(two).min_bytes(), 4096.0);
  // One rank's GPU case runs out of place (in place NCCL moves nothing there): two buffers.
  EXPECT_DOUBLE_EQ(CollectiveWorkload(one).device_bytes(), 8192.0);
  EXPECT_DOUBLE_EQ(CollectiveWorkload(two).device_bytes(), 4096.0);
}

TEST(Collective, SuiteSizes) {
  EXPECT_EQ(collective_suite_bytes(0), (std::vector<std::int64_t>{4096, 1 << 20, 16 << 20}));
  EXPECT_EQ(collective_suite_bytes(1).front(), 4);
  EXPECT_EQ(collective_suite_bytes(1).back(), std::int64_t{256} << 20);
  EXPECT_EQ(collective_suite_bytes(2).back(), std::int64_t{1} << 30);
}

TEST(Collective, ShapesThatCannotBeAreOneLine) {
  using KV = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(
      parse_collective_shape({{"coll", "allgather"}, {"bytes", "64"}}, Dtype::fp32, 2, 1).kind,
      CollectiveKind::allgather);
  for (const KV& bad : {KV{{"coll", "alltoall"}, {"bytes", "64"}},
                        KV{{"coll", "allreduce"}, {"bytes", "6"}},  // 1.5 floats per rank
                        KV{{"coll", "allreduce"}, {"bytes", "0"}}, KV{{"coll", "allreduce"}},
                        KV{{"coll", "allreduce"}, {"bytes", "64"}, {"ranks", "3"}},
                        KV{{"coll", "allreduce"}, {"bytes", "64"}, {"root", "1"}}})
    EXPECT_THROW(parse_collective_shape(bad, Dtype::fp32, 2, 0), std::invalid_argument);
  EXPECT_THROW(CollectiveWorkload(shape(CollectiveKind::allreduce, 64, 2, 0, Dtype::fp16)),
               std::invalid_argument);
}

// What each collective leaves on `rank` of `ranks`, computed here from its definition.
std::vector<float> expected(CollectiveKind k, std::int64_t n, int ranks, int rank) {
  const std::int64_t chunk = n / ranks;
  std::vector<float> out;
  for (std::int64_t i = 0; i < n; ++i) {
    float sum = 0;
    for (int r = 0; r < ranks; ++r) sum += collective_input(r, i);
    if (k == CollectiveKind::allreduce) out.push_back(sum);
    if (k == CollectiveKind::allgather)
      out.push_back(collective_input(static_cast<int>(i / chunk), i));
    if (k == CollectiveKind::broadcast) out.push_back(collective_input(0, i));
    if (k == CollectiveKind::reduce_scatter && i / chunk == rank) out.push_back(sum);
  }
  return out;
}

TEST(Collective, EachResultIsCheckedExactly) {
  for (CollectiveKind k : all_collectives())
    for (int rank : {0, 2}) {
      const CollectiveWorkload w(shape(k, 4 * 24, 3, rank));
      const Tensors in = w.make_inputs();
      std::vector<float> out = expected(k, 24, 3, rank);
      EXPECT_TRUE(w.verify(in, {Tensor::of("out", out)}).ok) << to_string(k) << " rank " << rank;
      out.back() += 1;
      const Check bad = w.verify(in, {Tensor::of("out", out)});
      EXPECT_FALSE(bad.ok) << to_string(k);
      EXPECT_NE(bad.detail.find("rank " + std::to_string(rank)), std::string::npos) << bad.detail;
    }
  // Each rank's buffer before: all-gather holds only its own chunk, broadcast only the root's.
  const Tensors gather =
      CollectiveWorkload(shape(CollectiveKind::allgather, 4 * 6, 3, 1)).make_inputs();
  EXPECT_EQ(gather[0].f32()[0], 0.0f);
  EXPECT_EQ(gather[0].f32()[2], collective_input(1, 2));
  const Tensors bcast =
      CollectiveWorkload(shape(CollectiveKind::broadcast, 4 * 6, 3, 1)).make_inputs();
  EXPECT_EQ(bcast[0].f32()[3], 0.0f);
  // The sums stay exact in bf16 (small integers): its check can be exact too.
  for (std::int64_t i = 0; i < 1000; ++i) {
    float sum = 0;
    for (int r = 0; r < 16; ++r) sum += collective_input(r, i);
    EXPECT_LE(std::abs(sum), 256.0f);  // every integer up to 256 is a bf16
  }
}

// A call given a deadline (NCCL's communicator coming up: kernels/collective.cu): its result
// when it returns in time, its exception when it throws; past the deadline one line and exit
// status 1, not a hang. The timeout's variable: a positive number of seconds, else one clear
// error.
TEST(Deadline, ACallPastItsDeadlineEndsTheProcessWithOneLine) {
  EXPECT_EQ(within_deadline(5.0, "a quick call", "", [] { return 42; }), 42);
  EXPECT_THROW(within_deadline(5.0, "a call that throws", "",
                               []() -> int { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_EXIT(within_deadline(0.2, "NCCL's communicator", " (a rank missing?)",
                              [] {
                                std::this_thread::sleep_for(std::chrono::seconds(60));
                                return 0;
                              }),
              ::testing::ExitedWithCode(1),
              "pairbench: NCCL's communicator did not finish within 0.2 s \\(a rank missing\\?\\)");
  EXPECT_EQ(timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", nullptr, 300), 300);
  EXPECT_EQ(timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", "", 300), 300);
  EXPECT_EQ(timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", "2.5", 300), 2.5);
  for (const char* bad : {"abc", "0", "-3", "5s", "nan", "inf"}) {
    try {
      timeout_seconds("PAIRBENCH_NCCL_TIMEOUT", bad, 300);
      ADD_FAILURE() << bad << " was taken";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), std::string("PAIRBENCH_NCCL_TIMEOUT=") + bad +
                                           " is not a positive number of seconds");
    }
  }
}

}  // namespace
}  // namespace pb
