// C++ CPU kernels of masked_perturb (formula: math.h, docs/ops/masked_perturb.md).
//
// Work is split into rows (c, h) of the canvas, times batch chunks. Per row the activated delta
// and the mask are computed once and reused for every sample of the chunk; the placed input is
// gathered into a row buffer; the output row is then one branch-free, vectorisable loop.
// Forward: one read of x (+ delta, mask), one write of the output. Backward: one read of the
// output gradient; the batch sum of the delta/mask gradient runs in a fixed order per position
// over the chunks of reduction_chunks() (a function of the shape only), then the chunk partials
// are summed: deterministic, and the same order as the CUDA kernels.
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

// out[w] = (float) (x[w] * scale[w]), or x[w] when scale is null.
template <typename acc_t>
void store_row(int64_t W, const acc_t* __restrict x, const acc_t* __restrict scale, float* __restrict out) {
  if (scale) {
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) out[w] = static_cast<float>(x[w] * scale[w]);
  } else {
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) out[w] = static_cast<float>(x[w]);
  }
}

template <typename acc_t, typename T>
void accumulate_row(int64_t W, const T* __restrict x, acc_t* __restrict acc) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) acc[w] += static_cast<acc_t>(x[w]);
}

// out[w] = (float) (s * x[w] * y[w] * z[w]) (z may be null).
template <typename acc_t>
void store_scaled_product(int64_t W, acc_t s, const acc_t* __restrict x, const acc_t* __restrict y,
                          const acc_t* __restrict z, float* __restrict out) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) out[w] = static_cast<float>(s * x[w] * y[w] * (z ? z[w] : acc_t(1)));
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
  const float* norm;

  PerturbInputs(const MaskedPerturbArgs& A, const Tensor& x_, const Tensor& delta_,
                const std::optional<Tensor>& mask_, const Tensor& norm_)
      : x(x_.const_data_ptr<x_t>()),
        delta(delta_.const_data_ptr<scalar_t>()),
        mask(A.has_mask ? mask_->const_data_ptr<scalar_t>() : nullptr),
        norm(norm_.const_data_ptr<float>()) {}
};

// The forward's inputs and output and its batch chunking.
template <typename scalar_t, typename x_t>
struct ForwardData {
  PerturbInputs<scalar_t, x_t> in;
  scalar_t* out;
  int64_t chunks;
};

// Forward tasks [begin, end): task = (batch chunk j, row (c, h)).
template <typename scalar_t, typename x_t>
void forward_tasks(const MaskedPerturbArgs& A, const ForwardData<scalar_t, x_t>& d, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t rows = A.C * A.H;
  std::vector<acc_t> a_row(A.W), m_row(A.W), u_row(A.W);
  std::vector<uint8_t> cov(A.W);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t j = task / rows, c = (task % rows) / A.H, h = task % A.H;
    const auto k = channel_constants<acc_t>(A.pw, d.in.norm, A.C, c);
    const int64_t b0 = chunk_begin(A.B, d.chunks, j), b1 = chunk_begin(A.B, d.chunks, j + 1);
    for (int64_t b = b0; b < b1; ++b) {
      if (b == b0 || A.Bd > 1) fill_activation_row<acc_t>(A, d.in.delta, b, c, h, a_row.data(), nullptr);
      if (b == b0 || A.Bm > 1) fill_mask_row<acc_t>(A, d.in.mask, b, c, h, m_row.data());
      fill_placed_row<acc_t>(A, d.in.x + A.sx.at(b, c, 0, 0), h, u_row.data(), cov.data());
      dispatch_pointwise(A.pw, [&](auto p) {
        perturb_row<decltype(p), acc_t>(A.W, u_row.data(), cov.data(), a_row.data(), m_row.data(), k,
                                        d.out + ((b * A.C + c) * A.H + h) * A.W);
      });
    }
  }
}

