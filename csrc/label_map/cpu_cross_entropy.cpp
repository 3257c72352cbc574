// C++ CPU kernels of mapped_cross_entropy (formulas: csrc/label_map/math.h, docs/ops/label_map.md;
// row helpers: cpu_rows.h). The kernels are templates on the reduce (options.h: dispatch(Reduce, f)).
//
// Bytes per row: the forward gathers the T*K mapped logits (in address order, into a compact
// buffer), plus reads the whole row once (twice, the second time from cache) only when the row's
// log-sum-exp is needed (ce_needs_lse). It also stores the per-entry gradient of a unit loss
// ([N, T, K], small next to [N, S]), so that the backward does not read the logits: it writes each
// gradient row once (a fused zero or -p*D fill, then the sparse scatter).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "label_map/cpu_rows.h"

namespace reprogram_ext {
namespace label_map {
namespace cpu {
namespace {

// e_u = exp(v_u - shift).
template <typename A>
void exp_shifted_generic(A* e, const A* v, int64_t n, A shift) {
#pragma omp simd
  for (int64_t u = 0; u < n; ++u) e[u] = exp_f(v[u] - shift);
}

// float32 rows: also compiled for AVX2 and AVX-512 (common/cpu_clones.h).
RX_CPU_CLONES void exp_shifted_f32(float* e, const float* v, int64_t n, float shift) {
  exp_shifted_generic<float>(e, v, n, shift);
}

template <typename A>
void exp_shifted(A* e, const A* v, int64_t n, A shift) {
  if constexpr (std::is_same<A, float>::value) {
    exp_shifted_f32(e, v, n, shift);
  } else {
    exp_shifted_generic<A>(e, v, n, shift);
  }
}

// L_t of one row (shifted by a per-row constant that cross-entropy ignores; see the header) and
// the per-group state the gradient needs.
template <typename A>
struct RowLogits {
  std::vector<A> L;
  std::vector<GroupValue<A>> value;  // pre none / log_softmax
  std::vector<GroupLog<A>> logp;     // pre softmax
  std::vector<A> q;                  // softmax_t(L): the cross-entropy's probabilities
  std::vector<A> e, ew, c;           // softmax_ce_row's scratch: exp table, w_i e_i, per-group sums
  A lse_L = 0, sum_L = 0;
};

// r.lse_L = logsumexp_t(L) and r.q = softmax_t(L), given m = max_t L_t.
template <typename A>
void finish_lse_and_softmax(const LabelMapArgs& p, A m, RowLogits<A>& r) {
  A s = 0;
  r.q.resize(p.T);
  if (m != -static_cast<A>(INFINITY) && m != static_cast<A>(INFINITY)) {
    exp_shifted<A>(r.q.data(), r.L.data(), p.T, m);
    for (int64_t t = 0; t < p.T; ++t) s += r.q[t];
    for (int64_t t = 0; t < p.T; ++t) r.q[t] /= s;
  } else {
    for (int64_t t = 0; t < p.T; ++t) r.q[t] = exp_f(r.L[t] - m);  // NaN, as exp(L_t - lseL) is
  }
  r.lse_L = lse_from(m, s);
}

template <Reduce R, typename A>
void mapped_logits(const LabelMapArgs& p, const A* buf, int64_t U, const int64_t* pos, const A* weight,
                   const RowNorm<A>& lse, RowLogits<A>& r) {
  r.L.resize(p.T);
  if (p.pre == Pre::kSoftmax) r.logp.resize(p.T);
  else r.value.resize(p.T);
  const A shift = p.pre == Pre::kSoftmax ? finite_max(buf, U) : static_cast<A>(0);  // the largest mapped logit
  A m = -static_cast<A>(INFINITY);
  r.sum_L = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    const Group<A> g = group_of(pos, weight, p, t);
    if (p.pre == Pre::kSoftmax) {
      r.logp[t] = group_log_prob<R, A>(buf, g, shift);
      r.L[t] = r.logp[t].L;
    } else {
      r.value[t] = group_value<R, A>(buf, g, p.pre, lse);
      r.L[t] = r.value[t].out;
    }
    m = r.L[t] > m ? r.L[t] : m;
    r.sum_L += r.L[t];
  }
  finish_lse_and_softmax(p, m, r);
}

// The gradient of one row's loss (unit upstream gradient): a[t*K + k] = d loss / d x through
// entry (t, k) (when `a`), the dense coefficient D = sum_t dL_t * sum_k c_tk (pre log_softmax;
// the -D * p_j term is kept only when ce_needs_lse), and gw += scale * d loss / d w (when `gw`).
template <Reduce R, typename A>
void ce_row_gradient(const LabelMapArgs& p, const A* buf, const int64_t* pos, const A* weight, const RowLogits<A>& r,
                     int64_t y, const RowNorm<A>& lse, A eps, A scale, A* a, A* D, A* gw) {
  A dsum = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    const Group<A> g = group_of(pos, weight, p, t);
    const A dL = ce_logit_grad_q<A>(r.q[t], t == y, p.T, eps, scale);
    for (int64_t k = 0; k < p.K; ++k) {
      A ak = 0;
      if (g.valid(k)) {
        if (p.pre == Pre::kSoftmax) {
          ak = dL * log_group_responsibility<R, A>(buf, g, r.logp[t], k);
          if (gw) gw[t * p.K + k] += dL * log_group_weight_derivative<R, A>(buf, g, r.logp[t], k);
        } else {
          const A key = buf[g.src[k]];  // the logit
          ak = dL * value_coefficient<R>(g, r.value[t], k, key);
          if (gw) gw[t * p.K + k] += dL * value_weight_derivative<R>(r.value[t], k, pre_value(key, p.pre, lse), key);
        }
      }
      dsum += ak;
      if (a) a[t * p.K + k] = ak;
    }
  }
  if (D) *D = p.pre == Pre::kSoftmax ? static_cast<A>(0) : dsum;
}

// pre softmax with a sum-of-terms reduce (sum, mean), the loss's common case: the valid index entries in (t, k)
// order with what a row needs that does not depend on the row, so that the row's loops have no
// padding, weight or reduce branches and vectorise (gathers and scatters over the entries).
template <typename A>
struct SoftmaxGroups {
  std::vector<int32_t> begin;  // [T + 1]: group t's entries are [begin[t], begin[t + 1])
  std::vector<int32_t> u;      // each entry's position among the row's compact sources
  std::vector<int32_t> slot;   // its t * K + k
  std::vector<int32_t> group;  // its t
  std::vector<A> w;            // its weight (1 unweighted)
  std::vector<A> log_wsum;     // [T]: Reducer::log_norm(sum_k w_k): log wsum (mean), 0 (sum)
};

// Whether the softmax row path applies: pre softmax, a sum-of-terms reduce, 32-bit entry indices.
template <Reduce R>
bool softmax_rows(const LabelMapArgs& p) {
  return p.pre == Pre::kSoftmax && Reducer<R>::kSumOfTerms && p.T * p.K <= std::numeric_limits<int32_t>::max();
}

template <Reduce R, typename A>
SoftmaxGroups<A> softmax_groups(const LabelMapArgs& p, const CompactSources& cs, const A* weight) {
  SoftmaxGroups<A> sg;
  sg.begin.push_back(0);
  for (int64_t t = 0; t < p.T; ++t) {
    A wsum = 0;
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t e = t * p.K + k;
      if (cs.pos[e] < 0) continue;
      sg.u.push_back(static_cast<int32_t>(cs.pos[e]));
      sg.slot.push_back(static_cast<int32_t>(e));
      sg.group.push_back(static_cast<int32_t>(t));
      sg.w.push_back(weight ? weight[e] : static_cast<A>(1));
      wsum += sg.w.back();
    }
    sg.begin.push_back(static_cast<int32_t>(sg.u.size()));
    sg.log_wsum.push_back(Reducer<R>::log_norm(wsum));
  }
  return sg;
}

// Natural log of a positive normal float: x = 2^n * m with m in [sqrt(1/2), sqrt(2)), then
// log(m) = f - f^2/2 + f^3 P(f), f = m - 1, with the degree-8 minimax P of the Cephes logf
// (relative error ~1 ulp), n * log 2 added in two parts. Branch-free, so it vectorises. Garbage
// (not UB) for zero, subnormal, inf or NaN: callers use it only on normal finite inputs.
C10_ALWAYS_INLINE float log_f(float x) {
  union { float f; int32_t i; } v{x};
  int32_t n = ((v.i >> 23) & 0xff) - 127;
  v.i = (v.i & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  const bool big = v.f > 1.41421356f;
  const float m = big ? v.f * 0.5f : v.f;
  n += big ? 1 : 0;
  const float f = m - 1.0f, z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  const float fn = static_cast<float>(n);
  y = y * f * z + fn * -2.12194440e-4f - 0.5f * z;
  return f + y + fn * 0.693359375f;
}
C10_ALWAYS_INLINE double log_f(double x) { return log(x); }

// One row of the pre-softmax loss from the gathered mapped logits `buf` [U]: returns the loss and
// writes the unit gradient `a` [T*K]. The formulas of mapped_logits + ce_row_gradient: e_u =
// exp(x_u - shift) against the row's largest mapped logit, R_t = sum_k w_k e_k, L_t = log R_t -
// log wsum_t (group_log_prob's group-max form where R_t is not a finite float >= 1e-20), and
// a_tk = (dL_t / R_t) w_k e_k.
template <typename A>
A softmax_ce_row_generic(const LabelMapArgs& p, const SoftmaxGroups<A>& sg, const CompactSources& cs,
                         const A* weight, const A* buf, int64_t U, int64_t y, A eps, RowLogits<A>& r, A* a) {
  const int64_t T = p.T, E = static_cast<int64_t>(sg.u.size());
  const int32_t *ui = sg.u.data(), *slot = sg.slot.data(), *group = sg.group.data();
  const A* w = sg.w.data();
  const A shift = finite_max(buf, U);
  r.e.resize(U);
  r.ew.resize(E);
  r.L.resize(T);
  r.logp.resize(T);
  r.c.resize(T);
  A *e = r.e.data(), *ew = r.ew.data(), *L = r.L.data(), *c = r.c.data();
#pragma omp simd
  for (int64_t v = 0; v < U; ++v) e[v] = exp_f(buf[v] - shift);
#pragma omp simd
  for (int64_t i = 0; i < E; ++i) ew[i] = w[i] * e[ui[i]];
  for (int64_t t = 0; t < T; ++t) {
    A R = 0;
    for (int64_t i = sg.begin[t]; i < sg.begin[t + 1]; ++i) R += ew[i];
    c[t] = R;
  }
#pragma omp simd
  for (int64_t t = 0; t < T; ++t) L[t] = log_f(c[t]) - sg.log_wsum[t];
  A m = -static_cast<A>(INFINITY);
  r.sum_L = 0;
  bool all_table = true;
  for (int64_t t = 0; t < T; ++t) {
    GroupLog<A>& gl = r.logp[t];
    if (c[t] >= static_cast<A>(1e-20) && c[t] <= std::numeric_limits<A>::max()) {
      gl.m = shift;
      gl.R = c[t];
      gl.L = L[t];
    } else {
      gl = dispatch(p.reduce, [&](auto R) {  // (the rare path: not worth a clone per reduce)
        return group_log_prob<decltype(R)::value, A>(buf, group_of(cs.pos.data(), weight, p, t), shift);
      });
      L[t] = gl.L;
      all_table = false;
    }
    m = L[t] > m ? L[t] : m;
    r.sum_L += L[t];
  }
  finish_lse_and_softmax(p, m, r);
  const A* q = r.q.data();
  for (int64_t t = 0; t < T; ++t) {
    c[t] = ce_logit_grad_q<A>(q[t], t == y, T, eps, static_cast<A>(1)) / r.logp[t].R;
  }
  if (E == T * p.K) {  // no padding: entry i is slot i
#pragma omp simd
    for (int64_t i = 0; i < E; ++i) a[i] = c[group[i]] * ew[i];
  } else {  // (a scalar scatter: AVX-512 scatters measured slower here)
    std::fill(a, a + T * p.K, static_cast<A>(0));
    for (int64_t i = 0; i < E; ++i) a[slot[i]] = c[group[i]] * ew[i];
  }
  if (!all_table) {  // groups on their own max: e_k against gl.m
    for (int64_t t = 0; t < T; ++t) {
      const GroupLog<A>& gl = r.logp[t];
      if (gl.m == shift) continue;
      for (int64_t i = sg.begin[t]; i < sg.begin[t + 1]; ++i) a[slot[i]] = c[t] * w[i] * exp_f(buf[ui[i]] - gl.m);
    }
  }
  return ce_loss<A>(L[y], r.sum_L, r.lse_L, T, eps);
}

RX_CPU_CLONES float softmax_ce_row_f32(const LabelMapArgs& p, const SoftmaxGroups<float>& sg,
                                      const CompactSources& cs, const float* weight, const float* buf, int64_t U,
                                      int64_t y, float eps, RowLogits<float>& r, float* a) {
  return softmax_ce_row_generic<float>(p, sg, cs, weight, buf, U, y, eps, r, a);
}

template <typename A>
A softmax_ce_row(const LabelMapArgs& p, const SoftmaxGroups<A>& sg, const CompactSources& cs, const A* weight,
                 const A* buf, int64_t U, int64_t y, A eps, RowLogits<A>& r, A* a) {
  if constexpr (std::is_same<A, float>::value) {
    return softmax_ce_row_f32(p, sg, cs, weight, buf, U, y, eps, r, a);
  } else {
    return softmax_ce_row_generic<A>(p, sg, cs, weight, buf, U, y, eps, r, a);
  }
}

template <Reduce R, typename scalar_t>
void ce_forward_kernel(const LabelMapArgs& p, const scalar_t* x, const int64_t* target, const CompactSources& cs,
                       const acc_t<scalar_t>* weight, double eps, int64_t ignore_index, acc_t<scalar_t>* loss,
                       acc_t<scalar_t>* unit_grad, acc_t<scalar_t>* dense) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  const bool need_lse = ce_has_dense(p);
  const bool softmax_sum = softmax_rows<R>(p);
  const SoftmaxGroups<A> sg = softmax_sum ? softmax_groups<R, A>(p, cs, weight) : SoftmaxGroups<A>{};
  const int64_t chunks = row_chunks(p, false, forward_row_elements(p, need_lse));
  for_row_chunks(p.N, chunks, [&](int64_t, int64_t n0, int64_t n1) {
    RowLogits<A> r;
    std::vector<A> buf;
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const int64_t y = target[n];
      A* a = unit_grad + n * TK;
      A D = 0;
      RowNorm<A> lse{0, 0};
      if (y == ignore_index) {
        loss[n] = 0;
        std::fill(a, a + TK, static_cast<A>(0));
      } else {
        if (need_lse) lse = row_normaliser<A>(xr, p.S);
        gather_sources(xr, cs, buf);
        if (softmax_sum) {
          loss[n] = softmax_ce_row<A>(p, sg, cs, weight, buf.data(), static_cast<int64_t>(buf.size()), y,
                                      static_cast<A>(eps), r, a);
          continue;  // pre softmax: no dense part
        }
        mapped_logits<R, A>(p, buf.data(), static_cast<int64_t>(buf.size()), cs.pos.data(), weight, lse, r);
        loss[n] = ce_loss<A>(r.L[y], r.sum_L, r.lse_L, p.T, static_cast<A>(eps));
        ce_row_gradient<R, A>(p, buf.data(), cs.pos.data(), weight, r, y, lse, static_cast<A>(eps), static_cast<A>(1),
                              a, &D, nullptr);
      }
      if (dense) {
        dense[3 * n] = lse.max;
        dense[3 * n + 1] = lse.log_sum;
        dense[3 * n + 2] = D;
      }
    }
  });
}

