// Host<->device copies, 4 KiB to 1 GiB: pageable and pinned, both directions, device to device.
#include "bench/ops/family.hpp"
#include "core/stream.hpp"

namespace pb::ops {

OpFamily transfer_family() {
  auto suite = [](int level) {
    std::vector<SuiteEntry> out;
    for (std::int64_t bytes : transfer_suite_bytes(level)) {
      for (CopyDir d : {CopyDir::h2d, CopyDir::d2h})
        for (bool pinned : {false, true})
          out.push_back(entry<TransferWorkload>(TransferShape{d, pinned, bytes}));
      out.push_back(entry<TransferWorkload>(TransferShape{CopyDir::d2d, false, bytes}));
    }
    return out;
  };
  return fp32_family<TransferWorkload>("transfer", "dir=h2d|d2h|d2d[,host=pageable|pinned],bytes=B",
                                       suite, parse_transfer_shape,
                                       {gpu::spec("transfer", "memcpy", any)});
}

}  // namespace pb::ops
