// CUDA kernels of label_map and mapped_cross_entropy (formulas: csrc/label_map/math.h,
// docs/ops/label_map.md; the per-target math is the same __host__ __device__ code the CPU kernels
// run). The kernels are templates on the reduce (options.h: dispatch(Reduce, f)), like the CPU ones.
//
// One block per row: the block reduces the row's normaliser (max, log-sum) when needed, then its
// threads take targets t (one group each). The backward fills each gradient row (zero or
// -D * softmax) in [row, block] grids, then adds the per-entry coefficients without atomics:
// the index entries are sorted by source once per call (stable, so equal sources keep their
// (t, k) order) and the first thread of each equal-source run sums the run sequentially and
// adds it to that source's gradient, which no other thread touches: deterministic, and the same
// order of additions as the CPU kernels. Everything is launched on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it pulls in cuSPARSE headers
#include <torch/library.h>

#include "label_map/args.h"

namespace reprogram_ext {
namespace label_map {
namespace {

using at::Tensor;

constexpr int kThreads = 256;

template <typename A>
__device__ A warp_reduce(A v, bool is_max) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const A o = __shfl_down_sync(0xffffffffu, v, offset);
    v = is_max ? (o > v ? o : v) : v + o;
  }
  return v;
}

// Sum (or max) over the block, returned to every thread. `scratch` holds kThreads / 32 values.
template <typename A>
__device__ A block_reduce(A v, bool is_max, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, is_max);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const A identity = is_max ? -static_cast<A>(INFINITY) : static_cast<A>(0);
  A r = threadIdx.x < kThreads / 32 ? scratch[threadIdx.x] : identity;
  if (warp == 0) r = warp_reduce(r, is_max);
  if (threadIdx.x == 0) scratch[0] = r;
  __syncthreads();
  return scratch[0];
}

template <typename A, typename scalar_t>
__device__ RowNorm<A> block_row_norm(const scalar_t* xr, int64_t S, A* scratch) {
  A m = -static_cast<A>(INFINITY);
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    const A v = static_cast<A>(xr[j]);
    m = v > m ? v : m;
  }
  m = block_reduce(m, true, scratch);
  A s = 0;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) s += exp_f(static_cast<A>(xr[j]) - m);
  s = block_reduce(s, false, scratch);
  return row_norm_from(m, s);
}

template <typename A>
__device__ Group<A> group_at(const int64_t* index, const A* weight, int64_t K, int64_t t) {
  return Group<A>{index + t * K, weight ? weight + t * K : nullptr, K};
}

// ------------------------------------------------------------------------------------ label_map

template <Reduce R, typename scalar_t>
__global__ void label_map_forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ index,
                                         const acc_t<scalar_t>* __restrict__ weight, scalar_t* __restrict__ out,
                                         acc_t<scalar_t>* __restrict__ stats, int64_t S, int64_t T, int64_t K,
                                         Pre pre) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[kThreads / 32];
  const int64_t n = blockIdx.x;
  const scalar_t* xr = x + n * S;
  RowNorm<A> norm{0, 0};
  if (map_needs_lse(pre)) {
    norm = block_row_norm<A>(xr, S, scratch);
    if (threadIdx.x == 0) {
      stats[2 * n] = norm.max;
      stats[2 * n + 1] = norm.log_sum;
    }
  }
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    out[n * T + t] = static_cast<scalar_t>(group_value<R, A>(xr, group_at(index, weight, K, t), pre, norm).out);
  }
}

// a[n, t, k] = g_t * c_tk (* p_{s_k} for softmax); gw[n, t, k] = g_t * d out_t / d w_k.
template <Reduce R, typename scalar_t>
__global__ void label_map_coefficients_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                              const int64_t* __restrict__ index,
                                              const acc_t<scalar_t>* __restrict__ weight,
                                              const acc_t<scalar_t>* __restrict__ stats, acc_t<scalar_t>* __restrict__ a,
                                              acc_t<scalar_t>* __restrict__ gw, int64_t S, int64_t T, int64_t K,
                                              Pre pre) {
  using A = acc_t<scalar_t>;
  const int64_t n = blockIdx.x;
  const scalar_t* xr = x + n * S;
  const RowNorm<A> norm = stats ? RowNorm<A>{stats[2 * n], stats[2 * n + 1]} : RowNorm<A>{0, 0};
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const Group<A> g = group_at(index, weight, K, t);
    const GroupValue<A> gv = group_value<R, A>(xr, g, pre, norm);
    const A go = static_cast<A>(grad_out[n * T + t]);
    for (int64_t k = 0; k < K; ++k) {
      A ak = 0, gk = 0;
      if (g.valid(k)) {
        const A v = pre_value(static_cast<A>(xr[g.src[k]]), pre, norm);
        ak = go * value_coefficient<R>(g, gv, k) * (pre == Pre::kSoftmax ? v : static_cast<A>(1));
        gk = go * value_weight_derivative<R>(gv, k, v);
      }
      a[(n * T + t) * K + k] = ak;
      if (gw) gw[(n * T + t) * K + k] = gk;
    }
  }
}

