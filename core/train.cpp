#include "core/train.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "core/parse.hpp"
#include "core/rng.hpp"
#include "core/train_step.hpp"

namespace pb {

ModelDesc describe_model(const TrainShape& s) { return describe_model(s.model, s.image); }

std::vector<std::int64_t> train_suite_batches(int level) {
  if (level == 0) return {32, 128};
  return {1, 8, 32, 128, 512};
}

float default_weight_decay(const std::string& model) { return model == "resnet50" ? 1e-4f : 0.0f; }

TrainShape parse_train_shape(const std::vector<std::pair<std::string, std::string>>& kv,
                             int ranks) {
  TrainShape s;
  s.ranks = ranks;
  bool has_model = false, has_batch = false, has_image = false, has_decay = false;
  std::string update_key;  // a key of the update, which inference has not
  // A number of the update in [lo, hi) (lo excluded where lo_open).
  auto update_number = [&](const std::string& k, const std::string& v, float lo, bool lo_open,
                           float hi, const char* what) {
    const float x = parse_finite(k, v);
    const bool above_lo = lo_open ? x > lo : x >= lo;
    if (!above_lo || !(x < hi)) throw std::invalid_argument(k + "=" + v + " is not " + what);
    update_key = k;
    return x;
  };
  for (const auto& [k, v] : kv) {
    if (k == "model") {
      describe_model(v, 8);  // throws for an unknown name, naming the known ones
      s.model = v, has_model = true;
    } else if (k == "image") {
      s.image = parse_count(k, v, 1024, 8), has_image = true;
      if (s.image < 8 || s.image % 4 != 0)
        throw std::invalid_argument("image=" + v + " is not a multiple of 4 from 8 to 1024");
    } else if (k == "batch") {
      s.batch = parse_count(k, v, 1 << 20), has_batch = true;
    } else if (k == "pass") {
      if (v != "train" && v != "infer")
        throw std::invalid_argument("pass=" + v + " is not one of train, infer");
      s.train = v == "train";
    } else if (k == "lr") {
      s.lr = update_number(k, v, 0, true, 10, "a learning rate above 0 and below 10");
    } else if (k == "momentum") {
      s.momentum = update_number(k, v, 0, false, 1, "a momentum from 0 and below 1");
    } else if (k == "weight_decay") {
      s.weight_decay = update_number(k, v, 0, false, 1, "a weight decay from 0 and below 1");
      has_decay = true;
    } else if (k == "ranks") {
      check_ranks("train", v, ranks);
    } else if (k == "grads") {
      if (v != "allreduce" && v != "local")
        throw std::invalid_argument("grads=" + v + " is not one of allreduce, local");
      s.local = v == "local";
    } else {
      throw std::invalid_argument(
          "unknown train shape key '" + k +
          "' (model, batch, pass, lr, momentum, weight_decay, image, ranks, grads)");
    }
  }
  if (!has_model || !has_batch)
    throw std::invalid_argument("a train shape needs model= and batch=");
  if (!s.train && !update_key.empty())
    throw std::invalid_argument(update_key + "= is the update's: pass=infer has none");
  if (s.local && s.ranks < 2)
    throw std::invalid_argument(
        "grads=local is for a run of several ranks (one rank's gradients are its own)");
  if (!has_decay) s.weight_decay = default_weight_decay(s.model);
  if (has_image && !model_takes_image(s.model)) {
    std::string takers;
    for (const auto& n : model_names())
      if (model_takes_image(n)) takers += (takers.empty() ? "model=" : ", model=") + n;
    throw std::invalid_argument("image= is for " + takers + " (model=" + s.model +
                                " has fixed inputs)");
  }
  // Training normalizes each channel over batch x h x w values: one value has no variance
  // (PyTorch refuses it too). Inference reads the running statistics and needs none.
  if (s.train) {
    const ModelDesc m = describe_model(s);
    for (const Layer& l : m.layers)
      if (l.kind == LayerKind::batchnorm && s.batch * l.out.h * l.out.w < 2)
        throw std::invalid_argument(
            "batch=" + std::to_string(s.batch) + " on image=" + std::to_string(s.image) +
            ": batch norm " + l.name + " would see 1 value a channel (its map is " +
            std::to_string(l.out.h) + "x" + std::to_string(l.out.w) +
            "), which has no variance; give a larger batch or image, or pass=infer");
  }
  return s;
}

void synthetic_batch(std::int64_t features, std::int64_t classes, std::int64_t batch,
                     std::int64_t batch_index, float* x, std::int32_t* labels) {
  Rng proto_rng(1234 + static_cast<std::uint64_t>(features));
  std::vector<float> prototypes(static_cast<std::size_t>(10 * features));
  for (float& v : prototypes) v = proto_rng.uniform();
  static const int order[10] = {3, 7, 0, 9, 1, 5, 8, 2, 6, 4};
  Rng rng(0x5EED0000u + static_cast<std::uint64_t>(batch_index));
  for (std::int64_t i = 0; i < batch; ++i) {
    const int kind = order[(batch_index * batch + i) % 10];
    labels[i] = static_cast<std::int32_t>(kind % classes);
    const float* proto = prototypes.data() + kind * features;
    for (std::int64_t j = 0; j < features; ++j)
      x[i * features + j] = 0.5f * proto[j] + 0.5f * rng.uniform();
  }
}

TrainWorkload::TrainWorkload(TrainShape s, std::shared_ptr<const ModelDesc> model)
    : s_(std::move(s)),
      m_(model ? std::move(model) : std::make_shared<const ModelDesc>(describe_model(s_))) {
  s_.model = m_->name;
}

Shape TrainWorkload::shape() const {
  Shape sh;
  sh.add("model", s_.model);
  sh.add("pass", s_.train ? "train" : "infer");
  sh.add("batch", s_.batch);
  if (model_takes_image(s_.model)) sh.add("image", s_.image);
  // The update's numbers where a shape set them otherwise than the defaults: cases that differ
  // in them have different names.
  auto number = [](float x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(x));
    return std::string(buf);
  };
  const TrainShape defaults;
  if (s_.train && s_.lr != defaults.lr) sh.add("lr", number(s_.lr));
  if (s_.train && s_.momentum != defaults.momentum) sh.add("momentum", number(s_.momentum));
  if (s_.train && s_.weight_decay != default_weight_decay(s_.model))
    sh.add("weight_decay", number(s_.weight_decay));
  sh.add("dtype", to_string(s_.dtype));
  if (s_.ranks > 1) sh.add("ranks", s_.ranks);
  if (s_.local) sh.add("grads", "local");
  return sh;
}

