// The old per-sample mask-cell kernel's thread code (csrc/masked_perturb/mask_grad_thread.h, the body of
// masked_perturb_mask_grad_kernel in cuda.cu, with the gathers of kernel_gathers.h), executed on the
// host for every cell of small problems. Checked against the CPU kernel's order in the accumulation
// dtype: cell (b, c, q, r) bit for bit equal to the sum of perturb_element_backward's gm over its
// footprint, each footprint row left to right from 0, the rows top to bottom with the first assigned
// (store_cell_row_sums, cpu.cpp), with u / covered summed over the copies in order from 0 as
// fill_placed_row (cpu_rows.h) does: bilinear with linear_tap_trunc rows and linear_tap columns.
// Over float / double / half / bfloat16 (x of the same dtype or uint8), int32 (FastDivmod) and int64 index math, the 128-bit layout
// (s % VEC == 0, W % VEC == 0) and the scalar one, mask_scale 1 .. 9 with H, W not multiples of s,
// C 1 and 3, a mask per channel or broadcast, a delta per sample / per channel / shared, blend add and
// replace, clamp, normalize before / after, activations, resize none / nearest / bilinear, copies
// cut by the canvas edge, several copies, and copy offsets from the kernel arguments or the array.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "expect.h"

#include "masked_perturb/mask_grad_thread.h"

using namespace reprogram_ext;

static uint32_t rng = 2468;
static float uniform() {  // in [-1, 1)
  rng = rng * 1664525u + 1013904223u;
  return static_cast<float>(rng >> 8) / static_cast<float>(1 << 23) - 1.0f;
}

struct Case {
  int32_t B, C, H, W, s;
  bool mask_per_channel;
  int delta_kind;  // 0 shared, 1 per channel (shared by the batch), 2 per sample and channel
  Blend blend;
  bool clamp;
  Normalize normalize;
  ResizeMode resize;
  int32_t Hin, Win, Hr, Wr;
  std::vector<int32_t> offsets;  // (oy, ox) pairs
  bool offsets_array;            // read from the array (the dynamic layout's device array), not oy / ox
};

