// Helpers shared by the GEMM tests: awkward shapes, running an implementation, comparing.
#pragma once

#include <string>
#include <vector>

#include "core/gemm.hpp"

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

}  // namespace pb::testing