// ------------------------------------------------------------------------- mapped_cross_entropy

// One row. Forward (scale == nullptr): loss[n], unit-gradient coefficients out[n, t, k] and
// dense[n] = (max, log_sum, D) when need_lse. Weight-gradient pass: out[n, t, k] =
// scale[n] * d loss_n / d w_tk, with the row normaliser read from dense. L_scratch: [N, T].
template <Reduce R, typename scalar_t>
__global__ void mapped_ce_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                                 const int64_t* __restrict__ index, const acc_t<scalar_t>* __restrict__ weight,
                                 const acc_t<scalar_t>* __restrict__ scale, acc_t<scalar_t>* __restrict__ dense,
                                 acc_t<scalar_t>* __restrict__ loss, acc_t<scalar_t>* __restrict__ out,
                                 acc_t<scalar_t>* __restrict__ L_scratch, int64_t S, int64_t T, int64_t K,
                                 Pre pre, bool need_lse, double eps_d, int64_t ignore_index) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[kThreads / 32];
  const int64_t n = blockIdx.x;
  const scalar_t* xr = x + n * S;
  const int64_t y = target[n];
  const bool weight_pass = scale != nullptr;
  const A eps = static_cast<A>(eps_d);
  const int64_t TK = T * K;
  if (y == ignore_index) {
    for (int64_t e = threadIdx.x; e < TK; e += blockDim.x) out[n * TK + e] = 0;
    if (!weight_pass && threadIdx.x == 0) {
      loss[n] = 0;
      if (need_lse) dense[3 * n] = dense[3 * n + 1] = dense[3 * n + 2] = 0;
    }
    return;  // uniform across the block: no barrier is skipped by a subset of threads
  }
  RowNorm<A> norm{0, 0};
  if (need_lse) {
    norm = weight_pass ? RowNorm<A>{dense[3 * n], dense[3 * n + 1]} : block_row_norm<A>(xr, S, scratch);
  }
  A shift = 0;
  if (pre == Pre::kSoftmax) {
    A m = -static_cast<A>(INFINITY);
    for (int64_t e = threadIdx.x; e < TK; e += blockDim.x) {
      if (index[e] >= 0) {
        const A v = static_cast<A>(xr[index[e]]);
        if (v > m && v < static_cast<A>(INFINITY)) m = v;
      }
    }
    m = block_reduce(m, true, scratch);
    shift = m == -static_cast<A>(INFINITY) ? static_cast<A>(0) : m;
  }
  A* L = L_scratch + n * T;
  A local_max = -static_cast<A>(INFINITY), local_sum = 0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const Group<A> g = group_at(index, weight, K, t);
    const A Lt = pre == Pre::kSoftmax ? group_log_prob<R, A>(xr, g, shift).L : group_value<R, A>(xr, g, pre, norm).out;
    L[t] = Lt;
    local_max = Lt > local_max ? Lt : local_max;
    local_sum += Lt;
  }
  const A max_L = block_reduce(local_max, true, scratch);  // its barriers publish L[] to the block
  const A sum_L = block_reduce(local_sum, false, scratch);
  A local_exp = 0;
  if (max_L != -static_cast<A>(INFINITY) && max_L != static_cast<A>(INFINITY)) {
    for (int64_t t = threadIdx.x; t < T; t += blockDim.x) local_exp += exp_f(L[t] - max_L);
  }
  const A lse_L = lse_from(max_L, block_reduce(local_exp, false, scratch));
  const A row_scale = weight_pass ? scale[n] : static_cast<A>(1);
  A local_D = 0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const Group<A> g = group_at(index, weight, K, t);
    const A dL = ce_logit_grad<A>(L[t], lse_L, t == y, T, eps, row_scale);
    if (pre == Pre::kSoftmax) {
      const GroupLog<A> gl = group_log_prob<R, A>(xr, g, shift);
      for (int64_t k = 0; k < K; ++k) {
        A v = 0;
        if (g.valid(k)) {
          v = weight_pass ? dL * log_group_weight_derivative<R, A>(xr, g, gl, k)
                          : dL * log_group_responsibility<R, A>(xr, g, gl, k);
        }
        out[n * TK + t * K + k] = v;
      }
    } else {
      const GroupValue<A> gv = group_value<R, A>(xr, g, pre, norm);
      for (int64_t k = 0; k < K; ++k) {
        A v = 0;
        if (g.valid(k)) {
          if (weight_pass) {
            v = dL * value_weight_derivative<R>(gv, k, pre_value(static_cast<A>(xr[g.src[k]]), pre, norm));
          } else {
            v = dL * value_coefficient<R>(g, gv, k);
            local_D += v;
          }
        }
        out[n * TK + t * K + k] = v;
      }
    }
  }
  const A D = block_reduce(local_D, false, scratch);
  if (!weight_pass && threadIdx.x == 0) {
    loss[n] = ce_loss<A>(L[y], sum_L, lse_L, T, eps);
    if (need_lse) {
      dense[3 * n] = norm.max;
      dense[3 * n + 1] = norm.log_sum;
      dense[3 * n + 2] = pre == Pre::kSoftmax ? static_cast<A>(0) : D;
    }
  }
}

