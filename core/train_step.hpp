// The models' training steps (core/train.hpp), written once over a device's op functions.
// `Ops` is one device's backend: cpu_ref/train.cpp gives the CPU's (OpenBLAS or oneDNN, OpenMP),
// kernels/train.cu the GPU's (cuBLAS, cuDNN or the project's kernels, all on one stream). So
// the CPU's tests run the very sequence of calls the GPU runs; only the op functions differ,
// and each of those is tested against its reference on its own. An Ops provides:
//   Buffer<T>, buffer<T>(n)            n elements of the device's memory (data() gives them)
//   gemm(GemmShape, a, b, c)           c = op(a) op(b) (+ beta c), row-major (core/gemm.hpp)
//   conv(ConvShape, in0, in1, b, out, db)  the pass s.dir names, as cpu::conv_naive takes it
//   relu(z, dy, out, n)                out = relu(z), or with dy the gradient dy relu'(z)
//   rows(RowShape, x, labels, out)     the loss (loss_fwd) or its gradient (loss_bwd) per row
//   mean(x, n, out)                    *out = the mean of x[0..n)
//   bias_rows(b, out, rows, cols)      every row of out set to b
//   column_sums(x, rows, cols, out)    the bias gradient
//   maxpool_forward(planes, h, w, x, out, arg) / maxpool_backward(planes, h, w, dout, arg, dx)
//   sgd_momentum(p, v, g, n, lr, momentum)
//   add(a, b, out, n)                  out = a + b (a residual connection, and its gradient)
//   plane_means(x, planes, hw, out)    out[p] = the mean of plane p (global average pooling)
//   spread_means(dout, planes, hw, dx) dx = dout[p] / hw over plane p (its backward pass)
// Every pointer a step passes is the device's memory; so are the loss and the logits it leaves.
#pragma once

#include <cstdint>
#include <memory>

#include "core/activation.hpp"
#include "core/gemm.hpp"
#include "core/train.hpp"

namespace pb {

// One model's step on one device, over the caller's parameters and velocity (device memory).
class ModelStep {
 public:
  virtual ~ModelStep() = default;
  // The forward pass alone: the logits (batch x 10) in logits().
  virtual void forward(const float* x, const float* params) = 0;
  // Forward, loss, backward and SGD with momentum, in place; the mean loss in *loss().
  virtual void step(const float* x, const std::int32_t* labels, float* params, float* velocity) = 0;
  virtual const float* logits() const = 0;
  virtual const float* loss() const = 0;
};

namespace step_detail {

// z = a W^T + b (a: B x fi, W: fo x fi, z: B x fo).
template <class Ops>
void linear(Ops& ops, std::int64_t B, std::int64_t fi, std::int64_t fo, const float* a,
            const float* w, const float* b, float* z) {
  ops.bias_rows(b, z, B, fo);
  GemmShape g;
  g.m = B, g.n = fo, g.k = fi, g.tb = true, g.beta = 1;
  ops.gemm(g, a, w, z);
}

// Its backward pass: dW = dz^T a, db = the column sums of dz, and da = dz W where da is given.
template <class Ops>
void linear_backward(Ops& ops, std::int64_t B, std::int64_t fi, std::int64_t fo, const float* a,
                     const float* w, const float* dz, float* gw, float* gb, float* da) {
  GemmShape gwt;
  gwt.m = fo, gwt.n = fi, gwt.k = B, gwt.ta = true;
  ops.gemm(gwt, dz, a, gw);
  ops.column_sums(dz, B, fo, gb);
  if (!da) return;
  GemmShape gd;
  gd.m = B, gd.n = fi, gd.k = fo;
  ops.gemm(gd, dz, w, da);
}

// What every model's step ends in: the logits (batch x 10) and their gradient, the loss per
// sample and its mean, and the parameters' gradients.
template <class Ops>
struct Head {
  Head(Ops& ops, std::int64_t batch, std::int64_t params)
      : logits(ops.template buffer<float>(batch * 10)),
        dlogits(ops.template buffer<float>(batch * 10)),
        losses(ops.template buffer<float>(batch)),
        loss(ops.template buffer<float>(1)),
        grads(ops.template buffer<float>(params)) {}
  // The mean loss of the logits into loss, and its gradient (softmax - onehot) / B into dlogits.
  void loss_and_gradient(Ops& ops, std::int64_t B, const std::int32_t* labels) {
    ops.rows({RowOp::loss_fwd, B, 10}, logits.data(), labels, losses.data());
    ops.mean(losses.data(), B, loss.data());
    ops.rows({RowOp::loss_bwd, B, 10}, logits.data(), labels, dlogits.data());
  }
  typename Ops::template Buffer<float> logits, dlogits, losses, loss, grads;
};

// What every model's step holds: its shape, its device's ops and its Head, which the two
// accessors read.
template <class Ops>
class HeadedStep : public ModelStep {
 public:
  const float* logits() const override { return head_.logits.data(); }
  const float* loss() const override { return head_.loss.data(); }