double TrainWorkload::flops() const {
  const double b = static_cast<double>(s_.batch * s_.ranks);
  if (!s_.train) return 2.0 * b * m_->macs();
  return 2.0 * b * (3.0 * m_->macs() - m_->first_layer_macs());  // no gradient of the input
}

double TrainWorkload::min_bytes() const {
  const double p = static_cast<double>(m_->param_count), b = static_cast<double>(s_.batch);
  const double batch_bytes = 4.0 * b * static_cast<double>(m_->input.size() + 1);
  // p, v, g; on every rank
  return s_.ranks * (s_.train ? 4.0 * 5.0 * p + batch_bytes : 4.0 * p + batch_bytes);
}

namespace {
// The double-precision reference step's memory at a batch of b (host_bytes' terms). Training:
// its parameters, velocity, gradients and results (4 p doubles) and its activations and their
// gradients (1.5 a: the walk shares gradient buffers). Inference: the parameters, the walk's
// buffers (counted: maps whose lives do not overlap share one) and, in a low dtype, a map's and
// a layer's weights rounded to it and one image's column matrix (ReferenceOps' lows_, col_).
double reference_bytes(const ModelDesc& m, const TrainShape& s, std::int64_t b) {
  const double p = static_cast<double>(m.param_count);
  if (s.train) return 8.0 * (4.0 * p + 1.5 * static_cast<double>(b) * m.activations());
  TrainShape at = s;
  at.batch = b;
  double widest = static_cast<double>(m.input.size());
  for (const Layer& l : m.layers) widest = std::max(widest, static_cast<double>(l.out.size()));
  return 8.0 * (2.0 * p + 2.0 * static_cast<double>(b) * widest) + reference_walk_bytes(m, at);
}
}  // namespace

std::int64_t TrainWorkload::period() const {
  const std::int64_t global = s_.batch * s_.ranks;
  if (s_.ranks > 1) return global;
  for (std::int64_t p = global; p > 1; --p)
    if (global % p == 0 && reference_bytes(*m_, s_, p) <= kMostReferenceBytes) return p;
  return 1;
}

