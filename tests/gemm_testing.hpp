// Helpers shared by the tests: awkward GEMM shapes, running an implementation, comparing; a
// model the training tests define for themselves.
#pragma once

#include <string>
#include <vector>

#include "core/gemm.hpp"
#include "core/train.hpp"

namespace pb::testing {

// 1x1x1, primes, sizes off the tile sizes, every transpose combination, alpha/beta not 1/0.
std::vector<GemmShape> awkward_shapes();

using Floats = std::vector<float>;

// Runs an implementation once on the workload's inputs and returns C.
Floats run_impl(const ImplSpec& spec, const GemmWorkload& w, int threads = 1);
// Runs an implementation of any op once on the given inputs and returns its first output.
Floats run_impl(const ImplSpec& spec, const Workload& w, int threads, const Tensors& inputs);
// The workload's check of `values` as its first output (called by its name).
Check verify(const Workload& w, const Tensors& inputs, Floats values);

// The reference: the CPU naive implementation.
Floats reference(const GemmWorkload& w);

// Largest |x - ref| / (1 + |ref|).
double max_rel_diff(const Floats& x, const Floats& ref);
// What max_rel_diff may reach for fp32 accumulation over k terms (about 30 roundoffs x sqrt(k)).
double fp32_tolerance(const GemmShape& s);

ImplSpec find_impl(const std::vector<ImplSpec>& specs, const std::string& name);

std::string describe(const GemmShape& s);

// A model defined in the tests alone, as a user would add one: two convolutions (the first
// without a bias, into batch norm), a residual add, global average pooling and a linear layer,
// on 3 x 8 x 8 inputs.
ModelDesc small_model();
// The training workload of a model by name ("small": the one above), resnet on 16x16 images
// (which keeps the reference fast), at lr 0.05 for resnet and the small model (0.01 learns
// slowly, 0.1 diverges).
TrainWorkload train_workload(const std::string& model, std::int64_t batch, bool train = true);

// Inference (batch 4, in dtype) through a block laid out as a stage's first (conv3, bn3, then
// the projection's conv and bn, the add, the ReLU) and one as the next (its add's residual the
// block's input): every fusion of inference_fusions on the way.
TrainWorkload folded_inference_workload(Dtype dtype);
// The workload's inputs with its batch norms far from the identity: weights, biases and running
// statistics drawn (under PyTorch's initial ones a batch norm is about the identity, so a wrong
// fold of it into a convolution could pass a check).
Tensors drawn_batch_norms(const TrainWorkload& w);

}  // namespace pb::testing