 protected:
  HeadedStep(const TrainShape& s, Ops& ops, std::int64_t params)
      : s_(s), ops_(ops), head_(ops, s.batch, params) {}
  using Floats = typename Ops::template Buffer<float>;
  TrainShape s_;
  Ops& ops_;
  Head<Ops> head_;
};

// The MLP 784-1024-1024-10 with ReLU.
template <class Ops>
class MlpStep : public HeadedStep<Ops> {
 public:
  MlpStep(const TrainShape& s, Ops& ops) : HeadedStep<Ops>(s, ops, Mlp::param_count()) {
    for (auto* v : {&z0_, &a1_, &z1_, &a2_, &da_})
      *v = ops.template buffer<float>(s.batch * Mlp::hidden);
  }
  void forward(const float* x, const float* params) override {
    const std::int64_t B = s_.batch;
    const float* in = x;
    float* z[3] = {z0_.data(), z1_.data(), head_.logits.data()};
    float* act[2] = {a1_.data(), a2_.data()};
    for (int l = 0; l < 3; ++l) {  // z = a W^T + b, then ReLU but for the logits
      linear(ops_, B, Mlp::fan_in(l), Mlp::fan_out(l), in, params + Mlp::w_offset(l),
             params + Mlp::b_offset(l), z[l]);
      if (l == 2) break;
      ops_.relu(z[l], nullptr, act[l], B * Mlp::fan_out(l));
      in = act[l];
    }
  }
  void step(const float* x, const std::int32_t* labels, float* params, float* velocity) override {
    const std::int64_t B = s_.batch;
    forward(x, params);
    head_.loss_and_gradient(ops_, B, labels);
    // Backward: the dz of the layer below is relu'(its z) (dz W), written over its z.
    const float* a[3] = {x, a1_.data(), a2_.data()};
    float* below[2] = {z0_.data(), z1_.data()};
    const float* dz = head_.dlogits.data();
    float* g = head_.grads.data();
    for (int l = 2; l >= 0; --l) {
      linear_backward(ops_, B, Mlp::fan_in(l), Mlp::fan_out(l), a[l], params + Mlp::w_offset(l), dz,
                      g + Mlp::w_offset(l), g + Mlp::b_offset(l), l > 0 ? da_.data() : nullptr);
      if (l == 0) break;
      float* next = below[l - 1];
      ops_.relu(next, da_.data(), next, B * Mlp::fan_in(l));
      dz = next;
    }
    ops_.sgd_momentum(params, velocity, g, Mlp::param_count(), s_.lr, s_.momentum);
  }

