// A training step of any model description (core/model.hpp), written once as one forward and
// one backward walk over a device's op functions. `Ops` is one device's backend:
// cpu_ref/train.cpp gives the CPU's (OpenBLAS or oneDNN, OpenMP), kernels/train.cu the GPU's
// (cuBLAS, cuDNN or the project's kernels, all on one stream), core/train_ref.cpp the reference's
// (double). So the reference cannot drift from the steps it checks, and the CPU's tests run the
// very sequence of calls the GPU runs; each op function is tested against its reference on its
// own. An Ops provides:
//   ActType, ParamType                 the element types of activations and of parameters (one
//                                      type, or a bf16 step's 16-bit maps and float parameters:
//                                      then the op functions take each operand in its own type,
//                                      and to_float(x, out, n) converts the logits)
//   Buffer<T>, buffer<T>(n)            n elements of the device's memory (data() gives them)
//   gemm(GemmShape, a, b, c)           c = op(a) op(b) (+ beta c), row-major (core/gemm.hpp)
//   conv(ConvShape, in0, in1, b, out, db)  the pass s.dir names, as cpu::conv_naive takes it
//   relu(z, dy, out, n)                out = relu(z), or with dy the gradient dy relu'(z)
//   rows(RowShape, x, labels, out)     the loss (loss_fwd) or its gradient (loss_bwd) per row
//   mean(x, n, out)                    *out = the mean of x[0..n)
//   bias_rows(b, out, rows, cols)      every row of out set to b
//   column_sums(x, rows, cols, out)    the bias gradient
//   maxpool_forward(PoolShape, x, out, arg) / maxpool_backward(PoolShape, dout, arg, dx)
//   batchnorm_forward(BnShape, train, x, weight, bias, y, mean, invstd, running_mean,
//                     running_var) / batchnorm_backward(BnShape, x, weight, mean, invstd, dy,
//                     dx, dweight, dbias)   core/layers.hpp (dx may be null; an Ops may keep
//                                      another statistic than invstd: its backward reads it)
//   sgd_momentum(p, v, g, n, lr, momentum, weight_decay)
//   add(a, b, out, n), copy(x, out, n), zero(x, n)
//   plane_means(Maps, x, out)          out (n x c) the mean of each map (global average pooling)
//   spread_means(Maps, dout, dx)       each map's dx its dout / hw (its backward pass)
// and, where it fuses in inference (core/model.hpp's inference_fusions):
//   add_relu(a, b, out, n)             out = relu(a + b) (and batchnorm_forward honours
//                                      BnShape::relu)
//   conv_fused(ConvShape, x, w, b, ConvTail, out)
//                                      a forward convolution and what follows it (ConvTail)
//   drop_held_weights()                (optional) where it keeps weights converted from one use
//                                      to the next (the CPU's conv_fused; the 16-bit steps'
//                                      gemm and conv: core/held_weights.hpp): forget them (the
//                                      parameters changed: an update, or an inference pass
//                                      whose caller does not promise the same parameters)
// and, where it fuses a ReLU into the batch norm before it in training too:
//   batchnorm_relu_mask_bytes(BnShape) the bytes of the mask the fused passes keep (-1: this
//                                      batch norm is not fused)
//   batchnorm_relu_forward(BnShape, x, weight, bias, y, mean, invstd, running_mean, running_var,
//                          mask) / batchnorm_relu_backward(BnShape, x, weight, mean, invstd,
//                          mask, dy, dx, dweight, dbias)
//                                      y = relu(batch norm(x)), and where y > 0 into the mask;
//                                      backward from the ReLU's output's gradient dy
// Every pointer a step passes is the device's memory; so are the loss and the logits it leaves.
//
// Maps are NCHW unless the Ops keeps them channels-last between layers (NHWC, oneDNN's layout on
// the CPU): such an Ops has channels_last() (true when it does) and relayout(Maps, x, out) (the
// maps in the other layout). Its convolutions then take and give NHWC, and the walk hands it
// every map shape (PoolShape, BnShape, Maps) marked so; the walk relayouts the model's input once
// and the maps a linear layer reads flattened (PyTorch's order is NCHW's), nothing else.
//
// The step has three parts: forward and backward, every parameter's gradient into one flat
// buffer; the gradients reduced (nothing on one device: the seam where an all-reduce across
// ranks goes); the update.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/activation.hpp"
#include "core/gemm.hpp"
#include "core/layers.hpp"
#include "core/model.hpp"
#include "core/train.hpp"

