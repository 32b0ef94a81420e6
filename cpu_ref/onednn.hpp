// oneDNN, the CPU library PyTorch's matmuls and convolutions run on: one engine and one stream
// for the process, its version and ISA for the report, and which element types this CPU can run.
// Built in when CMake finds oneDNN (scripts/setup installs it into .venv); without it, the
// oneDNN cases are listed as skipped with the reason.
#pragma once

#include <string>
#include <vector>

#include "core/types.hpp"
#include "cpu_ref/cpu.hpp"

#ifdef PAIRBENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace pb::cpu::onednn {

bool built();           // oneDNN is compiled in
std::string version();  // e.g. "3.2.0 (40112196)"; "" when not built in
// The ISA oneDNN's kernels use on this CPU (e.g. "avx512_core_amx"), after any cap below.
std::string effective_isa();
// Non-empty when pairbench capped oneDNN's ISA, and why (the AMX trap: see AmxState).
std::string isa_cap_note();

// Why oneDNN cannot run inputs of type t on a CPU with these ISA flags and AMX state ("" when
// it can): bf16 needs AVX512-BF16 or usable AMX-BF16, fp16 AVX512-FP16 or usable AMX-FP16.
std::string dtype_unavailable(Dtype t, const std::vector<std::string>& isa, AmxState amx);
// The same for this machine and build ("built without oneDNN ..." when it is not built in).
std::string unavailable(Dtype t);

#ifdef PAIRBENCH_HAVE_DNNL
dnnl::engine& engine();  // the CPU engine; its first use applies the ISA cap
dnnl::stream& stream();
dnnl::memory::data_type data_type(Dtype t);  // the storage type of an input of type t
#endif

}  // namespace pb::cpu::onednn
