// CUDA prompt-bank forward of masked_perturb: out[v * B + b] = masked_perturb(x, delta[v], mask)[b] for the
// V programs of a bank, delta and mask shared by the batch (formula: math.h, docs/ops/masked_perturb.md).
//
// One launch for all V programs, sample-major: a thread loads its sample's x for its VEC positions once and
// writes those positions for every program, so x is read from DRAM once for the whole bank (issue 11, D3 of
// bench/notes/gpu_predictions.md: one launch per program re-read it V times). The work split is
// bank_tiling.h (host-tested by tests/cpp/masked_perturb_bank_tiling.cpp): a block is G = 256 / VEC
// position groups x VEC samples, as cuda.cu's forward_batch_shared, with the sample blocks fastest in the
// grid (the blocks that share a delta / mask tile run one after another); each thread activates element s of its
// group for every program (one activation serves the block's VEC samples, exchanged through shared memory,
// up to kEntriesPerTile programs per barrier).
// Per thread, once: its coordinates, the mask and the channel constants, the placed input's term
// placed_term(u) of its VEC positions. Per program: one delta load and activation, the VEC outputs
// perturb_from_term(term, a, m) and one 16-byte store. The values are those of forward_batch_shared and
// forward_per_thread (perturb_value<P> = perturb_from_term(covered ? placed_term(u) : u, a, m)): the same
// functions of specialize.h / kernel_gathers.h, which the CPU kernels execute too.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#include "masked_perturb/bank_tiling.h"
#include "masked_perturb/cuda_bank_forward.h"

namespace reprogram_ext {
namespace {

constexpr int kThreads = bank_tiling::kThreads;
constexpr int kTile = bank_tiling::kEntriesPerTile;

template <typename scalar_t, typename x_t, Activation kAct, class P, class L>
__global__ void masked_perturb_bank_forward_kernel(const KernelArgs<float, int32_t> p, int32_t V, int32_t sdv,
                                                   const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                                   const scalar_t* __restrict__ mask, const float* __restrict__ norm,
                                                   scalar_t* __restrict__ out) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  constexpr bool kMask = L::kMask == static_cast<int>(MaskKind::kFull);
  __shared__ __align__(16) float a_s[kTile * kThreads];  // act(delta) of the tile's programs: [kTile][G][VEC]
  __shared__ __align__(16) float m_s[kMask ? kThreads : 4];
  const bank_tiling::Thread t =
      bank_tiling::thread_of<VEC>(blockIdx.x, blockIdx.y, threadIdx.x, p.groups, p.B, p.gpr, p.div_gpr, p.H, p.div_h);
  const int32_t e = t.c * p.sd[1] + t.h * p.sd[2] + (t.w0 + static_cast<int32_t>(t.s));  // lane's delta element
  if constexpr (kMask) m_s[bank_tiling::slot<VEC>(0, t.gl, t.s)] = static_cast<float>(mask[t.c * p.sm[1] + t.h * p.sm[2] + (t.w0 + static_cast<int32_t>(t.s))]);
  // The placed input's term of the group's VEC positions for the thread's sample, once for all programs.
  float u[VEC];
  bool cov[VEC];
  gather_placed<L, VEC>(p, x, t.b_read * p.sx[0] + t.c * p.sx[1], t.h, t.w0, u, cov);
  const auto k = constants_of<P, float>(p, norm, t.c);
  float term[VEC], m[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) term[i] = cov[i] ? placed_term<P, float>(u[i], k) : u[i];
  if constexpr (kMask) __syncthreads();
#pragma unroll
  for (int i = 0; i < VEC; ++i) m[i] = kMask ? m_s[bank_tiling::slot<VEC>(0, t.gl, i)] : 1.0f;
  for (int32_t v0 = 0; v0 < V; v0 += kTile) {
    const int n = bank_tiling::tile_entries(V, v0);
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      if (j < n) a_s[bank_tiling::slot<VEC>(j, t.gl, t.s)] = activate<kAct>(static_cast<float>(delta[(v0 + j) * sdv + e]));
    }
    __syncthreads();
    if (t.live) {
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        if (j < n) {
          scalar_t vals[VEC];
#pragma unroll
          for (int i = 0; i < VEC; i += 4) {
            const float4 a = *reinterpret_cast<const float4*>(&a_s[bank_tiling::slot<VEC>(j, t.gl, i)]);
            vals[i] = static_cast<scalar_t>(perturb_from_term<P, float>(term[i], a.x, m[i], k));
            vals[i + 1] = static_cast<scalar_t>(perturb_from_term<P, float>(term[i + 1], a.y, m[i + 1], k));
            vals[i + 2] = static_cast<scalar_t>(perturb_from_term<P, float>(term[i + 2], a.z, m[i + 2], k));
            vals[i + 3] = static_cast<scalar_t>(perturb_from_term<P, float>(term[i + 3], a.w, m[i + 3], k));
          }
          uint4 bits;
          memcpy(&bits, vals, 16);
          // inline-PTX 16-byte store (a plain uint4 assignment may be split: cuda.cu store_vec)
          __stwb(reinterpret_cast<uint4*>(out + bank_tiling::out_offset(v0 + j, t.b, p.B, p.plane, t.row, p.W, t.w0)), bits);
        }
      }
    }
    __syncthreads();  // the next tile overwrites a_s
  }
}

}  // namespace

