#include "core/tensor.hpp"

#include <cstring>
#include <functional>
#include <numeric>
#include <stdexcept>

namespace pb {

namespace {

std::int64_t product(const std::vector<std::int64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), std::int64_t{1},
                         std::multiplies<std::int64_t>());
}

[[noreturn]] void wrong_elem(Elem have, const char* want, const std::string& name) {
  throw std::logic_error("tensor " + name + " holds " + to_string(have) + ", not " + want);
}

}  // namespace

const char* to_string(Elem e) { return e == Elem::f32 ? "f32" : "i32"; }

std::int64_t TensorView::numel() const { return product(dims); }

Tensor::Tensor(std::string name, std::vector<std::int64_t> dims, Elem elem)
    : name_(std::move(name)), elem_(elem), dims_(std::move(dims)) {
  for (std::int64_t d : dims_)
    if (d < 0) throw std::invalid_argument("tensor " + name_ + ": negative dimension");
  const auto n = static_cast<std::size_t>(product(dims_));
  if (elem_ == Elem::f32)
    f32_.resize(n);
  else
    i32_.resize(n);
}

Tensor Tensor::of(std::string name, std::vector<float> values) {
  Tensor t;
  t.name_ = std::move(name);
  t.dims_ = {static_cast<std::int64_t>(values.size())};
  t.f32_ = std::move(values);
  return t;
}

Tensor Tensor::of(std::string name, std::vector<std::int32_t> values) {
  Tensor t;
  t.name_ = std::move(name);
  t.elem_ = Elem::i32;
  t.dims_ = {static_cast<std::int64_t>(values.size())};
  t.i32_ = std::move(values);
  return t;
}

std::int64_t Tensor::numel() const { return product(dims_); }

std::size_t Tensor::bytes() const { return static_cast<std::size_t>(numel()) * 4; }

std::vector<float>& Tensor::f32() {
  if (elem_ != Elem::f32) wrong_elem(elem_, "f32", name_);
  return f32_;
}
const std::vector<float>& Tensor::f32() const { return const_cast<Tensor*>(this)->f32(); }

std::vector<std::int32_t>& Tensor::i32() {
  if (elem_ != Elem::i32) wrong_elem(elem_, "i32", name_);
  return i32_;
}
const std::vector<std::int32_t>& Tensor::i32() const { return const_cast<Tensor*>(this)->i32(); }

TensorView Tensor::view() {
  void* p = elem_ == Elem::f32 ? static_cast<void*>(f32_.data()) : i32_.data();
  return TensorView{elem_, Device::cpu, dims_, p};
}

const void* Tensor::data() const {
  return elem_ == Elem::f32 ? static_cast<const void*>(f32_.data()) : i32_.data();
}

bool Tensor::operator==(const Tensor& o) const {
  return name_ == o.name_ && elem_ == o.elem_ && dims_ == o.dims_ && f32_ == o.f32_ &&
         i32_ == o.i32_;
}

const Tensor* find(const Tensors& ts, const std::string& name) {
  for (const Tensor& t : ts)
    if (t.name() == name) return &t;
  return nullptr;
}

const Tensor& at(const Tensors& ts, const std::string& name) {
  if (const Tensor* t = find(ts, name)) return *t;
  std::string there;
  for (const Tensor& t : ts) there += (there.empty() ? "" : ", ") + t.name();
  throw std::invalid_argument("no tensor named " + name +
                              " (there are: " + (there.empty() ? "none" : there) + ")");
}

std::uint64_t fingerprint(const void* data, std::size_t bytes, std::uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t i = 0;
  for (std::uint64_t word; i + 8 <= bytes; i += 8) {  // 8 bytes a step, then the rest
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * 0x100000001b3u;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3u;
  return h;
}

std::uint64_t fingerprint(const Tensors& ts) {
  std::uint64_t h = kFingerprintSeed;
  for (const Tensor& t : ts) {
    h = fingerprint(t.name().data(), t.name().size(), h);
    h = fingerprint(t.dims().data(), t.dims().size() * sizeof(std::int64_t), h);
    h = fingerprint(t.data(), t.bytes(), h);
  }
  return h;
}

}  // namespace pb
