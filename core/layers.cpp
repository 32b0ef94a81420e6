#include "core/layers.hpp"

#include <algorithm>

namespace pb {

template <class T>
void maxpool_forward(const PoolShape& s, const T* x, T* out, std::int32_t* arg) {
  const std::int64_t oh = s.oh(), ow = s.ow();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.planes; ++p)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        const std::int64_t o = (p * oh + i) * ow + j;
        out[o] = maxpool_at(s, x + p * s.h * s.w, i, j, arg + o);
      }
}

// A scatter of each gradient to its maximum on the CPU: 2.7x faster here than a gather over the
// inputs through maxpool_grad_at (what the GPU's threads do, one input each).
template <class T>
void maxpool_backward(const PoolShape& s, const T* dout, const std::int32_t* arg, T* dx) {
  const std::int64_t hw = s.h * s.w, per_out = s.oh() * s.ow();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    std::fill(dx + p * hw, dx + (p + 1) * hw, T(0));
    for (std::int64_t o = 0; o < per_out; ++o)
      dx[p * hw + arg[p * per_out + o]] += dout[p * per_out + o];
  }
}

// The sums of a channel in double, whatever T: the float step's statistics then round once.
template <class T>
void batchnorm_forward(const BnShape& s, bool train, const T* x, const T* weight, const T* bias,
                       T* y, T* mean, T* invstd, T* running_mean, T* running_var) {
  const std::int64_t m = s.count();
#pragma omp parallel for schedule(static)
  for (std::int64_t ch = 0; ch < s.c; ++ch) {
    T mu = running_mean[ch], is = static_cast<T>(1 / std::sqrt(running_var[ch] + double(s.eps)));
    if (train) {
      double sum = 0, sq = 0;
      for (std::int64_t i = 0; i < m; ++i) sum += x[s.at(ch, i)];
      const double mu_d = sum / static_cast<double>(m);
      for (std::int64_t i = 0; i < m; ++i) sq += (x[s.at(ch, i)] - mu_d) * (x[s.at(ch, i)] - mu_d);
      const double var = sq / static_cast<double>(m);
      mu = static_cast<T>(mu_d), is = static_cast<T>(1 / std::sqrt(var + double(s.eps)));
      mean[ch] = mu, invstd[ch] = is;
      bn_running_at(s, mu, static_cast<T>(var), running_mean + ch, running_var + ch);
    }
    for (std::int64_t i = 0; i < m; ++i) {
      const std::int64_t e = s.at(ch, i);
      y[e] = bn_forward_at(x[e], mu, is, weight[ch], bias[ch]);
    }
  }
}

template <class T>
void batchnorm_backward(const BnShape& s, const T* x, const T* weight, const T* mean,
                        const T* invstd, const T* dy, T* dx, T* dweight, T* dbias) {
  const std::int64_t m = s.count();
#pragma omp parallel for schedule(static)
  for (std::int64_t ch = 0; ch < s.c; ++ch) {
    double db = 0, dw = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      const std::int64_t e = s.at(ch, i);
      db += dy[e];
      dw += dy[e] * (x[e] - mean[ch]) * invstd[ch];
    }
    dbias[ch] = static_cast<T>(db), dweight[ch] = static_cast<T>(dw);
    if (!dx) continue;
    for (std::int64_t i = 0; i < m; ++i) {
      const std::int64_t e = s.at(ch, i);
      dx[e] = bn_backward_at(dy[e], (x[e] - mean[ch]) * invstd[ch], weight[ch], invstd[ch],
                             dbias[ch], dweight[ch], static_cast<T>(m));
    }
  }
}

#define PB_LAYERS(T)                                                                             \
  template void maxpool_forward<T>(const PoolShape&, const T*, T*, std::int32_t*);               \
  template void maxpool_backward<T>(const PoolShape&, const T*, const std::int32_t*, T*);        \
  template void batchnorm_forward<T>(const BnShape&, bool, const T*, const T*, const T*, T*, T*, \
                                     T*, T*, T*);                                                \
  template void batchnorm_backward<T>(const BnShape&, const T*, const T*, const T*, const T*,    \
                                      const T*, T*, T*, T*);
PB_LAYERS(float)
PB_LAYERS(double)
#undef PB_LAYERS

}  // namespace pb
