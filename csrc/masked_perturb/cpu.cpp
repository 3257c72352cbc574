// C++ CPU kernels of masked_perturb (formula: math.h, docs/ops/masked_perturb.md).
//
// Work is split into rows (c, h) of the canvas, times batch chunks. Per row the activated delta
// and the mask are computed once and reused for every sample of the chunk; the placed input is
// gathered into a row buffer; the output row is then one branch-free, vectorisable loop.
// Forward: one read of x (+ delta, mask), one write of the output (streaming stores when it is
// large, common/streaming_store.h: no read of the output's lines before they are written).
// Backward: one read of the output gradient; the batch sum of the delta/mask gradient runs in a
// fixed order per position over the chunks of reduction_chunks() (a function of the shape only),
// then the chunk partials are summed: deterministic (CUDA sums its own chunks, cuda.cu). A
// per-sample mask's gradient is summed into its cells at mask resolution inside the task, which
// then holds the s footprint rows of one mask row (s = mask_scale). Math, normalisation and
// accumulation in acc_t (float32; float64 for float64 tensors, whose gradients are float64 too).
//
// Prompt bank (V programs delta[v], bank=True): a task's placed input row of sample b is gathered
// once and used for all V programs (output row v * B + b); the V activated program rows are computed
// once per task. The backward sums program v's gradient over the batch into its own partial rows,
// and the mask / input gradients over the V programs as well.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <type_traits>
#include <vector>

#include "masked_perturb/args.h"
#include "masked_perturb/cpu_rows.h"
#include "masked_perturb/specialize.h"
#include "common/cpu_clones.h"
#include "common/streaming_store.h"
#include "runtime/cpu_block_cache.h"

namespace reprogram_ext {
namespace {

using at::Tensor;

// Element gradients of one row into row buffers ga, gm, gu (vectorised).
template <typename acc_t, typename scalar_t>
void perturb_row_backward(int64_t W, const scalar_t* __restrict g, const acc_t* __restrict u,
                          const uint8_t* __restrict cov, const acc_t* __restrict a, const acc_t* __restrict m,
                          const ChannelConstants<acc_t> k, acc_t* __restrict ga, acc_t* __restrict gm,
                          acc_t* __restrict gu) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) {
    const auto e = perturb_element_backward<acc_t>(static_cast<acc_t>(g[w]), u[w], cov[w] != 0, a[w], m[w], k);
    ga[w] = e.ga;
    gm[w] = e.gm;
    gu[w] = e.gu;
  }
}

// out[w] = x[w] * scale[w], or x[w] when scale is null.
template <typename acc_t>
void store_row(int64_t W, const acc_t* __restrict x, const acc_t* __restrict scale, acc_t* __restrict out) {
  if (scale) {
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) out[w] = x[w] * scale[w];
  } else {
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) out[w] = x[w];
  }
}

template <typename acc_t, typename T>
void accumulate_row(int64_t W, const T* __restrict x, acc_t* __restrict acc) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) acc[w] += static_cast<acc_t>(x[w]);
}

// out[w] = s * x[w] * y[w] * z[w] (z may be null): linear_gradient (math.h), the CUDA flat backward's too.
template <typename acc_t>
void store_scaled_product(int64_t W, acc_t s, const acc_t* __restrict x, const acc_t* __restrict y,
                          const acc_t* __restrict z, acc_t* __restrict out) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) out[w] = linear_gradient<acc_t>(s, x[w], y[w], z ? z[w] : acc_t(1));
}

// acc[w] += x[w] * y[w].
template <typename acc_t>
void accumulate_product(int64_t W, const acc_t* __restrict x, const acc_t* __restrict y, acc_t* __restrict acc) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) acc[w] += x[w] * y[w];
}

