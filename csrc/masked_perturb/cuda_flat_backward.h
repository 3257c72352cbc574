// Host entry point of the CUDA flat backward of masked_perturb (cuda_flat_backward.cu), called from the
// backward dispatch of cuda.cu for rows that are not 16-byte aligned.
#pragma once

#include <cuda_runtime_api.h>

#include "masked_perturb/args.h"

namespace reprogram_ext {

// The linear backward (blend add, no clamp, delta and mask shared by the batch, no input gradient) of a
// float / half / bfloat16 call whose mask is none or at canvas resolution, from a 16-byte aligned
// contiguous grad_out [B, C, H, W] whose offsets fit int32 (flat_backward_tiling::offsets_fit_int32:
// B * C * H * W + 9 * 32 * VEC < 2^31): launches
// masked_perturb_backward_flat_kernel on `stream`, writing grad_delta and / or grad_mask ([C, H, W] batch
// sums in float32, null when not asked for), and returns true; returns false (launching nothing) for any
// other call. norm: (mean, 1 / std) per channel, read when A.pw.normalize_after.
template <typename scalar_t>
bool masked_perturb_backward_flat_cuda(const MaskedPerturbArgs& A, const scalar_t* grad_out, const scalar_t* delta,
                                       const scalar_t* mask, const float* norm, float* grad_delta, float* grad_mask,
                                       cudaStream_t stream);

}  // namespace reprogram_ext
