#include "core/layers.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace pb {

namespace {

// A map value as float (T: float, double, or bf16: core/types.hpp), and back.
template <class T>
T value_of(T v) {
  return v;
}
float value_of(Bf16 v) { return from_bf16(v); }
template <class T>
void store_to(T v, T* out) {
  *out = v;
}
void store_to(float v, Bf16* out) { *out = to_bf16(v); }

// NHWC: a row of outputs a task; each window's taps in maxpool_at's order, every channel at
// once (neighbours in memory, one vector), the first tap taken and a later one only where it is
// larger: maxpool_at's choice, channel by channel, at the speed of a copy. T is compared as
// value_of(T) (bf16: on its float; a maximum is exact, so the choice and the value are those of
// the fp32 maps).
template <class T>
void maxpool_forward_nhwc(const PoolShape& s, const T* x, T* out, std::int32_t* arg) {
  const std::int64_t oh = s.oh(), ow = s.ow(), hw = s.h * s.w;
#pragma omp parallel for schedule(static)
  for (std::int64_t row = 0; row < s.planes / s.c * oh; ++row) {
    const std::int64_t image = row / oh, i = row % oh, c = s.c;
    for (std::int64_t j = 0; j < ow; ++j) {
      T* o = out + (row * ow + j) * c;
      std::int32_t* a = arg + (row * ow + j) * c;
      bool first = true;
      for (std::int64_t r = 0; r < s.k; ++r) {
        const std::int64_t ih = i * s.stride - s.pad + r;
        if (ih < 0 || ih >= s.h) continue;
        for (std::int64_t t = 0; t < s.k; ++t) {
          const std::int64_t iw = j * s.stride - s.pad + t;
          if (iw < 0 || iw >= s.w) continue;
          const auto at = static_cast<std::int32_t>(ih * s.w + iw);
          const T* v = x + (image * hw + at) * c;
          if (first) {
            std::copy(v, v + c, o);
            std::fill(a, a + c, at);
            first = false;
            continue;
          }
          // The choice as a mask (all ones where the tap is larger), not a branch: GCC
          // vectorizes this form on any x86-64 (this file is built without -march=native), and
          // left the one with two selects scalar, 44% of the CNN's inference.
#pragma omp simd
          for (std::int64_t ch = 0; ch < c; ++ch) {
            const T val = v[ch], cur = o[ch];
            const bool larger_value = value_of(val) > value_of(cur);
            const std::int32_t larger = -static_cast<std::int32_t>(larger_value);
            o[ch] = larger_value ? val : cur;
            a[ch] = (at & larger) | (a[ch] & ~larger);
          }
        }
      }
    }
  }
}

// A scatter of each gradient to its maximum on the CPU: 2.7x faster here than a gather over the
// inputs through maxpool_grad_at (what the GPU's threads do, one input each). The threads split
// the images, whose gradients are disjoint. T without arithmetic of its own (bf16) sums each
// image's gradients in a float copy of it, rounded once (as maxpool_grad_at's Sum).
template <class T>
void maxpool_backward_nhwc(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx) {
  const std::int64_t hw = s.h * s.w, per_out = s.oh() * s.ow(), c = s.c;
  using Sum = std::conditional_t<std::is_floating_point_v<T>, T, float>;
#pragma omp parallel
  {
    std::vector<Sum> mine;  // the image's sums, where T is not Sum
#pragma omp for schedule(static)
    for (std::int64_t image = 0; image < s.planes / c; ++image) {
      T* d = dx + image * hw * c;
      Sum* sums = nullptr;
      if constexpr (std::is_same_v<T, Sum>) {
        sums = d;
      } else {
        mine.resize(static_cast<std::size_t>(hw * c));
        sums = mine.data();
      }
      std::fill(sums, sums + hw * c, Sum(0));
      for (std::int64_t o = image * per_out * c; o < (image + 1) * per_out * c; ++o)
        sums[arg[o] * c + o % c] += value_of(dout[o]);
      if constexpr (!std::is_same_v<T, Sum>)
        for (std::int64_t e = 0; e < hw * c; ++e) store_to(sums[e], d + e);
    }
  }
}

}  // namespace

template <class T>
void maxpool_forward(const PoolShape& s, const T* x, T* out, std::int32_t* arg) {
  if (s.channels_last) return maxpool_forward_nhwc(s, x, out, arg);
  const std::int64_t oh = s.oh(), ow = s.ow(), hw = s.h * s.w;
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.planes; ++p)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        const std::int64_t o = (p * oh + i) * ow + j;
        out[o] = maxpool_at(s, x + p * hw, i, j, arg + o);
      }
}

