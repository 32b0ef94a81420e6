#include "cpu_ref/onednn.hpp"

#include <algorithm>
#include <stdexcept>

namespace pb::cpu::onednn {

namespace {
bool has(const std::vector<std::string>& isa, const char* flag) {
  return std::find(isa.begin(), isa.end(), flag) != isa.end();
}
}  // namespace

std::string dtype_unavailable(Dtype t, const std::vector<std::string>& isa, AmxState amx) {
  const bool amx_ok = amx == AmxState::usable;
  switch (t) {
    case Dtype::fp32:
      return "";
    case Dtype::bf16:
      return has(isa, "avx512_bf16") || (amx_ok && has(isa, "amx_bf16"))
                 ? ""
                 : "this CPU has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)";
    case Dtype::fp16:
      return has(isa, "avx512_fp16") || (amx_ok && has(isa, "amx_fp16"))
                 ? ""
                 : "this CPU has no fp16 arithmetic (AVX512-FP16 or AMX-FP16)";
    default:
      return "oneDNN runs no " + std::string(to_string(t)) + " on the CPU";
  }
}

#ifdef PAIRBENCH_HAVE_DNNL

bool built() { return true; }

std::string version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + " (" + std::string(v->hash).substr(0, 8) + ")";
}

namespace {
// The ISA oneDNN is capped at, with its name and why; none where nothing asks for a cap.
struct IsaCap {
  dnnl::cpu_isa isa = dnnl::cpu_isa::isa_default;
  std::string note;
};
IsaCap isa_cap() {
  const CpuInfo& cpu = cpu_info();
  if (cpu.no_16bit_fake) {
    const bool vnni = has(cpu.isa, "avx512_vnni"), avx512 = has(cpu.isa, "avx512f");
    const char* name = vnni ? "avx512_core_vnni" : avx512 ? "avx512_core" : "avx2";
    return {vnni     ? dnnl::cpu_isa::avx512_core_vnni
            : avx512 ? dnnl::cpu_isa::avx512_core
                     : dnnl::cpu_isa::avx2,
            std::string("oneDNN capped at ") + name + ": " + kFakeNo16BitEnv +
                " (a test hook) hides the CPU's bf16 and fp16 arithmetic"};
  }
  if (cpu.amx == AmxState::broken)
    return {dnnl::cpu_isa::avx512_core_fp16,
            "oneDNN capped at avx512_core_fp16: the CPU advertises AMX but CPUID leaf 0x1D has "
            "no tile palette, and AMX code dies there with SIGILL"};
  return {};
}
}  // namespace

std::string isa_cap_note() { return isa_cap().note; }

dnnl::engine& engine() {
  static dnnl::engine eng = [] {
    // Must come before oneDNN dispatches anything: the cap is read once.
    const IsaCap cap = isa_cap();
    if (!cap.note.empty()) dnnl::set_max_cpu_isa(cap.isa);
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return eng;
}

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

std::string effective_isa() {
  engine();  // the cap first
  using I = dnnl::cpu_isa;
  static const std::pair<I, const char*> names[] = {
      {I::sse41, "sse41"},
      {I::avx, "avx"},
      {I::avx2, "avx2"},
      {I::avx2_vnni, "avx2_vnni"},
      {I::avx2_vnni_2, "avx2_vnni_2"},
      {I::avx512_core, "avx512_core"},
      {I::avx512_core_vnni, "avx512_core_vnni"},
      {I::avx512_core_bf16, "avx512_core_bf16"},
      {I::avx512_core_fp16, "avx512_core_fp16"},
      {I::avx512_core_amx, "avx512_core_amx"},
      {I::avx512_core_amx_fp16, "avx512_core_amx_fp16"}};
  const I isa = dnnl::get_effective_cpu_isa();
  for (const auto& [i, name] : names)
    if (i == isa) return name;
  return "unknown";
}

dnnl::memory::data_type data_type(Dtype t) {
  using dt = dnnl::memory::data_type;
  switch (t) {
    case Dtype::bf16:
      return dt::bf16;
    case Dtype::fp16:
      return dt::f16;
    case Dtype::fp32:
      return dt::f32;
    default:
      throw std::invalid_argument("oneDNN runs no " + std::string(to_string(t)));
  }
}

std::string unavailable(Dtype t) { return dtype_unavailable(t, cpu_info().isa, cpu_info().amx); }

#else

bool built() { return false; }
std::string version() { return ""; }
std::string effective_isa() { return ""; }
std::string isa_cap_note() { return ""; }
std::string unavailable(Dtype) {
  return "built without oneDNN (scripts/setup installs it into .venv; then rebuild)";
}

#endif

}  // namespace pb::cpu::onednn