// cells[q] (+)= sum of g[w] over the footprint columns of mask column q (mask_footprint, math.h), left to
// right from 0; assigned on a task's first footprint row (`first`), added on the next rows.
template <typename acc_t>
void store_cell_row_sums(int64_t W, int64_t s, const acc_t* __restrict g, bool first, acc_t* __restrict cells) {
  for (int64_t q = 0; q * s < W; ++q) {
    const auto f = mask_footprint<int64_t>(q, s, W);
    acc_t t = 0;
    for (int64_t w = f.begin; w < f.end; ++w) t += g[w];
    cells[q] = first ? t : cells[q] + t;
  }
}

// Asks for the n elements at p in the caches ahead of their use (a canvas row of the next sample: the
// backward reads 64 such short rows per canvas row, too short for the hardware prefetcher to follow).
template <typename T>
void prefetch_row(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(p + i, 0, 3);
}

// at::parallel_for grain for tasks of `elems` elements each: about 32k elements per thread at
// least, so that small calls run on one thread instead of paying for waking the others.
int64_t task_grain(int64_t elems) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, elems)); }

// sums[j, p] = sum over b in batch chunk j (in order) of g[b, p], for every position p of a plane:
// the plane is cut into contiguous spans, so each sample contributes one long sequential read.
constexpr int64_t kSpan = 4096;

// Tasks [begin, end) of batch_chunk_sums: task = (chunk j, span of kSpan positions).
template <typename acc_t, typename scalar_t>
void chunk_sum_tasks(const scalar_t* g, int64_t B, int64_t plane, int64_t chunks, acc_t* sums, int64_t begin,
                     int64_t end) {
  const int64_t spans = (plane + kSpan - 1) / kSpan;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t j = task / spans, p0 = (task % spans) * kSpan, len = std::min(kSpan, plane - p0);
    acc_t* acc = sums + j * plane + p0;
    std::fill(acc, acc + len, acc_t(0));
    for (int64_t b = chunk_begin(B, chunks, j); b < chunk_begin(B, chunks, j + 1); ++b) {
      accumulate_row<acc_t>(len, g + b * plane + p0, acc);
    }
  }
}

RX_CPU_CLONES void chunk_sum_tasks_f32(const float* g, int64_t B, int64_t plane, int64_t chunks, float* sums,
                                       int64_t begin, int64_t end) {
  chunk_sum_tasks<float, float>(g, B, plane, chunks, sums, begin, end);
}

template <typename acc_t, typename scalar_t>
void batch_chunk_sums(const scalar_t* g, int64_t B, int64_t plane, int64_t chunks, acc_t* sums) {
  const int64_t spans = (plane + kSpan - 1) / kSpan;
  at::parallel_for(0, chunks * spans, task_grain(kSpan * ((B + chunks - 1) / chunks)), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      chunk_sum_tasks_f32(g, B, plane, chunks, sums, begin, end);
    } else {
      chunk_sum_tasks<acc_t, scalar_t>(g, B, plane, chunks, sums, begin, end);
    }
  });
}

// Batch chunks for the forward pass: enough (chunk, row) tasks to keep every thread busy.
int64_t forward_chunks(int64_t B, int64_t rows) {
  const int64_t want = 4 * at::get_num_threads();
  return std::max<int64_t>(1, std::min<int64_t>(B, (want + rows - 1) / std::max<int64_t>(rows, 1)));
}

// The op's inputs as typed pointers (mask may be null).
template <typename scalar_t, typename x_t>
struct PerturbInputs {
  const x_t* x;
  const scalar_t* delta;
  const scalar_t* mask;
  const acc_type_t<scalar_t>* norm;  // (mean, 1 / std) in the accumulation dtype

  PerturbInputs(const MaskedPerturbArgs& A, const Tensor& x_, const Tensor& delta_,
                const std::optional<Tensor>& mask_, const Tensor& norm_)
      : x(x_.const_data_ptr<x_t>()),
        delta(delta_.const_data_ptr<scalar_t>()),
        mask(A.has_mask ? mask_->const_data_ptr<scalar_t>() : nullptr),
        norm(norm_.const_data_ptr<acc_type_t<scalar_t>>()) {}
};

