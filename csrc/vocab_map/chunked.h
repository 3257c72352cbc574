// vocab_map's forward and backward over chunks of the source vocabulary, written with ATen ops on
// any device (the CUDA backend's host code calling cuBLAS through ATen; the CPU has its own fused
// kernels with the same formulas: cpu.cpp). The matrix products dominate (2·N·V_s·D multiply-adds
// per product), so each chunk is one GEMM-sized step; no [N, V_s] tensor is ever held, only [N, chunk] temporaries.
//
// Notation (docs/ops/vocab_map.md): rows n = b·L + i, z[n, v] = Σ_j θ[j, tokens[b, i + j − w//2], v]
// (offsets outside the sequence add 0), s = z/τ (gumbel: (z + G)/τ), p = softmax(s) (none: p = z),
// out = p @ E.
//   forward: an online softmax over the chunks: per row the running max m, the running sum
//            l = Σ exp(s − m) and the running accumulator acc = Σ exp(s − m) E (rescaled by
//            exp(m_old − m_new) when the max grows); out = acc / l. gumbel_hard: the argmax is kept
//            too; out = E[argmax] and the soft output is returned for the backward.
//   backward: p is recomputed per chunk from (m, l); dp = g Eᵀ, dz = p ⊙ (dp − δ)/τ with
//            δ[n] = g[n]·soft_out[n]; dθ[j, t, v] = Σ over the rows whose offset-j token is t of
//            dz[n, v]; dE = pᵀ g (gumbel_hard: onehot(argmax)ᵀ g). none: dz = dp, dE = zᵀ g.
// Deterministic: each θ-gradient chunk is an accumulating index_put_ (CUDA: a sorted, deterministic
// kernel); no float atomics.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

namespace reprogram_ext {
namespace vocab_map {

// Returns (out [B, L, D], stats [N, 2] = (m, l) or [0] for mode none, soft [N, D] or [0] unless
// gumbel_hard, hard_index int64 [N] or [0] unless gumbel_hard).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& tokens, const at::Tensor& theta,
                                                                   const at::Tensor& embedding, double tau,
                                                                   c10::string_view mode, int64_t seed,
                                                                   int64_t chunk);

// Returns (grad_theta [w, V_t, V_s], grad_embedding [V_s, D] or [0] unless need_embedding_grad).
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& tokens,
                                            const at::Tensor& theta, const at::Tensor& embedding,
                                            const at::Tensor& out, const at::Tensor& stats, const at::Tensor& soft,
                                            const at::Tensor& hard_index, double tau, c10::string_view mode,
                                            int64_t seed, int64_t chunk, bool need_embedding_grad);

}  // namespace vocab_map
}  // namespace reprogram_ext
