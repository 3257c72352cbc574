// Host entry of the fused CUDA backward for a per-sample mask coarser than the canvas (SMM's case):
// one kernel (cuda_cell_backward.cu) reads grad_out once and writes both the mask gradient at mask
// resolution with the mask's channels (a one-channel mask's summed over the canvas channels in the
// kernel) and the batch-summed delta gradient. Called from masked_perturb_backward_cuda (cuda.cu).
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include "masked_perturb/args.h"

namespace reprogram_ext {

// One program's pointers (a prompt bank calls once per program).
struct CellBackwardCall {
  const void* grad_out;  // [B, C, H, W] contiguous, delta's dtype
  const void* delta;     // shared by the batch (strides A.sd)
  const void* mask;      // [B, C?, Hm, Wm] (strides A.sm)
  const void* norm;      // [2, C] in the accumulation dtype
  void* grad_delta;      // [C, H, W] accumulation dtype, the batch sum; null when not asked for
  void* grad_mask;       // [B, Cm, Hm, Wm] accumulation dtype: Cm = 1 when mask_channel_sum(A) (args.h), else C
};

// Launches masked_perturb_cell_backward_kernel and returns true when it serves the call: float /
// half / bfloat16, a per-sample mask (Bm > 1) with mask_scale = VEC or 2 VEC, blend add, no clamp,
// no input gradient (need_u false), delta shared by the batch, whole footprints across the width
// (W % mask_scale == 0) and 16-byte aligned rows, int32 offsets, B <= ~300 (48 KB of shared memory); a
// one-channel mask on C > 1 channels (the channel-summed launch) only for C <= 3, and B <= 64 at C = 3 and
// mask_scale 8 (48 KB over the C channels: 3 (32 B + 2048) floats).
// Otherwise launches nothing and returns false (the caller then runs the two kernels of cuda.cu).
bool launch_cell_backward_cuda(const MaskedPerturbArgs& A, at::ScalarType dtype, bool need_u,
                               const CellBackwardCall& call, cudaStream_t stream);

}  // namespace reprogram_ext
