// tokens_to_canvas's per-element formulas, shared by the CPU row loops and the CUDA kernels.
//
// Output element (b, c, h, w); inside the grid (cell g = gy * Gw + gx, gy = (h - oy) / Ph,
// gx = (w - ox) / Pw) the patch value u = patch_weight_c * act(table[cells[b, g], c, (h - oy) % Ph,
// (w - ox) % Pw]), else u = 0;
//   v   = base_weight_c * base + u + m * act(program)      (terms present only when given; in this order)
//   out = (clamp(v, lo, hi) - mean_c) * inv_std_c          (normalize="after"), else clamp(v, lo, hi)
// Backward: dout/dv = inv_std_c (normalize) where lo <= v <= hi (clamp, both ends inclusive as
// torch.clamp), else 0; dv/dtable = patch_weight_c * act'(a), dv/dprogram = m * act'(a),
// dv/dbase = base_weight_c.
#pragma once

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace tokens_to_canvas {

// The per-channel constants of norm [4, C].
template <typename acc_t>
struct ChannelConstants {
  acc_t mean, inv_std, base_weight, patch_weight;
};

template <typename acc_t>
C10_HOST_DEVICE inline ChannelConstants<acc_t> channel_constants(const acc_t* norm, int64_t C, int64_t c) {
  return ChannelConstants<acc_t>{norm[c], norm[C + c], norm[2 * C + c], norm[3 * C + c]};
}

// out = (clamp(v) - mean) * inv_std, or clamp(v).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t finish_value(acc_t v, bool has_clamp, acc_t lo, acc_t hi, bool normalize,
                                          const ChannelConstants<acc_t>& k) {
  if (has_clamp) v = v < lo ? lo : (v > hi ? hi : v);
  return normalize ? (v - k.mean) * k.inv_std : v;
}

// Whether the clamp passes the gradient at v (lo <= v <= hi, as torch.clamp; NaN passes nothing).
template <typename acc_t>
C10_HOST_DEVICE inline bool clamp_passes(acc_t v, bool has_clamp, acc_t lo, acc_t hi) {
  return !has_clamp || (v >= lo && v <= hi);
}

// The linear offset of (b?, c?, h) in a [B', C', H, W] tensor whose batch / channel may broadcast.
C10_HOST_DEVICE inline int64_t canvas_row(int64_t Bt, int64_t Ct, int64_t H, int64_t W, int64_t b, int64_t c,
                                          int64_t h) {
  return (((Bt == 1 ? 0 : b) * Ct + (Ct == 1 ? 0 : c)) * H + h) * W;
}

}  // namespace tokens_to_canvas
}  // namespace reprogram_ext
