// The fused per-sample-mask backward's thread code (csrc/masked_perturb/cell_backward_thread.h, the body
// of masked_perturb_cell_backward_kernel), executed on the host: for every block, every thread's
// prologue and row pass, then (the barrier) every thread's cell and delta passes, on shared buffers as
// the kernel's. Checked against
// - the CPU kernel's order, in float: each cell's gradient bit for bit equal to the sum of
//   perturb_element_backward's gm over its footprint, rows left to right from 0, then top to bottom
//   (store_cell_row_sums, cpu.cpp);
// - the formula in double: cell = sum over the footprint of g inv_std act(delta), delta gradient =
//   act'(delta) sum_b g inv_std m (relative 1e-5);
// for mask_scale 4, 8 (SMM) and 16, a mask broadcast over channels or one per channel, a delta
// broadcast over channels, activations none / sigmoid / tanh, normalize before / after, and with and
// without a delta gradient (the delta output is then untouched).
// And the channel-summed launch of a one-channel mask (the block's C channel groups, then
// cell_thread_summed_cells): each [B, 1, Hm, Wm] cell bit for bit the CPU order's channel cells added in
// channel order from channel 0 (sum_channels_in_order, args.h), and the formula summed over the channels.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "expect.h"

#include "masked_perturb/cell_backward_thread.h"

using namespace reprogram_ext;
using namespace reprogram_ext::cell_tiling;

static uint32_t rng = 12345;
static float uniform() {  // in [-1, 1)
  rng = rng * 1664525u + 1013904223u;
  return static_cast<float>(rng >> 8) / static_cast<float>(1 << 23) - 1.0f;
}

static double act_ref(Activation a, double d) {
  if (a == Activation::kTanh) return std::tanh(d);
  if (a == Activation::kSigmoid) return 1 / (1 + std::exp(-d));
  return d;
}
static double dact_ref(Activation a, double y) {
  if (a == Activation::kTanh) return 1 - y * y;
  if (a == Activation::kSigmoid) return y * (1 - y);
  return 1;
}

struct Case {
  int32_t B, C, H, W;
  bool mask_per_channel, delta_per_channel, normalize_after, with_delta;
  bool summed = false;  // the channel-summed launch (a one-channel mask: mask_per_channel false)
};

