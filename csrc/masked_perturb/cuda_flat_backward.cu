// CUDA flat backward of masked_perturb for rows that are not 16-byte aligned (W % VEC != 0: Elsayed et
// al.'s 223 x 225 canvas), in the linear case: blend add, no clamp, delta and mask (none or at canvas
// resolution) shared by the batch, no input gradient. Then (math.h, linear_gradient)
//   grad_delta[q] = inv_std[c] * G[q] * m[q] * act'(delta[q]),  grad_mask[q] = inv_std[c] * G[q] * act(delta[q]),
//   G[q] = sum_b grad_out[b, q]   (q = a position of the C x H x W plane),
// so the kernel streams grad_out once and sums it over the batch.
//
// grad_out is read as 16-byte aligned groups of VEC = 16 / sizeof(scalar_t) elements of the flat
// [B * plane] array, groups that may cross a row's (or a sample's) end; the tiling is
// flat_backward_tiling.h (host-tested by tests/cpp/masked_perturb_flat_backward_tiling.cpp):
// - a warp sums a slice of 32 * VEC plane positions over one batch chunk; lane l owns the positions
//   S + VEC * l + m. For sample b the aligned groups start r = (b * plane + S) % VEC before S; lane k > 0
//   reads group k with one 128-bit load when it lies in the plane whole; the elements of group 0 from S on
//   and of group 32's first r (in the places of group 0's r before S), and those of the group holding the
//   plane's end, are read one per lane by the lanes l < 2 VEC (lane_step: one predicated scalar load per
//   lane and step, no element-by-element path), only inside the plane. Every element is read once. Lane
//   l's positions take elements m + r of its own group and, for m + r >= VEC, elements m + r - VEC of lane
//   l + 1's: each lane stages its group's raw bits in the warp's row of shared memory (one 16-byte store)
//   and its extra element at its slot, a block barrier, and reads its VEC positions back at the offset r
//   (16-bit: 2-byte reads, 4 lanes a bank; float rows had 8). Every warp runs max_chunk(B, J) batch
//   steps (a step past its chunk reads nothing), so the barriers are uniform.
//   (Warp shuffles, or __syncwarp, compile to a convergence check whose divergent fallback jumps back
//   into the loop from the end of the function: .ci/check_gpu_code.py then measures the whole epilogue
//   as the loop body.)
// - Loads in flight: step n's elements are fetched kDepth = 2 steps ahead into register buffers (raw
//   bits, staged as raw bits and converted to float when read back), the fetch of step n + 2 (none past
//   the last step) issued before step n's barriers: two 16-byte loads per thread in flight while a step
//   is summed. The sums take the steps in order, so the result is that of fetching each step when it is
//   summed.
// - Batch chunks: J = 2^log2J warps per slice (flat_backward_tiling::log2_chunks: the smallest power of
//   two <= 32 giving 4 waves of threads on 132 SMs, but at least 4 samples per chunk); warp j sums the
//   samples chunk_begin(j) .. chunk_begin(j + 1) - 1 in increasing order (float32), the J partials meet
//   in shared memory and one thread per position adds them for j = 0 .. J - 1, then applies
//   linear_gradient. A function of the shape only: the same bits every run, no atomics, no partials in
//   DRAM (one kernel).
// - int32 index math; the epilogue's (c, h, w) come from two FastDivmods (specialize.h); delta and mask
//   are read once per position (scalar, any strides).
// The CUDA result differs from the CPU's (reduction_chunks() order, chunk results summed after the
// products) by float32 rounding only.
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "masked_perturb/cuda_flat_backward.h"
#include "masked_perturb/flat_backward_tiling.h"
#include "masked_perturb/specialize.h"

