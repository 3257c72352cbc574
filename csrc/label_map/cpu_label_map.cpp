// C++ CPU kernels of label_map (formulas: csrc/label_map/math.h, docs/ops/label_map.md; row
// helpers: cpu_rows.h). The kernels are templates on the reduce (options.h: dispatch(Reduce, f)).
//
// Bytes per row: the forward gathers the T*K mapped logits (in address order, into a compact
// buffer), plus reads the whole row once (twice, the second time from cache) only when the row's
// log-sum-exp is needed (any pre but none). The backward writes each gradient row once (a fused
// zero or -D * softmax fill, then the sparse scatter).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "label_map/cpu_rows.h"

namespace reprogram_ext {
namespace label_map {
namespace cpu {
namespace {

// v[u] = pre(v[u]) over a row's gathered logits: one vector pass, so that softmax's exp is taken
// once per source rather than at every use of it.
template <typename A>
void apply_pre_generic(A* v, int64_t n, Pre pre, RowNorm<A> lse) {
  if (pre == Pre::kSoftmax) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) v[u] = exp_f(minus_lse(v[u], lse));
  } else if (pre == Pre::kLogSoftmax) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) v[u] = minus_lse(v[u], lse);
  }
}

// float32 rows: also compiled for AVX2 and AVX-512 (common/cpu_clones.h).
RX_CPU_CLONES void apply_pre_f32(float* v, int64_t n, Pre pre, RowNorm<float> lse) {
  apply_pre_generic<float>(v, n, pre, lse);
}

template <typename A>
void apply_pre(A* v, int64_t n, Pre pre, const RowNorm<A>& lse) {
  if constexpr (std::is_same<A, float>::value) {
    apply_pre_f32(v, n, pre, lse);
  } else {
    apply_pre_generic<A>(v, n, pre, lse);
  }
}

// Whether a row's gathered logits become v = pre(x) in place (one vector pass) before the groups
// read them: not for topk_mean, whose selection reads the logits (group_value then takes pre of
// the few chosen values itself).
template <Reduce R>
constexpr bool pre_in_place() { return !Reducer<R>::kSelectsTop; }

template <Reduce R, typename scalar_t>
void label_map_forward_kernel(const LabelMapArgs& p, const scalar_t* x, const CompactSources& cs,
                              const acc_t<scalar_t>* weight, scalar_t* out, acc_t<scalar_t>* row_lse) {
  using A = acc_t<scalar_t>;
  const int64_t chunks = row_chunks(p, false, forward_row_elements(p, map_needs_lse(p.pre)));
  for_row_chunks(p.N, chunks, [&](int64_t, int64_t n0, int64_t n1) {
    std::vector<A> buf;
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = map_needs_lse(p.pre) ? row_normaliser<A>(xr, p.S) : RowNorm<A>{0, 0};
      store_norm(row_lse, n, lse);
      gather_sources(xr, cs, buf);
      if constexpr (pre_in_place<R>()) apply_pre(buf.data(), static_cast<int64_t>(buf.size()), p.pre, lse);
      const Pre group_pre = pre_in_place<R>() ? Pre::kNone : p.pre;
      for (int64_t t = 0; t < p.T; ++t) {
        const GroupValue<A> gv = group_value<R, A>(buf.data(), group_of(cs.pos.data(), weight, p, t), group_pre, lse);
        out[n * p.T + t] = static_cast<scalar_t>(gv.out);
      }
    }
  });
}

