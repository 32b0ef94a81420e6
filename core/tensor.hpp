// Typed tensors: what a workload's inputs and an implementation's outputs are made of.
// A TensorView is an element type, a shape, a device and a pointer, and owns nothing (the op
// functions of cpu_ref/ and kernels/ take plain pointers and a shape struct instead: GemmShape,
// ConvShape, a model's description). A Tensor is a named host tensor that
// owns its elements: the inputs a workload makes, the outputs an implementation reads back.
// A case has as many named outputs as its work produces (a backward pass: "dw" and "db"), and
// verification looks them up by name.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/types.hpp"

namespace pb {

enum class Elem { f32, i32 };  // the element types tensors hold (labels are int32)
const char* to_string(Elem e);

struct TensorView {
  Elem elem = Elem::f32;
  Device device = Device::cpu;
  std::vector<std::int64_t> dims;
  void* data = nullptr;
  std::int64_t numel() const;
  // The elements as T (float or std::int32_t); throws std::logic_error for the other type.
  template <class T>
  T* as() const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, std::int32_t>);
    if (elem != (std::is_same_v<T, float> ? Elem::f32 : Elem::i32))
      throw std::logic_error(std::string("a view of ") + to_string(elem) + " read as another type");
    return static_cast<T*>(data);
  }
};

class Tensor {
 public:
  Tensor() = default;
  // Zeros of the given shape.
  Tensor(std::string name, std::vector<std::int64_t> dims, Elem elem = Elem::f32);
  // One-dimensional, with these values.
  static Tensor of(std::string name, std::vector<float> values);
  static Tensor of(std::string name, std::vector<std::int32_t> values);

  const std::string& name() const { return name_; }
  Elem elem() const { return elem_; }
  const std::vector<std::int64_t>& dims() const { return dims_; }
  std::int64_t numel() const;
  std::size_t bytes() const;
  // The elements; throw std::logic_error for the other element type.
  std::vector<float>& f32();
  const std::vector<float>& f32() const;
  std::vector<std::int32_t>& i32();
  const std::vector<std::int32_t>& i32() const;
  TensorView view();
  const void* data() const;  // the first element, whatever its type
  bool operator==(const Tensor& o) const;

 private:
  std::string name_;
  Elem elem_ = Elem::f32;
  std::vector<std::int64_t> dims_;
  std::vector<float> f32_;
  std::vector<std::int32_t> i32_;
};

using Tensors = std::vector<Tensor>;

// The tensor called `name`, or nullptr.
const Tensor* find(const Tensors& ts, const std::string& name);
// The tensor called `name`; throws std::invalid_argument naming the ones there are.
const Tensor& at(const Tensors& ts, const std::string& name);

// A 64-bit hash (FNV-1a over 8-byte words) of the tensors' names, shapes and elements: equal
// tensors, equal fingerprints; unequal ones differ but by chance (2^-64).
std::uint64_t fingerprint(const Tensors& ts);
// The same hash (FNV-1a, 8 bytes a step) of `bytes` bytes, continuing from h.
constexpr std::uint64_t kFingerprintSeed = 0xcbf29ce484222325u;
std::uint64_t fingerprint(const void* data, std::size_t bytes, std::uint64_t h = kFingerprintSeed);

}  // namespace pb