namespace pb {

// A step on a device whose parameters are fp32, over the caller's parameters, velocity and state
// (device memory).
class ModelStep {
 public:
  virtual ~ModelStep() = default;
  // Whether params may differ from a forward pass to the next: `fresh` (the first pass over
  // these values, or any pass that promises nothing), or `unchanged` (the same values at the
  // same address as the step's last forward pass: a device may reuse the weights it converted
  // then, as cpu_ref/train.cpp's oneDNN convolutions and the 16-bit steps' held weights
  // (core/held_weights.hpp) do; an update in between forgets them).
  enum class Params { fresh, unchanged };
  // The forward pass alone, with the running statistics: the logits (batch x classes).
  virtual void forward(const float* x, const float* params, float* state, Params p) = 0;
  // Forward (the state updated), the loss, backward: the gradients in grads(), the loss in loss().
  virtual void forward_backward(const float* x, const std::int32_t* labels, const float* params,
                                float* state) = 0;
  // SGD with momentum (and weight decay) from grads(), in place.
  virtual void update(float* params, float* velocity) = 0;
  virtual float* grads() = 0;
  virtual const float* logits() const = 0;
  virtual const float* loss() const = 0;
  // What a step does between the two: average the gradients over the ranks (none on one
  // device).
  std::function<void(float* grads, std::int64_t n)> reduce;
  // Called during the backward pass as the gradients from an offset to the end become final
  // (the parameters lie in layer order, and the backward pass walks the layers from the last):
  // where a reduce overlapped with the backward pass starts on them.
  std::function<void(float* grads, std::int64_t from)> on_ready;
  // The step: the three parts in order.
  void step(const float* x, const std::int32_t* labels, float* params, float* velocity,
            float* state, std::int64_t param_count) {
    forward_backward(x, labels, params, state);
    if (reduce) reduce(grads(), param_count);
    update(params, velocity);
  }
};

// Whether an Ops may keep maps channels-last (it has channels_last()).
template <class Ops, class = void>
struct HasLayouts : std::false_type {};
template <class Ops>
struct HasLayouts<Ops, std::void_t<decltype(std::declval<const Ops&>().channels_last())>>
    : std::true_type {};

// Whether an Ops fuses a ReLU into the op before it in inference (it has add_relu(a, b, out, n),
// and its batchnorm_forward honours BnShape::relu); training's forward pass takes add_relu too.
template <class Ops, class = void>
struct FusesRelu : std::false_type {};
template <class Ops>
struct FusesRelu<Ops, std::void_t<decltype(std::declval<Ops&>().add_relu(
                          std::declval<const typename Ops::ActType*>(),
                          std::declval<const typename Ops::ActType*>(),
                          std::declval<typename Ops::ActType*>(), std::int64_t{}))>>
    : std::true_type {};

// Whether an Ops fuses a ReLU into the batch norm before it in training (it has
// batchnorm_relu_mask_bytes): the batch norm's forward pass writes the ReLU's output, and its
// backward pass takes the ReLU's, so that neither the batch norm's output nor its gradient is
// written. The walk keeps each fused batch norm's mask from its forward pass to its backward.
template <class Ops, class = void>
struct FusesTrainingRelu : std::false_type {};
template <class Ops>
struct FusesTrainingRelu<
    Ops, std::void_t<decltype(std::declval<Ops&>().batchnorm_relu_mask_bytes(BnShape{}))>>
    : std::true_type {};

// What a convolution computes after itself in inference (an Ops with conv_fused), each part
// optional: out = relu(batch norm(conv + b) + residual), the batch norm with its running
// statistics (weight null: none), the residual maps like the output (null: none).
template <class T, class P>
struct ConvTail {
  const P *weight = nullptr, *bias = nullptr, *mean = nullptr, *var = nullptr;
  float eps = 0;
  const T* residual = nullptr;
  bool relu = false;
};

// Whether an Ops fuses a convolution with the layers after it in inference (it has conv_fused).
template <class Ops, class = void>
struct FusesConv : std::false_type {};
template <class Ops>
struct FusesConv<
    Ops, std::void_t<decltype(std::declval<Ops&>().conv_fused(
             std::declval<const ConvShape&>(), std::declval<const typename Ops::ActType*>(),
             std::declval<const typename Ops::ParamType*>(),
             std::declval<const typename Ops::ParamType*>(),
             std::declval<const ConvTail<typename Ops::ActType, typename Ops::ParamType>&>(),
             std::declval<typename Ops::ActType*>()))>> : std::true_type {};

// Whether an Ops keeps converted weights from one use to the next (it has drop_held_weights()).
template <class Ops, class = void>
struct HoldsWeights : std::false_type {};
template <class Ops>
struct HoldsWeights<Ops, std::void_t<decltype(std::declval<Ops&>().drop_held_weights())>>
    : std::true_type {};

// Whether an Ops needs every map and gradient at an address of its own (it has kKeepsEveryMap):
// the reference's, whose kinks pass keys each map's terms by its address. Every other Ops'
// training walk writes ReLUs and residual adds in place and shares gradient buffers
// (core/model.hpp's training_buffers).
template <class Ops, class = void>
struct KeepsEveryMap : std::false_type {};
template <class Ops>
struct KeepsEveryMap<Ops, std::enable_if_t<Ops::kKeepsEveryMap>> : std::true_type {};

// The walks of one model on one device's Ops.
template <class Ops>
class Walk {
 public:
  using T = typename Ops::ActType;
  using P = typename Ops::ParamType;
  // Activations in a 16-bit storage type (a bf16 step's maps, with fp32 parameters): the
  // caller's float batch is converted on the way in, the logits on the way out.
  static constexpr bool kLowMaps = !std::is_floating_point_v<T>;

