// CUDA kernels of tokens_to_canvas (formulas: math.h, docs/ops/tokens_to_canvas.md).
//
// - Forward: one thread per output element, int32 index math (the backend refuses tensors of 2^31
//   elements or more, backends.py), the activation a template parameter, the other options
//   warp-uniform flags. A token outside [0, V) reads nothing (u = 0; the front end refuses such
//   tokens before any kernel runs, eagerly or with an in-graph assert under torch.compile).
// - Table gradient, a deterministic segmented reduction: the cells are sorted by token on the device
//   (stable sort: ascending (b, g) within a token) and each token's range found from a bincount.
//   Pass 1: one block per (part j, token, channel), threads over the patch, sums the gradient of part
//   j of the token's cells in order into partial[j, t, c, :]; J parts per token (a function of the
//   shape only) keep the grid busy when few tokens hold many cells. Pass 2: one thread per table
//   element sums its J partials in order j = 0..J-1 and applies patch_weight * inv_std * act'(a).
//   No atomics: the same bits every run.
// - Program / base gradient: one thread per canvas position (c, h, w), looping over b in order.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "tokens_to_canvas/math.h"
#include "tokens_to_canvas/options.h"

namespace reprogram_ext {
namespace tokens_to_canvas {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
// Blocks pass 1 aims for (4 waves of 8 blocks on 132 SMs), and the most parts a token is split into.
constexpr int64_t kTargetBlocks = 4 * 8 * 132;
constexpr int64_t kMaxParts = 64;

template <typename scalar_t>
using acc_cuda_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// The kernels' view of CanvasArgs, in int32 (checked to fit on the host) and the accumulation type.
template <typename A>
struct DeviceArgs {
  int C, V, G, Ph, Pw, Gw, Gh, oy, ox, H, W, B;
  int Bp, Cp, Bm, Cm, Bb, Cb;
  bool has_clamp, normalize;
  A lo, hi;
};

template <typename A>
DeviceArgs<A> device_args(const CanvasArgs& p) {
  TORCH_CHECK(p.B * p.C * p.H * p.W < (int64_t{1} << 31) && p.V * p.C * p.Ph * p.Pw < (int64_t{1} << 31) &&
                  p.B * p.G < (int64_t{1} << 31),
              "tokens_to_canvas (CUDA): the output, table and cells must each hold < 2^31 elements");
  auto i = [](int64_t v) { return static_cast<int>(v); };
  return DeviceArgs<A>{i(p.C),  i(p.V),  i(p.G),  i(p.Ph), i(p.Pw), i(p.Gw), i(p.Gh), i(p.oy), i(p.ox),
                       i(p.H),  i(p.W),  i(p.B),  i(p.Bp), i(p.Cp), i(p.Bm), i(p.Cm), i(p.Bb), i(p.Cb),
                       p.has_clamp, p.normalize, static_cast<A>(p.lo), static_cast<A>(p.hi)};
}

__device__ __forceinline__ int plane_offset(int Bt, int Ct, int b, int c, int HW) {
  return ((Bt == 1 ? 0 : b) * Ct + (Ct == 1 ? 0 : c)) * HW;
}

// v without the patch term at (b, c, p): base_weight * base + m * act(program).
template <Activation ACT, typename scalar_t, typename A>
__device__ __forceinline__ A canvas_terms(const DeviceArgs<A>& d, const scalar_t* __restrict__ program,
                                          const scalar_t* __restrict__ mask, const scalar_t* __restrict__ base,
                                          const ChannelConstants<A>& k, int b, int c, int p, int HW) {
  A v = base ? k.base_weight * static_cast<A>(base[plane_offset(d.Bb, d.Cb, b, c, HW) + p]) : A(0);
  if (program) {
    const A a = activate<ACT, A>(static_cast<A>(program[plane_offset(d.Bp, d.Cp, b, c, HW) + p]));
    v += (mask ? static_cast<A>(mask[plane_offset(d.Bm, d.Cm, b, c, HW) + p]) : A(1)) * a;
  }
  return v;
}

// act(table[token of (h, w)'s cell, c, ...]) inside the grid, 0 outside it (or for a token outside [0, V)).
template <Activation ACT, typename scalar_t, typename A>
__device__ __forceinline__ A patch_value(const DeviceArgs<A>& d, const int64_t* __restrict__ cells,
                                         const scalar_t* __restrict__ table, int b, int c, int h, int w) {
  const int y = h - d.oy, x = w - d.ox;
  if (y < 0 || x < 0 || y >= d.Gh * d.Ph || x >= d.Gw * d.Pw) return A(0);
  const int gy = y / d.Ph, gx = x / d.Pw;
  const int64_t t = cells[b * d.G + gy * d.Gw + gx];
  if (t < 0 || t >= d.V) return A(0);
  const int t32 = static_cast<int>(t);
  return activate<ACT, A>(static_cast<A>(table[((t32 * d.C + c) * d.Ph + (y - gy * d.Ph)) * d.Pw + (x - gx * d.Pw)]));
}

template <Activation ACT, typename scalar_t>
__global__ void tokens_to_canvas_forward_kernel(DeviceArgs<acc_cuda_t<scalar_t>> d, const int64_t* __restrict__ cells,
                                                const scalar_t* __restrict__ table, const scalar_t* __restrict__ program,
                                                const scalar_t* __restrict__ mask, const scalar_t* __restrict__ base,
                                                const acc_cuda_t<scalar_t>* __restrict__ norm,
                                                scalar_t* __restrict__ out) {
  using A = acc_cuda_t<scalar_t>;
  const int HW = d.H * d.W;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= d.B * d.C * HW) return;
  const int p = i % HW, plane = i / HW, c = plane % d.C, b = plane / d.C;
  const int h = p / d.W, w = p - h * d.W;
  const ChannelConstants<A> k = channel_constants(norm, d.C, c);
  A v = base ? k.base_weight * static_cast<A>(base[plane_offset(d.Bb, d.Cb, b, c, HW) + p]) : A(0);
  v += k.patch_weight * patch_value<ACT, scalar_t, A>(d, cells, table, b, c, h, w);
  if (program) {
    const A a = activate<ACT, A>(static_cast<A>(program[plane_offset(d.Bp, d.Cp, b, c, HW) + p]));
    v += (mask ? static_cast<A>(mask[plane_offset(d.Bm, d.Cm, b, c, HW) + p]) : A(1)) * a;
  }
  out[i] = static_cast<scalar_t>(finish_value(v, d.has_clamp, d.lo, d.hi, d.normalize, k));
}

// Pass 1: partial[j, t, c, q] = sum over part j of token t's cells (in order) of grad_out where the
// clamp passed v (q: threads over the Ph * Pw patch).
template <Activation ACT, typename scalar_t>
__global__ void table_grad_partial_kernel(DeviceArgs<acc_cuda_t<scalar_t>> d, const scalar_t* __restrict__ grad,
                                          const int64_t* __restrict__ order, const int64_t* __restrict__ start,
                                          const scalar_t* __restrict__ table, const scalar_t* __restrict__ program,
                                          const scalar_t* __restrict__ mask, const scalar_t* __restrict__ base,
                                          const acc_cuda_t<scalar_t>* __restrict__ norm, int parts,
                                          acc_cuda_t<scalar_t>* __restrict__ partial) {
  using A = acc_cuda_t<scalar_t>;
  const int tc = blockIdx.x, j = blockIdx.y, t = tc / d.C, c = tc % d.C;
  const int P = d.Ph * d.Pw, HW = d.H * d.W;
  // Part j of the token's n cells: an even split in int32 (n < 2^31: no 64-bit division).
  const int first = static_cast<int>(start[t]), n = static_cast<int>(start[t + 1]) - first;
  const int base_len = n / parts, extra = n - base_len * parts;
  const int i0 = first + base_len * j + min(j, extra), i1 = i0 + base_len + (j < extra ? 1 : 0);
  const ChannelConstants<A> k = channel_constants(norm, d.C, c);
  for (int q = threadIdx.x; q < P; q += blockDim.x) {
    const int qy = q / d.Pw, qx = q - qy * d.Pw;
    const A u = k.patch_weight * activate<ACT, A>(static_cast<A>(table[(t * d.C + c) * P + q]));
    A acc = 0;
    for (int i = i0; i < i1; ++i) {
      const int e = static_cast<int>(order[i]), b = e / d.G, g = e - b * d.G;
      const int gy = g / d.Gw;
      const int p = (d.oy + gy * d.Ph + qy) * d.W + d.ox + (g - gy * d.Gw) * d.Pw + qx;
      const A gv = static_cast<A>(grad[(b * d.C + c) * HW + p]);
      if (d.has_clamp) {
        const A v = canvas_terms<ACT, scalar_t, A>(d, program, mask, base, k, b, c, p, HW) + u;
        acc += clamp_passes(v, true, d.lo, d.hi) ? gv : A(0);
      } else {
        acc += gv;
      }
    }
    partial[(static_cast<int64_t>(j) * d.V * d.C + tc) * P + q] = acc;
  }
}

// Pass 2: grad_table[t, c, q] = patch_weight * inv_std * act'(a) * sum_j partial[j, t, c, q] (j in order).
template <Activation ACT, typename scalar_t>
__global__ void table_grad_finish_kernel(DeviceArgs<acc_cuda_t<scalar_t>> d, const scalar_t* __restrict__ table,
                                         const acc_cuda_t<scalar_t>* __restrict__ norm, int parts,
                                         const acc_cuda_t<scalar_t>* __restrict__ partial,
                                         acc_cuda_t<scalar_t>* __restrict__ grad_table) {
  using A = acc_cuda_t<scalar_t>;
  const int P = d.Ph * d.Pw;
  const int n = d.V * d.C * P;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  A sum = 0;
  for (int j = 0; j < parts; ++j) sum += partial[static_cast<int64_t>(j) * n + i];
  const ChannelConstants<A> k = channel_constants(norm, d.C, (i / P) % d.C);
  const A a = activate<ACT, A>(static_cast<A>(table[i]));
  grad_table[i] = k.patch_weight * (d.normalize ? k.inv_std : A(1)) * activation_derivative<ACT, A>(a) * sum;
}

// grad_program [Bp, C, H, W] and grad_base [Bb, C, H, W] at one canvas position, b in order.
template <Activation ACT, typename scalar_t>
__global__ void canvas_grad_kernel(DeviceArgs<acc_cuda_t<scalar_t>> d, const scalar_t* __restrict__ grad,
                                   const int64_t* __restrict__ cells, const scalar_t* __restrict__ table,
                                   const scalar_t* __restrict__ program, const scalar_t* __restrict__ mask,
                                   const scalar_t* __restrict__ base, const acc_cuda_t<scalar_t>* __restrict__ norm,
                                   acc_cuda_t<scalar_t>* __restrict__ grad_program,
                                   acc_cuda_t<scalar_t>* __restrict__ grad_base) {
  using A = acc_cuda_t<scalar_t>;
  const int HW = d.H * d.W;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= d.C * HW) return;
  const int c = i / HW, p = i - c * HW, h = p / d.W, w = p - h * d.W;
  const ChannelConstants<A> k = channel_constants(norm, d.C, c);
  A sum_p = 0, sum_b = 0;
  for (int b = 0; b < d.B; ++b) {
    A gv = static_cast<A>(grad[(b * d.C + c) * HW + p]) * (d.normalize ? k.inv_std : A(1));
    if (d.has_clamp) {
      const A v = canvas_terms<ACT, scalar_t, A>(d, program, mask, base, k, b, c, p, HW) +
                  k.patch_weight * patch_value<ACT, scalar_t, A>(d, cells, table, b, c, h, w);
      gv = clamp_passes(v, true, d.lo, d.hi) ? gv : A(0);
    }
    if (grad_program) {
      const A a = activate<ACT, A>(static_cast<A>(program[plane_offset(d.Bp, d.Cp, b, c, HW) + p]));
      const A m = mask ? static_cast<A>(mask[plane_offset(d.Bm, d.Cm, b, c, HW) + p]) : A(1);
      const A gp = gv * m * activation_derivative<ACT, A>(a);
      if (d.Bp == 1) sum_p += gp; else grad_program[(b * d.C + c) * HW + p] = gp;
    }
    if (grad_base) {
      const A gb = k.base_weight * gv;
      if (d.Bb == 1) sum_b += gb; else grad_base[(b * d.C + c) * HW + p] = gb;
    }
  }
  if (grad_program && d.Bp == 1) grad_program[c * HW + p] = sum_p;
  if (grad_base && d.Bb == 1) grad_base[c * HW + p] = sum_b;
}