// ---------------------------------------------------------------------------- gradient writing

// grad[n, j] = -coef[n] * softmax(x[n])_j (stats = (max, log_sum) with row stride), or 0.
template <typename scalar_t>
__global__ void dense_fill_kernel(const scalar_t* __restrict__ x, const acc_t<scalar_t>* __restrict__ stats,
                                  int64_t stats_stride, const acc_t<scalar_t>* __restrict__ coef,
                                  scalar_t* __restrict__ grad, int64_t S) {
  using A = acc_t<scalar_t>;
  const int64_t n = blockIdx.x;  // rows on x (up to 2^31 - 1 of them), row blocks on y
  const int64_t j = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (j >= S) return;
  A g = 0;
  if (coef) {
    const RowNorm<A> norm{stats[stats_stride * n], stats[stats_stride * n + 1]};
    g = -coef[n] * exp_f(minus_lse(static_cast<A>(x[n * S + j]), norm));
  }
  grad[n * S + j] = static_cast<scalar_t>(g);
}

// grad[n, s] += scale[n] * sum of a[n, e] over the entries e with index e == s, summed in (t, k)
// order by the first thread of each run of equal sources in the stably sorted entries.
template <typename scalar_t>
__global__ void scatter_sorted_kernel(const acc_t<scalar_t>* __restrict__ a, const acc_t<scalar_t>* __restrict__ scale,
                                      const int64_t* __restrict__ sorted_src, const int64_t* __restrict__ perm,
                                      scalar_t* __restrict__ grad, int64_t S, int64_t TK) {
  using A = acc_t<scalar_t>;
  const int64_t n = blockIdx.x;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (i >= TK) return;
  const int64_t s = sorted_src[i];
  if (s < 0 || (i > 0 && sorted_src[i - 1] == s)) return;
  const A c = scale ? scale[n] : static_cast<A>(1);
  A g = static_cast<A>(grad[n * S + s]);
  for (int64_t j = i; j < TK && sorted_src[j] == s; ++j) g += c * a[n * TK + perm[j]];
  grad[n * S + s] = static_cast<scalar_t>(g);
}

// ------------------------------------------------------------------------------------------- ops

dim3 row_blocks(int64_t N) { return dim3(static_cast<unsigned>(N)); }

Tensor empty_acc(const Tensor& logits, at::IntArrayRef size) {
  return at::empty(size, logits.options().dtype(acc_scalar_type(logits.scalar_type())));
}

template <typename scalar_t>
const acc_t<scalar_t>* weight_ptr(const std::optional<Tensor>& weight) {
  return weight.has_value() ? weight->const_data_ptr<acc_t<scalar_t>>() : nullptr;
}