  Walk(const ModelDesc& m, const TrainShape& s, Ops& ops) : m_(m), s_(s), ops_(ops) {
    const std::size_t tensors = m.layers.size() + 1;
    const std::int64_t B = s.batch;
    values_.resize(tensors);
    if (s.train) grads_.resize(tensors);
    aux_.resize(m.layers.size());
    args_.resize(m.layers.size());
    flat_.resize(m.layers.size());
    if constexpr (HasLayouts<Ops>::value) channels_last_ = ops.channels_last();
    if (kLowMaps || (channels_last_ && !m.input.flat()))
      input_ = ops.template buffer<T>(B * m.input.size());
    fusions_ = inference_fusions(m, FusesConv<Ops>::value, FusesRelu<Ops>::value);
    // Each map's buffer and, in training, each gradient's (core/model.hpp): inference's maps
    // share buffers where their lives do not overlap; training's are written in place where no
    // backward pass reads what they overwrite, and its gradients share theirs, but the
    // reference's (KeepsEveryMap).
    if (s.train) plan_ = training_buffers(m, !KeepsEveryMap<Ops>::value);
    buffer_of_ = s.train ? plan_.value : inference_buffers(m, fusions_);
    std::vector<std::int64_t> elements(tensors, 0), grad_elements(tensors, 0);  // per sample
    for (std::size_t t = 1; t < tensors; ++t) {
      const std::int64_t size = m.layers[t - 1].out.size();
      const int b = buffer_of_[t];
      if (b <= 0) continue;
      elements[b] = std::max(elements[b], size);
      if (!s.train) continue;
      const auto owner = static_cast<std::size_t>(plan_.grad[t]);
      if (plan_.in_value[owner]) continue;
      const auto g = static_cast<std::size_t>(plan_.grad_buffer[owner]);
      grad_elements[g] = std::max(grad_elements[g], size);
    }
    for (std::size_t t = 1; t < tensors; ++t) {
      if (elements[t] > 0) values_[t] = ops.template buffer<T>(B * elements[t]);
      if (grad_elements[t] > 0) grads_[t] = ops.template buffer<T>(B * grad_elements[t]);
    }
    // Training's fusions of a ReLU into the layer before it, where the ReLU alone reads that
    // layer's output (inference_fusions without convolutions): into a batch norm both ways
    // (FusesTrainingRelu, through its mask), and into an add's forward pass (FusesRelu) where
    // the ReLU writes over the add's output, so that the ReLU's backward pass, its own still,
    // reads its mask there as it does unfused.
    masks_.resize(m.layers.size());
    train_relu_.assign(m.layers.size(), false);
    const std::vector<Fusion> relus = inference_fusions(m, false, true);  // each ReLU's taker
    for (std::size_t i = 0; i < m.layers.size() && s.train; ++i) {
      if (!relus[i].relu) continue;
      if (m.layers[i].kind == LayerKind::add)
        train_relu_[i] = FusesRelu<Ops>::value && buffer_of_[i + 1] == buffer_of_[i + 2];
      if constexpr (FusesTrainingRelu<Ops>::value) {
        if (m.layers[i].kind != LayerKind::batchnorm) continue;
        const std::int64_t bytes = ops.batchnorm_relu_mask_bytes(bn(m.layers[i]));
        if (bytes < 0) continue;
        masks_[i] = ops.template buffer<std::uint8_t>(std::max<std::int64_t>(bytes, 1));
        train_relu_[i] = true;
      }
    }
    std::int64_t widest = 1;
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      const Layer& l = m.layers[i];
      if (l.kind == LayerKind::maxpool)
        args_[i] = ops.template buffer<std::int32_t>(B * l.out.size());
      if (l.kind == LayerKind::batchnorm) aux_[i] = ops.template buffer<P>(2 * l.out.c);
      if (l.kind == LayerKind::linear && reads_maps(l))
        flat_[i] = ops.template buffer<T>(B * m.dims(l.in).size());
      if ((l.kind == LayerKind::conv || l.kind == LayerKind::linear) && !l.bias)
        widest = std::max(widest, l.k);
    }
    params_from_.assign(m.layers.size() + 1, m.param_count);
    for (std::size_t i = m.layers.size(); i-- > 0;) {
      const Layer& l = m.layers[i];
      const bool has_params = l.kind == LayerKind::conv || l.kind == LayerKind::linear ||
                              l.kind == LayerKind::batchnorm;
      params_from_[i] = has_params ? std::min(params_from_[i + 1], l.weight) : params_from_[i + 1];
    }
    zeros_ = ops.template buffer<P>(widest);  // the bias of a layer without one
    ops.zero(zeros_.data(), widest);
    dbias_ = ops.template buffer<P>(widest);  // and its gradient, dropped
    if constexpr (kLowMaps) logits_f32_ = ops.template buffer<float>(B * m.classes);
    losses_ = ops.template buffer<P>(B);
    loss_ = ops.template buffer<P>(1);
    if (!s.train) return;
    scratch_ = ops.template buffer<T>(B * plan_.accumulated);  // none: no tensor has two readers
    param_grads_ = ops.template buffer<P>(m.param_count);
  }