template <Activation kAct, int S>
void check(const Case& cs) {
  const int32_t B = cs.B, C = cs.C, H = cs.H, W = cs.W, Hm = (H + S - 1) / S, Wm = (W + S - 1) / S;
  const int32_t Cm = cs.mask_per_channel ? C : 1, Cd = cs.delta_per_channel ? C : 1;
  std::vector<float> grad_out(static_cast<size_t>(B) * C * H * W), delta(static_cast<size_t>(Cd) * H * W),
      mask(static_cast<size_t>(B) * Cm * Hm * Wm), norm(2 * C);
  for (float& v : grad_out) v = uniform();
  for (float& v : delta) v = uniform();
  for (float& v : mask) v = 0.5f * (uniform() + 1.0f);
  for (int32_t c = 0; c < C; ++c) norm[c] = 0.4f + 0.1f * c, norm[C + c] = 1.0f / (0.2f + 0.05f * c);
  CellBackwardArgs<float> p{};
  p.g = Geometry{B, C, H, W, Hm, Wm};
  p.sd_c = cs.delta_per_channel ? H * W : 0, p.sd_h = W;
  p.sm_b = Cm * Hm * Wm, p.sm_c = cs.mask_per_channel ? Hm * Wm : 0, p.sm_h = Wm, p.sm_w = 1;
  p.pw = Pointwise{kAct, Blend::kAdd, !cs.normalize_after, cs.normalize_after, false, 0.0, 0.0, S};
  const float untouched = -12345.0f;
  EXPECT(!(cs.summed && cs.mask_per_channel), "a channel-summed case takes a one-channel mask");
  const int32_t out_C = cs.summed ? 1 : C, grid_z = cs.summed ? 1 : C, block_c = cs.summed ? C : 1;
  std::vector<float> grad_mask(static_cast<size_t>(B) * out_C * Hm * Wm, untouched), grad_delta(static_cast<size_t>(C) * H * W, untouched);
  for (int32_t bz = 0; bz < grid_z; ++bz)
    for (int32_t by = 0; by < Hm; ++by)
      for (int32_t bx = 0; bx < strips<S>(Wm); ++bx) {
        // the kernel's shared memory: every channel group's row slots, then every group's partials
        std::vector<float> rows(block_c * row_slots<S>(B), NAN), parts(block_c * partial_slots<S>(), NAN);
        std::vector<CellThread<float, S>> th(block_c * kThreads);
        for (int32_t cz = 0; cz < block_c; ++cz)
          for (int j = 0; j < kChunks; ++j)
            for (int tx = 0; tx < kRowThreads; ++tx) {
              CellThread<float, S>& t = th[cz * kThreads + j * kRowThreads + tx];
              const int32_t c = cs.summed ? cz : bz;
              if (cs.normalize_after)  // the kernel's kNormAfter = pw.normalize_after
                cell_thread_begin<float, kAct, S, true>(p, delta.data(), norm.data(), bx, by, c, tx, j, t);
              else
                cell_thread_begin<float, kAct, S, false>(p, delta.data(), norm.data(), bx, by, c, tx, j, t);
              cell_thread_rows<float, S>(p, grad_out.data(), mask.data(), cs.with_delta, t,
                                         rows.data() + cz * row_slots<S>(B), parts.data() + cz * partial_slots<S>());
            }
        for (const auto& t : th) {  // after the barrier
          const int32_t cz = cs.summed ? t.blk.c : 0;
          if (cs.summed) cell_thread_summed_cells<float, S>(p.g, t, rows.data(), grad_mask.data());
          else cell_thread_cells<float, S>(p.g, t, rows.data(), grad_mask.data());
          if (cs.with_delta)
            cell_thread_deltas<float, kAct, S>(p, delta.data(), t, parts.data() + cz * partial_slots<S>(), grad_delta.data());
        }
      }
  // The CPU's order in float, and the formula in double.
  std::vector<double> ref_delta(grad_delta.size(), 0), scale_delta(grad_delta.size(), 0);
  // summed: per cell of [B, 1, Hm, Wm] the CPU-order channel cells added in channel order, and the formula
  std::vector<float> cpu_sum(grad_mask.size(), 0);
  std::vector<double> ref_sum(grad_mask.size(), 0), scale_sum(grad_mask.size(), 0);
  for (int32_t b = 0; b < B; ++b)
    for (int32_t c = 0; c < C; ++c) {
      const auto k = channel_constants<float>(p.pw, norm.data(), C, c);
      const double inv = cs.normalize_after ? norm[C + c] : 1.0;
      for (int32_t q = 0; q < Hm; ++q)
        for (int32_t r = 0; r < Wm; ++r) {
          const float m = mask[static_cast<size_t>(b) * p.sm_b + c * p.sm_c + q * Wm + r];
          float cpu = 0;
          double ref = 0, scale = 0;
          for (int32_t h = q * S; h < std::min(H, q * S + S); ++h) {
            float t = 0;
            for (int32_t w = r * S; w < std::min(W, r * S + S); ++w) {
              const float g = grad_out[((static_cast<size_t>(b) * C + c) * H + h) * W + w];
              const float d = delta[c * p.sd_c + h * W + w];
              t += perturb_element_backward<float>(g, 0.0f, false, activate<kAct>(d), m, k).gm;
              const double a = act_ref(kAct, d);
              ref += g * inv * a, scale += std::fabs(g * inv * a);
              const size_t pos = (static_cast<size_t>(c) * H + h) * W + w;
              ref_delta[pos] += g * inv * m * dact_ref(kAct, a), scale_delta[pos] += std::fabs(g * inv * m);
            }
            cpu = h == q * S ? t : cpu + t;
          }
          if (cs.summed) {
            const size_t cell = (static_cast<size_t>(b) * Hm + q) * Wm + r;
            cpu_sum[cell] = c == 0 ? cpu : cpu_sum[cell] + cpu;
            ref_sum[cell] += ref, scale_sum[cell] += scale;
            continue;
          }
          const size_t cell = ((static_cast<size_t>(b) * C + c) * Hm + q) * Wm + r;
          EXPECT(grad_mask[cell] == cpu, "S %d act %d B %d C %d H %d W %d: cell %zu = %.9g, CPU order %.9g", S,
                 static_cast<int>(kAct), B, C, H, W, cell, grad_mask[cell], cpu);
          EXPECT(std::fabs(grad_mask[cell] - ref) <= 1e-5 * scale + 1e-6, "S %d: cell %zu = %.9g, formula %.9g", S, cell,
                 grad_mask[cell], ref);
        }
    }
  for (size_t i = 0; cs.summed && i < grad_mask.size(); ++i) {
    EXPECT(grad_mask[i] == cpu_sum[i], "S %d act %d B %d C %d H %d W %d: summed cell %zu = %.9g, CPU order %.9g", S,
           static_cast<int>(kAct), B, C, H, W, i, grad_mask[i], cpu_sum[i]);
    EXPECT(std::fabs(grad_mask[i] - ref_sum[i]) <= 1e-5 * scale_sum[i] + 1e-6, "S %d: summed cell %zu = %.9g, formula %.9g",
           S, i, grad_mask[i], ref_sum[i]);
  }
  for (size_t i = 0; i < grad_delta.size(); ++i) {
    if (!cs.with_delta) {
      EXPECT(grad_delta[i] == untouched, "S %d: delta %zu written without a delta gradient", S, i);
      continue;
    }
    EXPECT(std::fabs(grad_delta[i] - ref_delta[i]) <= 1e-5 * scale_delta[i] + 1e-6,
           "S %d act %d B %d C %d H %d W %d: delta %zu = %.9g, formula %.9g", S, static_cast<int>(kAct), B, C, H, W, i,
           grad_delta[i], ref_delta[i]);
  }
}

