// The CPU kernels of vocab_map (the formulas: chunked.h), one parallel region per call.
//
// forward: threads own blocks of kRowBlock rows; a block walks the V_s chunks in order, keeping its
//   rows' online-softmax state (m, l, acc). Per chunk: one fused loop per row builds the scores
//   s = (Σ_j θ[j, t_j, chunk] + G)/τ and their max (the noise's two logs are ATen's vectorised log on
//   the block's buffer), one fused loop takes e = exp(s − m_new) with its row sum and rescales acc,
//   and one single-threaded GEMM acc += e @ E[chunk] (MKL inside a parallel region runs on the
//   calling thread).
// backward: threads own tiles of at most kMaxTile V_s columns; a tile walks the row blocks in order:
//   recompute p from (m, l), dp = g Eᵀ (GEMM), dz = p ⊙ (dp − δ)/τ, dE[tile] += pᵀ g (GEMM), and
//   the scatter of dz into θ's gradient columns of the tile (rows added in order n = 0, 1, …).
// The block and tile sizes are constants (not the thread count), so results are equal across runs and
// thread counts; no float atomics. Registered for the CPU here; CUDA runs chunked.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/cpu_clones.h"
#include "common/exp_f.h"
#include "vocab_map/noise.h"
#include "vocab_map/options.h"
#include "vocab_map/shape.h"

namespace reprogram_ext {
namespace vocab_map {
namespace cpu {
namespace {

constexpr int64_t kRowBlock = 128;  // rows per forward block and per backward step (the GEMMs' M or K)
constexpr int64_t kMaxTile = 256;   // V_s columns per backward tile (at most the call's chunk)

// What the row loops read: the tokens, θ and the call's constants.
template <typename T>
struct Ctx {
  const int64_t* tok;
  const T* theta;
  Shape sh;
  Mode mode;
  uint32_t key;  // the noise's seed key (noise.h)
  T inv_tau;
};

// Runs work(item) for item = 0 … count − 1 in one parallel region, handing the items out one at a
// time (a thread that was descheduled takes fewer; a busy machine's slow thread does not hold the
// others up). Each thread first builds its scratch with make_scratch(). Which thread runs an item
// does not change its result.
template <typename MakeScratch, typename Work>
void for_each_item(int64_t count, const MakeScratch& make_scratch, const Work& work) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    at::AutoDispatchBelowADInplaceOrView guard;  // plain ATen calls on the kernel's own buffers, in every thread
    auto scratch = make_scratch();
    for (int64_t item = next.fetch_add(1); item < count; item = next.fetch_add(1)) work(item, scratch);
  });
}

// ---- the fused row loops (generic; float32 also built for AVX2 / AVX-512: common/cpu_clones.h) ----

// row[c] = Σ_j θ[j, tokens[b, i + j − w//2], c0 + c] over the in-sequence offsets j, c < width.
template <typename T>
C10_ALWAYS_INLINE void window_row_generic(T* row, const int64_t* tok, const T* theta, const Shape& sh, int64_t n,
                                          int64_t c0, int64_t width) {
  const int64_t h = sh.w / 2, b = n / sh.L, i = n % sh.L;
  const T* centre = theta + (h * sh.V_t + tok[n]) * sh.V_s + c0;
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) row[c] = centre[c];
  for (int64_t j = 0; j < sh.w; ++j) {
    const int64_t pos = i + j - h;
    if (j == h || pos < 0 || pos >= sh.L) continue;
    const T* src = theta + (j * sh.V_t + tok[b * sh.L + pos]) * sh.V_s + c0;
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) row[c] += src[c];
  }
}

// u[c] = ((h >> 8) + 0.5) / 2^24 with h = mix(mix(n ^ key) ^ (c0 + c)) (noise.h), c < width.
template <typename T>
C10_ALWAYS_INLINE void uniform_row_generic(T* u, uint32_t row_hash, int64_t c0, int64_t width) {
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) {
    const uint32_t hc = mix32(row_hash ^ static_cast<uint32_t>(c0 + c));
    u[c] = (static_cast<T>(hc >> 8) + static_cast<T>(0.5)) * static_cast<T>(1.0 / 16777216.0);
  }
}

// x[k] = max(−x[k], 2^−25): from log u to the floored −log u (noise.h).
template <typename T>
C10_ALWAYS_INLINE void negate_floor_generic(T* x, int64_t count) {
  const T floor = static_cast<T>(kLogUFloor);
#pragma omp simd
  for (int64_t k = 0; k < count; ++k) x[k] = -x[k] > floor ? -x[k] : floor;
}

