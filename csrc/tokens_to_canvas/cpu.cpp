// C++ CPU kernels of tokens_to_canvas (formulas: math.h, docs/ops/tokens_to_canvas.md).
//
// Forward: one task per band of rows (b, one grid row of cells; or b and one row outside the grid):
// the band's rows of every channel are built in a buffer (base term, then each cell's whole
// activated patch, so that a token's table row is read as one contiguous block, then the program
// term: the order of the reference), finished (clamp, normalise) and stored: one write of the output.
// Backward, table: one task per range of patch rows walks the canvas in order (table_grad_part) and
// adds each cell's gradient block to its token's rows, the cells in ascending (b, g) order, so every
// table element is the same sum, in the same order, for any thread count, and no two tasks write the
// same element (no atomics); the rows of unused tokens are zero-filled by the same tasks (the
// gradient tensor is not zeroed first). Program and base: one task per canvas row (c, h) sums over
// the batch in ascending b.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common/cpu_clones.h"
#include "runtime/cpu_block_cache.h"
#include "tokens_to_canvas/math.h"
#include "tokens_to_canvas/options.h"

namespace reprogram_ext {
namespace tokens_to_canvas {
namespace {

using at::Tensor;

template <typename scalar_t>
using acc_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// at::parallel_for grain for tasks of `elems` elements each (about 32k elements per thread at least).
int64_t task_grain(int64_t elems) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, elems)); }

// Every cell's token in [0, V): the values are read before any table row is.
void check_cells(const Tensor& cells, int64_t V) {
  const int64_t* t = cells.data_ptr<int64_t>();
  const int64_t n = cells.numel();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(t[i] >= 0 && t[i] < V, "tokens_to_canvas: tokens must hold ids in [0, V=", V,
                      ") (V = table.shape[0]), got ", t[i]);
  }
}

struct Inputs {
  const int64_t* cells;
  const void* table;
  const void* program;
  const void* mask;
  const void* base;
  const void* norm;
};

// row[w] = base_weight * base (or 0).
template <typename scalar_t, typename A>
inline void init_row(const CanvasArgs& p, const Inputs& in, int64_t b, int64_t c, int64_t h,
                     const ChannelConstants<A>& k, A* row) {
  const int64_t W = p.W;
  if (p.has_base) {
    const scalar_t* br = static_cast<const scalar_t*>(in.base) + canvas_row(p.Bb, p.Cb, p.H, W, b, c, h);
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) row[w] = k.base_weight * static_cast<A>(br[w]);
  } else {
    std::fill(row, row + W, A(0));
  }
}

// row[w] = base_weight * base (or 0), then += u over the grid's span when h is a grid row.
template <Activation ACT, typename scalar_t, typename A>
inline void build_row(const CanvasArgs& p, const Inputs& in, int64_t b, int64_t c, int64_t h,
                      const ChannelConstants<A>& k, A* row) {
  init_row<scalar_t, A>(p, in, b, c, h, k, row);
  const int64_t y = h - p.oy;
  if (y >= 0 && y < p.Gh * p.Ph) {
    const int64_t gy = y / p.Ph, ph = y % p.Ph;
    const int64_t* cell = in.cells + b * p.G + gy * p.Gw;
    const scalar_t* table = static_cast<const scalar_t*>(in.table);
    for (int64_t gx = 0; gx < p.Gw; ++gx) {
      const scalar_t* tr = table + ((cell[gx] * p.C + c) * p.Ph + ph) * p.Pw;
      A* dst = row + p.ox + gx * p.Pw;
#pragma omp simd
      for (int64_t q = 0; q < p.Pw; ++q) dst[q] += k.patch_weight * activate<ACT, A>(static_cast<A>(tr[q]));
    }
  }
}