template <Reduce R, typename scalar_t>
void label_map_backward_kernel(const LabelMapArgs& p, const scalar_t* grad_out, const scalar_t* x,
                               const int64_t* index, const CompactSources& cs, const acc_t<scalar_t>* weight,
                               const acc_t<scalar_t>* row_lse, scalar_t* grad, acc_t<scalar_t>* grad_weight_chunks,
                               int64_t chunks) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  for_row_chunks(p.N, chunks, [&](int64_t j, int64_t n0, int64_t n1) {
    std::vector<A> a(TK), acc_row, buf;
    A* gw = grad_weight_chunks ? grad_weight_chunks + j * TK : nullptr;
    if (gw) std::fill(gw, gw + TK, static_cast<A>(0));
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = load_norm(row_lse, n);
      gather_sources(xr, cs, buf);
      if constexpr (pre_in_place<R>()) apply_pre(buf.data(), static_cast<int64_t>(buf.size()), p.pre, lse);
      const Pre group_pre = pre_in_place<R>() ? Pre::kNone : p.pre;
      A D = 0;
      for (int64_t t = 0; t < p.T; ++t) {
        const Group<A> g = group_of(cs.pos.data(), weight, p, t);
        const GroupValue<A> gv = group_value<R, A>(buf.data(), g, group_pre, lse);
        const A go = static_cast<A>(grad_out[n * p.T + t]);
        for (int64_t k = 0; k < p.K; ++k) {
          A ak = 0;
          if (g.valid(k)) {
            const A key = buf[g.src[k]];  // the logit (topk_mean), else v itself (unused)
            const A v = pre_in_place<R>() ? key : pre_value(key, p.pre, lse);
            ak = go * value_coefficient<R>(g, gv, k, key) * (p.pre == Pre::kSoftmax ? v : static_cast<A>(1));
            if (gw) gw[t * p.K + k] += go * value_weight_derivative<R>(gv, k, v, key);
          }
          a[t * p.K + k] = ak;
          D += ak;
        }
      }
      write_grad_row<A>(grad + n * p.S, xr, p, index, a.data(), static_cast<A>(1), map_needs_lse(p.pre), lse, D,
                        acc_row);
    }
  });
}

std::tuple<Tensor, Tensor> label_map_forward_cpu(const Tensor& logits, const Tensor& index,
                                                 const std::optional<Tensor>& weight, c10::string_view reduce,
                                                 c10::string_view pre, int64_t topk) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre, topk);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  Tensor out = at::empty({p.N, p.T}, logits.options());
  Tensor row_lse = empty_acc(logits, row_lse_shape(p));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_forward_cpu", [&] {
    dispatch(p.reduce, [&](auto R) {
      label_map_forward_kernel<decltype(R)::value, scalar_t>(
          p, logits.const_data_ptr<scalar_t>(), cs, weight_ptr<scalar_t>(weight), out.mutable_data_ptr<scalar_t>(),
          row_lse.numel() ? row_lse.mutable_data_ptr<acc_t<scalar_t>>() : nullptr);
    });
  });
  return {out, row_lse};
}

std::tuple<Tensor, Tensor> label_map_backward_cpu(const Tensor& grad_out_in, const Tensor& logits,
                                                  const Tensor& index, const std::optional<Tensor>& weight,
                                                  const Tensor& row_lse, c10::string_view reduce, c10::string_view pre,
                                                  bool need_weight_grad, int64_t topk,
                                                  const std::optional<Tensor>& forward_out) {
  // forward_out (the forward's output) is checked and not used: the CPU kernel reads the mapped logits.
  const LabelMapArgs p =
      make_label_map_backward_args(grad_out_in, logits, index, weight, row_lse, reduce, pre, topk, forward_out);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  const Tensor grad_out = grad_out_in.contiguous();
  BackwardOutputs o(p, logits, need_weight_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    dispatch(p.reduce, [&](auto R) {
      label_map_backward_kernel<decltype(R)::value, scalar_t>(
          p, grad_out.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
          cs, weight_ptr<scalar_t>(weight), map_needs_lse(p.pre) ? row_lse.const_data_ptr<A>() : nullptr,
          o.grad.mutable_data_ptr<scalar_t>(), o.gw<A>(), o.chunks);
    });
  });
  return o.finish();
}

}  // namespace
}  // namespace cpu
}  // namespace label_map

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("label_map_forward", &label_map::cpu::label_map_forward_cpu);
  m.impl("label_map_backward", &label_map::cpu::label_map_backward_cpu);
}

}  // namespace reprogram_ext