 private:
  using Base = HeadedStep<Ops>;
  using Base::s_, Base::ops_, Base::head_;
  using typename Base::Floats;
  Floats z0_, a1_, z1_, a2_, da_;
};

// The CNN: conv 3->32, ReLU, pool; conv 32->64, ReLU, pool; linear 4096->10.
template <class Ops>
class CnnStep : public HeadedStep<Ops> {
 public:
  CnnStep(const TrainShape& s, Ops& ops) : HeadedStep<Ops>(s, ops, Cnn::param_count()) {
    const std::int64_t B = s.batch, n1 = B * Cnn::c1 * Cnn::size * Cnn::size;
    z1_ = ops.template buffer<float>(n1);
    r1_ = ops.template buffer<float>(n1);
    p1_ = ops.template buffer<float>(n1 / 4);
    arg1_ = ops.template buffer<std::int32_t>(n1 / 4);
    z2_ = ops.template buffer<float>(n1 / 2);  // 64 channels on 16x16: half of 32 on 32x32
    r2_ = ops.template buffer<float>(n1 / 2);
    p2_ = ops.template buffer<float>(n1 / 8);
    arg2_ = ops.template buffer<std::int32_t>(n1 / 8);
  }
  void forward(const float* x, const float* params) override {
    const std::int64_t B = s_.batch, n1 = B * Cnn::c1 * Cnn::size * Cnn::size;
    const auto& ps = Cnn::params();
    ops_.conv(Cnn::conv(0, B, ConvDir::fwd), x, params + ps[0].offset, params + ps[1].offset,
              z1_.data(), nullptr);
    ops_.relu(z1_.data(), nullptr, r1_.data(), n1);
    ops_.maxpool_forward(B * Cnn::c1, Cnn::size, Cnn::size, r1_.data(), p1_.data(), arg1_.data());
    ops_.conv(Cnn::conv(1, B, ConvDir::fwd), p1_.data(), params + ps[2].offset,
              params + ps[3].offset, z2_.data(), nullptr);
    ops_.relu(z2_.data(), nullptr, r2_.data(), n1 / 2);
    ops_.maxpool_forward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, r2_.data(), p2_.data(),
                         arg2_.data());
    linear(ops_, B, Cnn::flat, Cnn::classes, p2_.data(), params + ps[4].offset,
           params + ps[5].offset, head_.logits.data());
  }
  void step(const float* x, const std::int32_t* labels, float* params, float* velocity) override {
    const std::int64_t B = s_.batch, n1 = B * Cnn::c1 * Cnn::size * Cnn::size;
    const auto& ps = Cnn::params();
    forward(x, params);
    head_.loss_and_gradient(ops_, B, labels);
    float* g = head_.grads.data();
    // The linear layer; its input's gradient dp2 goes into p2's buffer once dW is taken.
    linear_backward(ops_, B, Cnn::flat, Cnn::classes, p2_.data(), params + ps[4].offset,
                    head_.dlogits.data(), g + ps[4].offset, g + ps[5].offset, nullptr);
    GemmShape gd;
    gd.m = B, gd.n = Cnn::flat, gd.k = Cnn::classes;
    ops_.gemm(gd, head_.dlogits.data(), params + ps[4].offset, p2_.data());
    // Pool 2 and ReLU 2 backward into r2's buffer, conv 2's gradients, and dp1 into p1's.
    ops_.maxpool_backward(B * Cnn::c2, Cnn::size / 2, Cnn::size / 2, p2_.data(), arg2_.data(),
                          r2_.data());
    ops_.relu(z2_.data(), r2_.data(), r2_.data(), n1 / 2);
    ops_.conv(Cnn::conv(1, B, ConvDir::bwd_filter), p1_.data(), r2_.data(), nullptr,
              g + ps[2].offset, g + ps[3].offset);
    ops_.conv(Cnn::conv(1, B, ConvDir::bwd_data), r2_.data(), params + ps[2].offset, nullptr,
              p1_.data(), nullptr);
    // Pool 1 and ReLU 1 backward into r1's buffer, then conv 1's gradients.
    ops_.maxpool_backward(B * Cnn::c1, Cnn::size, Cnn::size, p1_.data(), arg1_.data(), r1_.data());
    ops_.relu(z1_.data(), r1_.data(), r1_.data(), n1);
    ops_.conv(Cnn::conv(0, B, ConvDir::bwd_filter), x, r1_.data(), nullptr, g + ps[0].offset,
              g + ps[1].offset);
    ops_.sgd_momentum(params, velocity, g, Cnn::param_count(), s_.lr, s_.momentum);
  }