// The forward's inputs and output and its batch chunking.
template <typename scalar_t, typename x_t>
struct ForwardData {
  PerturbInputs<scalar_t, x_t> in;
  scalar_t* out;
  int64_t chunks;
  bool stream;  // output rows go through a row buffer and streaming stores (a large output: streaming_store.h)
};

// Forward tasks [begin, end): task = (batch chunk j, row (c, h)); every program v of a bank in each.
template <typename scalar_t, typename x_t>
void forward_tasks(const MaskedPerturbArgs& A, const ForwardData<scalar_t, x_t>& d, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t rows = A.C * A.H, W = A.W, V = A.V;
  std::vector<acc_t> a_rows(V * W), m_row(W), u_row(W);  // a_rows: program v's activated row at v * W
  std::vector<uint8_t> cov(W);
  std::vector<scalar_t> o_row(d.stream ? W : 0);
  const auto col_taps = bilinear_column_taps<acc_t>(A);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t j = task / rows, c = (task % rows) / A.H, h = task % A.H;
    const auto k = channel_constants<acc_t>(A.pw, d.in.norm, A.C, c);
    const int64_t b0 = chunk_begin(A.B, d.chunks, j), b1 = chunk_begin(A.B, d.chunks, j + 1);
    for (int64_t b = b0; b < b1; ++b) {
      if (b == b0 || A.delta_per_sample) {
        for (int64_t v = 0; v < V; ++v)
          fill_activation_row<acc_t>(A, d.in.delta, A.delta_per_sample ? b : v, c, h, a_rows.data() + v * W, nullptr);
      }
      if (b == b0 || A.Bm > 1) fill_mask_row<acc_t>(A, d.in.mask, b, c, h, m_row.data());
      fill_placed_row<acc_t>(A, d.in.x + A.sx.at(b, c, 0, 0), h, u_row.data(), cov.data(),
                             col_taps.empty() ? nullptr : col_taps.data());
      dispatch_pointwise(A.pw, [&](auto p) {
        for (int64_t v = 0; v < V; ++v) {
          scalar_t* o = d.out + (((v * A.B + b) * A.C + c) * A.H + h) * W;
          perturb_row<decltype(p), acc_t>(W, u_row.data(), cov.data(), a_rows.data() + v * W, m_row.data(), k,
                                          d.stream ? o_row.data() : o);
          if (d.stream) store_row_streaming(o_row.data(), o, W);
        }
      });
    }
  }
  if (d.stream) streaming_fence();
}

RX_CPU_CLONES void forward_tasks_f32(const MaskedPerturbArgs& A, const ForwardData<float, float>& d, int64_t begin,
                                     int64_t end) {
  forward_tasks<float, float>(A, d, begin, end);
}

template <typename scalar_t, typename x_t>
void forward_cpu(const MaskedPerturbArgs& A, ForwardData<scalar_t, x_t> d) {
  const int64_t rows = A.C * A.H;
  d.chunks = forward_chunks(A.B, rows);
  d.stream = static_cast<size_t>(A.V * A.B * rows * A.W) * sizeof(scalar_t) >= kStreamingMinBytes;
  const int64_t grain = task_grain(A.V * A.W * ((A.B + d.chunks - 1) / d.chunks));
  at::parallel_for(0, d.chunks * rows, grain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<x_t, float>) {
      forward_tasks_f32(A, d, begin, end);
    } else {
      forward_tasks<scalar_t, x_t>(A, d, begin, end);
    }
  });
}