double TrainWorkload::host_bytes(Device device) const {
  const double p = static_cast<double>(m_->param_count), b = static_cast<double>(s_.batch);
  const double ref = reference_bytes(*m_, s_, period());
  // The inputs (2 p floats and the batch), and the larger of the double-precision reference
  // (which the harness runs before the implementation: prepare_reference; reference_bytes) and
  // an implementation. An implementation: its copies and outputs (6 p floats) and, on the CPU, its
  // walk's buffers in fp32 (counted: walk_bytes); on the GPU, whose walk is in device memory,
  // a pinned copy of the batch (the variant that copies it in each step). Inference:
  // parameters and the walk's buffers, and on the CPU the convolutions' weights held in oneDNN's
  // layout (p floats at most). Beside an implementation, the exact reference's results
  // stay for its check: parameters, velocity and state, and the logits of a period, in double
  // (0.4 GB for ResNet-50).
  const double batch = b * static_cast<double>(m_->input.size() + 1);
  const double inputs = 4.0 * (2.0 * p + s_.ranks * batch);
  const double kept = 8.0 * (2.0 * p + static_cast<double>(m_->state_count) +
                             static_cast<double>(period()) * static_cast<double>(m_->classes));
  const double copies = s_.train ? 6.0 : device == Device::cpu ? 3.0 : 2.0;  // of p floats
  const double impl = kept + 4.0 * copies * p +
                      (device == Device::cpu ? walk_bytes(*m_, s_, false, device) : 4.0 * batch);
  return inputs + std::max(ref, impl);
}

double TrainWorkload::device_bytes() const {
  // What the GPU's step (kernels/train.cu) allocates: the walk's buffers, counted (16-bit NHWC
  // maps in bf16 and fp16, as GpuLowOps keeps them; fp32 otherwise); the case's batch, labels,
  // parameters, velocity and state; GpuLowOps's weights held in 16 bits (p values at most); and
  // its backend's scratch, the larger of GpuLowOps's (one layer's weight gradient in 16 bits,
  // the logits and their gradient in fp32) and the im2col backend's (one image's columns).
  // cuDNN's and cuBLAS's workspaces are the implementation's (ImplSpec::workspace_bytes).
  const bool low = input_bytes(s_.dtype) == 2;
  const double b = static_cast<double>(s_.batch), p = static_cast<double>(m_->param_count);
  const double own =
      4.0 * (b * static_cast<double>(m_->input.size() + 1) + 2.0 * p + m_->state_count);
  double weights = 0, columns = 0;
  for (const ParamSlice& sl : m_->params)
    weights = std::max(weights, static_cast<double>(sl.size()));
  for (const Layer& l : m_->layers)
    if (l.kind == LayerKind::conv) {
      const ConvShape c = m_->conv(l, 1, ConvDir::fwd);
      columns = std::max(columns, static_cast<double>(c.crs() * c.pq()));
    }
  const double scratch = std::max(2.0 * weights + 2.0 * 4.0 * b * m_->classes, 4.0 * columns);
  const double held = low ? 2.0 * p : 0.0;
  return walk_bytes(*m_, s_, low, Device::gpu) + own + held + scratch;
}

Tensors TrainWorkload::make_inputs() const {
  const std::int64_t f = m_->input.size(), global = s_.batch * s_.ranks, period = this->period();
  Tensor x("x", {global, f}), labels("labels", {global}, Elem::i32);
  float* xs = x.f32().data();
  std::int32_t* ls = labels.i32().data();
  synthetic_batch(f, m_->classes, period, 0, xs, ls);
  for (std::int64_t i = period; i < global; ++i) {  // the repeats
    std::copy(xs + (i - period) * f, xs + (i - period + 1) * f, xs + i * f);
    ls[i] = ls[i - period];
  }
  Tensors in = {x, labels, Tensor::of("params", initial_params(*m_)),
                Tensor::of("velocity", initial_velocity(*m_))};
  if (m_->state_count > 0) in.push_back(Tensor::of("state", initial_state(*m_)));
  return in;
}

std::vector<std::string> TrainWorkload::outputs() const {
  if (!s_.train) return {"logits"};
  if (m_->state_count > 0) return {"loss", "params", "velocity", "state"};
  return {"loss", "params", "velocity"};
}

