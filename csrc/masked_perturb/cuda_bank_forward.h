// Host entry point of the CUDA prompt-bank forward of masked_perturb (cuda_bank_forward.cu), called from
// the forward dispatch of cuda.cu: one launch for all V programs of a bank whose delta and mask are shared
// by the batch, instead of one launch per program.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "masked_perturb/kernel_gathers.h"

namespace reprogram_ext {

// The (pointwise variant, layout) pairs the bank kernel is compiled for: the batch-shared fast layouts of
// cuda.cu's dispatch_fast_forward without the bilinear window runs (forward_batch_shared's), each with a
// costly activation (tanh or sigmoid):
//   ILM-VP       AddPointwise<kAfter>, Layout<none, one copy, mask at canvas resolution, 128-bit>
//   AutoVP       AddPointwise<kAfter>, Layout<bilinear, one copy, mask at canvas resolution, 128-bit>
//   Voice2Series AddPointwise<kNone>,  Layout<none, several copies, mask at canvas resolution, 128-bit>
//   Elsayed      AddPointwise<kNone>,  Layout<none, one copy, no mask, 128-bit>
namespace bank_layouts {
using IlmVp = Layout<static_cast<int>(ResizeMode::kNone), false, static_cast<int>(MaskKind::kFull), true>;
using AutoVp = Layout<static_cast<int>(ResizeMode::kBilinear), false, static_cast<int>(MaskKind::kFull), true>;
using Copies = Layout<static_cast<int>(ResizeMode::kNone), true, static_cast<int>(MaskKind::kFull), true>;
using NoMask = Layout<static_cast<int>(ResizeMode::kNone), false, static_cast<int>(MaskKind::kNone), true>;
}  // namespace bank_layouts

template <class P, class L, Activation kAct>
constexpr bool kBankForward =
    (kAct == Activation::kTanh || kAct == Activation::kSigmoid) &&
    ((std::is_same_v<P, AddPointwise<Normalize::kAfter>> &&
      (std::is_same_v<L, bank_layouts::IlmVp> || std::is_same_v<L, bank_layouts::AutoVp>)) ||
     (std::is_same_v<P, AddPointwise<Normalize::kNone>> &&
      (std::is_same_v<L, bank_layouts::Copies> || std::is_same_v<L, bank_layouts::NoMask>)));

// Launches masked_perturb_bank_forward_kernel<scalar_t, x_t, kAct, P, L> on `stream` (kBankForward<P, L,
// kAct>; scalar_t float, c10::Half or c10::BFloat16, x_t scalar_t or uint8_t): out[v * B + b] for the V
// programs delta + v * delta_stride_v, each as the single-program call with that delta. `args` are the
// forward's int32 kernel arguments of one program (cuda.cu kernel_args; delta and mask shared by the
// batch, 128-bit rows for every program: delta_stride_v a multiple of VEC), and the caller has checked
// bank_tiling::launch_fits.
template <typename scalar_t, typename x_t, Activation kAct, class P, class L>
void launch_bank_forward(KernelArgs<float, int32_t> args, int32_t V, int32_t delta_stride_v, const x_t* x,
                         const scalar_t* delta, const scalar_t* mask, const float* norm, scalar_t* out,
                         cudaStream_t stream);

}  // namespace reprogram_ext
