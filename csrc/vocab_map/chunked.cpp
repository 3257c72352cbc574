// vocab_map over V_s chunks with ATen ops on any device (the formulas: chunked.h); CUDA runs it.
#include "vocab_map/chunked.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "vocab_map/noise.h"
#include "vocab_map/options.h"
#include "vocab_map/shape.h"

namespace reprogram_ext {
namespace vocab_map {
namespace {

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

// z[:, c0 : c0 + width] as [N, width].
at::Tensor window_sum(const at::Tensor& tokens, const at::Tensor& theta, const std::vector<Offset>& offs,
                      const Shape& sh, int64_t c0, int64_t width) {
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

// grad_theta[:, :, c0 : c0 + width] += the scatter of dz [N, width] by each offset's tokens.
void scatter_window(at::Tensor& grad_theta, const at::Tensor& dz, const at::Tensor& tokens,
                    const std::vector<Offset>& offs, const Shape& sh, int64_t c0, int64_t width) {
  for (const Offset& o : offs) {  // the sorted accumulate path: deterministic, no float atomics
    at::Tensor src = dz.view({sh.B, sh.L, width}).slice(1, o.lo, o.hi).reshape({-1, width});
    grad_theta.select(0, o.j).narrow(1, c0, width).index_put_({offset_tokens(tokens, o)}, src, /*accumulate=*/true);
  }
}

void add_rows(at::Tensor& dst, const at::Tensor& index, const at::Tensor& src) {
  dst.index_put_({index}, src, /*accumulate=*/true);  // sorted and deterministic on CUDA
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