namespace {

// How much a tensor (a slice of the parameters or the state) moved from `before` to `want`, and
// how far `got` is from `want`, in norm: |got - want| / |want - before|. With a slack, each
// element's distance is what lies beyond scale x its slack.
template <class G, class B>
double relative_change(const ParamSlice& sl, const G* got, const std::vector<double>& want,
                       const B* before, const std::vector<double>* slack = nullptr,
                       double scale = 0) {
  double d = 0, r = 0;
  for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j) {
    double e = std::fabs(got[j] - want[j]);
    if (slack) e = std::max(0.0, e - scale * (*slack)[static_cast<std::size_t>(j)]);
    d += e * e;
    r += (want[j] - before[j]) * (want[j] - before[j]);
  }
  return std::sqrt(d / (r + 1e-300));
}

// The update's distance of one parameter tensor (params and velocity), beyond the kinks' slack
// where the expected step has one.
template <class G, class B>
double update_change(const ParamSlice& sl, const G* params, const G* velocity,
                     const ReferenceStep& want, const B* before, float lr) {
  const std::vector<double>* slack = want.slack.empty() ? nullptr : &want.slack;
  const std::vector<double> no_velocity(static_cast<std::size_t>(sl.offset + sl.size()), 0.0);
  return std::max(relative_change(sl, params, want.params, before, slack, lr),
                  relative_change(sl, velocity, want.velocity, no_velocity.data(), slack, 1.0));
}

// The norm of a tensor's change from `before` to `after`.
template <class A>
double change_norm(const ParamSlice& sl, const A* after, const float* before) {
  double r = 0;
  for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j)
    r += (after[j] - before[j]) * (after[j] - before[j]);
  return std::sqrt(r) + 1e-300;
}

// How far, in octaves (|log2| of the ratio), one parameter tensor's update and velocity are from
// the expected step's in norm, whichever is further.
template <class G>
double norm_off(const ParamSlice& sl, const G* params, const G* velocity, const ReferenceStep& want,
                const Tensors& in) {
  const float* p = at(in, "params").f32().data();
  const float* v = at(in, "velocity").f32().data();
  return std::max(
      std::fabs(std::log2(change_norm(sl, params, p) / change_norm(sl, want.params.data(), p))),
      std::fabs(
          std::log2(change_norm(sl, velocity, v) / change_norm(sl, want.velocity.data(), v))));
}

}  // namespace

double norm_spread(const ModelDesc& m, const Tensors& in, const ReferenceStep& exact,
                   const ReferenceStep& rounded) {
  double spread = 0;
  for (const ParamSlice& sl : m.params)
    spread =
        std::max(spread, norm_off(sl, rounded.params.data(), rounded.velocity.data(), exact, in));
  return spread;
}

double rounding_bound(const ModelDesc& m, const TrainShape& s, const Tensors& in,
                      const ReferenceStep& exact, const ReferenceStep& rounded) {
  const float* params = at(in, "params").f32().data();
  double spread = 0;
  for (const ParamSlice& sl : m.params)
    spread = std::max(spread, update_change(sl, rounded.params.data(), rounded.velocity.data(),
                                            exact, params, s.lr));
  for (const ParamSlice& sl : m.state)
    spread = std::max(spread, relative_change(sl, rounded.state.data(), exact.state,
                                              at(in, "state").f32().data()));
  return std::max(kUpdateTolerance, kRoundingMargin * spread);
}

std::vector<double> low_precision_state_bounds(const ModelDesc& m, const Tensors& in,
                                               const ReferenceStep& exact,
                                               const ReferenceStep& rounded) {
  std::vector<double> bounds;
  for (const ParamSlice& sl : m.state)
    bounds.push_back(std::max(
        kUpdateTolerance, kRoundingMargin * relative_change(sl, rounded.state.data(), exact.state,
                                                            at(in, "state").f32().data())));
  return bounds;
}

double rounding_loss_bound(const ReferenceStep& exact, const ReferenceStep& rounded) {
  return std::max(kLossTolerance, kRoundingMargin * std::fabs(rounded.loss - exact.loss) /
                                      (std::fabs(exact.loss) + 1.0));
}

namespace {

// The exact reference step of `key` (the step and its inputs, whatever the dtype of the step it
// checks): the one a live workload holds, else made.
template <class Make>
std::shared_ptr<const ReferenceStep> shared_exact(const std::string& key, Make make) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const ReferenceStep>> held;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto r = held[key].lock()) return r;
  }
  auto r = std::make_shared<const ReferenceStep>(make());
  std::lock_guard<std::mutex> lock(mu);
  held[key] = r;
  return r;
}

}  // namespace