// row[w] += m * act(program) (m = 1 without a mask).
template <Activation ACT, typename scalar_t, typename A>
inline void add_program_row(const CanvasArgs& p, const Inputs& in, int64_t b, int64_t c, int64_t h, A* row) {
  if (!p.has_program) return;
  const scalar_t* pr = static_cast<const scalar_t*>(in.program) + canvas_row(p.Bp, p.Cp, p.H, p.W, b, c, h);
  if (p.has_mask) {
    const scalar_t* mr = static_cast<const scalar_t*>(in.mask) + canvas_row(p.Bm, p.Cm, p.H, p.W, b, c, h);
#pragma omp simd
    for (int64_t w = 0; w < p.W; ++w) row[w] += static_cast<A>(mr[w]) * activate<ACT, A>(static_cast<A>(pr[w]));
  } else {
#pragma omp simd
    for (int64_t w = 0; w < p.W; ++w) row[w] += activate<ACT, A>(static_cast<A>(pr[w]));
  }
}

// The canvas rows of a sample in bands: each grid row of cells is one band of Ph rows, each row
// outside the grid a band of its own. Band j of sample b: rows h0 .. h0 + n, grid row gy (or -1).
struct Band {
  int64_t h0, n, gy;
};

inline Band band_of(const CanvasArgs& p, int64_t j) {
  if (j < p.oy) return {j, 1, -1};
  if (j < p.oy + p.Gh) return {p.oy + (j - p.oy) * p.Ph, p.Ph, j - p.oy};
  return {j - p.Gh + p.Gh * p.Ph, 1, -1};
}

inline int64_t bands_per_sample(const CanvasArgs& p) { return p.Gh + p.H - p.Gh * p.Ph; }

// Forward tasks k0 .. k1 (task k = band k % bands of sample k / bands): the band's rows of every
// channel are built in buf (base term, then each cell's whole activated patch, cell by cell, so
// that a token's table row is read as one contiguous block, then the program term: the order of
// the reference), finished (clamp, normalise) and stored row by row.
template <Activation ACT, typename scalar_t>
void forward_bands(const CanvasArgs& p, const Inputs& in, scalar_t* out, int64_t k0, int64_t k1) {
  using A = acc_t<scalar_t>;
  const A* norm = static_cast<const A*>(in.norm);
  const A lo = static_cast<A>(p.lo), hi = static_cast<A>(p.hi);
  const scalar_t* table = static_cast<const scalar_t*>(in.table);
  const int64_t bands = bands_per_sample(p), W = p.W, Pw = p.Pw;
  std::vector<A> buf(p.C * p.Ph * W);
  for (int64_t task = k0; task < k1; ++task) {
    const int64_t b = task / bands;
    const Band band = band_of(p, task % bands);
    for (int64_t c = 0; c < p.C; ++c) {
      const ChannelConstants<A> k = channel_constants(norm, p.C, c);
      for (int64_t i = 0; i < band.n; ++i)
        init_row<scalar_t, A>(p, in, b, c, band.h0 + i, k, buf.data() + (c * band.n + i) * W);
    }
    if (band.gy >= 0) {
      const int64_t* cell = in.cells + b * p.G + band.gy * p.Gw;
      for (int64_t gx = 0; gx < p.Gw; ++gx) {
        const scalar_t* tr = table + cell[gx] * p.C * p.Ph * Pw;
        for (int64_t c = 0; c < p.C; ++c) {
          const A pw = channel_constants(norm, p.C, c).patch_weight;
          for (int64_t i = 0; i < p.Ph; ++i) {
            const scalar_t* src = tr + (c * p.Ph + i) * Pw;
            A* dst = buf.data() + (c * p.Ph + i) * W + p.ox + gx * Pw;
#pragma omp simd
            for (int64_t q = 0; q < Pw; ++q) dst[q] += pw * activate<ACT, A>(static_cast<A>(src[q]));
          }
        }
      }
    }
    for (int64_t c = 0; c < p.C; ++c) {
      const ChannelConstants<A> k = channel_constants(norm, p.C, c);
      for (int64_t i = 0; i < band.n; ++i) {
        const int64_t h = band.h0 + i;
        A* row = buf.data() + (c * band.n + i) * W;
        add_program_row<ACT, scalar_t, A>(p, in, b, c, h, row);
        scalar_t* o = out + ((b * p.C + c) * p.H + h) * W;
#pragma omp simd
        for (int64_t w = 0; w < W; ++w) o[w] = static_cast<scalar_t>(finish_value(row[w], p.has_clamp, lo, hi,
                                                                                     p.normalize, k));
      }
    }
  }
}