template <class T>
void maxpool_backward(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx) {
  if (s.channels_last) return maxpool_backward_nhwc(s, dout, arg, dx);
  const std::int64_t hw = s.h * s.w, per_out = s.oh() * s.ow();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    std::fill(dx + p * hw, dx + (p + 1) * hw, T(0));
    for (std::int64_t o = 0; o < per_out; ++o)
      dx[p * hw + arg[p * per_out + o]] += dout[p * per_out + o];
  }
}

void maxpool_forward_bf16(const PoolShape& s, const Bf16* x, Bf16* out, std::int32_t* arg) {
  if (!s.channels_last) throw std::invalid_argument("bf16 maps are pooled NHWC only");
  maxpool_forward_nhwc(s, x, out, arg);
}
void maxpool_backward_bf16(const PoolShape& s, const Bf16* dout, const std::int32_t* arg,
                           Bf16* dx) {
  if (!s.channels_last) throw std::invalid_argument("bf16 maps are pooled NHWC only");
  maxpool_backward_nhwc(s, dout, arg, dx);
}

namespace {

// f(e) for every element e of NCHW channel ch, image by image (each image's plane contiguous).
template <class F>
void for_each_in_channel(const Maps& s, std::int64_t ch, F f) {
  for (std::int64_t n = 0; n < s.n; ++n) {
    const std::int64_t plane = (n * s.c + ch) * s.hw;
    for (std::int64_t i = plane; i < plane + s.hw; ++i) f(i);
  }
}

// Per channel, the sums over a batch of NHWC maps of f(e, ch) for each element e: the rows split
// over the threads, each thread's sums (in double) added. F adds its terms into sums[0..c) and
// sums[c..2c).
template <class F>
void nhwc_channel_sums(const Maps& s, double* sums, F f) {
  std::fill(sums, sums + 2 * s.c, 0.0);
#pragma omp parallel
  {
    std::vector<double> mine(static_cast<std::size_t>(2 * s.c), 0.0);
#pragma omp for schedule(static)
    for (std::int64_t row = 0; row < s.count(); ++row) f(row * s.c, mine.data());
#pragma omp critical
    for (std::int64_t j = 0; j < 2 * s.c; ++j) sums[j] += mine[static_cast<std::size_t>(j)];
  }
}

}  // namespace

// The sums of a channel in double, whatever T: the float step's statistics then round once.
template <class T>
void batchnorm_forward(const BnShape& s, bool train, const T* x, const T* weight, const T* bias,
                       T* y, T* mean, T* invstd, T* running_mean, T* running_var) {
  const std::int64_t m = s.count(), c = s.c;
  // Channel ch's statistics from its sum and its sum of squared deviations.
  auto statistics = [&](std::int64_t ch, double mu, double sq) {
    const double var = sq / static_cast<double>(m);
    mean[ch] = static_cast<T>(mu), invstd[ch] = static_cast<T>(1 / std::sqrt(var + double(s.eps)));
    bn_running_at(s, mean[ch], static_cast<T>(var), running_mean + ch, running_var + ch);
  };
  if (!s.channels_last) {
#pragma omp parallel for schedule(static)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      T mu = running_mean[ch], is = static_cast<T>(1 / std::sqrt(running_var[ch] + double(s.eps)));
      if (train) {
        double sum = 0, sq = 0;
        for_each_in_channel(s, ch, [&](std::int64_t e) { sum += x[e]; });
        const double mu_d = sum / static_cast<double>(m);
        for_each_in_channel(s, ch, [&](std::int64_t e) { sq += (x[e] - mu_d) * (x[e] - mu_d); });
        statistics(ch, mu_d, sq);
        mu = mean[ch], is = invstd[ch];
      }
      const T floor = s.relu ? T(0) : -std::numeric_limits<T>::infinity();
      for_each_in_channel(s, ch, [&](std::int64_t e) {
        y[e] = std::max(bn_forward_at(x[e], mu, is, weight[ch], bias[ch]), floor);
      });
    }
    return;
  }
  std::vector<T> mu(running_mean, running_mean + c), is(static_cast<std::size_t>(c));
  for (std::int64_t ch = 0; ch < c; ++ch)
    is[ch] = static_cast<T>(1 / std::sqrt(running_var[ch] + double(s.eps)));
  if (train) {
    std::vector<double> sums(static_cast<std::size_t>(2 * c));
    nhwc_channel_sums(s, sums.data(), [&](std::int64_t e, double* acc) {
      for (std::int64_t ch = 0; ch < c; ++ch) acc[ch] += x[e + ch];
    });
    for (std::int64_t ch = 0; ch < c; ++ch) sums[ch] /= static_cast<double>(m);
    const std::vector<double> mu_d(sums.begin(), sums.begin() + c);
    nhwc_channel_sums(s, sums.data(), [&](std::int64_t e, double* acc) {
      for (std::int64_t ch = 0; ch < c; ++ch)
        acc[ch] += (x[e + ch] - mu_d[ch]) * (x[e + ch] - mu_d[ch]);
    });
    for (std::int64_t ch = 0; ch < c; ++ch) {
      statistics(ch, mu_d[ch], sums[ch]);
      mu[ch] = mean[ch], is[ch] = invstd[ch];
    }
  }
  const T floor = s.relu ? T(0) : -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static)
  for (std::int64_t row = 0; row < m; ++row)
    for (std::int64_t ch = 0; ch < c; ++ch)
      y[row * c + ch] =
          std::max(bn_forward_at(x[row * c + ch], mu[ch], is[ch], weight[ch], bias[ch]), floor);
}

