// vocab_map over V_s chunks with ATen ops (the formulas: chunked.h).
#include "vocab_map/chunked.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "vocab_map/noise.h"
#include "vocab_map/options.h"

namespace reprogram_ext {
namespace vocab_map {
namespace {

struct Shape {
  int64_t B, L, N, w, V_t, V_s, D;
};

Shape check(const at::Tensor& tokens, const at::Tensor& theta, const at::Tensor& embedding, double tau,
            int64_t chunk) {
  TORCH_CHECK_VALUE(tokens.dim() == 2 && tokens.scalar_type() == at::kLong && tokens.numel() > 0,
                    "vocab_map: tokens must be a non-empty int64 [B, L], got ", tokens.sizes(), " ",
                    tokens.scalar_type());
  TORCH_CHECK_VALUE(theta.dim() == 3 && theta.size(0) % 2 == 1, "vocab_map: theta must be [w, V_t, V_s] with odd w, "
                    "got ", theta.sizes());
  TORCH_CHECK_VALUE(embedding.dim() == 2 && embedding.size(0) == theta.size(2),
                    "vocab_map: embedding must be [V_s=", theta.size(2), ", D], got ", embedding.sizes());
  TORCH_CHECK_TYPE(embedding.scalar_type() == theta.scalar_type() &&
                       (theta.scalar_type() == at::kFloat || theta.scalar_type() == at::kDouble),
                   "vocab_map: theta and embedding must both be float32 or both float64, got ", theta.scalar_type(),
                   " and ", embedding.scalar_type());
  TORCH_CHECK_VALUE(tau > 0 && std::isfinite(tau), "vocab_map: tau must be a positive finite temperature, got ", tau);
  TORCH_CHECK_VALUE(chunk >= 1, "vocab_map: chunk must be >= 1, got ", chunk);
  return {tokens.size(0), tokens.size(1), tokens.numel(), theta.size(0), theta.size(1), theta.size(2),
          embedding.size(1)};
}

// The window offsets j with shift s = j − w//2 and their in-sequence positions [lo, hi).
struct Offset {
  int64_t j, shift, lo, hi;
};

std::vector<Offset> offsets(const Shape& sh) {
  std::vector<Offset> list;
  const int64_t h = sh.w / 2;
  list.push_back({h, 0, 0, sh.L});  // the centre first: it covers every position
  for (int64_t j = 0; j < sh.w; ++j) {
    const int64_t s = j - h, lo = std::max<int64_t>(0, -s), hi = std::min(sh.L, sh.L - s);
    if (s != 0 && lo < hi) list.push_back({j, s, lo, hi});
  }
  return list;
}

// The offset's tokens tokens[:, lo + s : hi + s], flattened.
at::Tensor offset_tokens(const at::Tensor& tokens, const Offset& o) {
  return tokens.slice(1, o.lo + o.shift, o.hi + o.shift).reshape(-1);
}

// z[:, c0 : c0 + width] as [N, width] on CPU: one pass per row adding its in-sequence offsets' θ
// row segments (each contiguous: θ[j, t, c0 : c0 + width]).
template <typename T>
void window_sum_cpu(const at::Tensor& tokens, const at::Tensor& theta, const Shape& sh, int64_t c0, int64_t width,
                    at::Tensor& z) {
  const int64_t* tok = tokens.data_ptr<int64_t>();
  const T* th = theta.data_ptr<T>();
  T* out = z.data_ptr<T>();
  const int64_t h = sh.w / 2;
  at::parallel_for(0, sh.N, 8, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / sh.L, i = n % sh.L;
      T* row = out + n * width;
      const T* centre = th + (h * sh.V_t + tok[n]) * sh.V_s + c0;
      for (int64_t c = 0; c < width; ++c) row[c] = centre[c];
      for (int64_t j = 0; j < sh.w; ++j) {
        const int64_t pos = i + j - h;
        if (j == h || pos < 0 || pos >= sh.L) continue;
        const T* src = th + (j * sh.V_t + tok[b * sh.L + pos]) * sh.V_s + c0;
        for (int64_t c = 0; c < width; ++c) row[c] += src[c];
      }
    }
  });
}

// z[:, c0 : c0 + width] as [N, width].
at::Tensor window_sum(const at::Tensor& tokens, const at::Tensor& theta, const std::vector<Offset>& offs,
                      const Shape& sh, int64_t c0, int64_t width) {
  if (tokens.is_cpu()) {
    at::Tensor z = at::empty({sh.N, width}, theta.options());
    if (theta.scalar_type() == at::kDouble) {
      window_sum_cpu<double>(tokens, theta, sh, c0, width, z);
    } else {
      window_sum_cpu<float>(tokens, theta, sh, c0, width, z);
    }
    return z;
  }
  at::Tensor z;
  for (const Offset& o : offs) {
    at::Tensor rows = theta.select(0, o.j).narrow(1, c0, width).index_select(0, offset_tokens(tokens, o));
    if (!z.defined()) {  // the centre: every position
      z = rows;
      continue;
    }
    z.view({sh.B, sh.L, width}).slice(1, o.lo, o.hi).add_(rows.view({sh.B, o.hi - o.lo, width}));
  }
  return z;
}

// grad_theta[:, :, c0 : c0 + width] += the scatter of dz [N, width] by each offset's tokens, on CPU:
// threads own disjoint column ranges and add the rows in order n = 0, 1, … (deterministic).
template <typename T>
void scatter_window_cpu(at::Tensor& grad_theta, const at::Tensor& dz, const at::Tensor& tokens, const Shape& sh,
                        int64_t c0, int64_t width) {
  const int64_t* tok = tokens.data_ptr<int64_t>();
  const T* src = dz.data_ptr<T>();
  T* gt = grad_theta.data_ptr<T>();
  const int64_t h = sh.w / 2;
  at::parallel_for(0, width, 64, [&](int64_t cb, int64_t ce) {
    for (int64_t n = 0; n < sh.N; ++n) {
      const int64_t b = n / sh.L, i = n % sh.L;
      const T* row = src + n * width;
      for (int64_t j = 0; j < sh.w; ++j) {
        const int64_t k = i + j - h;  // row n reads token tokens[b, k] at offset j
        if (k < 0 || k >= sh.L) continue;
        T* dst = gt + (j * sh.V_t + tok[b * sh.L + k]) * sh.V_s + c0;
        for (int64_t c = cb; c < ce; ++c) dst[c] += row[c];
      }
    }
  });
}

// grad_theta[:, :, c0 : c0 + width] += the scatter of dz [N, width] by each offset's tokens.
void scatter_window(at::Tensor& grad_theta, const at::Tensor& dz, const at::Tensor& tokens,
                    const std::vector<Offset>& offs, const Shape& sh, int64_t c0, int64_t width) {
  if (dz.is_cpu()) {
    const at::Tensor src = dz.contiguous();
    if (dz.scalar_type() == at::kDouble) {
      scatter_window_cpu<double>(grad_theta, src, tokens, sh, c0, width);
    } else {
      scatter_window_cpu<float>(grad_theta, src, tokens, sh, c0, width);
    }
    return;
  }
  for (const Offset& o : offs) {  // the sorted accumulate path: deterministic, no float atomics
    at::Tensor src = dz.view({sh.B, sh.L, width}).slice(1, o.lo, o.hi).reshape({-1, width});
    grad_theta.select(0, o.j).narrow(1, c0, width).index_put_({offset_tokens(tokens, o)}, src, /*accumulate=*/true);
  }
}

void add_rows(at::Tensor& dst, const at::Tensor& index, const at::Tensor& src) {
  if (dst.is_cuda()) {
    dst.index_put_({index}, src, /*accumulate=*/true);
  } else {
    dst.index_add_(0, index, src);
  }
}

// s = (z [+ G]) / τ in place.
void scale_scores(at::Tensor& z, Mode mode, const at::Tensor& row_hash, int64_t c0, int64_t width, double tau) {
  if (has_noise(mode)) z.add_(gumbel_chunk(row_hash, c0, width, z.scalar_type()));
  if (tau != 1.0) z.mul_(1.0 / tau);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& tokens_in,
                                                                   const at::Tensor& theta_in,
                                                                   const at::Tensor& embedding_in, double tau,
                                                                   c10::string_view mode_name, int64_t seed,
                                                                   int64_t chunk) {
  const Mode mode = parse_Mode(mode_name);
  const Shape sh = check(tokens_in, theta_in, embedding_in, tau, chunk);
  const at::Tensor tokens = tokens_in.contiguous(), theta = theta_in.contiguous(), E = embedding_in.contiguous();
  const auto offs = offsets(sh);
  const auto fopts = theta.options();
  at::Tensor acc = at::zeros({sh.N, sh.D}, fopts);
  if (!has_softmax(mode)) {
    for (int64_t c0 = 0; c0 < sh.V_s; c0 += chunk) {
      const int64_t width = std::min(chunk, sh.V_s - c0);
      acc.addmm_(window_sum(tokens, theta, offs, sh, c0, width), E.narrow(0, c0, width));
    }
    return {acc.view({sh.B, sh.L, sh.D}), at::empty({0}, fopts), at::empty({0}, fopts),
            at::empty({0}, tokens.options())};
  }
  const at::Tensor row_hash = has_noise(mode) ? row_hashes(sh.N, seed, tokens.options()) : at::Tensor();
  at::Tensor m = at::full({sh.N}, -std::numeric_limits<double>::infinity(), fopts);
  at::Tensor l = at::zeros({sh.N}, fopts);
  at::Tensor best = is_hard(mode) ? at::zeros({sh.N}, tokens.options()) : at::empty({0}, tokens.options());
  for (int64_t c0 = 0; c0 < sh.V_s; c0 += chunk) {
    const int64_t width = std::min(chunk, sh.V_s - c0);
    at::Tensor s = window_sum(tokens, theta, offs, sh, c0, width);
    scale_scores(s, mode, row_hash, c0, width, tau);
    at::Tensor chunk_max = s.amax(1);
    if (is_hard(mode)) {  // strictly greater: the first maximal column overall wins
      best = at::where(chunk_max > m, s.argmax(1) + c0, best);
    }
    at::Tensor m_new = at::maximum(m, chunk_max);
    at::Tensor alpha = (m - m_new).exp_();
    s.sub_(m_new.unsqueeze(1)).exp_();
    l.mul_(alpha).add_(s.sum(1));
    acc.mul_(alpha.unsqueeze(1)).addmm_(s, E.narrow(0, c0, width));
    m = m_new;
  }
  acc.div_(l.unsqueeze(1));
  at::Tensor stats = at::stack({m, l}, 1);
  if (is_hard(mode)) {
    return {E.index_select(0, best).view({sh.B, sh.L, sh.D}), stats, acc, best};
  }
  return {acc.view({sh.B, sh.L, sh.D}), stats, at::empty({0}, fopts), best};
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
  const auto offs = offsets(sh);
  at::Tensor grad_theta = at::zeros_like(theta);
  at::Tensor grad_E = !need_embedding_grad ? at::empty({0}, E.options())
                      : is_hard(mode)      ? at::zeros_like(E)
                                           : at::empty_like(E);
  at::Tensor row_hash, m, inv_l, delta;
  if (has_softmax(mode)) {
    TORCH_CHECK_VALUE(stats.dim() == 2 && stats.size(0) == sh.N && stats.size(1) == 2,
                      "vocab_map: stats must be [N, 2] (the forward's), got ", stats.sizes());
    row_hash = has_noise(mode) ? row_hashes(sh.N, seed, tokens.options()) : at::Tensor();
    m = stats.select(1, 0).unsqueeze(1);
    inv_l = stats.select(1, 1).reciprocal().unsqueeze(1);
    const at::Tensor soft_out = is_hard(mode) ? soft : out.reshape({sh.N, sh.D});
    delta = (g * soft_out).sum(1, /*keepdim=*/true);  // δ[n] = Σ_v p dp = g[n]·(p @ E)[n]
  }
  for (int64_t c0 = 0; c0 < sh.V_s; c0 += chunk) {
    const int64_t width = std::min(chunk, sh.V_s - c0);
    const at::Tensor E_c = E.narrow(0, c0, width);
    at::Tensor p = window_sum(tokens, theta, offs, sh, c0, width);
    at::Tensor dz = at::mm(g, E_c.t());  // dp = g Eᵀ
    if (has_softmax(mode)) {
      scale_scores(p, mode, row_hash, c0, width, tau);
      p.sub_(m).exp_().mul_(inv_l);
      dz.sub_(delta).mul_(p);
      if (tau != 1.0) dz.mul_(1.0 / tau);
    }
    if (need_embedding_grad && !is_hard(mode)) {
      at::Tensor dst = grad_E.narrow(0, c0, width);
      at::mm_out(dst, p.t(), g);
    }
    scatter_window(grad_theta, dz, tokens, offs, sh, c0, width);
  }
  if (need_embedding_grad && is_hard(mode)) add_rows(grad_E, hard_index, g);
  return {grad_theta, grad_E};
}

}  // namespace vocab_map
}  // namespace reprogram_ext