template <typename T>
const T* ptr_or_null(const std::optional<Tensor>& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

Tensor tokens_to_canvas_forward_cuda(const Tensor& cells, const Tensor& table, const std::optional<Tensor>& program,
                                     const std::optional<Tensor>& program_mask, const std::optional<Tensor>& base,
                                     RX_TOKENS_TO_CANVAS_OPTION_PARAMS) {
  const CanvasArgs p = make_canvas_args(cells, table, program, program_mask, base, RX_TOKENS_TO_CANVAS_OPTION_ARGS);
  const c10::cuda::CUDAGuard guard(table.device());
  Tensor out = at::empty({p.B, p.C, p.H, p.W}, table.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "tokens_to_canvas_forward_cuda", [&] {
    using A = acc_cuda_t<scalar_t>;
    const DeviceArgs<A> d = device_args<A>(p);
    dispatch(p.activation, [&](auto act) {
      tokens_to_canvas_forward_kernel<decltype(act)::value, scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
          d, cells.data_ptr<int64_t>(), table.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(program),
          ptr_or_null<scalar_t>(program_mask), ptr_or_null<scalar_t>(base), norm.data_ptr<A>(),
          out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> tokens_to_canvas_backward_cuda(
    const Tensor& grad_out, const Tensor& cells, const Tensor& table, const std::optional<Tensor>& program,
    const std::optional<Tensor>& program_mask, const std::optional<Tensor>& base, RX_TOKENS_TO_CANVAS_OPTION_PARAMS,
    std::array<bool, 3> needs) {
  const CanvasArgs p = make_canvas_args(cells, table, program, program_mask, base, RX_TOKENS_TO_CANVAS_OPTION_ARGS);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({p.B, p.C, p.H, p.W}) && grad_out.is_contiguous() &&
                  grad_out.scalar_type() == table.scalar_type(),
              "tokens_to_canvas: grad_out must be a contiguous [B, C, H, W] tensor of table's dtype");
  const c10::cuda::CUDAGuard guard(table.device());
  const auto acc = table.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = table.options().dtype(acc);
  const bool need_p = needs[1] && program.has_value(), need_b = needs[2] && base.has_value();
  Tensor gt = needs[0] ? at::empty(table.sizes(), opts) : at::empty({0}, opts);
  Tensor gp = need_p ? at::empty({p.Bp, p.C, p.H, p.W}, opts) : at::empty({0}, opts);
  Tensor gb = need_b ? at::empty({p.Bb, p.C, p.H, p.W}, opts) : at::empty({0}, opts);
  if (grad_out.numel() == 0) return {gt.zero_(), gp.zero_(), gb.zero_()};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor order, start;
  int parts = 1;
  if (needs[0]) {
    const Tensor flat = cells.reshape({-1});
    order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
    start = at::zeros({p.V + 1}, cells.options());
    start.narrow(0, 1, p.V).copy_(at::bincount(flat, {}, p.V).narrow(0, 0, p.V).cumsum(0));
    parts = static_cast<int>(std::clamp<int64_t>(kTargetBlocks / std::max<int64_t>(1, p.V * p.C), 1, kMaxParts));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "tokens_to_canvas_backward_cuda", [&] {
    using A = acc_cuda_t<scalar_t>;
    const DeviceArgs<A> d = device_args<A>(p);
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    dispatch(p.activation, [&](auto act) {
      constexpr Activation ACT = decltype(act)::value;
      if (needs[0]) {
        Tensor partial = at::empty({parts, p.V, p.C, p.Ph * p.Pw}, opts);
        const dim3 grid(static_cast<unsigned>(p.V * p.C), static_cast<unsigned>(parts));
        table_grad_partial_kernel<ACT, scalar_t><<<grid, kThreads, 0, stream>>>(
            d, g, order.data_ptr<int64_t>(), start.data_ptr<int64_t>(), table.data_ptr<scalar_t>(),
            ptr_or_null<scalar_t>(program), ptr_or_null<scalar_t>(program_mask), ptr_or_null<scalar_t>(base),
            norm.data_ptr<A>(), parts, partial.data_ptr<A>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        table_grad_finish_kernel<ACT, scalar_t><<<blocks_for(gt.numel()), kThreads, 0, stream>>>(
            d, table.data_ptr<scalar_t>(), norm.data_ptr<A>(), parts, partial.data_ptr<A>(), gt.data_ptr<A>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (need_p || need_b) {
        canvas_grad_kernel<ACT, scalar_t><<<blocks_for(p.C * p.H * p.W), kThreads, 0, stream>>>(
            d, g, cells.data_ptr<int64_t>(), table.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(program),
            ptr_or_null<scalar_t>(program_mask), ptr_or_null<scalar_t>(base), norm.data_ptr<A>(),
            need_p ? gp.data_ptr<A>() : nullptr, need_b ? gb.data_ptr<A>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  return {gt, gp, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("tokens_to_canvas_forward", &tokens_to_canvas_forward_cuda);
  m.impl("tokens_to_canvas_backward", &tokens_to_canvas_backward_cuda);
}

}  // namespace tokens_to_canvas
}  // namespace reprogram_ext