RX_CPU_CLONES void forward_tasks_f32(const MaskedPerturbArgs& A, const ForwardData<float, float>& d, int64_t begin,
                                     int64_t end) {
  forward_tasks<float, float>(A, d, begin, end);
}

template <typename scalar_t, typename x_t>
void forward_cpu(const MaskedPerturbArgs& A, ForwardData<scalar_t, x_t> d) {
  const int64_t rows = A.C * A.H;
  d.chunks = forward_chunks(A.B, rows);
  const int64_t grain = task_grain(A.W * ((A.B + d.chunks - 1) / d.chunks));
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
// G = sum_b grad_out[b] (`sums`, per batch chunk), grad_delta = inv_std * m * act'(delta) * G and
// grad_mask = inv_std * a * G, so the batch loop is a plain row sum.
template <typename scalar_t, typename x_t>
struct BackwardData {
  const scalar_t* grad_out;
  PerturbInputs<scalar_t, x_t> in;
  float* grad_delta;
  float* grad_mask;
  float* grad_placed;
  int64_t chunks;
  bool linear_shared;
  bool need_u;  // the placed input enters the element gradients
  const acc_type_t<scalar_t>* sums;
};

// Backward tasks [begin, end): task = (batch chunk j, row (c, h)).
template <typename scalar_t, typename x_t>
void backward_tasks(const MaskedPerturbArgs& A, const BackwardData<scalar_t, x_t>& d, int64_t begin, int64_t end) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t rows = A.C * A.H, W = A.W, plane = A.C * A.H * A.W;
  std::vector<acc_t> a_row(W), dact_row(W), m_row(W), u_row(W, acc_t(0)), acc_d(W), acc_m(W);
  std::vector<acc_t> ga(W), gm(W), gu(W);
  std::vector<uint8_t> cov(W, 0);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t j = task / rows, c = (task % rows) / A.H, h = task % A.H;
    const auto k = channel_constants<acc_t>(A.pw, d.in.norm, A.C, c);
    const int64_t b0 = chunk_begin(A.B, d.chunks, j), b1 = chunk_begin(A.B, d.chunks, j + 1);
    const int64_t row = (c * A.H + h) * W;
    if (d.linear_shared) {
      fill_activation_row<acc_t>(A, d.in.delta, 0, c, h, a_row.data(), dact_row.data());
      fill_mask_row<acc_t>(A, d.in.mask, 0, c, h, m_row.data());
      const acc_t* G = d.sums + j * plane + row;
      if (d.grad_delta)
        store_scaled_product<acc_t>(W, k.after_inv_std, G, m_row.data(), dact_row.data(), d.grad_delta + j * plane + row);
      if (d.grad_mask)
        store_scaled_product<acc_t>(W, k.after_inv_std, G, a_row.data(), nullptr, d.grad_mask + j * plane + row);
      continue;
    }
    std::fill(acc_d.begin(), acc_d.end(), acc_t(0));
    std::fill(acc_m.begin(), acc_m.end(), acc_t(0));
    for (int64_t b = b0; b < b1; ++b) {
      if (b == b0 || A.Bd > 1) fill_activation_row<acc_t>(A, d.in.delta, b, c, h, a_row.data(), dact_row.data());
      if (b == b0 || A.Bm > 1) fill_mask_row<acc_t>(A, d.in.mask, b, c, h, m_row.data());
      if (d.need_u) fill_placed_row<acc_t>(A, d.in.x + A.sx.at(b, c, 0, 0), h, u_row.data(), cov.data());
      perturb_row_backward<acc_t>(W, d.grad_out + b * plane + row, u_row.data(), cov.data(), a_row.data(),
                                  m_row.data(), k, ga.data(), gm.data(), gu.data());
      if (d.grad_delta && A.Bd > 1) store_row<acc_t>(W, ga.data(), dact_row.data(), d.grad_delta + b * plane + row);
      if (d.grad_delta && A.Bd == 1) accumulate_row<acc_t>(W, ga.data(), acc_d.data());
      if (d.grad_mask && A.Bm > 1) store_row<acc_t>(W, gm.data(), nullptr, d.grad_mask + b * plane + row);
      if (d.grad_mask && A.Bm == 1) accumulate_row<acc_t>(W, gm.data(), acc_m.data());
      if (d.grad_placed) store_row<acc_t>(W, gu.data(), nullptr, d.grad_placed + b * plane + row);
    }
    if (d.grad_delta && A.Bd == 1) store_row<acc_t>(W, acc_d.data(), dact_row.data(), d.grad_delta + j * plane + row);
    if (d.grad_mask && A.Bm == 1) store_row<acc_t>(W, acc_m.data(), nullptr, d.grad_mask + j * plane + row);
  }
}