// float32 bands: also compiled for AVX2 and AVX-512 (common/cpu_clones.h).
RX_CPU_CLONES void forward_bands_f32(const CanvasArgs& p, const Inputs& in, float* out, int64_t k0, int64_t k1) {
  dispatch(p.activation, [&](auto act) { forward_bands<decltype(act)::value, float>(p, in, out, k0, k1); });
}

Tensor tokens_to_canvas_forward_cpu(const Tensor& cells, const Tensor& table, const std::optional<Tensor>& program,
                                    const std::optional<Tensor>& program_mask, const std::optional<Tensor>& base,
                                    RX_TOKENS_TO_CANVAS_OPTION_PARAMS) {
  const CanvasArgs p = make_canvas_args(cells, table, program, program_mask, base, RX_TOKENS_TO_CANVAS_OPTION_ARGS);
  check_cells(cells, p.V);
  Tensor out = empty_large_cpu({p.B, p.C, p.H, p.W}, table.options());  // huge pages: fewer first-touch faults
  if (out.numel() == 0) return out;
  const Inputs in{cells.data_ptr<int64_t>(), table.data_ptr(), program ? program->data_ptr() : nullptr,
                  program_mask ? program_mask->data_ptr() : nullptr, base ? base->data_ptr() : nullptr,
                  norm.data_ptr()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "tokens_to_canvas_forward", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, p.B * bands_per_sample(p), task_grain(p.C * p.Ph * p.W), [&](int64_t k0, int64_t k1) {
      if constexpr (std::is_same<scalar_t, float>::value) {
        forward_bands_f32(p, in, reinterpret_cast<float*>(o), k0, k1);
      } else {
        dispatch(p.activation, [&](auto act) { forward_bands<decltype(act)::value, scalar_t>(p, in, o, k0, k1); });
      }
    });
  });
  return out;
}

// first[t] / last[t] = the first / last cell (b * G + g, ascending) holding token t; -1 when none.
struct TokenSpans {
  std::vector<int64_t> first, last;
};

TokenSpans token_spans(const int64_t* cells, int64_t n, int64_t V) {
  TokenSpans s;
  s.first.assign(V, -1);
  s.last.assign(V, -1);
  for (int64_t e = 0; e < n; ++e) {
    if (s.first[cells[e]] < 0) s.first[cells[e]] = e;
    s.last[cells[e]] = e;
  }
  return s;
}

