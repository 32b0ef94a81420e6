// CPU convolution, from the reference to the library:
//   naive   - one thread, every output point computed directly in double (core/conv.hpp):
//             the reference.
//   im2col  - the textbook algorithm: per image, OpenMP im2col (col2im for dX) and one OpenBLAS
//             sgemm. Its cost beside the GEMM is the column matrix, R*S times the image.
//   onednn  - oneDNN's convolution primitives, the path PyTorch takes on CPUs: operands in the
//             blocked layouts oneDNN prefers (reordered in prepare, outside the timed region),
//             fp32, or bf16/fp16 inputs with fp32 outputs.
#include <algorithm>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "core/conv.hpp"
#include "cpu_ref/cpu.hpp"
#include "cpu_ref/onednn.hpp"

namespace pb::cpu {

// --- the op functions --------------------------------------------------------------------------

void conv_naive(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
                float* db) {
  const std::int64_t count = s.dir == ConvDir::fwd        ? s.y_size()
                             : s.dir == ConvDir::bwd_data ? s.x_size()
                                                          : s.w_size();
  for (std::int64_t i = 0; i < count; ++i) {
    out[i] = static_cast<float>(conv_point(s, in0, in1, b, i).value);
  }
  if (s.dir == ConvDir::bwd_filter)
    for (std::int64_t k = 0; k < s.k; ++k)
      db[k] = static_cast<float>(conv_bias_grad_point(s, in1, k).value);
}

namespace {

// The output columns [*lo, *hi) whose input column q * stride - pad + tap lies in [0, in): the
// span of a row that im2col copies and col2im adds back, with no test per element (so the
// compiler vectorizes it).
void inside(std::int64_t stride, std::int64_t pad, std::int64_t tap, std::int64_t in,
            std::int64_t out, std::int64_t* lo, std::int64_t* hi) {
  const std::int64_t first = pad - tap;  // q * stride >= pad - tap
  *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const std::int64_t last = in - 1 + pad - tap;  // q * stride <= in - 1 + pad - tap
  *hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  *lo = std::min(*lo, *hi);
}

}  // namespace

void im2col_omp(const ConvShape& s, const float* x, float* col, int threads) {
  const std::int64_t p = s.p(), q = s.q(), rows = s.crs();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t c = row / (s.r * s.s), r = row / s.s % s.r, t = row % s.s;
    const float* xc = x + c * s.h * s.w;
    float* dst = col + row * p * q;
    for (std::int64_t pp = 0; pp < p; ++pp) {
      const std::int64_t ih = pp * s.stride_h - s.pad_h + r;
      float* d = dst + pp * q;
      if (ih < 0 || ih >= s.h) {
        std::fill(d, d + q, 0.0f);
        continue;
      }
      std::int64_t lo, hi;
      inside(s.stride_w, s.pad_w, t, s.w, q, &lo, &hi);
      std::fill(d, d + lo, 0.0f);
      const float* xr = xc + ih * s.w;
      const std::int64_t off = t - s.pad_w;  // column iw = qq * stride_w + off
      for (std::int64_t qq = lo; qq < hi; ++qq) d[qq] = xr[qq * s.stride_w + off];
      std::fill(d + hi, d + q, 0.0f);
    }
  }
}

// A scatter, as Caffe's: each row of col is added back along the pixels im2col read it from.
// The threads split the channels, whose planes are disjoint. (The GPU gathers instead, one
// thread per pixel, with col2im_value: a scatter there would need atomics.)
void col2im_omp(const ConvShape& s, const float* col, float* x, int threads) {
  const std::int64_t p = s.p(), q = s.q();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t c = 0; c < s.c; ++c) {
    float* xc = x + c * s.h * s.w;
    std::fill(xc, xc + s.h * s.w, 0.0f);
    for (std::int64_t r = 0; r < s.r; ++r)
      for (std::int64_t t = 0; t < s.s; ++t) {
        std::int64_t lo, hi;
        inside(s.stride_w, s.pad_w, t, s.w, q, &lo, &hi);
        const float* src = col + ((c * s.r + r) * s.s + t) * p * q;
        for (std::int64_t pp = 0; pp < p; ++pp) {
          const std::int64_t ih = pp * s.stride_h - s.pad_h + r;
          if (ih < 0 || ih >= s.h) continue;
          float* xr = xc + ih * s.w;
          const std::int64_t off = t - s.pad_w;  // column iw = qq * stride_w + off
          const float* sr = src + pp * q;
          for (std::int64_t qq = lo; qq < hi; ++qq) xr[qq * s.stride_w + off] += sr[qq];
        }
      }
  }
}

