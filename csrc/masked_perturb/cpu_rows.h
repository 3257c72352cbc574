// The C++ CPU kernels' row helpers of masked_perturb (the placed input, the activated program and
// the mask of one canvas row, and the output row), shared by masked_perturb's CPU kernels (cpu.cpp)
// and the perturbation bank's (csrc/perturbation_bank/cpu.cpp), which applies one placed-input
// row to the rows of every query.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "masked_perturb/args.h"
#include "masked_perturb/specialize.h"

namespace reprogram_ext {

// Column taps of the bilinear resize, per copy: taps[k * W + w] = linear_tap(w - ox_k, Win, Win / Wr) for
// the canvas columns w that copy k covers. They are the same for every row and sample of a call, so the
// row loops look them up instead of recomputing them per element (empty unless the resize is bilinear).
template <typename acc_t>
std::vector<Tap<acc_t, int64_t>> bilinear_column_taps(const MaskedPerturbArgs& A) {
  const Placement& pl = A.pl;
  std::vector<Tap<acc_t, int64_t>> taps;
  if (pl.resize_mode != ResizeMode::kBilinear) return taps;
  taps.resize(pl.num_copies * A.W);
  const acc_t scale_w = static_cast<acc_t>(pl.Win) / static_cast<acc_t>(pl.Wr);
  for (int64_t k = 0; k < pl.num_copies; ++k) {
    const int64_t ox = pl.offsets[2 * k + 1];
    for (int64_t w = std::max<int64_t>(0, ox); w < std::min<int64_t>(A.W, ox + pl.Wr); ++w)
      taps[k * A.W + w] = linear_tap<acc_t, int64_t>(w - ox, pl.Win, scale_w);
  }
  return taps;
}

// u_row[w] = raw placed input at (b, c, h, w); cov[w] = whether a copy covers it. col_taps: the
// bilinear_column_taps of the call, or null (then computed per element).
template <typename acc_t, typename x_t>
inline void fill_placed_row(const MaskedPerturbArgs& A, const x_t* x_bc, int64_t h, acc_t* u_row, uint8_t* cov,
                            const Tap<acc_t, int64_t>* col_taps = nullptr) {
  std::fill(u_row, u_row + A.W, acc_t(0));
  std::fill(cov, cov + A.W, uint8_t(0));
  const Placement& pl = A.pl;
  for (int64_t k = 0; k < pl.num_copies; ++k) {
    const int64_t y = h - pl.offsets[2 * k];
    const int64_t ox = pl.offsets[2 * k + 1];
    if (y < 0 || y >= pl.Hr) continue;
    const int64_t w_lo = std::max<int64_t>(0, ox), w_hi = std::min<int64_t>(A.W, ox + pl.Wr);
    if (pl.resize_mode == ResizeMode::kNone && A.sx.w == 1) {
      const x_t* src = x_bc + y * A.sx.h - ox;
#pragma omp simd
      for (int64_t w = w_lo; w < w_hi; ++w) u_row[w] += load_input<acc_t>(src, w);
    } else if (pl.resize_mode == ResizeMode::kNone) {
      const x_t* src = x_bc + y * A.sx.h;
      for (int64_t w = w_lo; w < w_hi; ++w) u_row[w] += load_input<acc_t>(src, (w - ox) * A.sx.w);
    } else if (pl.resize_mode == ResizeMode::kNearest) {
      // The CUDA kernels' lookups (specialize.h): scale and source row once per row and copy.
      const float scale_w = static_cast<float>(pl.Win) / static_cast<float>(pl.Wr);
      const float scale_h = static_cast<float>(pl.Hin) / static_cast<float>(pl.Hr);
      const x_t* src = x_bc + nearest_source<int64_t>(y, pl.Hin, pl.Hr, scale_h) * A.sx.h;
      for (int64_t w = w_lo; w < w_hi; ++w)
        u_row[w] += load_input<acc_t>(src, nearest_source<int64_t>(w - ox, pl.Win, pl.Wr, scale_w) * A.sx.w);
    } else {
      const acc_t scale_w = static_cast<acc_t>(pl.Win) / static_cast<acc_t>(pl.Wr);
      // linear_tap's values (the CUDA kernels' row tap, linear_tap_trunc)
      const auto ty = linear_tap_trunc<acc_t, int64_t>(y, pl.Hin, static_cast<acc_t>(pl.Hin) / static_cast<acc_t>(pl.Hr));
      const x_t* r0 = x_bc + ty.i0 * A.sx.h;
      const x_t* r1 = x_bc + ty.i1 * A.sx.h;
      int64_t w = w_lo;
      if (pl.bilinear_runs) {  // runs of kBilinearRun columns from a three-column window (the CUDA gather)
        for (; w + kBilinearRun <= w_hi; w += kBilinearRun) {
          ColumnRun<kBilinearRun, acc_t> run;
          const int64_t base = bilinear_columns<kBilinearRun, acc_t, int64_t>(w - ox, scale_w, run);
          acc_t v[kBilinearRun];
          bilinear_run_values<kBilinearRun>(x_bc, ty.i0 * A.sx.h, ty.i1 * A.sx.h, pl.Win, base, ty, run, v);
          for (int i = 0; i < kBilinearRun; ++i) u_row[w + i] += v[i];
        }
      }
      if (col_taps) {  // the remaining columns from the call's column taps
        const Tap<acc_t, int64_t>* t = col_taps + k * A.W;
        for (; w < w_hi; ++w) u_row[w] += bilinear_value<acc_t>(r0, r1, A.sx.w, ty, t[w]);
      } else {
        for (; w < w_hi; ++w)
          u_row[w] += bilinear_value<acc_t>(r0, r1, A.sx.w, ty, linear_tap<acc_t, int64_t>(w - ox, pl.Win, scale_w));
      }
    }
    for (int64_t w = w_lo; w < w_hi; ++w) cov[w] = 1;
  }
}

// a_row[w] = act(delta[b?, c?, h, w]) (activate(), the CUDA kernels' function), and its
// derivative when dact_row is given. The activation is a compile-time constant inside each loop,
// so the loops vectorise; the forward and backward visit each (c, h) row once per batch chunk, so
// this is the only pass over the program. bd: delta's batch index (the sample, or the bank's program).
template <typename acc_t, typename scalar_t>
inline void fill_activation_row(const MaskedPerturbArgs& A, const scalar_t* delta, int64_t bd, int64_t c, int64_t h,
                                acc_t* __restrict a_row, acc_t* __restrict dact_row) {
  const scalar_t* d = delta + A.sd.at(bd, c, h, 0);
  const int64_t W = A.W, sw = A.sd.w;
  dispatch(A.pw.activation, [&](auto act) {
    constexpr Activation kAct = decltype(act)::value;
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) a_row[w] = activate<kAct>(static_cast<acc_t>(d[w * sw]));
    if (dact_row) {
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) dact_row[w] = activation_derivative<kAct>(a_row[w]);
    }
  });
}