template <typename scalar_t, typename x_t, Activation kAct, class P, class L>
void launch_bank_forward(KernelArgs<float, int32_t> args, int32_t V, int32_t delta_stride_v, const x_t* x,
                         const scalar_t* delta, const scalar_t* mask, const float* norm, scalar_t* out,
                         cudaStream_t stream) {
  static_assert(kBankForward<P, L, kAct>, "launch_bank_forward: not a bank layout");
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t plane_groups = static_cast<int64_t>(args.C) * args.H * args.gpr;
  args.groups = static_cast<int32_t>(plane_groups);
  const dim3 grid(static_cast<unsigned>(bank_tiling::sample_blocks(args.B, VEC)),
                  static_cast<unsigned>(bank_tiling::position_blocks(plane_groups, VEC)));
  masked_perturb_bank_forward_kernel<scalar_t, x_t, kAct, P, L><<<grid, kThreads, 0, stream>>>(
      args, V, delta_stride_v, x, delta, mask, norm, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The instantiations cuda.cu's dispatch reaches (kBankForward's pairs x dtypes x activations).
#define RX_BANK_ONE(S, X, A, P, L)                                                                            \
  template void launch_bank_forward<S, X, A, P, L>(KernelArgs<float, int32_t>, int32_t, int32_t, const X*, \
                                                   const S*, const S*, const float*, S*, cudaStream_t);
#define RX_BANK_LAYOUTS(S, X, A)                                         \
  RX_BANK_ONE(S, X, A, AddPointwise<Normalize::kAfter>, bank_layouts::IlmVp)  \
  RX_BANK_ONE(S, X, A, AddPointwise<Normalize::kAfter>, bank_layouts::AutoVp) \
  RX_BANK_ONE(S, X, A, AddPointwise<Normalize::kNone>, bank_layouts::Copies)  \
  RX_BANK_ONE(S, X, A, AddPointwise<Normalize::kNone>, bank_layouts::NoMask)
#define RX_BANK_ACTS(S, X) RX_BANK_LAYOUTS(S, X, Activation::kTanh) RX_BANK_LAYOUTS(S, X, Activation::kSigmoid)
#define RX_BANK_TYPES(S) RX_BANK_ACTS(S, S) RX_BANK_ACTS(S, uint8_t)
RX_BANK_TYPES(float)
RX_BANK_TYPES(c10::Half)
RX_BANK_TYPES(c10::BFloat16)

}  // namespace reprogram_ext