void conv_im2col(const ConvShape& s, const float* in0, const float* in1, const float* b, float* out,
                 float* db, float* col, int threads) {
  const std::int64_t pq = s.pq(), crs = s.crs(), x_img = s.c * s.h * s.w, y_img = s.k * pq;
  const bool identity = im2col_is_identity(s);  // then the image is its own column matrix
  GemmShape g;
  switch (s.dir) {
    case ConvDir::fwd:  // y_n = W (k x crs) col_n (crs x pq) + b
      g.m = s.k, g.n = pq, g.k = crs, g.beta = 1;
      for (std::int64_t n = 0; n < s.n; ++n) {
        float* y = out + n * y_img;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (std::int64_t k = 0; k < s.k; ++k) std::fill(y + k * pq, y + (k + 1) * pq, b[k]);
        const float* x = in0 + n * x_img;
        if (!identity) im2col_omp(s, x, col, threads);
        gemm_openblas(g, in1, identity ? x : col, y);
      }
      break;
    case ConvDir::bwd_data:  // col_n = W^T (crs x k) dy_n (k x pq); dx_n = col2im(col_n)
      g.m = crs, g.n = pq, g.k = s.k, g.ta = true;
      for (std::int64_t n = 0; n < s.n; ++n) {
        float* dx = out + n * x_img;
        gemm_openblas(g, in1, in0 + n * y_img, identity ? dx : col);
        if (!identity) col2im_omp(s, col, dx, threads);
      }
      break;
    case ConvDir::bwd_filter:  // dW += dy_n (k x pq) col_n^T (pq x crs); db = sum of dy
      g.m = s.k, g.n = crs, g.k = pq, g.tb = true;
      for (std::int64_t n = 0; n < s.n; ++n) {
        const float* x = in0 + n * x_img;
        if (!identity) im2col_omp(s, x, col, threads);
        g.beta = n == 0 ? 0.0f : 1.0f;
        gemm_openblas(g, in1 + n * y_img, identity ? x : col, out);
      }
#pragma omp parallel for num_threads(threads) schedule(static)
      for (std::int64_t k = 0; k < s.k; ++k) {
        float sum = 0;
        for (std::int64_t n = 0; n < s.n; ++n) {
          const float* dy = in1 + n * y_img + k * pq;
          for (std::int64_t i = 0; i < pq; ++i) sum += dy[i];
        }
        db[k] = sum;
      }
      break;
  }
}

// --- oneDNN's convolution as a plan: built once for a shape and pass --------------------------

#ifdef PAIRBENCH_HAVE_DNNL
struct OnednnConvolution::State {
  dnnl::primitive prim;
  // In the primitive's layouts: owned, or (direct) the caller's buffers, bound by run().
  std::unordered_map<int, dnnl::memory> args;
  struct Arg {
    int arg;
    dnnl::memory::desc user;  // the caller's layout (NCHW or NHWC, OIHW, fp32)
    bool direct;              // the primitive's layout too: no reorder
    dnnl::memory own;         // the plan's: args[arg] unless a held copy is bound there
  };
  std::vector<Arg> inputs, outputs;
  // The weights held for inference (load's hold_weights), in the primitive's layout, by source.
  std::unordered_map<const void*, dnnl::memory> held;
  // The post-ops' operands, bound by post_inputs(): the argument and which (0 scale, 1 shift,
  // 2 residual).
  std::vector<std::pair<int, int>> post;
  std::string kernel;
};

