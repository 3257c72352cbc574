// Fused CUDA backward of masked_perturb for a per-sample mask coarser than the canvas (SMM: mask
// [B, 1, 28, 28] at mask_scale 8 on a 224 x 224 canvas), blend add, no clamp, delta shared by the batch.
// grad_out is read once; the kernel writes
//   grad_mask[b, c, q, r] = sum over the footprint of (b, c, q, r) of gm      (mask resolution)
//   grad_delta[c, h, w]   = act'(delta) * sum_b ga[b, c, h, w]                 (batch sum)
// and for a one-channel mask on C = 2 or 3 channels (SMM: RGB) the mask's own gradient
//   grad_mask[b, 0, q, r] = sum_c (sum over the footprint of (b, c, q, r) of gm), channels in order 0, 1, ..
// in the same launch: a block then holds the C channels of its cells (256 threads each, blockDim.z = C) and
// its cell pass adds their footprint sums from shared memory, in channel order (no second launch, no atomics;
// the CPU op's sum_channels_in_order gives the same bits).
// with (ga, gm) = perturb_element_backward(g, u = 0, uncovered, act(delta), m, k) of math.h, the
// function the CPU kernel calls (blend add's gradients do not read the placed input). Orders: each
// cell is summed row by row left to right from 0, then the rows top to bottom (the CPU's
// store_cell_row_sums: same values in the same order); the delta gradient sums the samples of each of
// cell_tiling::kChunks batch chunks in order, then the chunk partials in order (CUDA's own order, as
// the other CUDA backward kernels; it differs from the CPU's by float rounding only). One writer per
// output element, no atomics: the same bits every run. Template parameters: the activation, S and
// kNormAfter (pw.normalize_after: without it after_inv_std is the constant 1 and the per-element
// g * after_inv_std compiles away; SMM normalises before) and kSum (the channel-summed launch of a
// one-channel mask), all dispatched once on the host.
//
// Tiling (block = whole footprints of a 32-column strip, all samples; the passes): cell_tiling.h; a
// thread's code between the barrier: cell_backward_thread.h. Both are __host__ __device__ and run on
// the host in tests/cpp/masked_perturb_cell_tiling.cpp / masked_perturb_cell_backward.cpp. Before this kernel the call took
// masked_perturb_backward_kernel (delta) and masked_perturb_mask_grad_kernel (cells), each reading
// grad_out once (cuda.cu; both still serve every other call).
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <cstring>

#include "masked_perturb/activation.h"
#include "masked_perturb/cell_backward_thread.h"
#include "masked_perturb/cell_tiling.h"
#include "masked_perturb/cuda_cell_backward.h"
#include "masked_perturb/math.h"