namespace reprogram_ext {
namespace {

namespace fbt = flat_backward_tiling;

// The kernel's arguments besides the tensors (int32; the host checks that every index fits).
struct FlatBackwardArgs {
  int32_t B, C, H, W, plane;
  FastDivmod div_w, div_h;
  int32_t sd_c, sd_h, sd_w, sm_c, sm_h, sm_w;  // element strides of delta / mask (0 on broadcast dimensions)
  int log2J;                                    // batch chunks J = 2^log2J
  int32_t steps;                                // batch steps of every warp: max_chunk(B, log2J)
  bool normalize_after;                         // inv_std = norm[C + c], else 1
};

// The raw bits of one grad_out element (float, half or bfloat16): a fetched group stays in these until it
// is staged, so that its loads are still in flight across the barriers of the steps before.
template <typename scalar_t>
using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint16_t>;

// p[0 .. VEC) = v in 16-byte shared-memory stores (p 16-byte aligned).
template <int VEC>
__device__ __forceinline__ void store_floats(float* p, const float (&v)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC / 4; ++i)
    reinterpret_cast<float4*>(p)[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}

// The float value of the raw bits of one element (exact).
template <typename scalar_t>
__device__ __forceinline__ float bits_to_float(bits_t<scalar_t> e) {
  if constexpr (sizeof(scalar_t) == 4) {
    return __uint_as_float(e);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    return __uint_as_float(static_cast<uint32_t>(e) << 16);
  } else {
    return static_cast<float>(c10::Half(e, c10::Half::from_bits()));
  }
}

// One batch step's grad_out elements held by a lane (flat_backward_tiling.h) as raw bits, 0 where nothing is
// read: its group (staged unless lane_step says not) and its extra element, staged at slot (-1: none).
template <typename scalar_t>
struct StepGroups {
  uint4 bits;
  bits_t<scalar_t> extra;
  int slot;
  bool group;
  int r;
};

// Fetches sample b's elements of the slice at S for `lane` (flat_backward_tiling::lane_step; nothing when
// b >= b1, past the chunk): one 128-bit load for a whole group, one scalar load for an extra element inside
// the plane.
template <typename scalar_t, int VEC>
__device__ __forceinline__ StepGroups<scalar_t> fetch_groups(const FlatBackwardArgs& a, const scalar_t* __restrict__ grad_out,
                                                             int32_t S, int32_t b, int32_t b1, int lane) {
  StepGroups<scalar_t> f;
  const bool in_chunk = b < b1;
  f.r = fbt::shift<VEC>(b, a.plane, S);
  const int32_t pos0 = fbt::group_position<VEC>(S, f.r, 0), left = a.plane - pos0;
  const int32_t flat0 = b * a.plane + pos0;  // >= 0: r <= b * plane + S
  const fbt::LaneStep st = fbt::lane_step<VEC>(lane, f.r, left);
  f.bits = make_uint4(0, 0, 0, 0);
  if (in_chunk && st.whole) f.bits = __ldg(reinterpret_cast<const uint4*>(grad_out + (flat0 + VEC * lane)));
  f.extra = 0;
  if (in_chunk && st.slot >= 0 && st.slot < left)
    f.extra = reinterpret_cast<const bits_t<scalar_t>*>(grad_out)[flat0 + st.slot];
  f.slot = st.slot;
  f.group = st.staged;
  return f;
}

// Block = slices_per_block slices x J warps (flat_backward_tiling.h); dynamic shared memory: a staging row
// of kStage floats per warp during the batch loop, then one float partial per (slice, chunk, position).
template <typename scalar_t, Activation kAct, bool kMask>
__global__ void masked_perturb_backward_flat_kernel(const FlatBackwardArgs a, const scalar_t* __restrict__ grad_out,
                                                    const scalar_t* __restrict__ delta, const scalar_t* __restrict__ mask,
                                                    const float* __restrict__ norm, float* __restrict__ grad_delta,
                                                    float* __restrict__ grad_mask) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  constexpr int kSlice = fbt::kSlice<VEC>;
  extern __shared__ float4 part_s[];
  float* part = reinterpret_cast<float*>(part_s);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / fbt::kLanes, lane = tid % fbt::kLanes;
  const int log2J = a.log2J;
  const int32_t bx = static_cast<int32_t>(blockIdx.x);
  const int32_t S = fbt::slice_of<int32_t>(bx, warp, log2J) * kSlice;
  const int j = fbt::chunk_of(warp, log2J);
  const int32_t b1 = fbt::chunk_begin<int32_t>(a.B, j + 1, log2J);
  float sum[VEC];
#pragma unroll
  for (int m = 0; m < VEC; ++m) sum[m] = 0.0f;
  // this warp's staging row: the raw bits of the elements (converted to float when read back)
  bits_t<scalar_t>* stage = reinterpret_cast<bits_t<scalar_t>*>(part) + warp * fbt::kStage<VEC>;
  const int32_t b0 = fbt::chunk_begin<int32_t>(a.B, j, log2J);
  // Step n's groups in buffer n % kDepth, fetched kDepth steps ahead (flat_backward_tiling.h).
  StepGroups<scalar_t> f[fbt::kDepth];
#pragma unroll
  for (int d = 0; d < fbt::kDepth; ++d)
    if (d < a.steps) f[d] = fetch_groups<scalar_t, VEC>(a, grad_out, S, b0 + d, b1, lane);
  for (int32_t n0 = 0; n0 < a.steps; n0 += fbt::kDepth) {  // the same count in every warp: block barriers below
#pragma unroll
    for (int d = 0; d < fbt::kDepth; ++d) {  // step n = n0 + d, buffer d = buffer_of(n)
      const int32_t n = n0 + d;
      if (d > 0 && n >= a.steps) break;  // uniform
      const int r = f[d].r;
      if (f[d].group) *reinterpret_cast<uint4*>(stage + lane * VEC) = f[d].bits;  // element i at stage_slot(lane, i, r)
      if (f[d].slot >= 0) stage[f[d].slot] = f[d].extra;
      if (fbt::fetch_step(n) < a.steps)  // uniform; in flight across the barriers below
        f[d] = fetch_groups<scalar_t, VEC>(a, grad_out, S, b0 + fbt::fetch_step(n), b1, lane);
      __syncthreads();
#pragma unroll
      for (int m = 0; m < VEC; ++m) sum[m] += bits_to_float<scalar_t>(stage[fbt::staged_index<VEC>(lane, m, r)]);
      __syncthreads();  // the staged values are read before the next step stores
    }
  }
  // partial_slot(warp >> log2J, j, lane * VEC + m) = warp * kSlice + lane * VEC + m, in the staging rows' place
  store_floats<VEC>(part + warp * kSlice + lane * VEC, sum);
  __syncthreads();
  const int items = fbt::slices_per_block(log2J) * kSlice, J = 1 << log2J;
  for (int s = tid; s < items; s += static_cast<int>(blockDim.x)) {
    const int32_t q = fbt::epilogue_position<VEC>(bx, s, log2J);
    if (q >= a.plane) break;  // q grows with s
    float total = 0.0f;
    for (int jj = 0; jj < J; ++jj) total += part[fbt::partial_slot<VEC>(s / kSlice, jj, s % kSlice, log2J)];
    const int32_t row = static_cast<int32_t>(a.div_w.div(static_cast<uint32_t>(q)));  // c * H + h
    const int32_t w = q - row * a.W;
    const int32_t c = static_cast<int32_t>(a.div_h.div(static_cast<uint32_t>(row)));
    const int32_t h = row - c * a.H;
    const float act = activate<kAct>(static_cast<float>(delta[c * a.sd_c + h * a.sd_h + w * a.sd_w]));
    const float inv_std = a.normalize_after ? norm[a.C + c] : 1.0f;
    if (grad_delta) {
      const float m = kMask ? static_cast<float>(mask[c * a.sm_c + h * a.sm_h + w * a.sm_w]) : 1.0f;
      grad_delta[q] = linear_gradient<float>(inv_std, total, m, activation_derivative<kAct>(act));
    }
    if (grad_mask) grad_mask[q] = linear_gradient<float>(inv_std, total, act, 1.0f);
  }
}

}  // namespace