OnednnConvolution::OnednnConvolution(const ConvShape& s, bool channels_last, bool low_maps,
                                     ConvPost post)
    : st_(std::make_unique<State>()) {
  if (post.any() && s.dir != ConvDir::fwd)
    throw std::invalid_argument("a convolution's post-ops are a forward pass's");
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  using md = dnnl::memory::desc;
  auto& eng = onednn::engine();
  const dt t = onednn::data_type(s.dtype);
  const dnnl::memory::dims x_dims = {s.n, s.c, s.h, s.w}, w_dims = {s.k, s.c, s.r, s.s},
                           y_dims = {s.n, s.k, s.p(), s.q()}, b_dims = {s.k};
  const dnnl::memory::dims strides = {s.stride_h, s.stride_w}, pad_l = {s.pad_h, s.pad_w};
  // The right padding that gives exactly p x q outputs (less than pad_l, even negative, where
  // the stride leaves the last input rows unread).
  const dnnl::memory::dims pad_r = {(s.p() - 1) * s.stride_h + s.r - s.h - s.pad_h,
                                    (s.q() - 1) * s.stride_w + s.s - s.w - s.pad_w};
  // The maps' storage: fp32, or the caller's low-precision maps.
  const dt maps_t = low_maps ? t : dt::f32;
  const dt y_t = s.dir == ConvDir::fwd ? maps_t : t;  // dy is an input of the backward passes
  // The maps in the layout oneDNN prefers (any), or NHWC where the caller keeps them so.
  const tag maps = channels_last ? tag::nhwc : tag::any;
  const md x_any(x_dims, s.dir == ConvDir::bwd_data ? maps_t : t, maps),
      w_any(w_dims, s.dir == ConvDir::bwd_filter ? dt::f32 : t, tag::any), y_any(y_dims, y_t, maps),
      b_md(b_dims, dt::f32, tag::x);
  const tag user_maps = channels_last ? tag::nhwc : tag::nchw;
  const md x_user(x_dims, maps_t, user_maps), w_user(w_dims, dt::f32, tag::oihw),
      y_user(y_dims, maps_t, user_maps);
  const auto algo = dnnl::algorithm::convolution_direct;
  auto arg = [&](std::vector<State::Arg>& list, int a, const md& want, const md& user) {
    const bool direct = channels_last && want == user;
    st_->args[a] = direct ? dnnl::memory(want, eng, DNNL_MEMORY_NONE) : dnnl::memory(want, eng);
    list.push_back({a, user, direct, st_->args[a]});
  };
  dnnl::primitive_attr attr;
  if (post.any()) {
    dnnl::post_ops po;
    auto binary = [&](dnnl::algorithm a, const md& src1, int which) {
      const int id = DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1;
      po.append_binary(a, src1);
      st_->args[id] = dnnl::memory(src1, eng, DNNL_MEMORY_NONE);
      st_->post.emplace_back(id, which);
    };
    const md per_channel({1, s.k, 1, 1}, dt::f32, tag::nchw);
    if (post.scale_shift) {
      binary(dnnl::algorithm::binary_mul, per_channel, 0);
      binary(dnnl::algorithm::binary_add, per_channel, 1);
    }
    if (post.residual) binary(dnnl::algorithm::binary_add, y_user, 2);
    if (post.relu) po.append_eltwise(dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  try {
    // The forward description: the pass itself, or the backward passes' hint. A layer without
    // a bias (s.bias false: ResNet-50's) gets primitives without one: no zeros added forward, no
    // bias gradient summed in bwd_filter.
    const auto prop =
        post.any() ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training;
    const md x_fwd(x_dims, t, maps), w_fwd(w_dims, t, tag::any), y_fwd(y_dims, y_t, maps);
    const dnnl::convolution_forward::primitive_desc fwd =
        s.bias ? dnnl::convolution_forward::primitive_desc(eng, prop, algo, x_fwd, w_fwd, b_md,
                                                           y_fwd, strides, pad_l, pad_r, attr)
               : dnnl::convolution_forward::primitive_desc(eng, prop, algo, x_fwd, w_fwd, y_fwd,
                                                           strides, pad_l, pad_r, attr);
    switch (s.dir) {
      case ConvDir::fwd:
        st_->prim = dnnl::convolution_forward(fwd);
        st_->kernel = fwd.impl_info_str();
        arg(st_->inputs, DNNL_ARG_SRC, fwd.src_desc(), x_user);
        arg(st_->inputs, DNNL_ARG_WEIGHTS, fwd.weights_desc(), w_user);
        if (s.bias) arg(st_->inputs, DNNL_ARG_BIAS, b_md, b_md);
        arg(st_->outputs, DNNL_ARG_DST, fwd.dst_desc(), y_user);
        break;
      case ConvDir::bwd_data: {
        const dnnl::convolution_backward_data::primitive_desc pd(eng, algo, x_any, w_any, y_any,
                                                                 strides, pad_l, pad_r, fwd);
        st_->prim = dnnl::convolution_backward_data(pd);
        st_->kernel = pd.impl_info_str();
        arg(st_->inputs, DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), y_user);
        arg(st_->inputs, DNNL_ARG_WEIGHTS, pd.weights_desc(), w_user);
        arg(st_->outputs, DNNL_ARG_DIFF_SRC, pd.diff_src_desc(), x_user);
      } break;
      case ConvDir::bwd_filter: {
        const dnnl::convolution_backward_weights::primitive_desc pd =
            s.bias ? dnnl::convolution_backward_weights::primitive_desc(
                         eng, algo, x_any, w_any, b_md, y_any, strides, pad_l, pad_r, fwd)
                   : dnnl::convolution_backward_weights::primitive_desc(
                         eng, algo, x_any, w_any, y_any, strides, pad_l, pad_r, fwd);
        st_->prim = dnnl::convolution_backward_weights(pd);
        st_->kernel = pd.impl_info_str();
        arg(st_->inputs, DNNL_ARG_SRC, pd.src_desc(), x_user);
        arg(st_->inputs, DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), y_user);
        arg(st_->outputs, DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), w_user);
        if (s.bias) arg(st_->outputs, DNNL_ARG_DIFF_BIAS, pd.diff_bias_desc(), b_md);
      } break;
    }
  } catch (const dnnl::error& e) {
    if (e.status != dnnl_unimplemented) throw;
    throw Unavailable(std::string("oneDNN has no ") + to_string(s.dtype) + " " + to_string(s.dir) +
                      " convolution for this shape on this CPU (ISA " + onednn::effective_isa() +
                      ")");
  }
  // oneDNN's reference code (ref:any) is a correctness fallback, thousands of times slower
  // than its kernels (fp16 bwd_filter without AMX-FP16): no figure for "the best this CPU can
  // do".
  if (st_->kernel.rfind("ref", 0) == 0)
    throw Unavailable(std::string("oneDNN has only its reference code (") + st_->kernel + ") for " +
                      to_string(s.dtype) + " " + to_string(s.dir) + " on this CPU (ISA " +
                      onednn::effective_isa() + ")");
}