const StepBounds& TrainWorkload::reference(const Tensors& in) const {
  return bounds_.get(in, [&] {
    const Tensor* state = find(in, "state");
    TrainShape rs = s_;  // the reference's: one period, standing for the whole batch
    if (period() < s_.batch) rs.replicas = s_.batch / period(), rs.batch = period();
    auto reference = [&](bool rounded) {
      return reference_step(*m_, rs, at(in, "x").f32().data(), at(in, "labels").i32().data(),
                            at(in, "params").f32().data(), at(in, "velocity").f32().data(),
                            state ? state->f32().data() : nullptr, rounded);
    };
    std::ostringstream key;
    key << m_->name << '/' << m_->param_count << '/' << s_.train << '/' << s_.batch << '/'
        << rs.batch << '/' << s_.image << '/' << s_.lr << '/' << s_.momentum << '/'
        << s_.weight_decay << '/' << s_.ranks << '/' << s_.rank << '/' << s_.local << '/'
        << fingerprint(in);
    exact_ = shared_exact(key.str(), [&] {
      ReferenceStep r = reference(false);
      r.grads = {};  // the comparison reads the update, not the gradients
      return r;
    });
    const ReferenceStep& r = *exact_;
    StepBounds b;
    if (!s_.train && s_.dtype != Dtype::fp32) {
      // bf16 moves the logits by its rounding, amplified by the model: the bound the same way
      const ReferenceStep rounded = reference(true);
      double d = 0, rms = 0;
      for (std::size_t i = 0; i < r.logits.size(); ++i) {
        d += (rounded.logits[i] - r.logits[i]) * (rounded.logits[i] - r.logits[i]);
        rms += r.logits[i] * r.logits[i];
      }
      b.logits_bound = std::max(b.logits_bound, kRoundingMargin * std::sqrt(d / rms));
    }
    if (s_.train) {
      const ReferenceStep rounded = reference(true);
      b.loss_bound = rounding_loss_bound(r, rounded);
      if (s_.dtype == Dtype::fp32) b.bound = rounding_bound(*m_, rs, in, r, rounded);
      if (s_.dtype != Dtype::fp32 || b.bound > kMostBound) {  // checked in norm (compare_step)
        b.state_bounds = low_precision_state_bounds(*m_, in, r, rounded);
        b.norm_spread = norm_spread(*m_, in, r, rounded);
      }
    }
    return b;
  });
}

Check TrainWorkload::verify(const Tensors& in, const Tensors& outs) const {
  const StepBounds& bounds = reference(in);
  return compare_step(*m_, s_, in, *exact_, bounds, outs);
}

ReferenceStep step_of(const TrainShape& s, const Tensors& outs) {
  ReferenceStep r;
  auto doubles = [&](const char* name) {
    const std::vector<float>& v = at(outs, name).f32();
    return std::vector<double>(v.begin(), v.end());
  };
  if (!s.train) {
    r.logits = doubles("logits");
    return r;
  }
  r.loss = at(outs, "loss").f32().at(0);
  r.params = doubles("params");
  r.velocity = doubles("velocity");
  if (find(outs, "state")) r.state = doubles("state");
  return r;
}

Check compare_step(const ModelDesc& m, const TrainShape& s, const Tensors& in,
                   const ReferenceStep& ref, const Tensors& outs) {
  return compare_step(m, s, in, ref, ref.bounds, outs);
}