// grad_table rows r0 .. r1 of every token (row r = (c, ph) of the [C, Ph, Pw] patch): the sum, over
// the token's cells in ascending (b, g) order, of the gradient at v under that cell, times
// patch_weight_c * inv_std_c * act'(a). The canvas is walked in order, one grid row of cells
// (b, gy) at a time: for each patch row, the gradient at v of every cell (grad_out where the
// clamp passes v, v rebuilt as the forward builds it) goes to a scratch block, read from
// contiguous canvas rows; then, cell by cell in ascending gx, the block is added to its token's
// rows (set at the token's first cell, scaled at its last). So each element is the same sum, in
// the same order, for any split of the rows into tasks; no two tasks write the same element.
template <Activation ACT, typename scalar_t>
void table_grad_part(const CanvasArgs& p, const Inputs& in, const scalar_t* g, const TokenSpans& spans,
                     int64_t t0, int64_t t1, int64_t r0, int64_t r1, acc_t<scalar_t>* gt) {
  using A = acc_t<scalar_t>;
  const A* norm = static_cast<const A*>(in.norm);
  const A lo = static_cast<A>(p.lo), hi = static_cast<A>(p.hi);
  const scalar_t* table = static_cast<const scalar_t*>(in.table);
  const int64_t Pw = p.Pw, rows = p.C * p.Ph, n = (r1 - r0) * Pw;
  for (int64_t t = t0; t < t1; ++t) {  // unused tokens: zero rows
    if (spans.first[t] < 0) std::fill(gt + (t * rows + r0) * Pw, gt + (t * rows + r1) * Pw, A(0));
  }
  std::vector<A> block(p.Gw * n), vrow(Pw);
  for (int64_t strip = 0; strip < p.B * p.Gh; ++strip) {
    const int64_t b = strip / p.Gh, gy = strip % p.Gh;
    const int64_t* cell = in.cells + strip * p.Gw;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / p.Ph, h = p.oy + gy * p.Ph + r % p.Ph;
      const ChannelConstants<A> k = channel_constants(norm, p.C, c);
      const scalar_t* gr = g + canvas_row(p.B, p.C, p.H, p.W, b, c, h) + p.ox;
      const scalar_t* br = p.has_base ? static_cast<const scalar_t*>(in.base) +
                                            canvas_row(p.Bb, p.Cb, p.H, p.W, b, c, h) + p.ox : nullptr;
      const scalar_t* pr = p.has_program ? static_cast<const scalar_t*>(in.program) +
                                               canvas_row(p.Bp, p.Cp, p.H, p.W, b, c, h) + p.ox : nullptr;
      const scalar_t* mr = p.has_mask ? static_cast<const scalar_t*>(in.mask) +
                                            canvas_row(p.Bm, p.Cm, p.H, p.W, b, c, h) + p.ox : nullptr;
      for (int64_t gx = 0; gx < p.Gw; ++gx) {
        if (cell[gx] < t0 || cell[gx] >= t1) continue;
        const scalar_t* gq = gr + gx * Pw;
        A* out = block.data() + gx * n + (r - r0) * Pw;
        if (!p.has_clamp) {
#pragma omp simd
          for (int64_t q = 0; q < Pw; ++q) out[q] = static_cast<A>(gq[q]);
          continue;
        }
        // v as the forward builds it: base term, + u, + program term.
        const scalar_t* tr = table + (cell[gx] * rows + r) * Pw;
        A* v = vrow.data();
#pragma omp simd
        for (int64_t q = 0; q < Pw; ++q) {
          const A base = br ? k.base_weight * static_cast<A>(br[gx * Pw + q]) : A(0);
          v[q] = base + k.patch_weight * activate<ACT, A>(static_cast<A>(tr[q]));
        }
        if (pr) {
#pragma omp simd
          for (int64_t q = 0; q < Pw; ++q) {
            const A m = mr ? static_cast<A>(mr[gx * Pw + q]) : A(1);
            v[q] += m * activate<ACT, A>(static_cast<A>(pr[gx * Pw + q]));
          }
        }
#pragma omp simd
        for (int64_t q = 0; q < Pw; ++q) {  // the load is unconditional, so the select vectorises
          const A gv = static_cast<A>(gq[q]);
          out[q] = ((v[q] >= lo) & (v[q] <= hi)) ? gv : A(0);
        }
      }
    }
    for (int64_t gx = 0; gx < p.Gw; ++gx) {
      const int64_t t = cell[gx], e = strip * p.Gw + gx;
      if (t < t0 || t >= t1) continue;
      const A* src = block.data() + gx * n;
      A* dst = gt + (t * rows + r0) * Pw;
      if (e == spans.first[t]) {
#pragma omp simd
        for (int64_t q = 0; q < n; ++q) dst[q] = A(0) + src[q];
      } else {
#pragma omp simd
        for (int64_t q = 0; q < n; ++q) dst[q] += src[q];
      }
      if (e != spans.last[t]) continue;
      const scalar_t* tr = table + (t * rows + r0) * Pw;
      for (int64_t r = r0; r < r1; ++r) {
        const ChannelConstants<A> k = channel_constants(norm, p.C, r / p.Ph);
        const A scale = k.patch_weight * (p.normalize ? k.inv_std : A(1));
        const int64_t o = (r - r0) * Pw;
#pragma omp simd
        for (int64_t q = 0; q < Pw; ++q) {
          const A a = activate<ACT, A>(static_cast<A>(tr[o + q]));
          dst[o + q] = scale * activation_derivative<ACT, A>(a) * dst[o + q];
        }
      }
    }
  }
}

