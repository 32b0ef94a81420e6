// Activations (forward and backward), softmax and the softmax cross-entropy loss: one file, as
// core/activation.* and cpu_ref/activation.cpp hold the three.
#include "bench/ops/family.hpp"
#include "core/activation.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

namespace {

std::vector<ImplSpec> gpu_impls(const char* op) {
  return {gpu::spec(op, "naive", any), gpu::spec(op, "vectorized", any)};
}

OpFamily row_family(const char* name, const char* shape_keys, std::vector<RowOp> kinds) {
  auto suite = [kinds](int level) {
    std::vector<SuiteEntry> out;
    for (RowOp k : kinds)
      for (const RowShape& s : row_suite(k, level)) out.push_back(entry<RowWorkload>(s));
    return out;
  };
  auto parse = [first = kinds.front()](const KeyValues& kv) { return parse_row_shape(first, kv); };
  return fp32_family<RowWorkload>(name, shape_keys, suite, parse,
                                  concat(cpu::row_impls(name), gpu_impls(name)));
}

}  // namespace

OpFamily activation_family() {
  auto suite = [](int level) {
    std::vector<SuiteEntry> out;
    const auto sizes = activation_suite_n(level);
    for (Act a : all_acts())
      for (bool bwd : {false, true})
        for (std::int64_t n : sizes)  // the thread sweep: GELU (erf) forward, largest size
          out.push_back(entry<ActivationWorkload>(ActivationShape{a, bwd, n},
                                                  a == Act::gelu_erf && !bwd && n == sizes.back()));
    return out;
  };
  return fp32_family<ActivationWorkload>(
      "activation", "fn=relu|leaky_relu|gelu_tanh|gelu_erf|sigmoid|tanh[,dir=fwd|bwd],n=N", suite,
      parse_activation_shape, concat(cpu::activation_impls(), gpu_impls("activation")));
}

OpFamily softmax_family() { return row_family("softmax", "rows=R,cols=C", {RowOp::softmax}); }

OpFamily loss_family() {
  return row_family("loss", "rows=R,cols=C[,dir=fwd|bwd]", {RowOp::loss_fwd, RowOp::loss_bwd});
}

}  // namespace pb::ops
