// The training step on the GPU: core/train_step.hpp's walk (the very sequence of calls the CPU's
// tests run) over the GPU's op functions, every one enqueued on the case's stream, so the step
// never waits for the host. Backends, named by the implementations:
//   kernels    - the project's kernels: the tiled GEMM and the direct convolution.
//   cublas     - cuBLAS GEMMs; convolutions as im2col + cuBLAS.
//   cudnn      - cuBLAS GEMMs; cuDNN's convolutions (true fp32, kernels/conv.cu's plan).
//   cublas_h2d, cudnn_h2d - the same, with each batch (images and labels) copied from pinned
//                host memory inside the step: the end-to-end step, the copy in the time.
//   cublas_graph, cudnn_graph - the same step captured once as a CUDA graph (after a first
//                step outside the capture, which plans cuDNN and sizes the buffers) and
//                replayed with one cudaGraphLaunch: the step without its launches' host cost.
// In tf32 (cublas and cudnn) the maps, parameters and update stay fp32 and the GEMMs and
// convolutions run on tensor cores: cuBLAS's FAST_TF32 compute, cuDNN's default math (PyTorch's
// default for cuDNN's convolutions).
// ReLU, the loss rows and the mean are the op functions of kernels/activation.cu and
// kernels/conv.cu, batch normalization kernels/batchnorm.cu's; max pooling, the bias broadcast,
// the column sums (the bias gradient) and SGD are here, their per-element math from
// core/layers.hpp.
#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <string>

#include "core/layers.hpp"
#include "core/train.hpp"
#include "core/train_step.hpp"
#include "kernels/gpu.hpp"
#include "kernels/gpu_impl.cuh"