// float32: also compiled for AVX2 and AVX-512, as forward_bands_f32.
RX_CPU_CLONES void table_grad_part_f32(const CanvasArgs& p, const Inputs& in, const float* g,
                                       const TokenSpans& spans, int64_t t0, int64_t t1, int64_t r0, int64_t r1,
                                       float* gt) {
  dispatch(p.activation, [&](auto act) {
    table_grad_part<decltype(act)::value, float>(p, in, g, spans, t0, t1, r0, r1, gt);
  });
}

// grad_program / grad_base at canvas row (c, h): the gradient at v of each sample b (ascending),
// written per sample or summed over the batch when the tensor is shared (batch 1).
template <Activation ACT, typename scalar_t>
void canvas_grad_row(const CanvasArgs& p, const Inputs& in, const scalar_t* g, int64_t c, int64_t h,
                     acc_t<scalar_t>* gp, acc_t<scalar_t>* gb, std::vector<acc_t<scalar_t>>& row) {
  using A = acc_t<scalar_t>;
  const ChannelConstants<A> k = channel_constants(static_cast<const A*>(in.norm), p.C, c);
  const A lo = static_cast<A>(p.lo), hi = static_cast<A>(p.hi);
  const A inv = p.normalize ? k.inv_std : A(1);
  const int64_t W = p.W;
  for (int64_t b = 0; b < p.B; ++b) {
    if (p.has_clamp) {
      build_row<ACT, scalar_t, A>(p, in, b, c, h, k, row.data());
      add_program_row<ACT, scalar_t, A>(p, in, b, c, h, row.data());
    }
    const scalar_t* gr = g + ((b * p.C + c) * p.H + h) * W;
    if (gb) {
      A* o = gb + (((p.Bb == 1 ? 0 : b) * p.C + c) * p.H + h) * W;
      for (int64_t w = 0; w < W; ++w) {
        const A gv = clamp_passes(row[w], p.has_clamp, lo, hi) ? static_cast<A>(gr[w]) * inv : A(0);
        o[w] += k.base_weight * gv;
      }
    }
    if (gp) {
      A* o = gp + (((p.Bp == 1 ? 0 : b) * p.C + c) * p.H + h) * W;
      const scalar_t* pr = static_cast<const scalar_t*>(in.program) + canvas_row(p.Bp, p.Cp, p.H, W, b, c, h);
      const scalar_t* mr = p.has_mask ? static_cast<const scalar_t*>(in.mask) +
                                            canvas_row(p.Bm, p.Cm, p.H, W, b, c, h) : nullptr;
      for (int64_t w = 0; w < W; ++w) {
        const A gv = clamp_passes(row[w], p.has_clamp, lo, hi) ? static_cast<A>(gr[w]) * inv : A(0);
        const A m = mr ? static_cast<A>(mr[w]) : A(1);
        o[w] += gv * m * activation_derivative<ACT, A>(activate<ACT, A>(static_cast<A>(pr[w])));
      }
    }
  }
}

