// CUDA kernels of masked_perturb (formula: math.h, docs/ops/masked_perturb.md).
//
// The kernels only map threads to elements; every value is computed by the __host__ __device__
// functions of the shared headers (math.h, activation.h), which the C++ CPU kernels (cpu.cpp)
// execute too, so the per-element logic is tested on any machine. The activation is a template
// parameter, dispatched once on the host.
//
// Forward: one thread per VEC = 16 / sizeof(scalar_t) consecutive output elements of a canvas row
// (b, c, h); the VEC results are written with one 16-byte store when every row starts 16-byte
// aligned (W % VEC == 0 and an aligned output), else one by one. One read of x (+ delta, mask), one
// write of the output.
// Backward: one thread per (batch chunk j, c, h, w), looping over the samples of its chunk in
// order; a shared (batch-1) delta / mask gradient is accumulated in a register and written as one
// float32 partial per chunk, the partials are then summed with at::sum. The chunks are those of
// reduction_chunks() (a function of the shape only), so the order of every sum is fixed and the
// same as on the CPU: deterministic, no atomics.
//
// Only c10/cuda headers are included (not ATen/cuda/CUDAContext.h, which pulls in the cuBLAS /
// cuSPARSE / cuSOLVER headers that a bare toolkit may lack); c10::cuda::getCurrentCUDAStream is the
// function at::cuda::getCurrentCUDAStream names.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "masked_perturb/args.h"

namespace reprogram_ext {
namespace {

using at::Tensor;

// Threads per block of both kernels. No __launch_bounds__: with it, ptxas (CUDA 13.0) caps the
// half/bfloat16 forward kernels at 48-64 registers and spills; without it they use <= 68, spill-free.
constexpr int kThreadsPerBlock = 256;

// act(delta[b?, c?, h, w]).
template <Activation kAct, typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t activated_delta(const MaskedPerturbArgs& A, const scalar_t* delta, int64_t b,
                                                 int64_t c, int64_t h, int64_t w) {
  return activate<kAct>(static_cast<acc_t>(delta[A.sd.at(b, c, h, w)]));
}

// mask[b?, c?, h / s, w / s] (s = mask_scale), or 1 without a mask.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t mask_value(const MaskedPerturbArgs& A, const scalar_t* mask, int64_t b, int64_t c,
                                            int64_t h, int64_t w) {
  if (!A.has_mask) return static_cast<acc_t>(1);
  const int64_t s = A.pw.mask_scale;
  return static_cast<acc_t>(mask[A.sm.at(b, c, h / s, w / s)]);
}

// Writes the 16 bytes of v[0..VEC) to dst (16-byte aligned) with one st.global.wb.v4.u32 (the
// default write-back cache policy). __stwb is an inline-PTX store: a plain uint4 or aligned-struct
// assignment is split back into VEC scalar stores by the optimiser (seen with nvcc 13.0).
template <typename scalar_t, int VEC>
__device__ __forceinline__ void store_16_bytes(scalar_t* dst, const scalar_t (&v)[VEC]) {
  static_assert(VEC * sizeof(scalar_t) == 16, "one 16-byte store");
  uint4 bits;
  memcpy(&bits, v, 16);
  __stwb(reinterpret_cast<uint4*>(dst), bits);
}

template <typename scalar_t, typename x_t, bool kVectorStore, Activation kAct>
__global__ void masked_perturb_forward_kernel(const MaskedPerturbArgs A, const x_t* __restrict__ x,
                                  const scalar_t* __restrict__ delta, const scalar_t* __restrict__ mask,
                                  const float* __restrict__ norm, scalar_t* __restrict__ out, int64_t groups_per_row,
                                  int64_t num_groups) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= num_groups) return;
  const int64_t row = group / groups_per_row;  // (b, c, h) of the contiguous output
  const int64_t w0 = (group - row * groups_per_row) * VEC;
  const int64_t h = row % A.H, c = (row / A.H) % A.C, b = row / (A.H * A.C);
  const auto k = channel_constants<acc_t>(A.pw, norm, A.C, c);
  const x_t* x_bc = x + A.sx.at(b, c, 0, 0);
  scalar_t vals[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const int64_t w = w0 + i;
    if (kVectorStore || w < A.W) {
      bool covered;
      const acc_t u = placed_input<acc_t>(x_bc, A.sx, A.pl, h, w, &covered);
      const acc_t a = activated_delta<kAct, acc_t>(A, delta, b, c, h, w);
      const acc_t m = mask_value<acc_t>(A, mask, b, c, h, w);
      vals[i] = static_cast<scalar_t>(perturb_element<acc_t>(u, covered, a, m, k));
    }
  }
  scalar_t* o = out + row * A.W + w0;
  if (kVectorStore) {
    store_16_bytes(o, vals);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (w0 + i < A.W) o[i] = vals[i];
    }
  }
}