  // x: the batch, NCHW, in T or (kLowMaps) in float.
  template <class X>
  void forward(const X* x, const P* params, P* state, bool train) {
    const std::int64_t B = s_.batch;
    if constexpr (std::is_same_v<X, T>) x_ = x;
    if (kLowMaps || (channels_last_ && !m_.input.flat())) {
      relayout(maps(m_.input, false), x, input_.data());  // converted too where X is not T
      x_ = input_.data();
    }
    for (std::size_t i = 0; i < m_.layers.size(); ++i) {
      const Layer& l = m_.layers[i];
      const Dims in = m_.dims(l.in);
      const T* a = value(l.in);
      T* out = map(static_cast<int>(i) + 1);
      const std::int64_t n = B * l.out.size();
      switch (l.kind) {
        case LayerKind::conv: {
          const ConvShape c = m_.conv(l, B, ConvDir::fwd);
          if constexpr (FusesConv<Ops>::value) {
            const Fusion& f = fusions_[i];
            if (!train && f.last != i) {
              ConvTail<T, P> tail;
              if (f.batchnorm >= 0) {
                const Layer& b = m_.layers[static_cast<std::size_t>(f.batchnorm)];
                tail.weight = params + b.weight, tail.bias = params + b.bias_at;
                tail.mean = state + b.state, tail.var = state + b.state + l.k;
                tail.eps = b.bn_eps;
              }
              if (f.residual >= 0) tail.residual = value(f.residual);
              tail.relu = f.relu;
              ops_.conv_fused(c, a, params + l.weight, bias(params, l), tail,
                              map(static_cast<int>(f.last) + 1));
              i = f.last;  // the layers taken are done
              break;
            }
          }
          ops_.conv(c, a, params + l.weight, bias(params, l), out, nullptr);
          break;
        }
        case LayerKind::linear: {  // z = a W^T + b (a: B x fi, W: fo x fi)
          if (l.bias) ops_.bias_rows(params + l.bias_at, out, B, l.k);
          if (reads_maps(l)) {  // channels-last maps, flattened: NCHW's order first
            relayout(maps(m_.dims(m_.storage(l.in)), true), a, flat_[i].data());
            a = flat_[i].data();
          }
          GemmShape g;
          g.m = B, g.n = l.k, g.k = in.c, g.tb = true, g.beta = l.bias ? 1.0f : 0.0f;
          ops_.gemm(g, a, params + l.weight, out);
          break;
        }
        case LayerKind::batchnorm: {
          BnShape b = bn(l);
          const bool fuse = train ? train_relu_[i] : fusions_[i].relu;
          if (fuse) b.relu = true, out = map(static_cast<int>(i) + 2);  // the ReLU's output
          P* stats = aux_[i].data();
          if (train && fuse) {
            if constexpr (FusesTrainingRelu<Ops>::value)
              ops_.batchnorm_relu_forward(b, a, params + l.weight, params + l.bias_at, out, stats,
                                          stats + in.c, state + l.state, state + l.state + in.c,
                                          masks_[i].data());
          } else {
            ops_.batchnorm_forward(b, train, a, params + l.weight, params + l.bias_at, out, stats,
                                   stats + in.c, state + l.state, state + l.state + in.c);
          }
          if (fuse) ++i;  // the ReLU is done
          break;
        }
        case LayerKind::relu:
          ops_.relu(a, nullptr, out, n);
          break;
        case LayerKind::maxpool:
          ops_.maxpool_forward(pool(l), a, out, args_[i].data());
          break;
        case LayerKind::add:
          if constexpr (FusesRelu<Ops>::value) {
            if (train ? train_relu_[i] : fusions_[i].relu) {
              ops_.add_relu(a, value(l.in2), map(static_cast<int>(i) + 2), n);
              ++i;  // the ReLU is done
              break;
            }
          }
          ops_.add(a, value(l.in2), out, n);
          break;
        case LayerKind::avgpool:
          ops_.plane_means(maps(in, channels_last_), a, out);
          break;
        case LayerKind::flatten:
          break;
        case LayerKind::loss:
          if (!train) break;
          ops_.rows({RowOp::loss_fwd, B, m_.classes}, a, labels_, losses_.data());
          ops_.mean(losses_.data(), B, loss_.data());
          break;
      }
    }
  }