// The gradient of logits: a dense fill, then the sorted scatter of `coefficients` [N, T*K].
Tensor write_gradient(const Tensor& logits, const Tensor& index, const Tensor& coefficients, const Tensor* stats,
                      int64_t stats_stride, const Tensor* dense_coef, const Tensor* scale) {
  const int64_t N = logits.size(0), S = logits.size(1), TK = index.numel();
  Tensor grad = at::empty_like(logits);
  if (N == 0) return grad;
  auto sorted = at::sort(index.reshape({-1}), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const Tensor sorted_src = std::get<0>(sorted).contiguous(), perm = std::get<1>(sorted).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_grad_cuda", [&] {
    using A = acc_t<scalar_t>;
    const dim3 fill(static_cast<unsigned>(N), static_cast<unsigned>((S + kThreads - 1) / kThreads));
    dense_fill_kernel<scalar_t><<<fill, kThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), stats ? stats->const_data_ptr<A>() : nullptr, stats_stride,
        dense_coef ? dense_coef->const_data_ptr<A>() : nullptr, grad.mutable_data_ptr<scalar_t>(), S);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const dim3 scat(static_cast<unsigned>(N), static_cast<unsigned>((TK + kThreads - 1) / kThreads));
    scatter_sorted_kernel<scalar_t><<<scat, kThreads, 0, stream>>>(
        coefficients.const_data_ptr<A>(), scale ? scale->const_data_ptr<A>() : nullptr,
        sorted_src.const_data_ptr<int64_t>(), perm.const_data_ptr<int64_t>(), grad.mutable_data_ptr<scalar_t>(), S,
        TK);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

std::tuple<Tensor, Tensor> label_map_forward_cuda(const Tensor& logits, const Tensor& index,
                                                  const std::optional<Tensor>& weight, c10::string_view reduce,
                                                  c10::string_view pre) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre);
  const c10::cuda::CUDAGuard guard(logits.device());
  Tensor out = at::empty({p.N, p.T}, logits.options());
  Tensor stats = empty_acc(logits, row_lse_shape(p));
  if (p.N == 0) return {out, stats};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_forward_cuda", [&] {
    dispatch(p.reduce, [&](auto R) {
      label_map_forward_kernel<decltype(R)::value, scalar_t>
          <<<row_blocks(p.N), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(), weight_ptr<scalar_t>(weight),
              out.mutable_data_ptr<scalar_t>(), stats.numel() ? stats.mutable_data_ptr<acc_t<scalar_t>>() : nullptr,
              p.S, p.T, p.K, p.pre);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, stats};
}