template <typename scalar_t, typename x_t, Activation kAct>
__global__ void masked_perturb_backward_kernel(const MaskedPerturbArgs A, const scalar_t* __restrict__ grad_out,
                                   const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                   const scalar_t* __restrict__ mask, const float* __restrict__ norm,
                                   float* __restrict__ grad_delta, float* __restrict__ grad_mask,
                                   float* __restrict__ grad_placed, int64_t chunks, bool need_u) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t positions = A.C * A.H * A.W;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= chunks * positions) return;
  const int64_t j = item / positions, pos = item - j * positions;  // pos = (c * H + h) * W + w
  const int64_t w = pos % A.W, h = (pos / A.W) % A.H, c = pos / (A.W * A.H);
  const auto k = channel_constants<acc_t>(A.pw, norm, A.C, c);
  const int64_t b0 = chunk_begin(A.B, chunks, j), b1 = chunk_begin(A.B, chunks, j + 1);
  acc_t a = 0, dact = 0, m = 0, sum_ga = 0, sum_gm = 0;
  for (int64_t b = b0; b < b1; ++b) {
    if (b == b0 || A.Bd > 1) {
      a = activated_delta<kAct, acc_t>(A, delta, b, c, h, w);
      dact = activation_derivative<kAct>(a);
    }
    if (b == b0 || A.Bm > 1) m = mask_value<acc_t>(A, mask, b, c, h, w);
    bool covered = false;
    const acc_t u = need_u ? placed_input<acc_t>(x + A.sx.at(b, c, 0, 0), A.sx, A.pl, h, w, &covered)
                           : static_cast<acc_t>(0);
    const int64_t at_b = b * positions + pos;
    const auto e = perturb_element_backward<acc_t>(static_cast<acc_t>(grad_out[at_b]), u, covered, a, m, k);
    if (grad_delta) {
      if (A.Bd > 1) grad_delta[at_b] = static_cast<float>(e.ga * dact);
      else sum_ga += e.ga;
    }
    if (grad_mask) {
      if (A.Bm > 1) grad_mask[at_b] = static_cast<float>(e.gm);
      else sum_gm += e.gm;
    }
    if (grad_placed) grad_placed[at_b] = static_cast<float>(e.gu);
  }
  if (grad_delta && A.Bd == 1) grad_delta[j * positions + pos] = static_cast<float>(sum_ga * dact);
  if (grad_mask && A.Bm == 1) grad_mask[j * positions + pos] = static_cast<float>(sum_gm);
}

// Blocks of a 1-D grid covering `threads` threads.
unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= INT32_MAX, "masked_perturb: tensor too large for one launch (", threads, " threads)");
  return static_cast<unsigned int>(blocks);
}

// The host int list of copy offsets as an int64 tensor on `device`, copied once per call through
// pinned memory (asynchronous on the current stream). Returns an empty tensor for no copies.
Tensor offsets_on_device(at::IntArrayRef offsets, const at::Device& device) {
  const auto n = static_cast<int64_t>(offsets.size());
  if (n == 0) return at::empty({0}, at::TensorOptions().dtype(at::kLong).device(device));
  Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::copy(offsets.begin(), offsets.end(), host.mutable_data_ptr<int64_t>());
  return host.to(device, /*non_blocking=*/true);
}

Tensor masked_perturb_forward_cuda(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                                   RX_MASKED_PERTURB_OPTION_PARAMS) {
  const c10::cuda::CUDAGuard device_guard(delta.device());
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS);
  auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  Tensor out = at::empty({A.B, A.C, A.H, A.W}, delta.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const Tensor device_offsets = offsets_on_device(offsets, delta.device());
  A.pl.offsets = device_offsets.const_data_ptr<int64_t>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) { dispatch(A.pw.activation, [&](auto act) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    constexpr Activation kAct = decltype(act)::value;
    constexpr int VEC = 16 / sizeof(scalar_t);
    const int64_t groups_per_row = (A.W + VEC - 1) / VEC;
    const int64_t num_groups = A.B * A.C * A.H * groups_per_row;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const bool vector_store = A.W % VEC == 0 && reinterpret_cast<std::uintptr_t>(o) % 16 == 0;
    const auto kernel = vector_store ? masked_perturb_forward_kernel<scalar_t, x_t, true, kAct>
                                     : masked_perturb_forward_kernel<scalar_t, x_t, false, kAct>;
    kernel<<<blocks_for(num_groups), kThreadsPerBlock, 0, stream>>>(
        A, x.const_data_ptr<x_t>(), delta.const_data_ptr<scalar_t>(),
        A.has_mask ? mask->const_data_ptr<scalar_t>() : nullptr, norm.const_data_ptr<float>(), o, groups_per_row,
        num_groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }); });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> masked_perturb_backward_cuda(const Tensor& grad_out_in, const Tensor& x,
                                                                const Tensor& delta,
                                                                const std::optional<Tensor>& mask,
                                                                RX_MASKED_PERTURB_OPTION_PARAMS,
                                                                std::array<bool, 3> needs) {
  const c10::cuda::CUDAGuard device_guard(delta.device());
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS);
  auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  MaskedPerturbGrads grads = allocate_masked_perturb_grads(A, grad_out_in, delta, needs);
  const int64_t positions = A.C * A.H * A.W;
  if (A.B == 0 || positions == 0) return finish_masked_perturb_grads(A, grads);
  const Tensor grad_out = grad_out_in.contiguous();
  const Tensor device_offsets = offsets_on_device(offsets, delta.device());
  A.pl.offsets = device_offsets.const_data_ptr<int64_t>();
  float* grad_mask = grads.mask_ptr();
  float* grad_placed = grads.placed_ptr();
  // u is needed for the mask / input gradients, and for clamp and replace, whose factor depends on it.
  const bool need_u = grad_mask || grad_placed || A.pw.has_clamp || A.pw.blend == Blend::kReplace;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) { dispatch(A.pw.activation, [&](auto act) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    masked_perturb_backward_kernel<scalar_t, x_t, decltype(act)::value><<<blocks_for(grads.chunks * positions), kThreadsPerBlock, 0,
                                                     stream>>>(
        A, grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<x_t>(), delta.const_data_ptr<scalar_t>(),
        A.has_mask ? mask->const_data_ptr<scalar_t>() : nullptr, norm.const_data_ptr<float>(), grads.delta_ptr(),
        grad_mask, grad_placed, grads.chunks, need_u);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }); });
  return finish_masked_perturb_grads(A, grads);
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("masked_perturb_forward", &masked_perturb_forward_cuda);
  m.impl("masked_perturb_backward", &masked_perturb_backward_cuda);
}

}  // namespace reprogram_ext