OnednnConvolution::~OnednnConvolution() = default;

void OnednnConvolution::load(const void* in0, const void* in1, const float* b, bool hold_weights) {
  const void* from[3] = {in0, in1, b};
  for (std::size_t j = 0; j < st_->inputs.size(); ++j) {
    const State::Arg& a = st_->inputs[j];
    dnnl::memory& mem = st_->args[a.arg];
    if (a.direct) {
      mem.set_data_handle(const_cast<void*>(from[j]));
      continue;
    }
    dnnl::memory user(a.user, onednn::engine(), const_cast<void*>(from[j]));
    if (hold_weights && a.arg == DNNL_ARG_WEIGHTS) {
      auto [copy, fresh] = st_->held.try_emplace(from[j]);
      if (fresh) {
        copy->second = dnnl::memory(a.own.get_desc(), onednn::engine());
        dnnl::reorder(user, copy->second).execute(onednn::stream(), user, copy->second);
      }
      mem = copy->second;
      continue;
    }
    mem = a.own;
    dnnl::reorder(user, mem).execute(onednn::stream(), user, mem);
  }
  onednn::stream().wait();
}

void OnednnConvolution::drop_held_weights() { st_->held.clear(); }

void OnednnConvolution::execute() {
  st_->prim.execute(onednn::stream(), st_->args);
  onednn::stream().wait();
}

void OnednnConvolution::store(void* out, float* db) {
  void* to[2] = {out, db};
  for (std::size_t j = 0; j < st_->outputs.size(); ++j) {
    const State::Arg& a = st_->outputs[j];
    if (a.direct) continue;  // written in place by execute()
    dnnl::memory user(a.user, onednn::engine(), to[j]);
    dnnl::reorder(st_->args[a.arg], user).execute(onednn::stream(), st_->args[a.arg], user);
  }
  onednn::stream().wait();
}

void OnednnConvolution::post_inputs(const float* scale, const float* shift, const void* residual) {
  const void* from[3] = {scale, shift, residual};
  for (const auto& [id, which] : st_->post)
    st_->args[id].set_data_handle(const_cast<void*>(from[which]));
}