// The backward's inputs and outputs (typed pointers), its batch chunking and which path it takes.
// Linear case (blend add, no clamp, delta and mask shared, no input gradient): with
// G_v = sum_b grad_out[v, b] (`sums`, per program v and batch chunk), grad_delta[v] = inv_std * m *
// act'(delta[v]) * G_v and grad_mask = inv_std * sum_v act(delta[v]) * G_v, so the batch loop is a
// plain row sum.
template <typename scalar_t, typename x_t>
struct BackwardData {
  using acc_t = acc_type_t<scalar_t>;
  const scalar_t* grad_out;
  PerturbInputs<scalar_t, x_t> in;
  acc_t* grad_delta;
  acc_t* grad_mask;
  acc_t* grad_placed;
  int64_t chunks;
  bool linear_shared;
  bool need_u;  // the placed input enters the element gradients
  const acc_t* sums;  // [V, chunks, C * H * W] in the linear case
  // Canvas rows per task: mask_scale s when a per-sample mask's gradient is reduced at mask resolution
  // in the task (its footprint rows), else 1.
  int64_t task_rows;
};

// The linear case's task (chunk j, row): grad_delta[v, j] and grad_mask[j] of one canvas row.
template <typename scalar_t, typename x_t>
void linear_backward_row(const MaskedPerturbArgs& A, const BackwardData<scalar_t, x_t>& d,
                         const ChannelConstants<acc_type_t<scalar_t>>& k, int64_t j, int64_t c, int64_t h,
                         acc_type_t<scalar_t>* a_row, acc_type_t<scalar_t>* dact_row, acc_type_t<scalar_t>* m_row,
                         acc_type_t<scalar_t>* acc_m) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t W = A.W, plane = A.C * A.H * A.W, row = (c * A.H + h) * W;
  fill_mask_row<acc_t>(A, d.in.mask, 0, c, h, m_row);
  if (A.V > 1) std::fill(acc_m, acc_m + W, acc_t(0));
  for (int64_t v = 0; v < A.V; ++v) {
    fill_activation_row<acc_t>(A, d.in.delta, v, c, h, a_row, dact_row);
    const int64_t part = v * d.chunks + j;  // partial row of (program v, chunk j)
    const acc_t* G = d.sums + part * plane + row;
    if (d.grad_delta) store_scaled_product<acc_t>(W, k.after_inv_std, G, m_row, dact_row, d.grad_delta + part * plane + row);
    if (d.grad_mask && A.V == 1) store_scaled_product<acc_t>(W, k.after_inv_std, G, a_row, nullptr, d.grad_mask + j * plane + row);
    if (d.grad_mask && A.V > 1) accumulate_product<acc_t>(W, G, a_row, acc_m);
  }
  if (d.grad_mask && A.V > 1) {
    acc_t* out = d.grad_mask + j * plane + row;
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) out[w] = k.after_inv_std * acc_m[w];
  }
}

