// The op list: one line per op, in the order runs and reports show them.
#include <stdexcept>

#include "bench/ops/family.hpp"

namespace pb {

namespace {

std::vector<OpFamily>& registry() {
  static std::vector<OpFamily> families = {
      ops::gemm_family(),       ops::conv_family(),       ops::stream_family(),
      ops::transfer_family(),   ops::activation_family(), ops::softmax_family(),
      ops::loss_family(),       ops::batchnorm_family(),  ops::train_family(),
      ops::collective_family(),
  };
  return families;
}

}  // namespace

const std::vector<OpFamily>& op_families() { return registry(); }

void register_op_family(OpFamily family) {
  for (const OpFamily& f : registry())
    if (f.name == family.name) throw std::invalid_argument("op " + f.name + " is registered");
  registry().push_back(std::move(family));
}

}  // namespace pb
