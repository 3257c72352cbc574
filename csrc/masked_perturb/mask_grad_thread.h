// One thread of masked_perturb_mask_grad_kernel (cuda.cu): a per-sample mask's gradient at mask
// resolution (Bm > 1, mask_scale s > 1) for the calls the fused cell backward (launch_cell_backward_cuda)
// refuses: blend replace, clamp, an input gradient, a per-sample delta, W not a multiple of s or VEC,
// unaligned rows, the scales it is not compiled for, float64. __host__ __device__, so
// tests/cpp/masked_perturb_mask_grad.cpp runs it on the host for every cell of small problems and
// compares it bit for bit with the CPU kernel's order.
//
// Cell (b, c, q, r) of [B, C, Hm, Wm]: grad_mask = sum over its canvas footprint (mask_footprint,
// math.h) of gm = perturb_element_backward(g, u, covered, act(delta), m, k).gm, each footprint row
// left to right from 0, the row sums top to bottom from 0. The CPU's store_cell_row_sums assigns the
// first row sum instead of adding it to 0: the same bits, except +0 here for a cell whose row sums
// are all -0. The footprint row is read in groups of VEC = 16 / sizeof(scalar_t) (128-bit with
// L::kVec, which needs s % VEC == 0 so that the groups fill each footprint row); the mask value is
// one load per thread.
#pragma once

#include "masked_perturb/kernel_gathers.h"

namespace reprogram_ext {

// Mask-resolution grid of the per-sample mask gradient: [B, C, Hm, Wm] cells (int32: FastDivmod).
template <typename index_t>
struct CellGrid {
  index_t Hm, Wm, cells;
  FastDivmod div_hm, div_wm;
};

// The gradient of mask cell `cell` (0 <= cell < cg.cells, row-major over [B, C, Hm, Wm]). need_u: the
// placed input enters the gradient (clamp, blend replace); else u = 0, uncovered.
template <typename scalar_t, typename x_t, Activation kAct, class L, typename index_t>
RX_GPU_HD acc_type_t<scalar_t> mask_grad_cell(const KernelArgs<acc_type_t<scalar_t>, index_t>& p,
                                              const CellGrid<index_t>& cg, index_t cell,
                                              const scalar_t* __restrict__ grad_out, const x_t* __restrict__ x,
                                              const scalar_t* __restrict__ delta, const scalar_t* __restrict__ mask,
                                              const acc_type_t<scalar_t>* __restrict__ norm, bool need_u) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  const index_t bcq = divide<index_t>(cell, cg.Wm, cg.div_wm);
  const index_t r = cell - bcq * cg.Wm;
  const index_t bc = divide<index_t>(bcq, cg.Hm, cg.div_hm);
  const index_t q = bcq - bc * cg.Hm;
  const index_t b = divide<index_t>(bc, p.C, p.div_c);
  const index_t c = bc - b * p.C;
  const auto k = constants_of<DynamicPointwise, acc_t>(p, norm, c);
  const acc_t m = static_cast<acc_t>(mask[b * p.sm[0] + c * p.sm[1] + q * p.sm[2] + r * p.sm[3]]);
  const auto fh = mask_footprint<index_t>(q, p.mask_scale, p.H);
  const auto fw = mask_footprint<index_t>(r, p.mask_scale, p.W);
  const index_t bd = p.Bd > 1 ? b : index_t(0);
  acc_t total = 0;
  for (index_t h = fh.begin; h < fh.end; ++h) {
    const scalar_t* go = grad_out + (b * p.plane + (c * p.H + h) * p.W);
    acc_t row = 0;
    for (index_t w0 = fw.begin; w0 < fw.end; w0 += VEC) {
      acc_t gv[VEC], a[VEC], u[VEC];
      bool cov[VEC];
      load_group<L>(p, go + w0, w0, gv);
      gather_delta<L, kAct, VEC>(p, delta, bd, c, h, w0, a);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        u[i] = static_cast<acc_t>(0);
        cov[i] = false;
      }
      if (need_u) gather_placed<L, VEC>(p, x, b * p.sx[0] + c * p.sx[1], h, w0, u, cov);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const acc_t e = perturb_element_backward<acc_t>(gv[i], u[i], cov[i], a[i], m, k).gm;
        if (L::kVec || w0 + i < fw.end) row += e;
      }
    }
    total += row;
  }
  return total;
}

}  // namespace reprogram_ext