// Backward tasks [begin, end): task = (batch chunk j, channel c, rows h0 .. h0 + task_rows - 1); every
// program v of a bank in each. A per-sample mask's gradient goes straight to its cells at mask
// resolution: the task holds every footprint row of its mask row h0 / s, so each cell has one writer.
template <typename scalar_t, typename x_t>
void backward_tasks(const MaskedPerturbArgs& A, const BackwardData<scalar_t, x_t>& d, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t R = d.task_rows, row_groups = (A.H + R - 1) / R, rows = A.C * row_groups;
  const int64_t W = A.W, V = A.V, plane = A.C * A.H * A.W, s = A.pw.mask_scale;
  const auto [Hm, Wm] = mask_resolution(A);
  // program v's rows at v * W: activated delta, its derivative, the delta-gradient batch sum
  std::vector<acc_t> a_rows(V * W), dact_rows(V * W), acc_d(V * W);
  std::vector<acc_t> m_row(W), u_row(W, acc_t(0)), acc_m(W), ga(W), gm(W), gu(W), sum_gm(W), sum_gu(W);
  std::vector<uint8_t> cov(W, 0);
  const auto col_taps = d.need_u ? bilinear_column_taps<acc_t>(A) : std::vector<Tap<acc_t, int64_t>>();
  const bool shared_d = d.grad_delta && !A.delta_per_sample, shared_m = d.grad_mask && A.Bm == 1;
  const bool sample_m = d.grad_mask && A.Bm > 1;
  // A task's footprint rows share one mask row per sample: filled on the first, kept for the others.
  const bool keep_m = sample_m && R > 1;
  std::vector<acc_t> m_rows(keep_m ? (A.B + d.chunks - 1) / d.chunks * W : 0);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t j = task / rows, c = (task % rows) / row_groups, hg = task % row_groups;
    const auto k = channel_constants<acc_t>(A.pw, d.in.norm, A.C, c);
    const int64_t b0 = chunk_begin(A.B, d.chunks, j), b1 = chunk_begin(A.B, d.chunks, j + 1);
    for (int64_t h = hg * R; h < std::min(A.H, hg * R + R); ++h) {
      const int64_t row = (c * A.H + h) * W;
      if (d.linear_shared) {
        linear_backward_row(A, d, k, j, c, h, a_rows.data(), dact_rows.data(), m_row.data(), acc_m.data());
        continue;
      }
      const bool first_row = h == hg * R;  // of the mask cells of sample_m
      std::fill(acc_d.begin(), acc_d.end(), acc_t(0));
      std::fill(acc_m.begin(), acc_m.end(), acc_t(0));
      for (int64_t b = b0; b < b1; ++b) {
        if (b == b0 || A.delta_per_sample) {
          for (int64_t v = 0; v < V; ++v)
            fill_activation_row<acc_t>(A, d.in.delta, A.delta_per_sample ? b : v, c, h, a_rows.data() + v * W,
                                       dact_rows.data() + v * W);
        }
        acc_t* mr = keep_m ? m_rows.data() + (b - b0) * W : m_row.data();
        if (keep_m ? first_row : b == b0 || A.Bm > 1) fill_mask_row<acc_t>(A, d.in.mask, b, c, h, mr);
        if (d.need_u) {
          fill_placed_row<acc_t>(A, d.in.x + A.sx.at(b, c, 0, 0), h, u_row.data(), cov.data(),
                                 col_taps.empty() ? nullptr : col_taps.data());
        }
        for (int64_t v = 0; b + 1 < b1 && v < V; ++v) prefetch_row(d.grad_out + (v * A.B + b + 1) * plane + row, W);
        if (V > 1) {  // the mask / input gradients of sample b are summed over the programs first
          std::fill(sum_gm.begin(), sum_gm.end(), acc_t(0));
          std::fill(sum_gu.begin(), sum_gu.end(), acc_t(0));
        }
        for (int64_t v = 0; v < V; ++v) {
          perturb_row_backward<acc_t>(W, d.grad_out + (v * A.B + b) * plane + row, u_row.data(), cov.data(),
                                      a_rows.data() + v * W, mr, k, ga.data(), gm.data(), gu.data());
          if (d.grad_delta && A.delta_per_sample) store_row<acc_t>(W, ga.data(), dact_rows.data(), d.grad_delta + b * plane + row);
          if (shared_d) accumulate_row<acc_t>(W, ga.data(), acc_d.data() + v * W);
          if (shared_m) accumulate_row<acc_t>(W, gm.data(), acc_m.data());
          if (sample_m && V > 1) accumulate_row<acc_t>(W, gm.data(), sum_gm.data());
          if (d.grad_placed && V == 1) store_row<acc_t>(W, gu.data(), nullptr, d.grad_placed + b * plane + row);
          if (d.grad_placed && V > 1) accumulate_row<acc_t>(W, gu.data(), sum_gu.data());
        }
        if (sample_m) {
          store_cell_row_sums<acc_t>(W, s, V > 1 ? sum_gm.data() : gm.data(), first_row,
                                     d.grad_mask + ((b * A.C + c) * Hm + h / s) * Wm);
        }
        if (d.grad_placed && V > 1) store_row<acc_t>(W, sum_gu.data(), nullptr, d.grad_placed + b * plane + row);
      }
      for (int64_t v = 0; shared_d && v < V; ++v)
        store_row<acc_t>(W, acc_d.data() + v * W, dact_rows.data() + v * W, d.grad_delta + (v * d.chunks + j) * plane + row);
      if (shared_m) store_row<acc_t>(W, acc_m.data(), nullptr, d.grad_mask + j * plane + row);
    }
  }
}

