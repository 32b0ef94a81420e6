// What an op's family file (bench/ops/<op>.cpp) builds its OpFamily from. An op is added with its
// own files (core/<op>.*: workload and suite; cpu_ref/<op>.cpp: CPU implementations;
// kernels/<op>.cu: GPU kernels, registered with the GPU library; bench/ops/<op>.cpp: the family)
// plus one line in CMakeLists.txt per file and one in bench/ops/ops.cpp's list.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "kernels/gpu.hpp"

namespace pb::ops {

template <class V>
V concat(V a, const V& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A suite entry; sweep: also run across parallel units (threads, SMs).
template <class W, class S>
SuiteEntry entry(const S& shape, bool sweep = false) {
  return SuiteEntry{std::make_shared<W>(shape), sweep};
}

// An op whose work is fp32 only: its suite and --shape give workloads for fp32, none otherwise.
template <class W, class Parse>
OpFamily fp32_family(const std::string& name, const std::string& shape_keys,
                     std::function<std::vector<SuiteEntry>(int)> suite, Parse parse,
                     std::vector<ImplSpec> impls) {
  OpFamily f;
  f.name = name;
  f.shape_keys = shape_keys;
  f.suite = [suite](int level, Dtype t) {
    return t == Dtype::fp32 ? suite(level) : std::vector<SuiteEntry>{};
  };
  f.from_shape = [parse](const KeyValues& kv, Dtype t) -> std::shared_ptr<const Workload> {
    if (t != Dtype::fp32) return nullptr;
    return std::make_shared<W>(parse(kv));
  };
  f.impls = std::move(impls);
  return f;
}

// Every supported workload.
inline bool any(const Workload&) { return true; }
inline bool fp32_only(const Workload& w) { return w.dtype() == Dtype::fp32; }
// fp32 maps, with tf32 tensor cores allowed (cuBLAS's and cuDNN's GPU paths)
inline bool fp32_or_tf32(const Workload& w) {
  return w.dtype() == Dtype::fp32 || w.dtype() == Dtype::tf32;
}

// Why cuDNN runs no bf16 convolution on this GPU (one below sm_80).
inline std::string bf16_needs_sm80(const gpu::DeviceInfo& d) {
  return "cuDNN's bf16 convolutions need sm_80 or later; this GPU is sm_" +
         std::to_string(d.cc_major) + std::to_string(d.cc_minor);
}

// The built-in families, one file each.
OpFamily gemm_family();
OpFamily conv_family();
OpFamily train_family();
OpFamily stream_family();
OpFamily transfer_family();
OpFamily activation_family();
OpFamily softmax_family();
OpFamily loss_family();
OpFamily batchnorm_family();
OpFamily collective_family();
// What the GPU's collectives and data-parallel steps (NCCL) say when they cannot run ("" once
// every rank's communicator is up): bench/main.cpp sets it.
void set_nccl_reason(const std::string& why);
const std::string& nccl_reason();

}  // namespace pb::ops