Check compare_step(const ModelDesc& m, const TrainShape& s, const Tensors& in,
                   const ReferenceStep& ref, const StepBounds& b, const Tensors& outs) {
  Check chk;
  std::ostringstream why;
  double worst = 0;
  auto note = [&](double e, const std::string& what) {
    if (!(e <= worst)) {  // keeps a NaN
      worst = e;
      why.str("");
      why << what;
    }
  };
  if (!s.train) {
    chk.tolerance = b.logits_bound;
    const float* logits = output_f32(outs, "logits", s.batch * m.classes, chk);
    if (!logits) return chk;
    double rms = 0;
    for (double v : ref.logits) rms += v * v;
    rms = std::sqrt(rms / static_cast<double>(ref.logits.size())) + 1e-30;
    // The reference's logits are one period's where the batch repeats it (TrainWorkload::period).
    const auto n = static_cast<std::size_t>(s.batch * m.classes), period = ref.logits.size();
    if (s.dtype != Dtype::fp32) {  // in norm, as the bound was found
      double d = 0;
      for (std::size_t i = 0; i < n; ++i)
        d += (logits[i] - ref.logits[i % period]) * (logits[i] - ref.logits[i % period]);
      note(std::sqrt(d / static_cast<double>(n)) / rms, "the logits");
    }
    for (std::size_t i = 0; s.dtype == Dtype::fp32 && i < n; ++i)
      note(std::fabs(logits[i] - ref.logits[i % period]) / rms,
           "logits[" + std::to_string(i) + "]");
  } else {
    // In units of the tolerance, so that one number covers the loss and every tensor.
    chk.tolerance = 1.0;
    const float* loss = output_f32(outs, "loss", 1, chk);
    const float* params = output_f32(outs, "params", m.param_count, chk);
    const float* velocity = output_f32(outs, "velocity", m.param_count, chk);
    const float* state = m.state_count ? output_f32(outs, "state", m.state_count, chk) : nullptr;
    if (!loss || !params || !velocity || (m.state_count && !state)) return chk;
    const float* before = at(in, "params").f32().data();
    note(std::fabs(*loss - ref.loss) / (b.loss_bound * (std::fabs(ref.loss) + 1.0)), "loss");
    // In norm where the updates cannot be bounded tensor by tensor: below fp32, or in fp32
    // where its rounding alone moves an update beyond kMostBound.
    const bool in_norm = s.dtype != Dtype::fp32 || b.bound > kMostBound;
    if (in_norm && b.norm_spread > kMostNormSpread) {
      std::ostringstream os;
      os << "not verifiable in " << to_string(s.dtype) << " at this shape: rounding as "
         << to_string(s.dtype) << " rounds alone moves an update's norm by a factor "
         << std::exp2(b.norm_spread) << ", too near or beyond the factor " << kUpdateNormFactor
         << " the check allows (batch norm over this few values a channel is ill-conditioned)";
      chk.detail = os.str();
      return chk;
    }
    if (in_norm) {  // the statistics, and the updates in norm
      std::ostringstream os;
      os << "the loss, each running statistic and each update's norm (";
      if (s.dtype == Dtype::fp32)
        os << "fp32's rounding alone moves an update by " << b.bound / kRoundingMargin
           << " relative here, in norm, beyond what a bound on each update can hold: batch norm "
              "over this few values a channel is ill-conditioned)";
      else
        os << to_string(s.dtype) << "'s rounding makes the updates chaotic)";
      chk.method = os.str();
      for (std::size_t i = 0; i < m.state.size(); ++i)
        note(relative_change(m.state[i], state, ref.state, at(in, "state").f32().data()) /
                 b.state_bounds.at(i),
             m.state[i].name);
      for (const ParamSlice& sl : m.params)  // 1 at a factor kUpdateNormFactor either way
        note(norm_off(sl, params, velocity, ref, in) / std::log2(kUpdateNormFactor),
             "the norm of the update of " + sl.name);
    } else {
      // Per tensor, the change in norm: a few of the thousands of ReLUs and pooling windows with
      // inputs within rounding of their kink may decide otherwise in fp32 than in double, which
      // moves single elements by a sample's term but the tensor by little.
      for (const ParamSlice& sl : m.params)
        note(update_change(sl, params, velocity, ref, before, s.lr) / b.bound,
             "the update of " + sl.name);
      for (const ParamSlice& sl : m.state)
        note(relative_change(sl, state, ref.state, at(in, "state").f32().data()) / b.bound,
             sl.name);
    }
  }
  if (std::isnan(worst)) {
    chk.detail = "the result is not finite (" + why.str() + ")";
    return chk;
  }
  chk.max_error = worst;
  chk.ok = worst <= chk.tolerance;
  if (!chk.ok) {
    std::ostringstream os;
    os << why.str() << " is off by " << worst << (s.train ? " of its tolerance" : " of their rms");
    if (s.train && !chk.method.empty())
      os << " (the loss within " << b.loss_bound << "; each running statistic within "
         << kRoundingMargin << " times what " << to_string(s.dtype)
         << " rounding moves it; each update's norm within a factor " << kUpdateNormFactor << ")";
    else if (s.train)
      os << " (an update within " << b.bound << " relative, in norm"
         << (ref.slack.empty()
                 ? std::string()
                 : ", beyond what fp32 deciding otherwise at the " + std::to_string(ref.kinks) +
                       " ReLU inputs and pooling choices within its error may move")
         << "; the loss within " << b.loss_bound << ")";
    else
      os << " (tolerance " << b.logits_bound << (s.dtype == Dtype::fp32 ? "" : ", in norm") << ")";
    chk.detail = os.str();
  }
  return chk;
}

}  // namespace pb