template <typename scalar_t, typename index_t, bool kVec, Activation kAct, typename x_t = scalar_t>
void check(const Case& cs) {
  using acc_t = acc_type_t<scalar_t>;
  using L = DynamicLayout<kVec>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int32_t B = cs.B, C = cs.C, H = cs.H, W = cs.W, s = cs.s, Hm = (H + s - 1) / s, Wm = (W + s - 1) / s;
  if (kVec && (s % VEC != 0 || W % VEC != 0)) {
    EXPECT(false, "case not on the 128-bit layout: s %d W %d VEC %d", s, W, VEC);
    return;
  }
  const int32_t Cm = cs.mask_per_channel ? C : 1, Bd = cs.delta_kind == 2 ? B : 1, Cd = cs.delta_kind ? C : 1;
  const int n_copies = static_cast<int>(cs.offsets.size() / 2);
  const bool need_u = cs.blend == Blend::kReplace || cs.clamp;
  std::vector<x_t> x(static_cast<size_t>(B) * C * cs.Hin * cs.Win);
  std::vector<scalar_t> grad_out(static_cast<size_t>(B) * C * H * W), delta(static_cast<size_t>(Bd) * Cd * H * W), mask(static_cast<size_t>(B) * Cm * Hm * Wm);
  std::vector<acc_t> norm(2 * C);
  for (auto& v : grad_out) v = static_cast<scalar_t>(uniform());
  for (auto& v : x) {
    const float f = uniform();
    if constexpr (std::is_same_v<x_t, uint8_t>) v = static_cast<uint8_t>(rng >> 24);  // 0 .. 255
    else v = static_cast<x_t>(0.5f * (f + 1.0f));
  }
  for (auto& v : delta) v = static_cast<scalar_t>(0.5f * uniform());
  for (auto& v : mask) v = static_cast<scalar_t>(0.5f * (uniform() + 1.0f));
  for (int32_t c = 0; c < C; ++c) norm[c] = 0.4f + 0.1f * c, norm[C + c] = 1.0f / (0.2f + 0.05f * c);
  std::vector<int64_t> offsets64(cs.offsets.begin(), cs.offsets.end());

  // The kernel arguments as kernel_args (cuda.cu) and launch_cells set them.
  KernelArgs<acc_t, index_t> p{};
  p.B = B, p.C = C, p.H = H, p.W = W, p.Bd = Bd, p.Bm = B;
  p.gpr = (W + VEC - 1) / VEC, p.groups = C * H * p.gpr, p.plane = C * H * W;
  const index_t sx[4] = {C * cs.Hin * cs.Win, cs.Hin * cs.Win, cs.Win, 1};
  const index_t sd[4] = {Bd > 1 ? Cd * H * W : 0, Cd > 1 ? H * W : 0, W, 1};
  const index_t sm[4] = {Cm * Hm * Wm, Cm > 1 ? Hm * Wm : 0, Wm, 1};
  for (int t = 0; t < 4; ++t) p.sx[t] = sx[t], p.sd[t] = sd[t], p.sm[t] = sm[t];
  p.Hin = cs.Hin, p.Win = cs.Win, p.Hr = cs.Hr, p.Wr = cs.Wr;
  if (cs.resize != ResizeMode::kNone) {
    p.lin_scale_h = static_cast<acc_t>(cs.Hin) / static_cast<acc_t>(cs.Hr);
    p.lin_scale_w = static_cast<acc_t>(cs.Win) / static_cast<acc_t>(cs.Wr);
    p.near_scale_h = static_cast<float>(cs.Hin) / static_cast<float>(cs.Hr);
    p.near_scale_w = static_cast<float>(cs.Win) / static_cast<float>(cs.Wr);
  }
  p.resize = cs.resize, p.mask_kind = MaskKind::kScaled, p.mask_scale = s, p.num_copies = n_copies;
  p.offsets = cs.offsets_array ? offsets64.data() : nullptr;
  bool x_vec = kVec && cs.resize == ResizeMode::kNone && cs.Win % VEC == 0;
  for (int k = 0; k < n_copies; ++k) {
    if (k < kMaxArgCopies) p.oy[k] = cs.offsets[2 * k], p.ox[k] = cs.offsets[2 * k + 1];
    x_vec = x_vec && cs.offsets[2 * k + 1] % VEC == 0;
  }
  p.x_vec = x_vec;
  p.pw = Pointwise{kAct, cs.blend, cs.normalize == Normalize::kBefore, cs.normalize == Normalize::kAfter, cs.clamp,
                   -0.3, 0.6, s};
  if constexpr (std::is_same_v<index_t, int32_t>) {
    p.div_gpr = FastDivmod(p.gpr), p.div_h = FastDivmod(H), p.div_c = FastDivmod(C), p.div_s = FastDivmod(s);
  }
  CellGrid<index_t> cg{Hm, Wm, B * C * Hm * Wm, {}, {}};
  if constexpr (std::is_same_v<index_t, int32_t>) cg.div_hm = FastDivmod(Hm), cg.div_wm = FastDivmod(Wm);

  // u, covered of canvas position (b, c, h, w) as fill_placed_row: the copies in order, from 0.
  auto placed = [&](int32_t b, int32_t c, int32_t h, int32_t w, acc_t& u, bool& cov) {
    u = 0, cov = false;
    const x_t* xb = x.data() + b * sx[0] + c * sx[1];
    for (int k = 0; k < n_copies; ++k) {
      const int32_t y = h - cs.offsets[2 * k], xw = w - cs.offsets[2 * k + 1];
      if (y < 0 || y >= cs.Hr || xw < 0 || xw >= cs.Wr) continue;
      cov = true;
      if (cs.resize == ResizeMode::kNone) {
        u += load_input<acc_t>(xb, y * sx[2] + xw);
      } else if (cs.resize == ResizeMode::kNearest) {
        const int64_t ys = nearest_source<int64_t>(y, cs.Hin, cs.Hr, p.near_scale_h);
        u += load_input<acc_t>(xb, ys * sx[2] + nearest_source<int64_t>(xw, cs.Win, cs.Wr, p.near_scale_w));
      } else {
        const auto ty = linear_tap_trunc<acc_t, int64_t>(y, cs.Hin, p.lin_scale_h);
        u += bilinear_value<acc_t>(xb + ty.i0 * sx[2], xb + ty.i1 * sx[2], int64_t(1), ty,
                                   linear_tap<acc_t, int64_t>(xw, cs.Win, p.lin_scale_w));
      }
    }
  };

  int checked = 0;
  for (int32_t b = 0; b < B; ++b)
    for (int32_t c = 0; c < C; ++c) {
      const auto k = channel_constants<acc_t>(p.pw, norm.data(), C, c);
      for (int32_t q = 0; q < Hm; ++q)
        for (int32_t r = 0; r < Wm; ++r) {
          const index_t cell = ((b * C + c) * Hm + q) * Wm + r;
          const acc_t got = mask_grad_cell<scalar_t, x_t, kAct, L, index_t>(
              p, cg, cell, grad_out.data(), x.data(), delta.data(), mask.data(), norm.data(), need_u);
          const acc_t m = static_cast<acc_t>(mask[b * sm[0] + c * sm[1] + q * Wm + r]);
          acc_t cpu = 0;
          for (int32_t h = q * s; h < std::min(H, q * s + s); ++h) {
            acc_t t = 0;
            for (int32_t w = r * s; w < std::min(W, r * s + s); ++w) {
              const acc_t g = static_cast<acc_t>(grad_out[((b * C + c) * H + h) * W + w]);
              const acc_t a = activate<kAct>(static_cast<acc_t>(delta[b * sd[0] + c * sd[1] + h * W + w]));
              acc_t u = 0;
              bool cov = false;
              if (need_u) placed(b, c, h, w, u, cov);
              t += perturb_element_backward<acc_t>(g, u, cov, a, m, k).gm;
            }
            cpu = h == q * s ? t : cpu + t;
          }
          EXPECT(std::memcmp(&got, &cpu, sizeof(acc_t)) == 0,
                 "%zu-byte x %zu-byte VEC %d kVec %d int%zu act %d B %d C %d H %d W %d s %d: cell %lld = %.17g, CPU order %.17g",
                 sizeof(scalar_t), sizeof(x_t), VEC, kVec, 8 * sizeof(index_t), static_cast<int>(kAct), B, C, H, W, s,
                 static_cast<long long>(cell), static_cast<double>(got), static_cast<double>(cpu));
          ++checked;
        }
    }
  EXPECT(checked == B * C * Hm * Wm && checked > 0, "%d cells checked", checked);
}