RX_CPU_CLONES void backward_tasks_f32(const MaskedPerturbArgs& A, const BackwardData<float, float>& d, int64_t begin,
                                      int64_t end) {
  backward_tasks<float, float>(A, d, begin, end);
}

template <typename scalar_t, typename x_t>
void backward_cpu(const MaskedPerturbArgs& A, BackwardData<scalar_t, x_t> d) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t rows = A.C * A.H, W = A.W;
  d.need_u = d.grad_mask || d.grad_placed || A.pw.has_clamp || A.pw.blend == Blend::kReplace;
  d.linear_shared = A.pw.blend == Blend::kAdd && !A.pw.has_clamp && A.Bd == 1 && A.Bm == 1 && !d.grad_placed;
  std::unique_ptr<acc_t[]> sums;  // scratch, not initialised: batch_chunk_sums zeroes each span it sums
  if (d.linear_shared) {
    sums.reset(new acc_t[d.chunks * A.C * A.H * A.W]);
    batch_chunk_sums<acc_t>(d.grad_out, A.B, A.C * A.H * A.W, d.chunks, sums.get());
    d.sums = sums.get();
  }
  const int64_t grain = d.linear_shared ? task_grain(W) : task_grain(W * ((A.B + d.chunks - 1) / d.chunks));
  at::parallel_for(0, d.chunks * rows, grain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<x_t, float>) {
      backward_tasks_f32(A, d, begin, end);
    } else {
      backward_tasks<scalar_t, x_t>(A, d, begin, end);
    }
  });
}

Tensor masked_perturb_forward_cpu(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                                  RX_MASKED_PERTURB_OPTION_PARAMS) {
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS);
  const auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  Tensor out = empty_large_cpu({A.B, A.C, A.H, A.W}, delta.options());
  if (out.numel() == 0) return out;
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    forward_cpu<scalar_t, x_t>(A, {{A, x, delta, mask, norm}, out.mutable_data_ptr<scalar_t>(), 1});
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> masked_perturb_backward_cpu(const Tensor& grad_out_in, const Tensor& x,
                                                               const Tensor& delta, const std::optional<Tensor>& mask,
                                                               RX_MASKED_PERTURB_OPTION_PARAMS,
                                                               std::array<bool, 3> needs) {
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS);
  const auto A = make_masked_perturb_args(x, delta, mask, norm, o);
  auto g = allocate_masked_perturb_grads(A, grad_out_in, delta, needs);
  if (A.B == 0) return finish_masked_perturb_grads(A, g);
  const Tensor grad_out = grad_out_in.contiguous();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    backward_cpu<scalar_t, x_t>(A, {grad_out.const_data_ptr<scalar_t>(), {A, x, delta, mask, norm},
                                    g.delta_ptr(), g.mask_ptr(), g.placed_ptr(), g.chunks, false, false, nullptr});
  });
  return finish_masked_perturb_grads(A, g);
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("masked_perturb_forward", &masked_perturb_forward_cpu);
  m.impl("masked_perturb_backward", &masked_perturb_backward_cpu);
}

}  // namespace reprogram_ext