template <Reduce R, typename scalar_t>
void ce_backward_kernel(const LabelMapArgs& p, const acc_t<scalar_t>* grad_loss, const scalar_t* x,
                        const int64_t* target, const int64_t* index, const CompactSources& cs,
                        const acc_t<scalar_t>* weight, const acc_t<scalar_t>* unit_grad, const acc_t<scalar_t>* dense,
                        double eps, int64_t ignore_index, scalar_t* grad, acc_t<scalar_t>* grad_weight_chunks,
                        int64_t chunks) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  for_row_chunks(p.N, chunks, [&](int64_t j, int64_t n0, int64_t n1) {
    std::vector<A> acc_row, buf;
    RowLogits<A> r;
    A* gw = grad_weight_chunks ? grad_weight_chunks + j * TK : nullptr;
    if (gw) std::fill(gw, gw + TK, static_cast<A>(0));
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = dense ? RowNorm<A>{dense[3 * n], dense[3 * n + 1]} : RowNorm<A>{0, 0};
      const A D = dense ? dense[3 * n + 2] : static_cast<A>(0);
      if (gw && target[n] != ignore_index) {  // weight gradient: recompute the row
        gather_sources(xr, cs, buf);
        mapped_logits<R, A>(p, buf.data(), static_cast<int64_t>(buf.size()), cs.pos.data(), weight, lse, r);
        ce_row_gradient<R, A>(p, buf.data(), cs.pos.data(), weight, r, target[n], lse, static_cast<A>(eps),
                              grad_loss[n], nullptr, nullptr, gw);
      }
      write_grad_row<A>(grad + n * p.S, xr, p, index, unit_grad + n * TK, grad_loss[n], dense != nullptr && D != 0,
                        lse, D, acc_row);
    }
  });
}