  // Inference's pass (ModelStep::forward): the weights an Ops held from the last pass dropped
  // first unless the caller promises the same parameters.
  void infer(const float* x, const P* params, P* state, ModelStep::Params p) {
    if constexpr (HoldsWeights<Ops>::value)
      if (p != ModelStep::Params::unchanged) ops_.drop_held_weights();
    forward(x, params, state, false);
  }
  template <class X>
  void forward_backward(const X* x, const std::int32_t* labels, const P* params, P* state) {
    // The parameters may have changed since the last update (a caller's own upload): a
    // training pass converts from them (once, its backward pass reusing the copies).
    if constexpr (HoldsWeights<Ops>::value) ops_.drop_held_weights();
    labels_ = labels;
    forward(x, params, state, true);
    const std::int64_t B = s_.batch;
    written_.assign(m_.layers.size() + 1, false);
    P* g = param_grads_.data();
    std::int64_t told = m_.param_count;  // on_ready was told the gradients from here are final
    into(m_.logits(), [&](T* d) {        // (softmax - onehot) / B
      ops_.rows({RowOp::loss_bwd, B, m_.classes}, value(m_.logits()), labels, d);
    });
    for (std::size_t i = m_.layers.size() - 1; i-- > 0;) {
      const Layer& l = m_.layers[i];
      const Dims in = m_.dims(l.in);
      const T* a = value(l.in);
      const T* dout = gradient(m_.storage(static_cast<int>(i) + 1));
      if (on_ready && params_from_[i + 1] < told)  // the layers after this one are done
        on_ready(g, told = params_from_[i + 1]);
      switch (l.kind) {
        case LayerKind::conv:
          ops_.conv(m_.conv(l, B, ConvDir::bwd_filter), a, dout, nullptr, g + l.weight,
                    l.bias ? g + l.bias_at : dbias_.data());
          into(l.in, [&](T* d) {
            ops_.conv(m_.conv(l, B, ConvDir::bwd_data), dout, params + l.weight, nullptr, d,
                      nullptr);
          });
          break;
        case LayerKind::linear: {  // dW = dz^T a, db = the column sums of dz, da = dz W
          T* flat = reads_maps(l) ? flat_[i].data() : nullptr;  // a in NCHW's order, then da
          GemmShape gw;
          gw.m = l.k, gw.n = in.c, gw.k = B, gw.ta = true;
          ops_.gemm(gw, dout, flat ? flat : a, g + l.weight);
          if (l.bias) ops_.column_sums(dout, B, l.k, g + l.bias_at);
          into(l.in, [&](T* d) {
            GemmShape gd;
            gd.m = B, gd.n = in.c, gd.k = l.k;
            ops_.gemm(gd, dout, params + l.weight, flat ? flat : d);
            if (flat) relayout(maps(m_.dims(m_.storage(l.in)), false), flat, d);
          });
          break;
        }
        case LayerKind::batchnorm: {
          const P* stats = aux_[i].data();
          auto backward = [&](T* d) {
            if constexpr (FusesTrainingRelu<Ops>::value) {
              if (train_relu_[i]) {  // from the ReLU's output's gradient
                BnShape b = bn(l);
                b.relu = true;
                return ops_.batchnorm_relu_backward(
                    b, a, params + l.weight, stats, stats + in.c, masks_[i].data(),
                    gradient(m_.storage(static_cast<int>(i) + 2)), d, g + l.weight, g + l.bias_at);
              }
            }
            ops_.batchnorm_backward(bn(l), a, params + l.weight, stats, stats + in.c, dout, d,
                                    g + l.weight, g + l.bias_at);
          };
          if (!into(l.in, backward)) backward(nullptr);
          break;
        }
        case LayerKind::relu:
          if (i > 0 && train_relu_[i - 1] && m_.layers[i - 1].kind == LayerKind::batchnorm)
            break;  // in the batch norm's backward pass
          into(l.in, [&](T* d) { ops_.relu(a, dout, d, B * in.size()); });
          break;
        case LayerKind::maxpool:
          into(l.in, [&](T* d) { ops_.maxpool_backward(pool(l), dout, args_[i].data(), d); });
          break;
        case LayerKind::add:  // the same gradient to both operands
          for (int operand : {l.in, l.in2}) {
            const int st = m_.storage(operand);
            if (st == 0) continue;
            const std::int64_t n = B * in.size();
            if (gradient(st) != dout) {  // else the planned buffer: the output's own
              if (written_[st])
                ops_.add(gradient(st), dout, gradient(st), n);
              else
                ops_.copy(dout, gradient(st), n);
            }
            written_[st] = true;
          }
          break;
        case LayerKind::avgpool:
          into(l.in, [&](T* d) { ops_.spread_means(maps(in, channels_last_), dout, d); });
          break;
        case LayerKind::flatten:  // its output's gradient is its input's: one buffer
        case LayerKind::loss:
          break;
      }
    }
    if (on_ready) on_ready(g, 0);
  }