// m_row[w] = mask[b?, c?, h / s, w / s], or 1 without a mask.
template <typename acc_t, typename scalar_t>
inline void fill_mask_row(const MaskedPerturbArgs& A, const scalar_t* mask, int64_t b, int64_t c, int64_t h, acc_t* m_row) {
  if (!A.has_mask) {
    std::fill(m_row, m_row + A.W, acc_t(1));
    return;
  }
  const int64_t s = A.pw.mask_scale;
  const scalar_t* mr = mask + A.sm.at(b, c, h / s, 0);
  if (s == 1) {
    for (int64_t w = 0; w < A.W; ++w) m_row[w] = static_cast<acc_t>(mr[w * A.sm.w]);
  } else {  // mask column q covers canvas columns q * s .. q * s + s - 1 (no division per element)
    for (int64_t q = 0, w = 0; w < A.W; ++q) {
      const acc_t v = static_cast<acc_t>(mr[q * A.sm.w]);
      for (const int64_t end = std::min(A.W, w + s); w < end; ++w) m_row[w] = v;
    }
  }
}

// o[w] = the output of one row (perturb_value of pointwise variant P, the function the CUDA
// kernels call, over row buffers; vectorised).
template <class P, typename acc_t, typename scalar_t>
inline void perturb_row(int64_t W, const acc_t* __restrict u, const uint8_t* __restrict cov, const acc_t* __restrict a,
                 const acc_t* __restrict m, const ChannelConstants<acc_t> k, scalar_t* __restrict o) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) o[w] = static_cast<scalar_t>(perturb_value<P, acc_t>(u[w], cov[w] != 0, a[w], m[w], k));
}

}  // namespace reprogram_ext