template <typename scalar_t>
bool masked_perturb_backward_flat_cuda(const MaskedPerturbArgs& A, const scalar_t* grad_out, const scalar_t* delta,
                                       const scalar_t* mask, const float* norm, float* grad_delta, float* grad_mask,
                                       cudaStream_t stream) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t plane = A.C * A.H * A.W;
  const bool linear = A.pw.blend == Blend::kAdd && !A.pw.has_clamp && A.Bd == 1 && !A.delta_per_sample &&
                      (!A.has_mask || (A.Bm == 1 && A.pw.mask_scale == 1));
  if (!linear || (!grad_delta && !grad_mask) || plane == 0 || A.B == 0 ||
      reinterpret_cast<std::uintptr_t>(grad_out) % 16 != 0 ||
      !fbt::offsets_fit_int32<VEC>(A.B, plane) || A.C * A.sd.c + A.H * A.sd.h + A.W * A.sd.w >= INT32_MAX ||
      (A.has_mask && A.C * A.sm.c + A.H * A.sm.h + A.W * A.sm.w >= INT32_MAX))
    return false;
  const int64_t slices = fbt::slices<VEC>(plane);
  FlatBackwardArgs a{};
  a.B = static_cast<int32_t>(A.B), a.C = static_cast<int32_t>(A.C), a.H = static_cast<int32_t>(A.H);
  a.W = static_cast<int32_t>(A.W), a.plane = static_cast<int32_t>(plane);
  a.div_w = FastDivmod(static_cast<uint32_t>(A.W));
  a.div_h = FastDivmod(static_cast<uint32_t>(A.H));
  a.sd_c = static_cast<int32_t>(A.sd.c), a.sd_h = static_cast<int32_t>(A.sd.h), a.sd_w = static_cast<int32_t>(A.sd.w);
  a.sm_c = static_cast<int32_t>(A.sm.c), a.sm_h = static_cast<int32_t>(A.sm.h), a.sm_w = static_cast<int32_t>(A.sm.w);
  a.log2J = fbt::log2_chunks(A.B, slices);
  a.steps = fbt::max_chunk<int32_t>(a.B, a.log2J);
  a.normalize_after = A.pw.normalize_after;
  const int threads = fbt::block_threads(a.log2J);
  const unsigned blocks = static_cast<unsigned>(fbt::blocks(slices, a.log2J));
  const size_t smem = static_cast<size_t>(threads / fbt::kLanes) * fbt::kStage<VEC> * sizeof(float);  // >= partials
  dispatch(A.pw.activation, [&](auto act) {
    constexpr Activation kAct = decltype(act)::value;
    if (A.has_mask) {
      masked_perturb_backward_flat_kernel<scalar_t, kAct, true>
          <<<blocks, threads, smem, stream>>>(a, grad_out, delta, mask, norm, grad_delta, grad_mask);
    } else {
      masked_perturb_backward_flat_kernel<scalar_t, kAct, false>
          <<<blocks, threads, smem, stream>>>(a, grad_out, delta, mask, norm, grad_delta, grad_mask);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return true;
}

template bool masked_perturb_backward_flat_cuda<float>(const MaskedPerturbArgs&, const float*, const float*, const float*,
                                                       const float*, float*, float*, cudaStream_t);
template bool masked_perturb_backward_flat_cuda<c10::Half>(const MaskedPerturbArgs&, const c10::Half*, const c10::Half*,
                                                           const c10::Half*, const float*, float*, float*, cudaStream_t);
template bool masked_perturb_backward_flat_cuda<c10::BFloat16>(const MaskedPerturbArgs&, const c10::BFloat16*,
                                                               const c10::BFloat16*, const c10::BFloat16*, const float*,
                                                               float*, float*, cudaStream_t);

}  // namespace reprogram_ext