std::tuple<Tensor, Tensor> label_map_backward_cuda(const Tensor& grad_out_in, const Tensor& logits,
                                                   const Tensor& index, const std::optional<Tensor>& weight,
                                                   const Tensor& row_lse, c10::string_view reduce,
                                                   c10::string_view pre, bool need_weight_grad) {
  const LabelMapArgs p = make_label_map_backward_args(grad_out_in, logits, index, weight, row_lse, reduce, pre);
  const c10::cuda::CUDAGuard guard(logits.device());
  const Tensor grad_out = grad_out_in.contiguous();
  const bool need_w = need_weight_grad && p.weighted;
  const bool need_lse = map_needs_lse(p.pre);
  Tensor a = empty_acc(logits, {p.N, p.T * p.K});
  Tensor gw_rows = empty_acc(logits, weight_grad_shape(p, need_w, p.N));
  if (p.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_coef_cuda", [&] {
      using A = acc_t<scalar_t>;
      dispatch(p.reduce, [&](auto R) {
        label_map_coefficients_kernel<decltype(R)::value, scalar_t>
            <<<row_blocks(p.N), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                grad_out.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                index.const_data_ptr<int64_t>(), weight_ptr<scalar_t>(weight),
                need_lse ? row_lse.const_data_ptr<A>() : nullptr, a.mutable_data_ptr<A>(),
                need_w ? gw_rows.mutable_data_ptr<A>() : nullptr, p.S, p.T, p.K, p.pre);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  const Tensor dense_coef = a.sum(1);  // D = sum of the row's coefficients (used when pre != none)
  Tensor grad = write_gradient(logits, index, a, need_lse ? &row_lse : nullptr, 2, need_lse ? &dense_coef : nullptr,
                               nullptr);
  return {grad, need_w ? gw_rows.sum(0) : gw_rows};
}

void launch_mapped_ce(const LabelMapArgs& p, const Tensor& logits, const Tensor& target, const Tensor& index,
                      const std::optional<Tensor>& weight, const Tensor* scale, Tensor& dense, Tensor* loss,
                      Tensor& out, double label_smoothing, int64_t ignore_index) {
  if (p.N == 0) return;
  Tensor L_scratch = empty_acc(logits, {p.N, p.T});
  const bool need_lse = ce_has_dense(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_cuda", [&] {
    using A = acc_t<scalar_t>;
    dispatch(p.reduce, [&](auto R) {
      mapped_ce_kernel<decltype(R)::value, scalar_t>
          <<<row_blocks(p.N), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              logits.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(),
              weight_ptr<scalar_t>(weight), scale ? scale->const_data_ptr<A>() : nullptr,
              need_lse ? dense.mutable_data_ptr<A>() : nullptr, loss ? loss->mutable_data_ptr<A>() : nullptr,
              out.mutable_data_ptr<A>(), L_scratch.mutable_data_ptr<A>(), p.S, p.T, p.K, p.pre, need_lse,
              label_smoothing, ignore_index);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

std::tuple<Tensor, Tensor, Tensor> mapped_cross_entropy_forward_cuda(const Tensor& logits, const Tensor& target,
                                                                     const Tensor& index,
                                                                     const std::optional<Tensor>& weight,
                                                                     c10::string_view reduce, c10::string_view pre,
                                                                     double label_smoothing, int64_t ignore_index) {
  const LabelMapArgs p = make_mapped_ce_args(logits, target, index, weight, reduce, pre, ignore_index);
  const c10::cuda::CUDAGuard guard(logits.device());
  Tensor loss = empty_acc(logits, {p.N});
  Tensor unit_grad = empty_acc(logits, {p.N, p.T, p.K});
  Tensor dense = empty_acc(logits, dense_shape(p));
  launch_mapped_ce(p, logits, target, index, weight, nullptr, dense, &loss, unit_grad, label_smoothing, ignore_index);
  return {loss, unit_grad, dense};
}

std::tuple<Tensor, Tensor> mapped_cross_entropy_backward_cuda(const Tensor& grad_loss_in, const Tensor& logits,
                                                              const Tensor& target, const Tensor& index,
                                                              const std::optional<Tensor>& weight,
                                                              const Tensor& unit_grad_in, const Tensor& dense_in,
                                                              c10::string_view reduce, c10::string_view pre,
                                                              double label_smoothing, int64_t ignore_index,
                                                              bool need_weight_grad) {
  const LabelMapArgs p = make_mapped_ce_backward_args(grad_loss_in, logits, target, index, weight, unit_grad_in,
                                                      dense_in, reduce, pre, ignore_index);
  const bool has_dense = ce_has_dense(p);
  const c10::cuda::CUDAGuard guard(logits.device());
  const Tensor grad_loss = grad_loss_in.contiguous(), unit_grad = unit_grad_in.contiguous();
  Tensor dense = dense_in.contiguous();
  const Tensor dense_coef = has_dense ? grad_loss * dense.select(1, 2) : Tensor();
  Tensor grad = write_gradient(logits, index, unit_grad, has_dense ? &dense : nullptr, 3,
                               has_dense ? &dense_coef : nullptr, &grad_loss);
  const bool need_w = need_weight_grad && p.weighted;
  Tensor gw_rows = empty_acc(logits, weight_grad_shape(p, need_w, p.N));
  if (need_w) {
    launch_mapped_ce(p, logits, target, index, weight, &grad_loss, dense, nullptr, gw_rows, label_smoothing,
                     ignore_index);
  }
  return {grad, need_w ? gw_rows.sum(0) : gw_rows};
}

}  // namespace
}  // namespace label_map

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("label_map_forward", &label_map::label_map_forward_cuda);
  m.impl("label_map_backward", &label_map::label_map_backward_cuda);
  m.impl("mapped_cross_entropy_forward", &label_map::mapped_cross_entropy_forward_cuda);
  m.impl("mapped_cross_entropy_backward", &label_map::mapped_cross_entropy_backward_cuda);
}

}  // namespace reprogram_ext