// s[c] = (s[c] − lnl[c]) · inv_tau, with lnl = log(−log u) (so −lnl = G); returns max_c s[c].
template <typename T>
C10_ALWAYS_INLINE T scale_row_generic(T* s, const T* lnl, int64_t width, T inv_tau) {
  T mx = -std::numeric_limits<T>::infinity();
  if (lnl != nullptr) {
#pragma omp simd reduction(max : mx)
    for (int64_t c = 0; c < width; ++c) {
      const T v = (s[c] - lnl[c]) * inv_tau;
      s[c] = v;
      mx = v > mx ? v : mx;
    }
  } else {
#pragma omp simd reduction(max : mx)
    for (int64_t c = 0; c < width; ++c) {
      const T v = s[c] * inv_tau;
      s[c] = v;
      mx = v > mx ? v : mx;
    }
  }
  return mx;
}

// s[c] = exp(s[c] − shift) · mult; returns Σ_c of the result.
template <typename T>
C10_ALWAYS_INLINE T exp_row_generic(T* s, int64_t width, T shift, T mult) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < width; ++c) {
    const T e = exp_f(s[c] - shift) * mult;
    s[c] = e;
    sum += e;
  }
  return sum;
}

// dz[c] = p[c] · (dp[c] − delta) · inv_tau, in place of dp.
template <typename T>
C10_ALWAYS_INLINE void softmax_grad_row_generic(T* dz, const T* p, int64_t width, T delta, T inv_tau) {
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) dz[c] = p[c] * (dz[c] - delta) * inv_tau;
}

// grad_theta[j, tokens[b, i + j − w//2], c0 + c] += dz[c] over the in-sequence offsets j of row n.
template <typename T>
C10_ALWAYS_INLINE void scatter_row_generic(T* gt, const T* dz, const int64_t* tok, const Shape& sh, int64_t n,
                                           int64_t c0, int64_t width) {
  const int64_t h = sh.w / 2, b = n / sh.L, i = n % sh.L;
  for (int64_t j = 0; j < sh.w; ++j) {
    const int64_t pos = i + j - h;
    if (pos < 0 || pos >= sh.L) continue;
    T* dst = gt + (j * sh.V_t + tok[b * sh.L + pos]) * sh.V_s + c0;
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) dst[c] += dz[c];
  }
}

RX_CPU_CLONES void window_row_f32(float* row, const int64_t* tok, const float* theta, const Shape& sh, int64_t n,
                                  int64_t c0, int64_t width) {
  window_row_generic<float>(row, tok, theta, sh, n, c0, width);
}
RX_CPU_CLONES void uniform_row_f32(float* u, uint32_t row_hash, int64_t c0, int64_t width) {
  uniform_row_generic<float>(u, row_hash, c0, width);
}
RX_CPU_CLONES void negate_floor_f32(float* x, int64_t count) { negate_floor_generic<float>(x, count); }
RX_CPU_CLONES float scale_row_f32(float* s, const float* lnl, int64_t width, float inv_tau) {
  return scale_row_generic<float>(s, lnl, width, inv_tau);
}
RX_CPU_CLONES float exp_row_f32(float* s, int64_t width, float shift, float mult) {
  return exp_row_generic<float>(s, width, shift, mult);
}
RX_CPU_CLONES void softmax_grad_row_f32(float* dz, const float* p, int64_t width, float delta, float inv_tau) {
  softmax_grad_row_generic<float>(dz, p, width, delta, inv_tau);
}
RX_CPU_CLONES void scatter_row_f32(float* gt, const float* dz, const int64_t* tok, const Shape& sh, int64_t n,
                                   int64_t c0, int64_t width) {
  scatter_row_generic<float>(gt, dz, tok, sh, n, c0, width);
}

// The dispatch: the float32 clones, the generic loops for float64.
#define RX_VOCAB_MAP_ROW_FN(name, ret, params, args)         \
  template <typename T>                                     \
  ret name params {                                         \
    if constexpr (std::is_same<T, float>::value) {          \
      return name##_f32 args;                               \
    } else {                                                \
      return name##_generic<T> args;                        \
    }                                                       \
  }
RX_VOCAB_MAP_ROW_FN(window_row, void,
                    (T * row, const int64_t* tok, const T* theta, const Shape& sh, int64_t n, int64_t c0,
                     int64_t width),
                    (row, tok, theta, sh, n, c0, width))
RX_VOCAB_MAP_ROW_FN(uniform_row, void, (T * u, uint32_t row_hash, int64_t c0, int64_t width),
                    (u, row_hash, c0, width))