std::tuple<Tensor, Tensor, Tensor> tokens_to_canvas_backward_cpu(
    const Tensor& grad_out, const Tensor& cells, const Tensor& table, const std::optional<Tensor>& program,
    const std::optional<Tensor>& program_mask, const std::optional<Tensor>& base, RX_TOKENS_TO_CANVAS_OPTION_PARAMS,
    std::array<bool, 3> needs) {
  const CanvasArgs p = make_canvas_args(cells, table, program, program_mask, base, RX_TOKENS_TO_CANVAS_OPTION_ARGS);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({p.B, p.C, p.H, p.W}) && grad_out.is_contiguous() &&
                  grad_out.scalar_type() == table.scalar_type(),
              "tokens_to_canvas: grad_out must be a contiguous [B, C, H, W] tensor of table's dtype");
  check_cells(cells, p.V);
  const auto acc = table.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = table.options().dtype(acc);
  // Every row written below; huge pages when large (a V = 30k table's gradient is 92 MB).
  Tensor gt = needs[0] ? empty_large_cpu(table.sizes(), opts) : at::empty({0}, opts);
  Tensor gp = needs[1] && program ? at::zeros({p.Bp, p.C, p.H, p.W}, opts) : at::empty({0}, opts);
  Tensor gb = needs[2] && base ? at::zeros({p.Bb, p.C, p.H, p.W}, opts) : at::empty({0}, opts);
  if (grad_out.numel() == 0) return {gt.zero_(), gp, gb};
  const Inputs in{cells.data_ptr<int64_t>(), table.data_ptr(), program ? program->data_ptr() : nullptr,
                  program_mask ? program_mask->data_ptr() : nullptr, base ? base->data_ptr() : nullptr,
                  norm.data_ptr()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "tokens_to_canvas_backward", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    dispatch(p.activation, [&](auto act) {
      constexpr Activation ACT = decltype(act)::value;
      if (needs[0]) {
        // One task per thread, each walking the whole canvas in order: a range of patch rows of every
        // token for a small table; for a large one (over 4 MB, past a core's cache) a range of tokens,
        // so that each task's gradient rows (and first-touch page faults) are contiguous.
        const TokenSpans spans = token_spans(in.cells, p.B * p.G, p.V);
        const int64_t rows = p.C * p.Ph, threads = at::get_num_threads();
        const bool by_token = p.V * rows * p.Pw * int64_t(sizeof(A)) > (int64_t(4) << 20);
        const int64_t parts = by_token ? std::min<int64_t>(p.V, threads) : std::min<int64_t>(rows, threads);
        A* gtp = gt.data_ptr<A>();
        at::parallel_for(0, parts, 1, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t t0 = by_token ? i * p.V / parts : 0, t1 = by_token ? (i + 1) * p.V / parts : p.V;
            const int64_t r0 = by_token ? 0 : i * rows / parts, r1 = by_token ? rows : (i + 1) * rows / parts;
            if constexpr (std::is_same<scalar_t, float>::value) {
              table_grad_part_f32(p, in, reinterpret_cast<const float*>(g), spans, t0, t1, r0, r1,
                                  reinterpret_cast<float*>(gtp));
            } else {
              table_grad_part<ACT, scalar_t>(p, in, g, spans, t0, t1, r0, r1, gtp);
            }
          }
        });
      }
      A* gpp = gp.numel() ? gp.data_ptr<A>() : nullptr;
      A* gbp = gb.numel() ? gb.data_ptr<A>() : nullptr;
      if (gpp || gbp) {
        at::parallel_for(0, p.C * p.H, task_grain(p.W * p.B), [&](int64_t r0, int64_t r1) {
          std::vector<A> row(p.W);
          for (int64_t r = r0; r < r1; ++r) canvas_grad_row<ACT, scalar_t>(p, in, g, r / p.H, r % p.H, gpp, gbp, row);
        });
      }
    });
  });
  return {gt, gp, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("tokens_to_canvas_forward", &tokens_to_canvas_forward_cpu);
  m.impl("tokens_to_canvas_backward", &tokens_to_canvas_backward_cpu);
}

}  // namespace tokens_to_canvas
}  // namespace reprogram_ext