  // During forward_backward: told each offset from which the gradients are final, from the
  // end down to 0 (see ModelStep::on_ready).
  std::function<void(P* grads, std::int64_t from)> on_ready;

  void update(P* params, P* velocity) {
    if constexpr (HoldsWeights<Ops>::value) ops_.drop_held_weights();  // stale after this
    ops_.sgd_momentum(params, velocity, param_grads_.data(), m_.param_count, s_.lr, s_.momentum,
                      s_.weight_decay);
  }

  P* grads() { return param_grads_.data(); }
  const T* logits() const { return value(m_.logits()); }
  const P* loss() const { return loss_.data(); }
  // The logits in float (kLowMaps: converted).
  const float* logits_f32() {
    if constexpr (kLowMaps) {
      ops_.to_float(logits(), logits_f32_.data(), s_.batch * m_.classes);
      return logits_f32_.data();
    } else {
      return logits();
    }
  }

 private:
  const T* value(int t) const {
    const int st = m_.storage(t);
    return st == 0 ? x_ : map(st);
  }
  // Tensor t's buffer (none: null).
  T* map(int t) const {
    const int b = buffer_of_[static_cast<std::size_t>(t)];
    return b < 0 ? nullptr : const_cast<T*>(values_[static_cast<std::size_t>(b)].data());
  }
  const P* bias(const P* params, const Layer& l) const {
    return l.bias ? params + l.bias_at : zeros_.data();
  }
  PoolShape pool(const Layer& l) const {
    const Dims in = m_.dims(l.in);
    return {s_.batch * in.c, in.h, in.w, l.r, l.stride, l.pad, in.c, channels_last_};
  }
  BnShape bn(const Layer& l) const {
    BnShape s;
    static_cast<Maps&>(s) = maps(l.out, channels_last_);
    s.momentum = l.bn_momentum, s.eps = l.bn_eps, s.replicas = s_.replicas;
    return s;
  }
  Maps maps(const Dims& d, bool channels_last) const {
    return {s_.batch, d.c, d.h * d.w, channels_last};
  }
  // A linear layer that reads channels-last maps flattened.
  bool reads_maps(const Layer& l) const {
    return channels_last_ && !m_.dims(m_.storage(l.in)).flat();
  }
  template <class X>
  void relayout(const Maps& s, const X* x, T* out) {
    if constexpr (HasLayouts<Ops>::value) ops_.relayout(s, x, out);
  }
  // Tensor t's gradient from one of its consumers: f writes it into the gradient's buffer the
  // first time, else into scratch, which is added. None for the model's input: false.
  template <class F>
  bool into(int t, F f) {
    const int st = m_.storage(t);
    if (st == 0) return false;
    if (!written_[st]) {
      f(gradient(st));
      written_[st] = true;
      return true;
    }
    f(scratch_.data());
    const std::int64_t n = s_.batch * m_.dims(st).size();
    ops_.add(gradient(st), scratch_.data(), gradient(st), n);
    return true;
  }
  // Tensor `storage`'s gradient buffer (the model's input has none: null).
  T* gradient(int storage) {
    const auto owner = static_cast<std::size_t>(plan_.grad[static_cast<std::size_t>(storage)]);
    if (plan_.in_value[owner]) return map(static_cast<int>(owner));
    const int b = plan_.grad_buffer[owner];
    return b < 0 ? nullptr : grads_[static_cast<std::size_t>(b)].data();
  }