// ------------------------------------------------------------------------------------------- ops

std::tuple<Tensor, Tensor, Tensor> mapped_cross_entropy_forward_cpu(const Tensor& logits, const Tensor& target,
                                                                    const Tensor& index,
                                                                    const std::optional<Tensor>& weight,
                                                                    c10::string_view reduce, c10::string_view pre,
                                                                    double label_smoothing, int64_t ignore_index,
                                                                    int64_t topk) {
  const LabelMapArgs p = make_mapped_ce_args(logits, target, index, weight, reduce, pre, ignore_index, topk);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  Tensor loss = empty_acc(logits, {p.N});
  Tensor unit_grad = empty_acc(logits, {p.N, p.T, p.K});
  Tensor dense = empty_acc(logits, dense_shape(p));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_forward_cpu", [&] {
    using A = acc_t<scalar_t>;
    dispatch(p.reduce, [&](auto R) {
      ce_forward_kernel<decltype(R)::value, scalar_t>(
          p, logits.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(), cs, weight_ptr<scalar_t>(weight),
          label_smoothing, ignore_index, loss.mutable_data_ptr<A>(), unit_grad.mutable_data_ptr<A>(),
          dense.numel() ? dense.mutable_data_ptr<A>() : nullptr);
    });
  });
  return {loss, unit_grad, dense};
}