// load16_as_acc: bfloat16 from the raw words equals c10::BFloat16's conversion, element by element, in
// order (and half / float the plain conversion), for values of both signs, subnormal, inf and NaN.
void check_load16_as_acc() {
  alignas(16) c10::BFloat16 b[8];
  alignas(16) c10::Half h[8];
  const float vals[] = {0.0f, -0.0f, 1.0f, -3.140625f, 1e-40f, -INFINITY, 6.5e4f, 2.5e38f, NAN, -1e-3f, 7.0f, 0.1f};
  const int n = static_cast<int>(sizeof(vals) / sizeof(vals[0]));
  for (int start = 0; start + 8 <= n; ++start) {
    for (int i = 0; i < 8; ++i) b[i] = c10::BFloat16(vals[start + i]), h[i] = c10::Half(vals[start + i]);
    float vb[8], vh[8];
    load16_as_acc<c10::BFloat16, 8>(b, vb);
    load16_as_acc<c10::Half, 8>(h, vh);
    for (int i = 0; i < 8; ++i) {
      const float wb = static_cast<float>(b[i]), wh = static_cast<float>(h[i]);
      EXPECT(memcmp(&vb[i], &wb, 4) == 0, "bfloat16 element %d of %d: %g, want %g", i, start, vb[i], wb);
      EXPECT(memcmp(&vh[i], &wh, 4) == 0, "half element %d of %d: %g, want %g", i, start, vh[i], wh);
    }
  }
}

int main() {
  check_load16_as_acc();
  // SMM's layout at a small size (one mask channel, normalize before, no activation, mask_scale 8),
  // then the other options around the edges (9 samples over 8 chunks, H ending inside a footprint,
  // partial strips).
  check<Activation::kNone, 8>({64, 3, 32, 64, false, true, false, true});
  check<Activation::kNone, 8>({9, 3, 20, 40, false, true, false, true});
  check<Activation::kSigmoid, 8>({5, 2, 17, 48, true, true, true, true});
  check<Activation::kTanh, 4>({3, 3, 13, 36, false, false, true, true});
  check<Activation::kNone, 4>({17, 1, 8, 32, true, true, false, false});
  check<Activation::kTanh, 16>({2, 3, 35, 48, true, true, true, true});
  // the channel-summed launch (one-channel mask on 2 or 3 channels): SMM's layout, then the edges
  check<Activation::kNone, 8>({64, 3, 32, 64, false, true, false, true, true});
  check<Activation::kNone, 8>({9, 3, 20, 40, false, true, false, true, true});
  check<Activation::kSigmoid, 4>({5, 2, 17, 36, false, false, true, true, true});
  check<Activation::kTanh, 16>({3, 3, 35, 48, false, true, true, false, true});
  check<Activation::kNone, 4>({40, 3, 8, 32, false, true, false, true, true});  // B R = 320 > 256 cells
  return report();
}