  template <class E>
  using Buf = typename Ops::template Buffer<E>;
  ModelDesc m_;
  TrainShape s_;
  Ops& ops_;
  const T* x_ = nullptr;
  const std::int32_t* labels_ = nullptr;
  std::vector<Buf<T>> values_, grads_;    // per tensor, where it owns its memory
  std::vector<int> buffer_of_;            // per tensor: whose values_ hold it (none: -1)
  TrainBuffers plan_;                     // training's: the maps' buffers and the gradients'
  std::vector<Buf<P>> aux_;               // per batch norm: mean, invstd (or the Ops' own pair)
  std::vector<Buf<std::int32_t>> args_;   // per max pool: each window's choice
  std::vector<bool> train_relu_;          // per batch norm or add: training fuses the ReLU after it
  std::vector<Buf<std::uint8_t>> masks_;  // per such batch norm: its mask (FusesTrainingRelu)
  std::vector<Buf<T>> flat_;              // per linear layer reading channels-last maps: NCHW's
  bool channels_last_ = false;            // the Ops keeps maps NHWC
  Buf<T> input_;                          // the model's input, NHWC
  std::vector<bool> written_;             // per tensor: its gradient has a first term
  std::vector<Fusion> fusions_;           // per layer: what its pass computes in inference
  Buf<T> scratch_;
  Buf<P> losses_, loss_;
  Buf<float> logits_f32_;                  // kLowMaps: the logits converted (the device's memory)
  std::vector<std::int64_t> params_from_;  // per layer: the lowest parameter offset from it on
  Buf<P> param_grads_, zeros_, dbias_;
};