std::tuple<Tensor, Tensor> mapped_cross_entropy_backward_cpu(const Tensor& grad_loss_in, const Tensor& logits,
                                                             const Tensor& target, const Tensor& index,
                                                             const std::optional<Tensor>& weight,
                                                             const Tensor& unit_grad_in, const Tensor& dense_in,
                                                             c10::string_view reduce, c10::string_view pre,
                                                             double label_smoothing, int64_t ignore_index,
                                                             bool need_weight_grad, int64_t topk) {
  const LabelMapArgs p = make_mapped_ce_backward_args(grad_loss_in, logits, target, index, weight, unit_grad_in,
                                                      dense_in, reduce, pre, ignore_index, topk);
  const bool has_dense = ce_has_dense(p);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  const Tensor grad_loss = grad_loss_in.contiguous(), unit_grad = unit_grad_in.contiguous();
  const Tensor dense = dense_in.contiguous();
  BackwardOutputs o(p, logits, need_weight_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    dispatch(p.reduce, [&](auto R) {
      ce_backward_kernel<decltype(R)::value, scalar_t>(
          p, grad_loss.const_data_ptr<A>(), logits.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(),
          index.const_data_ptr<int64_t>(), cs, weight_ptr<scalar_t>(weight), unit_grad.const_data_ptr<A>(),
          has_dense ? dense.const_data_ptr<A>() : nullptr, label_smoothing, ignore_index,
          o.grad.mutable_data_ptr<scalar_t>(), o.gw<A>(), o.chunks);
    });
  });
  return o.finish();
}

}  // namespace
}  // namespace cpu
}  // namespace label_map

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("mapped_cross_entropy_forward", &label_map::cpu::mapped_cross_entropy_forward_cpu);
  m.impl("mapped_cross_entropy_backward", &label_map::cpu::mapped_cross_entropy_backward_cpu);
}

}  // namespace reprogram_ext
