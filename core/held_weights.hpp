// Weights held converted from one use to the next: a step's fp32 weights as a layer's library
// takes them (16 bits, in its layout), by their source's address. The first use after drop()
// converts into the held copy; later uses until the next drop() reuse it. core/train_step.hpp's
// walk drops them where the parameters change (after each update, and before an inference pass
// that does not promise the same parameters), so a layer's forward pass and its input's gradient
// share one conversion a training step, and inference converts once per set of parameters.
//
// drop() keeps each copy's memory: a step captured as a CUDA graph replays the conversions its
// capture enqueued into the very buffers the step outside it made (a copy is made only for a
// source it has not seen: in the first step, which may synchronize). A source always asks for
// the same number of values, converted the same way (a layer's weights, as its forward pass and
// its input's gradient both take them); another number for it throws.
// The CPU's 16-bit linear layers (cpu_ref/train.cpp) and the GPU's 16-bit convolutions and linear
// layers (kernels/train.cu) hold through it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

namespace pb {

template <class Buffer>
class HeldWeights {
 public:
  // The copy of the n values at `source`: make(n) returns a Buffer of n values for a source not
  // seen before; convert(out) fills it where it is stale.
  template <class Make, class Convert>
  auto* get(const void* source, std::int64_t n, Make&& make, Convert&& convert) {
    Held& h = held_[source];
    if (h.size != n) {
      if (h.size != 0)
        throw std::logic_error("held weights: a source of " + std::to_string(h.size) +
                               " values asked for " + std::to_string(n));
      h.buffer = make(n), h.size = n, h.current = false;
    }
    if (!h.current) convert(h.buffer.data()), h.current = true;
    return h.buffer.data();
  }
  void drop() {
    for (auto& [source, h] : held_) h.current = false;
  }
  std::size_t copies() const { return held_.size(); }

 private:
  struct Held {
    Buffer buffer;
    std::int64_t size = 0;
    bool current = false;
  };
  std::unordered_map<const void*, Held> held_;
};

}  // namespace pb