 private:
  using Base = HeadedStep<Ops>;
  using Base::s_, Base::ops_, Base::head_;
  using typename Base::Floats;
  Floats z1_, r1_, p1_, z2_, r2_, p2_;
  typename Ops::template Buffer<std::int32_t> arg1_, arg2_;
};

// The ImageNet-sized model (core/train.hpp's Resnet): the stem, two bottleneck blocks, global
// average pooling and a linear layer.
template <class Ops>
class ResnetStep : public HeadedStep<Ops> {
 public:
  ResnetStep(const TrainShape& s, Ops& ops) : HeadedStep<Ops>(s, ops, Resnet::param_count()) {
    const std::int64_t B = s.batch, S = s.image, Q2 = (S / 4) * (S / 4);
    const std::int64_t wide = B * Resnet::width * Q2, narrow = B * Resnet::mid * Q2;
    stem_z_ = ops.template buffer<float>(4 * wide);
    stem_r_ = ops.template buffer<float>(4 * wide);
    stem_arg_ = ops.template buffer<std::int32_t>(wide);
    for (int b = 0; b <= Resnet::blocks; ++b) a_[b] = ops.template buffer<float>(wide);
    for (int b = 0; b < Resnet::blocks; ++b)
      for (int j = 0; j < 3; ++j) {
        z_[b][j] = ops.template buffer<float>(j == 2 ? wide : narrow);
        if (j < 2) u_[b][j] = ops.template buffer<float>(narrow);
      }
    g_ = ops.template buffer<float>(B * Resnet::width);
    dg_ = ops.template buffer<float>(B * Resnet::width);
    for (auto* v : {&da_, &dsum_, &dwide_}) *v = ops.template buffer<float>(wide);
    for (auto* v : {&dn1_, &dn2_}) *v = ops.template buffer<float>(narrow);
  }
  void forward(const float* x, const float* params) override {
    const std::int64_t B = s_.batch, S = s_.image, Q2 = (S / 4) * (S / 4);
    const std::int64_t wide = B * Resnet::width * Q2;
    ops_.conv(conv(0, ConvDir::fwd), x, w(params, 0), b(params, 0), stem_z_.data(), nullptr);
    ops_.relu(stem_z_.data(), nullptr, stem_r_.data(), 4 * wide);
    ops_.maxpool_forward(B * Resnet::width, S / 2, S / 2, stem_r_.data(), a_[0].data(),
                         stem_arg_.data());
    for (int blk = 0; blk < Resnet::blocks; ++blk) {
      const float* in = a_[blk].data();
      for (int j = 0; j < 3; ++j) {
        const int c = 1 + 3 * blk + j;
        float* z = z_[blk][j].data();
        ops_.conv(conv(c, ConvDir::fwd), in, w(params, c), b(params, c), z, nullptr);
        if (j == 2) ops_.add(z, a_[blk].data(), z, wide);  // the block's input added back
        float* out = j == 2 ? a_[blk + 1].data() : u_[blk][j].data();
        ops_.relu(z, nullptr, out, j == 2 ? wide : B * Resnet::mid * Q2);
        in = out;
      }
    }
    ops_.plane_means(a_[Resnet::blocks].data(), B * Resnet::width, Q2, g_.data());
    const int fc = 2 * Resnet::convs;
    linear(ops_, B, Resnet::width, Resnet::classes, g_.data(), params + param(fc),
           params + param(fc + 1), head_.logits.data());
  }
  void step(const float* x, const std::int32_t* labels, float* params, float* velocity) override {
    const std::int64_t B = s_.batch, S = s_.image, Q2 = (S / 4) * (S / 4);
    const std::int64_t wide = B * Resnet::width * Q2, narrow = B * Resnet::mid * Q2;
    forward(x, params);
    head_.loss_and_gradient(ops_, B, labels);
    float* g = head_.grads.data();
    const int fc = 2 * Resnet::convs;
    linear_backward(ops_, B, Resnet::width, Resnet::classes, g_.data(), params + param(fc),
                    head_.dlogits.data(), g + param(fc), g + param(fc + 1), dg_.data());
    ops_.spread_means(dg_.data(), B * Resnet::width, Q2, da_.data());
    for (int blk = Resnet::blocks - 1; blk >= 0; --blk) {
      // da: the block output's gradient; through its ReLU, the sum's (dsum), which flows into
      // the branch's last convolution and, unchanged, into the block's input.
      ops_.relu(z_[blk][2].data(), da_.data(), dsum_.data(), wide);
      const float* d = dsum_.data();
      float* dn[2] = {dn1_.data(), dn2_.data()};
      for (int j = 2; j >= 0; --j) {
        const int c = 1 + 3 * blk + j;
        const float* in = j == 0 ? a_[blk].data() : u_[blk][j - 1].data();
        ops_.conv(conv(c, ConvDir::bwd_filter), in, d, nullptr, g + param(2 * c),
                  g + param(2 * c + 1));
        float* din = j == 0 ? dwide_.data() : dn[j % 2];
        ops_.conv(conv(c, ConvDir::bwd_data), d, w(params, c), nullptr, din, nullptr);
        if (j > 0) ops_.relu(z_[blk][j - 1].data(), din, din, narrow);
        d = din;
      }
      ops_.add(dsum_.data(), dwide_.data(), da_.data(), wide);  // branch plus identity
    }
    ops_.maxpool_backward(B * Resnet::width, S / 2, S / 2, da_.data(), stem_arg_.data(),
                          stem_r_.data());
    ops_.relu(stem_z_.data(), stem_r_.data(), stem_r_.data(), 4 * wide);
    ops_.conv(conv(0, ConvDir::bwd_filter), x, stem_r_.data(), nullptr, g + param(0), g + param(1));
    ops_.sgd_momentum(params, velocity, g, Resnet::param_count(), s_.lr, s_.momentum);
  }