// The step of model m on the fp32 device whose op functions `ops` gives (ops must outlive it).
template <class Ops>
class WalkStep : public ModelStep {
 public:
  WalkStep(const ModelDesc& m, const TrainShape& s, Ops& ops) : walk_(m, s, ops) {}
  void forward(const float* x, const float* params, float* state, Params p) override {
    walk_.infer(x, params, state, p);
  }
  void forward_backward(const float* x, const std::int32_t* labels, const float* params,
                        float* state) override {
    walk_.on_ready = on_ready;
    walk_.forward_backward(x, labels, params, state);
  }
  void update(float* params, float* velocity) override { walk_.update(params, velocity); }
  float* grads() override { return walk_.grads(); }
  const float* logits() const override { return walk_.logits_f32(); }
  const float* loss() const override { return walk_.loss(); }

 private:
  mutable Walk<Ops> walk_;  // logits() may convert
};

template <class Ops>
std::unique_ptr<ModelStep> make_step(const ModelDesc& m, const TrainShape& s, Ops& ops) {
  return std::make_unique<WalkStep<Ops>>(m, s, ops);
}

// An Ops that allocates nothing and counts the bytes a walk asks it for (walk_bytes).
template <class Act, class Param = float>
struct CountingOps {
  using ActType = Act;
  using ParamType = Param;
  template <class E>
  struct Buffer {
    E* data() const { return nullptr; }
  };
  template <class E>
  Buffer<E> buffer(std::int64_t n) {
    bytes += static_cast<double>(n) * sizeof(E);
    return {};
  }
  bool channels_last() const { return nhwc; }
  void zero(Param*, std::int64_t) {}
  bool nhwc = false;
  double bytes = 0;
};
// One that fuses in inference as a device's Ops do (so its walk plans the same buffers): a
// convolution with the layers after it, as the GPU's (kernels/train.cu) ...
template <class Act>
struct ConvFusingCountingOps : CountingOps<Act> {
  void conv_fused(const ConvShape&, const Act*, const float*, const float*,
                  const ConvTail<Act, float>&, Act*) {}
};
// ... and a ReLU into a batch norm or an add before it too, as the CPU's (cpu_ref/train.cpp), and
// in training into a batch norm, its mask counted a bit a value, as oneDNN's JIT kernels keep it
// (on x86-64 from AVX2 on; its reference kernels keep a byte, beyond the count).
template <class Act>
struct FusingCountingOps : ConvFusingCountingOps<Act> {
  void add_relu(const Act*, const Act*, Act*, std::int64_t) {}
  std::int64_t batchnorm_relu_mask_bytes(const BnShape& s) { return (s.size() + 7) / 8; }
};
static_assert(FusesConv<ConvFusingCountingOps<float>>::value &&
              !FusesRelu<ConvFusingCountingOps<float>>::value &&
              !FusesTrainingRelu<ConvFusingCountingOps<float>>::value &&
              FusesRelu<FusingCountingOps<float>>::value &&
              FusesTrainingRelu<FusingCountingOps<float>>::value);

template <class Ops>
double counted_walk_bytes(const ModelDesc& m, const TrainShape& s, Ops ops) {
  Walk<Ops> walk(m, s, ops);
  return ops.bytes;
}

// The memory the walk of model m at shape s takes on `device` with maps 16-bit (a bf16 or fp16
// step's, kept channels-last) or fp32 (NCHW): what its buffers ask for, counted by building the
// very walk a device's step builds, with the device's fusions, over an Ops that allocates
// nothing.
inline double walk_bytes(const ModelDesc& m, const TrainShape& s, bool low_maps, Device device) {
  auto count = [&](auto act) {
    using A = decltype(act);
    if (device == Device::cpu) return counted_walk_bytes(m, s, FusingCountingOps<A>{{{low_maps}}});
    return counted_walk_bytes(m, s, ConvFusingCountingOps<A>{{low_maps}});
  };
  return low_maps ? count(std::uint16_t{}) : count(float{});
}

// The same of the double-precision reference's walk (core/train_ref.cpp: NCHW, no fusions).
inline double reference_walk_bytes(const ModelDesc& m, const TrainShape& s) {
  return counted_walk_bytes(m, s, CountingOps<double, double>{false});
}

}  // namespace pb