template <class T>
void batchnorm_backward(const BnShape& s, const T* x, const T* weight, const T* mean,
                        const T* invstd, const T* dy, T* dx, T* dweight, T* dbias) {
  const std::int64_t m = s.count(), c = s.c;
  if (!s.channels_last) {
#pragma omp parallel for schedule(static)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      double db = 0, dw = 0;
      for_each_in_channel(s, ch, [&](std::int64_t e) {
        db += dy[e];
        dw += dy[e] * (x[e] - mean[ch]) * invstd[ch];
      });
      dbias[ch] = static_cast<T>(db), dweight[ch] = static_cast<T>(dw);
      if (!dx) continue;
      for_each_in_channel(s, ch, [&](std::int64_t e) {
        dx[e] = bn_backward_at(dy[e], (x[e] - mean[ch]) * invstd[ch], weight[ch], invstd[ch],
                               dbias[ch], dweight[ch], static_cast<T>(m));
      });
    }
    return;
  }
  std::vector<double> sums(static_cast<std::size_t>(2 * c));
  nhwc_channel_sums(s, sums.data(), [&](std::int64_t e, double* acc) {
    for (std::int64_t ch = 0; ch < c; ++ch) {
      acc[ch] += dy[e + ch];
      acc[c + ch] += dy[e + ch] * (x[e + ch] - mean[ch]) * invstd[ch];
    }
  });
  for (std::int64_t ch = 0; ch < c; ++ch)
    dbias[ch] = static_cast<T>(sums[ch]), dweight[ch] = static_cast<T>(sums[c + ch]);
  if (!dx) return;
#pragma omp parallel for schedule(static)
  for (std::int64_t row = 0; row < m; ++row)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const std::int64_t e = row * c + ch;
      dx[e] = bn_backward_at(dy[e], (x[e] - mean[ch]) * invstd[ch], weight[ch], invstd[ch],
                             dbias[ch], dweight[ch], static_cast<T>(m));
    }
}

template <class T>
void plane_means(const Maps& s, const T* x, T* out) {
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.n * s.c; ++p) {
    const std::int64_t image = p / s.c, ch = p % s.c;
    double sum = 0;
    for (std::int64_t i = 0; i < s.hw; ++i) sum += x[s.at(ch, image * s.hw + i)];
    out[p] = static_cast<T>(sum / static_cast<double>(s.hw));
  }
}

template <class T>
void spread_means(const Maps& s, const T* dout, T* dx) {
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.n * s.c; ++p) {
    const std::int64_t image = p / s.c, ch = p % s.c;
    const T g = dout[p] / static_cast<T>(s.hw);
    for (std::int64_t i = 0; i < s.hw; ++i) dx[s.at(ch, image * s.hw + i)] = g;
  }
}

template <class T>
void relayout(const Maps& s, const T* x, T* out) {
  relayout_as(s, x, out, [](T v) { return v; });
}

#define PB_LAYERS(T)                                                                             \
  template void maxpool_forward<T>(const PoolShape&, const T*, T*, std::int32_t*);               \
  template void maxpool_backward<T>(const PoolShape&, const T*, const std::int32_t*, T*);        \
  template void batchnorm_forward<T>(const BnShape&, bool, const T*, const T*, const T*, T*, T*, \
                                     T*, T*, T*);                                                \
  template void batchnorm_backward<T>(const BnShape&, const T*, const T*, const T*, const T*,    \
                                      const T*, T*, T*, T*);                                     \
  template void plane_means<T>(const Maps&, const T*, T*);                                       \
  template void spread_means<T>(const Maps&, const T*, T*);                                      \
  template void relayout<T>(const Maps&, const T*, T*);
PB_LAYERS(float)
PB_LAYERS(double)
#undef PB_LAYERS

}  // namespace pb