RX_CPU_CLONES void backward_tasks_f32(const MaskedPerturbArgs& A, const BackwardData<float, float>& d, int64_t begin,
                                      int64_t end) {
  backward_tasks<float, float>(A, d, begin, end);
}

template <typename scalar_t, typename x_t>
void backward_cpu(const MaskedPerturbArgs& A, BackwardData<scalar_t, x_t> d) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t W = A.W, plane = A.C * A.H * A.W;
  // u enters the gradients through clamp (whether v was clipped) and blend replace (the mask's
  // gradient g * (a - u), delta's (1 - m) factor does not depend on it); blend add's mask gradient
  // g * a does not read it.
  d.need_u = d.grad_placed || A.pw.has_clamp || A.pw.blend == Blend::kReplace;
  d.linear_shared =
      A.pw.blend == Blend::kAdd && !A.pw.has_clamp && !A.delta_per_sample && A.Bm == 1 && !d.grad_placed;
  d.task_rows = d.grad_mask && A.Bm > 1 ? A.pw.mask_scale : 1;
  std::unique_ptr<acc_t[]> sums;  // scratch, not initialised: batch_chunk_sums zeroes each span it sums
  if (d.linear_shared) {
    sums.reset(new acc_t[A.V * d.chunks * plane]);
    for (int64_t v = 0; v < A.V; ++v)  // program v's grad_out rows v * B ... v * B + B - 1
      batch_chunk_sums<acc_t>(d.grad_out + v * A.B * plane, A.B, plane, d.chunks, sums.get() + v * d.chunks * plane);
    d.sums = sums.get();
  }
  const int64_t task_rows = std::min(d.task_rows, std::max<int64_t>(A.H, 1));
  const int64_t per_task = task_rows * A.V * W * (d.linear_shared ? 1 : (A.B + d.chunks - 1) / d.chunks);
  const int64_t tasks = d.chunks * A.C * ((A.H + d.task_rows - 1) / d.task_rows);
  at::parallel_for(0, tasks, task_grain(per_task), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<x_t, float>) {
      backward_tasks_f32(A, d, begin, end);
    } else {
      backward_tasks<scalar_t, x_t>(A, d, begin, end);
    }
  });
}

Tensor masked_perturb_forward_cpu(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                                  RX_MASKED_PERTURB_OPTION_PARAMS, bool bank) {
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, bank);
  const auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  Tensor out = empty_large_cpu({A.V * A.B, A.C, A.H, A.W}, delta.options());
  if (out.numel() == 0) return out;
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    forward_cpu<scalar_t, x_t>(A, {{A, x, delta, mask, norm}, out.mutable_data_ptr<scalar_t>(), 1, false});
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> masked_perturb_backward_cpu(const Tensor& grad_out_in, const Tensor& x,
                                                               const Tensor& delta, const std::optional<Tensor>& mask,
                                                               RX_MASKED_PERTURB_OPTION_PARAMS,
                                                               std::array<bool, 3> needs, bool bank) {
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, bank);
  const auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  auto g = allocate_masked_perturb_grads(A, grad_out_in, delta, needs);
  if (masked_perturb_grads_empty(A)) return finish_masked_perturb_grads(A, g);
  const Tensor grad_out = grad_out_in.contiguous();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    using acc_t = acc_type_t<scalar_t>;
    backward_cpu<scalar_t, x_t>(A, {grad_out.const_data_ptr<scalar_t>(), {A, x, delta, mask, norm},
                                    g.delta_ptr<acc_t>(), g.mask_ptr<acc_t>(), g.placed_ptr<acc_t>(), g.chunks, false,
                                    false, nullptr, 1});
  });
  return finish_masked_perturb_grads(A, g);
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("masked_perturb_forward", &masked_perturb_forward_cpu);
  m.impl("masked_perturb_backward", &masked_perturb_backward_cpu);
}

}  // namespace reprogram_ext