RX_VOCAB_MAP_ROW_FN(negate_floor, void, (T * x, int64_t count), (x, count))
RX_VOCAB_MAP_ROW_FN(scale_row, T, (T * s, const T* lnl, int64_t width, T inv_tau), (s, lnl, width, inv_tau))
RX_VOCAB_MAP_ROW_FN(exp_row, T, (T * s, int64_t width, T shift, T mult), (s, width, shift, mult))
RX_VOCAB_MAP_ROW_FN(softmax_grad_row, void, (T * dz, const T* p, int64_t width, T delta, T inv_tau),
                    (dz, p, width, delta, inv_tau))
RX_VOCAB_MAP_ROW_FN(scatter_row, void,
                    (T * gt, const T* dz, const int64_t* tok, const Shape& sh, int64_t n, int64_t c0,
                     int64_t width),
                    (gt, dz, tok, sh, n, c0, width))
#undef RX_VOCAB_MAP_ROW_FN

// ---- one block of rows × one range of columns ----

// s [rows, width] (row stride width) for rows n0 … n0 + rows − 1 and columns c0 … c0 + width − 1:
// the window sums, then (softmax modes) (z + G)/τ with each row's max in row_max. noise [rows·width]
// is scratch (gumbel modes).
template <typename T>
void scores_block(const Ctx<T>& x, int64_t n0, int64_t rows, int64_t c0, int64_t width, at::Tensor& s_buf,
                  at::Tensor& noise_buf, T* row_max) {
  T* s = s_buf.data_ptr<T>();
  for (int64_t r = 0; r < rows; ++r) window_row<T>(s + r * width, x.tok, x.theta, x.sh, n0 + r, c0, width);
  if (!has_softmax(x.mode)) return;
  const T* lnl = nullptr;
  if (has_noise(x.mode)) {  // lnl = log(max(−log u, 2^−25)), so G = −lnl
    T* u = noise_buf.data_ptr<T>();
    for (int64_t r = 0; r < rows; ++r) {
      uniform_row<T>(u + r * width, mix32(static_cast<uint32_t>(n0 + r) ^ x.key), c0, width);
    }
    at::Tensor view = noise_buf.narrow(0, 0, rows * width);
    view.log_();
    negate_floor<T>(u, rows * width);
    view.log_();
    lnl = u;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T mx = scale_row<T>(s + r * width, lnl == nullptr ? nullptr : lnl + r * width, width, x.inv_tau);
    if (row_max != nullptr) row_max[r] = mx;
  }
}

// The first column of the row's maximum mx.
template <typename T>
int64_t first_max(const T* row, int64_t width, T mx) {
  for (int64_t c = 0; c < width; ++c) {
    if (row[c] == mx) return c;
  }
  return 0;  // NaN rows
}

template <typename T>
Ctx<T> make_ctx(const at::Tensor& tokens, const at::Tensor& theta, const Shape& sh, Mode mode, int64_t seed,
                double tau) {
  return {tokens.data_ptr<int64_t>(), theta.data_ptr<T>(), sh, mode, seed_key(seed), static_cast<T>(1.0 / tau)};
}

// ---- forward ----