 private:
  using Base = HeadedStep<Ops>;
  using Base::s_, Base::ops_, Base::head_;
  using typename Base::Floats;
  ConvShape conv(int c, ConvDir dir) const { return Resnet::conv(c, s_.batch, s_.image, dir); }
  static std::int64_t param(int t) { return Resnet::params()[t].offset; }
  static const float* w(const float* params, int c) { return params + param(2 * c); }
  static const float* b(const float* params, int c) { return params + param(2 * c + 1); }

  Floats stem_z_, stem_r_, a_[Resnet::blocks + 1], z_[Resnet::blocks][3], u_[Resnet::blocks][2];
  Floats g_, dg_, da_, dsum_, dwide_, dn1_, dn2_;
  typename Ops::template Buffer<std::int32_t> stem_arg_;
};

}  // namespace step_detail

// The step of s.model on the device whose op functions `ops` gives (ops must outlive it).
template <class Ops>
std::unique_ptr<ModelStep> make_step(const TrainShape& s, Ops& ops) {
  if (s.model == Model::mlp) return std::make_unique<step_detail::MlpStep<Ops>>(s, ops);
  if (s.model == Model::cnn) return std::make_unique<step_detail::CnnStep<Ops>>(s, ops);
  return std::make_unique<step_detail::ResnetStep<Ops>>(s, ops);
}

}  // namespace pb