namespace pb::gpu {

namespace {

constexpr int kThreads = 256;

__global__ void bias_rows_kernel(const float* b, float* out, std::int64_t rows, std::int64_t cols) {
  PB_GRID_STRIDE(i, rows * cols) { out[i] = b[i % cols]; }
}

// One thread per column, down the rows: neighbouring threads read neighbouring columns.
__global__ void column_sums_kernel(const float* x, std::int64_t rows, std::int64_t cols,
                                   float* out) {
  PB_GRID_STRIDE(j, cols) {
    float sum = 0;
    for (std::int64_t i = 0; i < rows; ++i) sum += x[i * cols + j];
    out[j] = sum;
  }
}

__global__ void maxpool_forward_kernel(PoolShape s, const float* x, float* out, std::int32_t* arg) {
  const std::int64_t oh = s.oh(), ow = s.ow();
  PB_GRID_STRIDE(o, s.planes * oh * ow) {
    out[o] = maxpool_at(s, x + o / (oh * ow) * s.h * s.w, o / ow % oh, o % ow, arg + o);
  }
}

__global__ void maxpool_backward_kernel(PoolShape s, const float* dout, const std::int32_t* arg,
                                        float* dx) {
  const std::int64_t per_out = s.oh() * s.ow();
  PB_GRID_STRIDE(e, s.planes * s.h * s.w) {
    const std::int64_t p = e / (s.h * s.w);
    dx[e] = maxpool_grad_at(s, dout + p * per_out, arg + p * per_out, e / s.w % s.h, e % s.w);
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, std::int64_t n) {
  PB_GRID_STRIDE(j, n) { out[j] = a[j] + b[j]; }
}

__global__ void spread_means_kernel(const float* dout, std::int64_t planes, std::int64_t hw,
                                    float* dx) {
  PB_GRID_STRIDE(i, planes * hw) { dx[i] = dout[i / hw] / static_cast<float>(hw); }
}

__global__ void sgd_momentum_kernel(float* p, float* v, const float* g, std::int64_t n, float lr,
                                    float momentum, float weight_decay) {
  PB_GRID_STRIDE(j, n) { sgd_momentum_at(p[j], v[j], g[j], lr, momentum, weight_decay); }
}

template <class Kernel>
unsigned blocks_for(Kernel kernel, std::int64_t items) {
  return grid_blocks(kernel, items, kThreads);
}

enum class Backend { kernels, cublas, cudnn };

// n elements of device memory.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::int64_t n) : mem_(static_cast<std::size_t>(n) * sizeof(T)) {}
  T* data() const { return mem_.as<T>(); }

 private:
  DeviceMem mem_;
};

// The GPU's backend for core/train_step.hpp: every op function on `stream`.
class GpuOps {
 public:
  using ActType = float;
  using ParamType = float;
  template <class T>
  using Buffer = DeviceBuffer<T>;
  // math: fp32, or tf32 (tensor cores) for cuBLAS's and cuDNN's GEMMs and convolutions.
  GpuOps(cudaStream_t stream, Backend backend, Dtype math)
      : stream_(stream), backend_(backend), math_(math), cublas_(stream) {}
  template <class T>
  Buffer<T> buffer(std::int64_t n) {
    return Buffer<T>(n);
  }
  // cuBLAS's workspace fixed to memory of our own (32 MiB, what cuBLAS asks for on Hopper), so
  // that a captured step allocates nothing and every replay uses the same memory.
  void fix_cublas_workspace() {
    constexpr std::size_t kBytes = 32u << 20;
    if (!cublas_workspace_.as<void>()) cublas_workspace_ = DeviceMem(kBytes);
    cublas_.set_workspace(cublas_workspace_.as<void>(), kBytes);
  }
  void gemm(const GemmShape& shape, const float* a, const float* b, float* c) {
    if (backend_ == Backend::kernels) return gemm_tiled(stream_, shape, a, b, c);
    GemmShape g = shape;
    g.dtype = math_;
    gemm_cublas(cublas_.get(), g, a, b, c);
  }
  void conv(const ConvShape& shape, const float* in0, const float* in1, const float* b, float* out,
            float* db) {
    ConvShape s = shape;
    s.dtype = math_;
    switch (backend_) {
      case Backend::kernels:
        return conv_direct(stream_, s, in0, in1, b, out, db);
      case Backend::cublas: {
        const std::int64_t need = s.crs() * s.pq();  // one image's column matrix
        if (need > col_floats_) {  // the first step (untimed) sizes it for every pass
          PB_CUDA(cudaStreamSynchronize(stream_));
          col_ = DeviceBuffer<float>(need), col_floats_ = need;
        }
        return conv_im2col(stream_, cublas_.get(), s, in0, in1, b, out, db, col_.data());
      }
      case Backend::cudnn: {
        const PlanKey key = plan_key(s);
        auto it = plans_.find(key);
        if (it == plans_.end()) {  // planned in the first step (untimed); kept only if it works
          auto plan = std::make_unique<CudnnConvolution>(stream_, s);
          // One workspace for every plan: they run one after another on the stream. The old
          // one goes first, so growing never holds both.
          const std::size_t need = plan->workspace_bytes();
          if (need > workspace_bytes_) {
            PB_CUDA(cudaStreamSynchronize(stream_));
            workspace_ = DeviceMem(), workspace_bytes_ = 0;
            workspace_ = DeviceMem(need), workspace_bytes_ = need;
          }
          it = plans_.emplace(key, std::move(plan)).first;
        }
        return it->second->run(in0, in1, b, out, db, workspace_.as<void>());
      }
    }
  }
  void relu(const float* z, const float* dy, float* out, std::int64_t n) {
    activation_vectorized(stream_, Act::relu, z, dy, out, n);
  }
  // Rows of a few logits (10 classes): one thread a row (rows_naive) fits them; a block a row
  // would idle. Correct for any count; a model of 1000 classes would want rows_vectorized.
  void rows(const RowShape& s, const float* x, const std::int32_t* labels, float* out) {
    rows_naive(stream_, s, x, labels, out);
  }
  void mean(const float* x, std::int64_t n, float* out) {
    channel_sums(stream_, x, 1, 1, n, out, 1.0f / static_cast<float>(n));
  }
  void bias_rows(const float* b, float* out, std::int64_t rows, std::int64_t cols) {
    bias_rows_kernel<<<blocks_for(bias_rows_kernel, rows * cols), kThreads, 0, stream_>>>(
        b, out, rows, cols);
    PB_CUDA(cudaGetLastError());
  }
  void column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* out) {
    column_sums_kernel<<<blocks_for(column_sums_kernel, cols), kThreads, 0, stream_>>>(x, rows,
                                                                                       cols, out);
    PB_CUDA(cudaGetLastError());
  }
  void maxpool_forward(const PoolShape& s, const float* x, float* out, std::int32_t* arg) {
    const std::int64_t n = s.planes * s.oh() * s.ow();
    maxpool_forward_kernel<<<blocks_for(maxpool_forward_kernel, n), kThreads, 0, stream_>>>(
        s, x, out, arg);
    PB_CUDA(cudaGetLastError());
  }
  void maxpool_backward(const PoolShape& s, const float* dout, const std::int32_t* arg, float* dx) {
    const std::int64_t n = s.planes * s.h * s.w;
    maxpool_backward_kernel<<<blocks_for(maxpool_backward_kernel, n), kThreads, 0, stream_>>>(
        s, dout, arg, dx);
    PB_CUDA(cudaGetLastError());
  }
  void batchnorm_forward(const BnShape& s, bool train, const float* x, const float* weight,
                         const float* bias, float* y, float* mean, float* invstd,
                         float* running_mean, float* running_var) {
    gpu::batchnorm_forward(stream_, s, train, x, weight, bias, y, mean, invstd, running_mean,
                           running_var);
  }
  void batchnorm_backward(const BnShape& s, const float* x, const float* weight, const float* mean,
                          const float* invstd, const float* dy, float* dx, float* dweight,
                          float* dbias) {
    gpu::batchnorm_backward(stream_, s, x, weight, mean, invstd, dy, dx, dweight, dbias);
  }
  void sgd_momentum(float* p, float* v, const float* g, std::int64_t n, float lr, float momentum,
                    float weight_decay) {
    sgd_momentum_kernel<<<blocks_for(sgd_momentum_kernel, n), kThreads, 0, stream_>>>(
        p, v, g, n, lr, momentum, weight_decay);
    PB_CUDA(cudaGetLastError());
  }
  void copy(const float* x, float* out, std::int64_t n) {
    PB_CUDA(cudaMemcpyAsync(out, x, static_cast<std::size_t>(n) * sizeof(float),
                            cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(float* x, std::int64_t n) {
    PB_CUDA(cudaMemsetAsync(x, 0, static_cast<std::size_t>(n) * sizeof(float), stream_));
  }
  void add(const float* a, const float* b, float* out, std::int64_t n) {
    add_kernel<<<blocks_for(add_kernel, n), kThreads, 0, stream_>>>(a, b, out, n);
    PB_CUDA(cudaGetLastError());
  }
  // NCHW maps (the walk keeps every map NCHW on the GPU).
  void plane_means(const Maps& s, const float* x, float* out) {
    channel_sums(stream_, x, 1, s.n * s.c, s.hw, out, 1.0f / static_cast<float>(s.hw));
  }
  void spread_means(const Maps& s, const float* dout, float* dx) {
    spread_means_kernel<<<blocks_for(spread_means_kernel, s.size()), kThreads, 0, stream_>>>(
        dout, s.n * s.c, s.hw, dx);
    PB_CUDA(cudaGetLastError());
  }
  // The cuDNN algorithms the step chose, one per convolution pass.
  std::string detail() const {
    std::string out;
    for (const auto& [key, plan] : plans_) out += (out.empty() ? "" : " | ") + plan->detail();
    return out;
  }

 private:
  using PlanKey = std::array<std::int64_t, 13>;
  static PlanKey plan_key(const ConvShape& s) {  // the whole shape
    return {s.n,
            s.c,
            s.h,
            s.w,
            s.k,
            s.r,
            s.s,
            s.stride_h,
            s.stride_w,
            s.pad_h,
            s.pad_w,
            static_cast<std::int64_t>(s.dir),
            static_cast<std::int64_t>(s.dtype)};
  }

  cudaStream_t stream_;
  Backend backend_;
  Dtype math_;
  CublasHandle cublas_;
  DeviceMem cublas_workspace_;  // fix_cublas_workspace's
  DeviceBuffer<float> col_;
  std::int64_t col_floats_ = 0;
  std::map<PlanKey, std::unique_ptr<CudnnConvolution>> plans_;
  DeviceMem workspace_;  // the largest any plan needs, shared
  std::size_t workspace_bytes_ = 0;
};

// train/gpu/<backend>[_h2d|_graph]: the step over the case's device buffers. With h2d, the batch
// waits in pinned host memory and each step copies it to the device first, on the same stream;
// with graph, run() replays the step captured in prepare().
enum class Variant { plain, h2d, graph };
class GpuTrain : public GpuImpl {
 public:
  GpuTrain(const TrainWorkload& w, Backend backend, Variant v)
      : s_(w.train()),
        m_(w.model()),
        h2d_(v == Variant::h2d),
        graph_(v == Variant::graph),
        ops_(stream_, backend, s_.dtype),
        step_(make_step(m_, s_, ops_)),
        x_(s_.batch * m_.input.size()),
        labels_(s_.batch),
        params_(m_.param_count),
        velocity_(m_.param_count),
        state_(m_.state_count) {
    // Over several ranks (data parallel, core/train.hpp): the gradients averaged by NCCL on
    // the step's stream, between the backward pass and the update.
    if (s_.train && s_.ranks > 1 && !s_.local)
      step_->reduce = [this](float* g, std::int64_t n) { nccl_average(g, n, stream_); };
  }
  void prepare(const Tensors& in) override {
    // This rank's shard of the global batch (all of it on one rank).
    const std::int64_t f = m_.input.size(), first = s_.rank * s_.batch;
    if (at(in, "x").f32().size() < static_cast<std::size_t>((first + s_.batch) * f))
      throw std::runtime_error("the batch holds no shard for rank " + std::to_string(s_.rank));
    const float* x = at(in, "x").f32().data() + first * f;
    const std::int32_t* labels = at(in, "labels").i32().data() + first;
    const std::size_t x_bytes = static_cast<std::size_t>(s_.batch * f) * sizeof(float);
    const std::size_t label_bytes = static_cast<std::size_t>(s_.batch) * sizeof(std::int32_t);
    upload(params_.data(), at(in, "params"));
    upload(velocity_.data(), at(in, "velocity"));
    if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
    upload(x_.data(), x, x_bytes);
    upload(labels_.data(), labels, label_bytes);
    if (step_->reduce) {
      // Over several ranks, what may fail in a first step (cuDNN's plans, its workspace, memory)
      // fails here, before the ranks agree that every one is ready: a rank that failed in run()
      // would leave the others in the gradients' all-reduce. The state it moved is restored.
      step_->forward_backward(x_.data(), labels_.data(), params_.data(), state_.data());
      PB_CUDA(cudaStreamSynchronize(stream_));
      if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
    }
    if (graph_) capture(in);
    if (!h2d_) return;
    pinned_x_ = std::make_unique<PinnedMem>(x_bytes);
    pinned_labels_ = std::make_unique<PinnedMem>(label_bytes);
    std::copy(x, x + s_.batch * f, pinned_x_->as<float>());
    std::copy(labels, labels + s_.batch, pinned_labels_->as<std::int32_t>());
  }
  void run() override {
    if (graph_exec_) {
      PB_CUDA(cudaGraphLaunch(graph_exec_, stream_));
      return;
    }
    if (h2d_) {
      const auto n = static_cast<std::size_t>(s_.batch);
      PB_CUDA(cudaMemcpyAsync(x_.data(), pinned_x_->as<void>(),
                              n * static_cast<std::size_t>(m_.input.size()) * 4,
                              cudaMemcpyHostToDevice, stream_));
      PB_CUDA(cudaMemcpyAsync(labels_.data(), pinned_labels_->as<void>(), n * 4,
                              cudaMemcpyHostToDevice, stream_));
    }
    step();
  }
  // Nothing of the step may still be queued when its buffers and handles go.
  ~GpuTrain() override {
    cudaStreamSynchronize(stream_);
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  }
  Tensors result() override {
    if (!s_.train) return {download("logits", {s_.batch, m_.classes}, step_->logits())};
    const std::int64_t n = m_.param_count;
    Tensors out = {download("loss", {1}, step_->loss()), download("params", {n}, params_.data()),
                   download("velocity", {n}, velocity_.data())};
    if (step_->reduce && !nccl_same_on_every_rank(out[1].f32(), stream_))
      throw std::runtime_error("the ranks hold different parameters after the step");
    if (m_.state_count > 0) out.push_back(download("state", {m_.state_count}, state_.data()));
    return out;
  }
  std::string detail() const override {
    const std::string algos = ops_.detail();
    std::string how =
        h2d_     ? "batch copied from pinned host memory in each step"
        : graph_ ? "replayed as one CUDA graph of " + std::to_string(graph_nodes_) + " nodes"
                 : "";
    const std::string note = math_note(s_.dtype);  // tf32 where the GPU or the override says no
    if (!note.empty()) how += (how.empty() ? "" : "; ") + note;
    return how.empty() ? algos : algos.empty() ? how : how + "; " + algos;
  }

 private:
  void step() {
    if (s_.train)
      step_->step(x_.data(), labels_.data(), params_.data(), velocity_.data(), state_.data(),
                  m_.param_count);
    else
      step_->forward(x_.data(), params_.data(), state_.data());
  }
  // One step outside the capture (cuDNN's plans and the column buffer are made in a first step,
  // and both synchronize, which a capturing stream may not), its parameters, velocity and state
  // restored; then the step captured and instantiated.
  void capture(const Tensors& in) {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    graph_exec_ = nullptr;
    ops_.fix_cublas_workspace();
    step();
    PB_CUDA(cudaStreamSynchronize(stream_));
    upload(params_.data(), at(in, "params"));
    upload(velocity_.data(), at(in, "velocity"));
    if (m_.state_count > 0) upload(state_.data(), at(in, "state"));
    cudaGraph_t graph = nullptr;
    PB_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      step();
    } catch (...) {  // end the capture, whatever it holds, before the error goes up
      if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
      throw;
    }
    PB_CUDA(cudaStreamEndCapture(stream_, &graph));
    std::size_t nodes = 0;
    cudaError_t st = cudaGraphGetNodes(graph, nullptr, &nodes);
    if (st == cudaSuccess) st = cudaGraphInstantiate(&graph_exec_, graph, 0);
    cudaGraphDestroy(graph);
    PB_CUDA(st);
    graph_nodes_ = nodes;
  }

  TrainShape s_;
  ModelDesc m_;
  bool h2d_, graph_;
  cudaGraphExec_t graph_exec_ = nullptr;
  std::size_t graph_nodes_ = 0;
  GpuOps ops_;
  std::unique_ptr<ModelStep> step_;
  DeviceBuffer<float> x_;
  DeviceBuffer<std::int32_t> labels_;
  DeviceBuffer<float> params_, velocity_, state_;
  std::unique_ptr<PinnedMem> pinned_x_, pinned_labels_;
};

std::unique_ptr<Impl> make_train(const std::string&, const std::string& name, const Workload& w,
                                 int) {
  const auto& s = static_cast<const TrainWorkload&>(w);
  const std::size_t cut = name.find('_');
  const std::string base = name.substr(0, cut), suffix = cut == name.npos ? "" : name.substr(cut);
  const Variant v = suffix == "_h2d"     ? Variant::h2d
                    : suffix == "_graph" ? Variant::graph
                                         : Variant::plain;
  // fp32 buffers throughout: fp32, or tf32 on the libraries' tensor cores
  const Dtype t = s.train().dtype;
  if (t != Dtype::fp32 && !(t == Dtype::tf32 && base != "kernels"))
    throw std::runtime_error("train/gpu/" + name + " runs no " + to_string(t) + " step");
  if (suffix.empty() || v != Variant::plain) {
    if (base == "kernels" && v == Variant::plain)
      return std::make_unique<GpuTrain>(s, Backend::kernels, v);
    if (base == "cublas") return std::make_unique<GpuTrain>(s, Backend::cublas, v);
    if (base == "cudnn") return std::make_unique<GpuTrain>(s, Backend::cudnn, v);
  }
  throw std::runtime_error("unknown GPU train implementation: " + name);
}

[[maybe_unused]] const bool registered = register_factory("train", make_train);

}  // namespace

}  // namespace pb::gpu