int main() {
  using A = Activation;
  const Blend add = Blend::kAdd, rep = Blend::kReplace;
  const Normalize none = Normalize::kNone, before = Normalize::kBefore, after = Normalize::kAfter;
  const ResizeMode rnone = ResizeMode::kNone, nearest = ResizeMode::kNearest, bilinear = ResizeMode::kBilinear;
  // mask_scale 1 .. 9 on the scalar layout, H and W not multiples of s; replace and clamp read the
  // placed input, one copy cut by the right and bottom edges.
  for (int32_t s = 1; s <= 9; ++s) {
    const int32_t H = 2 * s + (s > 1 ? 1 : 0), W = 3 * s - (s > 1 ? 1 : 0);
    const Case cs{2, 3, H, W, s, false, 0, rep, s % 2 == 0, before, rnone, H - 1, W, H - 1, W, {1, 2}, false};
    check<float, int32_t, false, A::kNone>(cs);
    check<float, int64_t, false, A::kNone>(cs);
    const Case cs1{3, 1, H + 2, W + 1, s, true, 2, add, true, after, rnone, H, W, H, W, {-1, 1}, false};
    check<float, int32_t, false, A::kTanh>(cs1);
  }
  // The 128-bit layout (float: VEC 4) with x_vec copies at column offsets multiple of 4, a second copy
  // overlapping, H not a multiple of s; a per-sample delta; without the placed input (blend add).
  check<float, int32_t, true, A::kNone>({2, 3, 10, 16, 4, true, 2, rep, false, before, rnone, 8, 8, 8, 8, {0, 4, 3, 8}, false});
  check<float, int32_t, true, A::kSigmoid>({3, 3, 17, 24, 8, false, 1, rep, true, after, rnone, 9, 16, 9, 16, {2, 0}, false});
  check<float, int64_t, true, A::kTanh>({2, 1, 13, 32, 8, true, 2, add, false, none, rnone, 5, 5, 5, 5, {0, 0}, false});
  check<float, int32_t, true, A::kNone>({2, 3, 9, 16, 4, false, 2, add, true, none, rnone, 6, 7, 6, 7, {1, 5}, false});
  // Resized copies: nearest and bilinear, the second with offsets from the array; 18 copies (more
  // than kMaxArgCopies) from the array.
  check<float, int32_t, false, A::kNone>({2, 3, 11, 13, 3, false, 0, rep, true, before, nearest, 4, 5, 9, 11, {1, 1}, false});
  check<float, int32_t, true, A::kTanh>({2, 3, 12, 16, 8, true, 1, rep, false, none, bilinear, 5, 6, 11, 13, {0, 2}, true});
  check<float, int32_t, false, A::kSigmoid>({2, 3, 14, 15, 5, false, 2, rep, false, after, bilinear, 7, 4, 10, 12, {2, -1}, false});
  {
    std::vector<int32_t> many;
    for (int k = 0; k < 18; ++k) many.push_back(k % 5 - 1), many.push_back(k % 7 - 2);
    check<float, int32_t, false, A::kNone>({2, 3, 9, 11, 3, false, 0, rep, false, none, rnone, 4, 4, 4, 4, many, true});
  }
  // double (VEC 2), half / bfloat16 (VEC 8, float accumulation: load_vec_as' bfloat16 bits).
  check<double, int32_t, true, A::kTanh>({2, 3, 11, 12, 6, false, 2, rep, true, before, rnone, 8, 10, 8, 10, {1, 2}, false});
  check<double, int64_t, false, A::kNone>({2, 1, 7, 9, 2, true, 0, add, true, none, rnone, 7, 9, 7, 9, {0, 0}, false});
  check<c10::Half, int32_t, true, A::kNone>({2, 3, 13, 16, 8, false, 2, rep, true, after, rnone, 9, 8, 9, 8, {2, 8}, false});
  check<c10::BFloat16, int32_t, true, A::kSigmoid>({2, 3, 9, 24, 8, true, 1, rep, false, before, rnone, 9, 16, 9, 16, {0, 8}, false});
  check<c10::BFloat16, int32_t, false, A::kTanh>({3, 3, 11, 13, 5, false, 2, add, true, none, nearest, 6, 6, 11, 13, {0, 0}, false});
  check<c10::Half, int64_t, false, A::kNone>({2, 1, 10, 11, 7, true, 0, rep, false, none, rnone, 8, 9, 8, 9, {1, 1}, false});
  // uint8 input (load_input: x / 255): 128-bit layout with x_vec, scalar layout with nearest resize.
  check<float, int32_t, true, A::kNone, uint8_t>({2, 3, 11, 16, 4, false, 2, rep, true, before, rnone, 8, 12, 8, 12, {1, 4}, false});
  check<c10::Half, int32_t, false, A::kTanh, uint8_t>({2, 3, 10, 13, 3, true, 0, rep, false, none, nearest, 5, 6, 9, 11, {0, 1}, false});
  check<double, int64_t, false, A::kSigmoid, uint8_t>({2, 1, 9, 10, 4, false, 1, add, true, after, rnone, 9, 10, 9, 10, {0, 0}, false});
  return report();
}