template <typename T>
void forward_blocks(const Ctx<T>& x, const at::Tensor& E, int64_t chunk, at::Tensor& acc, T* m, T* l, int64_t* best) {
  const Shape& sh = x.sh;
  const int64_t blocks = (sh.N + kRowBlock - 1) / kRowBlock;
  const int64_t cap = std::min(kRowBlock, sh.N) * chunk;
  struct Scratch {
    at::Tensor s, noise;
    std::vector<T> chunk_max;
  };
  auto make_scratch = [&] {
    return Scratch{at::empty({cap}, E.options()), has_noise(x.mode) ? at::empty({cap}, E.options()) : at::Tensor(),
                   std::vector<T>(kRowBlock)};
  };
  for_each_item(blocks, make_scratch, [&](int64_t blk, Scratch& sc) {
    at::Tensor& s_buf = sc.s;
    at::Tensor& noise_buf = sc.noise;
    std::vector<T>& chunk_max = sc.chunk_max;
    const int64_t n0 = blk * kRowBlock, rows = std::min(kRowBlock, sh.N - n0);
    at::Tensor acc_blk = acc.narrow(0, n0, rows);
    T* a = acc_blk.data_ptr<T>();
    for (int64_t c0 = 0; c0 < sh.V_s; c0 += chunk) {
      const int64_t width = std::min(chunk, sh.V_s - c0);
      scores_block<T>(x, n0, rows, c0, width, s_buf, noise_buf, chunk_max.data());
      T* s = s_buf.data_ptr<T>();
      if (has_softmax(x.mode)) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t n = n0 + r;
          const T m_old = m[n], m_new = std::max(m_old, chunk_max[r]);
          if (best != nullptr && chunk_max[r] > m_old) {  // strictly greater: the first maximum overall wins
            best[n] = c0 + first_max(s + r * width, width, chunk_max[r]);
          }
          const T sum = exp_row<T>(s + r * width, width, m_new, T(1));
          if (m_old == m_new) {
            l[n] += sum;
          } else if (m_old == -std::numeric_limits<T>::infinity()) {  // the first chunk: acc is 0
            l[n] = sum;
          } else {
            const T alpha = static_cast<T>(std::exp(m_old - m_new));
            l[n] = l[n] * alpha + sum;
            T* ar = a + r * sh.D;
            for (int64_t d = 0; d < sh.D; ++d) ar[d] *= alpha;
          }
          m[n] = m_new;
        }
      }
      acc_blk.addmm_(s_buf.narrow(0, 0, rows * width).view({rows, width}), E.narrow(0, c0, width));
    }
    if (has_softmax(x.mode)) {
      for (int64_t r = 0; r < rows; ++r) {
        const T inv = T(1) / l[n0 + r];
        T* ar = a + r * sh.D;
        for (int64_t d = 0; d < sh.D; ++d) ar[d] *= inv;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& tokens_in,
                                                                   const at::Tensor& theta_in,
                                                                   const at::Tensor& embedding_in, double tau,
                                                                   c10::string_view mode_name, int64_t seed,
                                                                   int64_t chunk) {
  const Mode mode = parse_Mode(mode_name);
  const Shape sh = check(tokens_in, theta_in, embedding_in, tau, chunk);
  const at::Tensor tokens = tokens_in.contiguous(), theta = theta_in.contiguous(), E = embedding_in.contiguous();
  const auto fopts = theta.options();
  chunk = std::min(chunk, sh.V_s);
  at::Tensor acc = at::zeros({sh.N, sh.D}, fopts);
  at::Tensor stats = has_softmax(mode) ? at::empty({2, sh.N}, fopts) : at::empty({0}, fopts);
  at::Tensor best = is_hard(mode) ? at::zeros({sh.N}, tokens.options()) : at::empty({0}, tokens.options());
  if (has_softmax(mode)) {
    stats.select(0, 0).fill_(-std::numeric_limits<double>::infinity());
    stats.select(0, 1).zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "vocab_map_forward_cpu", [&] {
    const Ctx<scalar_t> x = make_ctx<scalar_t>(tokens, theta, sh, mode, seed, tau);
    scalar_t* m = has_softmax(mode) ? stats.data_ptr<scalar_t>() : nullptr;
    forward_blocks<scalar_t>(x, E, chunk, acc, m, m == nullptr ? nullptr : m + sh.N,
                             is_hard(mode) ? best.data_ptr<int64_t>() : nullptr);
  });
  if (!has_softmax(mode)) {
    return {acc.view({sh.B, sh.L, sh.D}), stats, at::empty({0}, fopts), best};
  }
  stats = stats.t().contiguous();  // [N, 2] = (m, l)
  if (is_hard(mode)) {
    return {E.index_select(0, best).view({sh.B, sh.L, sh.D}), stats, acc, best};
  }
  return {acc.view({sh.B, sh.L, sh.D}), stats, at::empty({0}, fopts), best};
}

// ---- backward ----

template <typename T>
struct BackwardArgs {
  const at::Tensor& g;   // [N, D]
  const at::Tensor& E;   // [V_s, D]
  const T* m;            // [N] (softmax modes)
  const T* inv_l;        // [N]
  const T* delta;        // [N]: g[n]·(p @ E)[n]
  at::Tensor& grad_theta;
  at::Tensor& grad_E;    // [V_s, D] zeros, or undefined when not needed (or gumbel_hard: added after)
};

template <typename T>
void backward_tiles(const Ctx<T>& x, const BackwardArgs<T>& a, int64_t tile) {
  const Shape& sh = x.sh;
  const int64_t tiles = (sh.V_s + tile - 1) / tile;
  T* gt = a.grad_theta.template data_ptr<T>();
  const int64_t cap = std::min(kRowBlock, sh.N) * tile;
  struct Scratch {
    at::Tensor p, dz, noise;
  };
  auto make_scratch = [&] {
    return Scratch{at::empty({cap}, a.E.options()), at::empty({cap}, a.E.options()),
                   has_noise(x.mode) ? at::empty({cap}, a.E.options()) : at::Tensor()};
  };
  for_each_item(tiles, make_scratch, [&](int64_t t, Scratch& sc) {
    at::Tensor& p_buf = sc.p;
    at::Tensor& dz_buf = sc.dz;
    at::Tensor& noise_buf = sc.noise;
    const int64_t c0 = t * tile, width = std::min(tile, sh.V_s - c0);
    const at::Tensor E_t = a.E.narrow(0, c0, width);
    for (int64_t n0 = 0; n0 < sh.N; n0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, sh.N - n0);
      scores_block<T>(x, n0, rows, c0, width, p_buf, noise_buf, nullptr);
      at::Tensor p = p_buf.narrow(0, 0, rows * width).view({rows, width});
      at::Tensor dz = dz_buf.narrow(0, 0, rows * width).view({rows, width});
      const at::Tensor g_blk = a.g.narrow(0, n0, rows);
      at::mm_out(dz, g_blk, E_t.t());  // dp = g Eᵀ
      T* pp = p_buf.data_ptr<T>();
      T* dzp = dz_buf.data_ptr<T>();
      if (has_softmax(x.mode)) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t n = n0 + r;
          exp_row<T>(pp + r * width, width, a.m[n], a.inv_l[n]);
          softmax_grad_row<T>(dzp + r * width, pp + r * width, width, a.delta[n], x.inv_tau);
        }
      }
      if (a.grad_E.defined()) a.grad_E.narrow(0, c0, width).addmm_(p.t(), g_blk);  // dE += pᵀ g
      for (int64_t r = 0; r < rows; ++r) scatter_row<T>(gt, dzp + r * width, x.tok, sh, n0 + r, c0, width);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& tokens_in,
                                            const at::Tensor& theta_in, const at::Tensor& embedding_in,
                                            const at::Tensor& out, const at::Tensor& stats, const at::Tensor& soft,
                                            const at::Tensor& hard_index, double tau, c10::string_view mode_name,
                                            int64_t seed, int64_t chunk, bool need_embedding_grad) {
  const Mode mode = parse_Mode(mode_name);
  const Shape sh = check(tokens_in, theta_in, embedding_in, tau, chunk);
  const at::Tensor tokens = tokens_in.contiguous(), theta = theta_in.contiguous(), E = embedding_in.contiguous();
  const at::Tensor g = grad_out.reshape({sh.N, sh.D}).to(theta.scalar_type()).contiguous();
  at::Tensor grad_theta = at::zeros_like(theta);
  at::Tensor grad_E = need_embedding_grad ? at::zeros_like(E) : at::empty({0}, E.options());
  at::Tensor grad_E_soft = need_embedding_grad && !is_hard(mode) ? grad_E : at::Tensor();
  at::Tensor m, inv_l, delta;
  if (has_softmax(mode)) {
    TORCH_CHECK_VALUE(stats.dim() == 2 && stats.size(0) == sh.N && stats.size(1) == 2,
                      "vocab_map: stats must be [N, 2] (the forward's), got ", stats.sizes());
    const at::Tensor st = stats.to(theta.scalar_type());
    m = st.select(1, 0).contiguous();
    inv_l = st.select(1, 1).reciprocal().contiguous();
    const at::Tensor soft_out = is_hard(mode) ? soft.reshape({sh.N, sh.D}) : out.reshape({sh.N, sh.D});
    delta = (g * soft_out.to(theta.scalar_type())).sum(1).contiguous();  // δ[n] = Σ_v p dp = g[n]·(p @ E)[n]
  }
  const int64_t tile = std::min({chunk, kMaxTile, sh.V_s});
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "vocab_map_backward_cpu", [&] {
    const Ctx<scalar_t> x = make_ctx<scalar_t>(tokens, theta, sh, mode, seed, tau);
    const bool sm = has_softmax(mode);
    const BackwardArgs<scalar_t> args{g,
                                      E,
                                      sm ? m.data_ptr<scalar_t>() : nullptr,
                                      sm ? inv_l.data_ptr<scalar_t>() : nullptr,
                                      sm ? delta.data_ptr<scalar_t>() : nullptr,
                                      grad_theta,
                                      grad_E_soft};
    backward_tiles<scalar_t>(x, args, tile);
  });
  if (need_embedding_grad && is_hard(mode)) grad_E.index_add_(0, hard_index, g);  // onehot(argmax)ᵀ g
  return {grad_theta, grad_E};
}

}  // namespace
}  // namespace cpu
}  // namespace vocab_map
}  // namespace reprogram_ext

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("vocab_map_forward", &reprogram_ext::vocab_map::cpu::forward);
  m.impl("vocab_map_backward", &reprogram_ext::vocab_map::cpu::backward);
}