namespace reprogram_ext {
namespace {

namespace ct = cell_tiling;
using ct::CellBackwardArgs;

// Resident blocks per SM the register count must allow: 5 blocks of 256 threads (<= 48 registers) hold
// SMM's 588 blocks in one wave on 132 SMs (4, at the 52 registers ptxas picks unbounded, would not).
// Footprint rows of 16 elements (16-bit data at mask_scale 16) need more registers: 3 blocks (<= 80).
// Channel-summed (kSum: blocks of up to 3 x 256 threads): 1 block per SM (<= 80 registers; at 2, i.e. <= 40
// registers, the streaming loop spilled even at one sample per trip), so SMM's 196 blocks take 1.48 waves;
// the loop takes kSumUnroll = 4 samples per trip instead, so that the 64 blocks of the second wave alone
// keep 64 x 768 x 4 x 32 B = 6.3 MB of loads in flight, above the H200's ~4.8 MB bandwidth-latency product.
template <int kS, bool kSum>
constexpr int kMinBlocksPerSm = kSum ? 1 : (kS <= 8 ? 5 : 3);
constexpr int kSumUnroll = 4;
template <bool kSum>
constexpr int kMaxThreads = kSum ? cell_tiling::kMaxSummedChannels * cell_tiling::kThreads : cell_tiling::kThreads;

template <typename scalar_t, Activation kAct, int kS, bool kNormAfter, bool kSum>
__global__ void __launch_bounds__(kMaxThreads<kSum>, kMinBlocksPerSm<kS, kSum>)
    masked_perturb_cell_backward_kernel(const CellBackwardArgs<acc_type_t<scalar_t>> p,
                                        const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ delta,
                                        const scalar_t* __restrict__ mask, const acc_type_t<scalar_t>* __restrict__ norm,
                                        acc_type_t<scalar_t>* __restrict__ grad_delta,
                                        acc_type_t<scalar_t>* __restrict__ grad_mask) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  static_assert(kS % VEC == 0 && ct::kRowThreads % kS == 0, "footprint rows of whole 16-byte groups");
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  // Per channel of the block (channel-summed: blockDim.z = C of them, else 1): [B][kS][R] footprint row sums,
  // all channels' first, then [kChunks][kS][32] delta partials.
  const int32_t cz = kSum ? static_cast<int32_t>(threadIdx.z) : 0;  // the thread's channel slot in the block
  const int32_t channels = kSum ? p.g.C : 1;
  acc_t* rows = reinterpret_cast<acc_t*>(smem_bytes);
  acc_t* parts = rows + channels * ct::row_slots<kS>(p.g.B) + cz * ct::partial_slots<kS>();
  ct::CellThread<acc_t, kS> th;
  ct::cell_thread_begin<scalar_t, kAct, kS, kNormAfter>(p, delta, norm, static_cast<int32_t>(blockIdx.x),
                                            static_cast<int32_t>(blockIdx.y), kSum ? cz : static_cast<int32_t>(blockIdx.z),
                                            static_cast<int>(threadIdx.x), static_cast<int>(threadIdx.y), th);
  ct::cell_thread_rows<scalar_t, kS, kSum ? kSumUnroll : 2>(p, grad_out, mask, grad_delta != nullptr, th, rows + cz * ct::row_slots<kS>(p.g.B),
                                     parts);
  __syncthreads();
  if constexpr (kSum) ct::cell_thread_summed_cells<acc_t, kS>(p.g, th, rows, grad_mask);
  else ct::cell_thread_cells<acc_t, kS>(p.g, th, rows, grad_mask);
  if (grad_delta) ct::cell_thread_deltas<scalar_t, kAct, kS>(p, delta, th, parts, grad_delta);
}

constexpr int64_t kMaxSharedBytes = 48 * 1024;

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename scalar_t, Activation kAct, int kS, bool kNormAfter, bool kSum>
void launch(const MaskedPerturbArgs& A, const CellBackwardCall& call, int64_t smem, cudaStream_t stream) {
  using acc_t = acc_type_t<scalar_t>;
  CellBackwardArgs<acc_t> p{};
  const auto [Hm, Wm] = mask_resolution(A);
  p.g = ct::Geometry{static_cast<int32_t>(A.B), static_cast<int32_t>(A.C), static_cast<int32_t>(A.H),
                     static_cast<int32_t>(A.W), static_cast<int32_t>(Hm), static_cast<int32_t>(Wm)};
  p.sd_c = static_cast<int32_t>(A.sd.c), p.sd_h = static_cast<int32_t>(A.sd.h);
  p.sm_b = static_cast<int32_t>(A.sm.b), p.sm_c = static_cast<int32_t>(A.sm.c);
  p.sm_h = static_cast<int32_t>(A.sm.h), p.sm_w = static_cast<int32_t>(A.sm.w);
  p.pw = A.pw;
  const unsigned C = static_cast<unsigned>(A.C);
  const dim3 grid(static_cast<unsigned>(ct::strips<kS>(p.g.Wm)), static_cast<unsigned>(Hm), kSum ? 1u : C);
  const dim3 block(ct::kRowThreads, ct::kChunks, kSum ? C : 1u);
  masked_perturb_cell_backward_kernel<scalar_t, kAct, kS, kNormAfter, kSum><<<grid, block, static_cast<size_t>(smem), stream>>>(
      p, static_cast<const scalar_t*>(call.grad_out), static_cast<const scalar_t*>(call.delta),
      static_cast<const scalar_t*>(call.mask), static_cast<const acc_t*>(call.norm),
      static_cast<acc_t*>(call.grad_delta), static_cast<acc_t*>(call.grad_mask));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
bool launch_typed(const MaskedPerturbArgs& A, const CellBackwardCall& call, cudaStream_t stream) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t s = A.pw.mask_scale;
  if (s != VEC && s != 2 * VEC) return false;
  const bool sum = mask_channel_sum(A);
  const int64_t channels = sum ? A.C : 1;  // of a block
  const int64_t smem =
      channels * (int64_t(A.B) * ct::kRowThreads + int64_t(ct::kChunks) * s * ct::kStripColumns) * sizeof(float);
  if (smem > kMaxSharedBytes) return false;
  dispatch(A.pw.activation, [&](auto act) {
    constexpr Activation kAct = decltype(act)::value;
    dispatch_bool(sum, [&](auto sum_) {
      constexpr bool kSum = decltype(sum_)::value;
      if (A.pw.normalize_after) {
        if (s == VEC) launch<scalar_t, kAct, VEC, true, kSum>(A, call, smem, stream);
        else launch<scalar_t, kAct, 2 * VEC, true, kSum>(A, call, smem, stream);
      } else {  // SMM: normalize before (or none)
        if (s == VEC) launch<scalar_t, kAct, VEC, false, kSum>(A, call, smem, stream);
        else launch<scalar_t, kAct, 2 * VEC, false, kSum>(A, call, smem, stream);
      }
    });
  });
  return true;
}

}  // namespace

bool launch_cell_backward_cuda(const MaskedPerturbArgs& A, at::ScalarType dtype, bool need_u,
                               const CellBackwardCall& call, cudaStream_t stream) {
  if (need_u || !A.has_mask || A.Bm <= 1 || A.pw.mask_scale <= 1 || A.pw.blend != Blend::kAdd || A.pw.has_clamp ||
      A.delta_per_sample || A.Bd != 1 || A.B <= 0 || (mask_channel_sum(A) && A.C > ct::kMaxSummedChannels))
    return false;
  const int64_t vec = 16 / static_cast<int64_t>(at::elementSize(dtype));
  const auto [Hm, Wm] = mask_resolution(A);
  const int64_t lim = INT32_MAX - 1;
  const int64_t mask_end = (A.B - 1) * A.sm.b + (A.C - 1) * A.sm.c + (Hm - 1) * A.sm.h + (Wm - 1) * A.sm.w;
  if (A.B * A.C * A.H * A.W >= lim || mask_end >= lim || A.C * A.sd.c >= lim || A.H * A.sd.h >= lim ||
      Hm > 65535 || A.C > 65535 || A.W % vec != 0 || A.W % A.pw.mask_scale != 0 || A.sd.w != 1 || A.sd.h % vec != 0 || A.sd.c % vec != 0 ||
      !aligned16(call.grad_out) || !aligned16(call.delta))
    return false;
  switch (dtype) {
    case at::kFloat: return launch_typed<float>(A, call, stream);
    case at::kHalf: return launch_typed<c10::Half>(A, call, stream);
    case at::kBFloat16: return launch_typed<c10::BFloat16>(A, call, stream);
    default: return false;
  }
}

}  // namespace reprogram_ext