void OnednnConvolution::bind(void* out, float* db) {
  void* to[2] = {out, db};
  for (std::size_t j = 0; j < st_->outputs.size(); ++j)
    if (st_->outputs[j].direct) st_->args[st_->outputs[j].arg].set_data_handle(to[j]);
}

std::string OnednnConvolution::kernel() const { return st_->kernel; }
#else
struct OnednnConvolution::State {};
OnednnConvolution::OnednnConvolution(const ConvShape& s, bool, bool, ConvPost) {
  throw Unavailable(onednn::unavailable(s.dtype));
}
void OnednnConvolution::post_inputs(const float*, const float*, const void*) {}
OnednnConvolution::~OnednnConvolution() = default;
void OnednnConvolution::load(const void*, const void*, const float*, bool) {}
void OnednnConvolution::drop_held_weights() {}
void OnednnConvolution::execute() {}
void OnednnConvolution::store(void*, float*) {}
void OnednnConvolution::bind(void*, float*) {}
std::string OnednnConvolution::kernel() const { return ""; }
#endif

void OnednnConvolution::run(const void* in0, const void* in1, const float* b, void* out, float* db,
                            bool hold_weights) {
  load(in0, in1, b, hold_weights);
  bind(out, db);
  execute();
  store(out, db);
}

// --- the implementations -------------------------------------------------------------------------

namespace {

// The inputs by their pass's names (in0, in1: x and w for fwd, dy and w for bwd_data, x and dy
// for bwd_filter; b for fwd) and the outputs (out: y, dx or dw; db for bwd_filter).
class CpuConv : public CpuImpl {
 public:
  CpuConv(const ConvWorkload& w, int threads) : CpuImpl(threads), s_(w.conv()) {}
  void prepare(const Tensors& in) override {
    const auto [name0, name1] = conv_operands(s_.dir);
    in0_ = at(in, name0).f32();
    in1_ = at(in, name1).f32();
    if (s_.dir == ConvDir::fwd) b_ = at(in, "b").f32();
    out_ = conv_outputs(s_);
  }
  Tensors result() override { return out_; }

 protected:
  float* out() { return out_[0].f32().data(); }
  float* db() { return out_.size() > 1 ? out_[1].f32().data() : nullptr; }

  ConvShape s_;
  std::vector<float> in0_, in1_, b_;
  Tensors out_;
};

class NaiveConv : public CpuConv {
 public:
  using CpuConv::CpuConv;
  void run() override { conv_naive(s_, in0_.data(), in1_.data(), b_.data(), out(), db()); }
};

class Im2colConv : public CpuConv {
 public:
  Im2colConv(const ConvWorkload& w, int threads)
      : CpuConv(w, threads), col_(static_cast<std::size_t>(w.conv().crs() * w.conv().pq())) {}
  void run() override {
    conv_im2col(s_, in0_.data(), in1_.data(), b_.data(), out(), db(), col_.data(), threads_);
  }

 private:
  std::vector<float> col_;  // one image's column matrix
};

// oneDNN: the plan holds the operands in its primitive's layouts; prepare() loads them,
// run() is the primitive alone, result() stores the outputs back to NCHW.
class OnednnConv : public CpuConv {
 public:
  using CpuConv::CpuConv;
  void prepare(const Tensors& in) override {
    CpuConv::prepare(in);
    plan_ = std::make_unique<OnednnConvolution>(s_);
    plan_->load(in0_.data(), in1_.data(), b_.data());
  }
  void run() override { plan_->execute(); }
  Tensors result() override {
    plan_->store(out(), db());
    return out_;
  }
  std::string detail() const override { return plan_ ? plan_->kernel() : ""; }

 private:
  std::unique_ptr<OnednnConvolution> plan_;
};

}  // namespace

std::vector<ImplSpec> conv_impls() {
  ImplSpec onednn = cpu_spec<OnednnConv, ConvWorkload>("conv", "onednn", true, 0, "onednn");
  onednn.supports = [](const Workload& w) { return w.dtype() != Dtype::tf32; };
  onednn.unavailable = [](const Workload& w) { return onednn::unavailable(w.dtype()); };
  return {cpu_spec<NaiveConv, ConvWorkload>("conv", "naive", false, 3e8),
          cpu_spec<Im2colConv, ConvWorkload>("conv", "im2col", true, 0, "openblas"), onednn};
}

}  // namespace pb::cpu
