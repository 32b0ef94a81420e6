// Batch normalization as an op: BatchNorm2d over NCHW maps with PyTorch's semantics, as
// core/layers.hpp gives them (BnShape: momentum 0.1, eps 1e-5).
//   dir=fwd    training mode: the batch's mean and biased variance normalize; outputs y and the
//              running statistics after the batch (moved by the momentum toward the batch's mean
//              and unbiased variance)
//   dir=bwd    from dy and the forward pass's batch statistics (the inputs mean and var, as a
//              framework keeps them): dx, dweight, dbias
//   dir=infer  the running statistics normalize: y
// Verified against the double-precision functions of core/layers.hpp on the same inputs.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/layers.hpp"
#include "core/workload.hpp"

namespace pb {

enum class BnDir { fwd, bwd, infer };
const char* to_string(BnDir d);

struct BatchNormShape {
  BnDir dir = BnDir::fwd;
  std::int64_t batch = 8, c = 64, h = 56, w = 56;
  BnShape maps() const;  // NCHW
};

// ResNet-50's maps: quick: batch 8 of 64 x 56 x 56 (its first stage); standard: also batch 32 of
// 256 x 56 x 56; full: also batch 32 of 2048 x 7 x 7 (its last) and batch 64 of 256 x 56 x 56.
// Each in the three directions.
std::vector<BatchNormShape> batchnorm_suite(int level);
BatchNormShape parse_batchnorm_shape(const std::vector<std::pair<std::string, std::string>>& kv);

class BatchNormWorkload : public Workload {
 public:
  explicit BatchNormWorkload(BatchNormShape s) : s_(s) {}
  const BatchNormShape& bn() const { return s_; }
  std::string op() const override { return "batchnorm"; }
  Shape shape() const override;
  Dtype dtype() const override { return Dtype::fp32; }
  // Nominal per element: fwd 7 (the statistics 3, the normalization 4), bwd 11, infer 4.
  double flops() const override;
  // The maps once each: fwd and infer read x and write y; bwd reads x and dy and writes dx.
  double min_bytes() const override;
  double write_allocate_bytes() const override { return 4.0 * elements(); }
  bool bandwidth_bound() const override { return true; }
  // Inputs, outputs, and the reference's double copies of the maps.
  double host_bytes(Device) const override { return 48.0 * elements(); }
  double device_bytes() const override { return 12.0 * elements(); }
  // x (n c h w: per channel an offset in [-2, 2] plus a spread in [0.25, 2.25] times uniform
  // [-1, 1)), weight, bias, running_mean, running_var; bwd also dy, and the batch's mean and
  // var of x.
  Tensors make_inputs() const override;
  // fwd: y, running_mean, running_var; bwd: dx, dweight, dbias; infer: y.
  std::vector<std::string> outputs() const override;
  // Each output against the double reference: the largest difference over the output's
  // largest magnitude (dx's: or its terms', dx_term_scale, where larger) within 16 unit
  // roundoffs x (sqrt(m) + 16), m = batch h w the values of a channel (the statistics sum m of
  // them).
  Check verify(const Tensors& inputs, const Tensors& outputs) const override;
  void prepare_reference(const Tensors& inputs) const override;
  double elements() const {
    return static_cast<double>(s_.batch) * static_cast<double>(s_.c) * static_cast<double>(s_.h) *
           static_cast<double>(s_.w);
  }

 private:
  using Reference = std::vector<std::vector<double>>;  // in the order of outputs()
  const Reference& reference(const Tensors& inputs) const;
  double dx_term_scale(const Tensors& inputs) const;
  BatchNormShape s_;
  ReferenceMemo<Reference> ref_;
};

}  // namespace pb
