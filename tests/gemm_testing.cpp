#include "tests/gemm_testing.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

#include "core/model.hpp"
#include "core/rng.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::testing {

std::vector<GemmShape> awkward_shapes() {
  std::vector<GemmShape> out;
  const std::int64_t dims[][3] = {
      {1, 1, 1}, {7, 13, 5}, {31, 37, 41}, {65, 67, 129}, {130, 5, 257}};
  for (const auto& d : dims) {
    for (int t = 0; t < 4; ++t) {
      GemmShape s;
      s.m = d[0], s.n = d[1], s.k = d[2];
      s.ta = t & 1, s.tb = t & 2;
      s.alpha = t == 3 ? -1.5f : 1.0f;
      s.beta = t >= 2 ? 0.5f : 0.0f;
      out.push_back(s);
    }
  }
  return out;
}

ImplSpec find_impl(const std::vector<ImplSpec>& specs, const std::string& name) {
  for (const auto& s : specs)
    if (s.name == name) return s;
  throw std::runtime_error("no implementation " + name);
}

Floats run_impl(const ImplSpec& spec, const Workload& w, int threads, const Tensors& inputs) {
  auto impl = spec.make(w, threads);
  impl->activate();
  impl->prepare(inputs);
  impl->run();
  return at(impl->result(), w.outputs().at(0)).f32();
}

Check verify(const Workload& w, const Tensors& inputs, Floats values) {
  return w.verify(inputs, {Tensor::of(w.outputs().at(0), std::move(values))});
}

Floats run_impl(const ImplSpec& spec, const GemmWorkload& w, int threads) {
  return run_impl(spec, w, threads, w.make_inputs());
}

Floats reference(const GemmWorkload& w) {
  return run_impl(find_impl(cpu::gemm_impls(), "naive"), w);
}

double max_rel_diff(const Floats& x, const Floats& ref) {
  if (x.size() != ref.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = std::fabs(static_cast<double>(x[i]) - ref[i]) / (1.0 + std::fabs(ref[i]));
    if (!(d <= worst)) worst = d;  // NaN-propagating max
  }
  return worst;
}

double fp32_tolerance(const GemmShape& s) { return 2e-6 * std::sqrt(static_cast<double>(s.k)); }

std::string describe(const GemmShape& s) {
  return "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
         " ta=" + std::to_string(s.ta) + " tb=" + std::to_string(s.tb) +
         " alpha=" + std::to_string(s.alpha) + " beta=" + std::to_string(s.beta) +
         " dtype=" + to_string(s.dtype);
}

ModelDesc small_model() {
  ModelBuilder b("small", {3, 8, 8});
  const int a = b.relu(b.batchnorm(b.conv(0, 8, 3, 1, 1, false, "conv1"), "bn1"));
  const int t = b.relu(b.add(b.conv(a, 8, 3, 1, 1, true, "conv2"), a));
  b.loss(b.linear(b.avgpool(t), 10, true, "fc"));
  return b.build();
}

TrainWorkload train_workload(const std::string& model, std::int64_t batch, bool train) {
  TrainShape s;
  s.model = model, s.batch = batch, s.train = train, s.image = 16;
  if (model == "resnet" || model == "small") s.lr = 0.05f;
  return TrainWorkload(
      s, model == "small" ? std::make_shared<const ModelDesc>(small_model()) : nullptr);
}

TrainWorkload folded_inference_workload(Dtype dtype) {
  ModelBuilder b("folded", {3, 8, 8});
  const int x = b.relu(b.batchnorm(b.conv(0, 16, 3, 1, 1, false, "conv1"), "bn1"));
  const int t = b.batchnorm(b.conv(x, 32, 1, 1, 0, false, "conv3"), "bn3");
  const int shortcut = b.batchnorm(b.conv(x, 32, 1, 1, 0, false, "ds.0"), "ds.1");
  const int sum = b.relu(b.add(t, shortcut));
  const int u = b.batchnorm(b.conv(sum, 32, 3, 1, 1, false, "conv4"), "bn4");  // the next block
  b.loss(b.linear(b.avgpool(b.relu(b.add(u, sum))), 10, true, "fc"));
  TrainShape s;
  s.model = "folded", s.batch = 4, s.train = false, s.dtype = dtype;
  return TrainWorkload(s, std::make_shared<const ModelDesc>(b.build()));
}

Tensors drawn_batch_norms(const TrainWorkload& w) {
  Tensors in = w.make_inputs();
  auto named = [&in](const std::string& name) -> std::vector<float>& {
    return std::find_if(in.begin(), in.end(), [&](const Tensor& t) { return t.name() == name; })
        ->f32();
  };
  Rng rng(7);
  std::vector<float>& params = named("params");
  for (const ParamSlice& sl : w.model().params) {
    if (sl.init == ParamSlice::Init::fan_in) continue;  // batch norm's weight (1) and bias (0)
    for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j)
      params[j] = (sl.init == ParamSlice::Init::ones ? 1.0f : 0.0f) + 0.5f * rng.uniform();
  }
  std::vector<float>& state = named("state");
  for (const ParamSlice& sl : w.model().state)  // running means in +-0.5, variances in 0.5..1.5
    for (std::int64_t j = sl.offset; j < sl.offset + sl.size(); ++j)
      state[j] = (sl.init == ParamSlice::Init::ones ? 1.0f : 0.0f) + 0.5f * rng.uniform();
  return in;
}

}  // namespace pb::testing
