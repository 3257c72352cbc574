// C++ CPU kernels of the perturbation bank and of the directions' weighted sum (formulas: math.h,
// reprogram_ext/ops/perturbation_bank/philox.py, docs/blackbox.md).
//
// perturbation_bank, in two phases:
//   1. programs P[k] = act(theta + sign_k * fl(beta * u_{j_k})) for the nq queries built, in the
//      compute dtype ([nq, d]: d = theta's elements, the only extra memory); the directions are
//      generated block by block (each direction once, shared by an antithetic pair) and never
//      stored; the sphere's norm is a first pass of exact int64 sums per block;
//   2. the canvas rows: per (row (c, h), sample b) the placed input, coverage and mask rows are built
//      once (x read once) and every query's output row is perturb_value(u, a = P[k] row, m)
//      (masked_perturb's row helpers and element math, csrc/masked_perturb/cpu_rows.h).
// perturbation_bank_combine: out[i] = sum_j w_j u_j[i] (segmented: w_j / Delta_j[i]), j ascending,
// per block of elements (the sphere's norms first).
//
// The directions must be the reference's bits: floating-point contraction is off in this file
// (philox.h rounds every operation once; an fma would round twice less).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "masked_perturb/cpu_rows.h"
#include "perturbation_bank/args.h"
#include "runtime/cpu_block_cache.h"

namespace reprogram_ext {
namespace {

using at::Tensor;

constexpr int64_t kBlock = 4096;  // elements of a direction per task (a multiple of 4: whole groups)

// Parallel-for grain for tasks of ~`elems` elements: ~32k elements per thread at least.
int64_t grain_for(int64_t elems) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, elems)); }

constexpr int kLanes = 16;  // element groups generated together (64 elements)

// Philox4x32-10 (philox.h's philox4x32_10) of the kLanes counters (r0, r1, r2, r3)[l] under the key
// (k0, k1), in place. The high and low words are separate products and the lanes separate arrays:
// the form the compiler vectorises.
void philox_rounds(uint32_t* __restrict r0, uint32_t* __restrict r1, uint32_t* __restrict r2,
                   uint32_t* __restrict r3, uint32_t k0, uint32_t k1) {
  using philox::kA, philox::kB;
  for (int round = 0; round < 10; ++round) {
    for (int l = 0; l < kLanes; ++l) {
      const uint32_t hi_a = static_cast<uint32_t>((static_cast<uint64_t>(kA) * r0[l]) >> 32), lo_a = kA * r0[l];
      const uint32_t hi_b = static_cast<uint32_t>((static_cast<uint64_t>(kB) * r2[l]) >> 32), lo_b = kB * r2[l];
      r0[l] = hi_b ^ r1[l] ^ k0;
      r2[l] = hi_a ^ r3[l] ^ k1;
      r1[l] = lo_b;
      r3[l] = lo_a;
    }
    k0 += philox::kW0;
    k1 += philox::kW1;
  }
}

// v[0 .. 4 kLanes) = raw values of the groups g0 .. g0 + kLanes of direction j: the steps of
// raw_direction4 (philox.h), each written as a loop over the lanes so that the compiler vectorises
// it (the 32x32->64 products, the polynomials, the divisions and square roots). The same operations
// on the same operands, each rounded once: the same bits as raw_direction4.
void raw_groups(Directions kind, uint64_t seed, uint32_t j, uint64_t g0, float* v) {
  using namespace philox;
  uint32_t r0[kLanes], r1[kLanes], r2[kLanes], r3[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const uint64_t g = g0 + static_cast<uint64_t>(l);
    r0[l] = static_cast<uint32_t>(g), r1[l] = static_cast<uint32_t>(g >> 32), r2[l] = j, r3[l] = 0u;
  }
  philox_rounds(r0, r1, r2, r3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  if (kind == Directions::kSegmented) {
    for (int l = 0; l < kLanes; ++l) {
      v[4 * l] = segmented(r0[l]), v[4 * l + 1] = segmented(r1[l]);
      v[4 * l + 2] = segmented(r2[l]), v[4 * l + 3] = segmented(r3[l]);
    }
    return;
  }
  float z[4][kLanes];
  for (int pair = 0; pair < 2; ++pair) {  // Box-Muller of (r0, r1) -> lanes 0, 1 and (r2, r3) -> lanes 2, 3
    const uint32_t* ra = pair == 0 ? r0 : r2;
    const uint32_t* rb = pair == 0 ? r1 : r3;
    for (int l = 0; l < kLanes; ++l) {
      // exact: both < 2^24, so the int32 conversion equals box_muller's uint32 one
      const float n = static_cast<float>(static_cast<int32_t>(2u * (ra[l] >> 9) + 1u));
      const int32_t m = static_cast<int32_t>(2u * (rb[l] >> 9) + 1u);
      const float radius = fsqrt(fmul(log_u24(n), -2.0f));
      float c, sn;
      sincos_turn24(m, &c, &sn);
      z[2 * pair][l] = fmul(radius, c);
      z[2 * pair + 1][l] = fmul(radius, sn);
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    for (int q = 0; q < 4; ++q) v[4 * l + q] = z[q][l];
  }
}

// v[0 .. n) = raw values (z or Delta) of elements e0 .. e0 + n of direction j (e0 % 4 == 0):
// kLanes groups at a time, the last partial batch one group at a time.
void raw_block(Directions kind, uint64_t seed, uint32_t j, int64_t e0, int64_t n, float* v) {
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) raw_groups(kind, seed, j, static_cast<uint64_t>((e0 + i) >> 2), v + i);
  float four[4];
  for (; i < n; i += 4) {
    raw_direction4(kind, seed, j, static_cast<uint64_t>((e0 + i) >> 2), four);
    const int64_t lanes = std::min<int64_t>(4, n - i);
    for (int64_t l = 0; l < lanes; ++l) v[i + l] = four[l];
  }
}

// The sphere's norm ||z_j|| of each direction j in js (exact int64 sums per block, then per j).
std::vector<float> sphere_norms(const std::vector<uint32_t>& js, uint64_t seed, int64_t numel) {
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  std::vector<int64_t> partial(js.size() * blocks, 0);
  at::parallel_for(0, static_cast<int64_t>(js.size()) * blocks, grain_for(kBlock), [&](int64_t begin, int64_t end) {
    std::vector<float> z(kBlock);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t jj = t / blocks, e0 = (t % blocks) * kBlock, n = std::min(kBlock, numel - e0);
      raw_block(Directions::kGaussian, seed, js[jj], e0, n, z.data());
      int64_t s = 0;
      for (int64_t i = 0; i < n; ++i) s += philox::square_fixed(z[i]);
      partial[t] = s;
    }
  });
  std::vector<float> norms(js.size());
  for (size_t jj = 0; jj < js.size(); ++jj) {
    int64_t s = 0;
    for (int64_t b = 0; b < blocks; ++b) s += partial[jj * blocks + b];
    norms[jj] = philox::norm_from_fixed(s);
  }
  return norms;
}

// v[0 .. n) = u_j on elements e0 .. e0 + n (the sphere's z divided by its norm).
void direction_block(Directions kind, uint64_t seed, uint32_t j, float norm, int64_t e0, int64_t n, float* v) {
  raw_block(kind, seed, j, e0, n, v);
  if (kind == Directions::kSphere) {
    for (int64_t i = 0; i < n; ++i) v[i] = philox::fdiv(v[i], norm);
  }
}

template <Activation kAct, typename acc_t>
void activate_block(const acc_t* theta, int64_t n, acc_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = activate<kAct>(theta[i]);
}

// Phase 1: P[k, :] = act(theta + sign_k * fl(beta * u_{j_k})).
template <typename acc_t>
void fill_programs(const BankSpec& s, Activation act, const acc_t* theta, int64_t numel, acc_t* P) {
  std::vector<uint32_t> js;
  std::vector<int64_t> slot;
  query_directions(s, &js, &slot);
  const int64_t nq = s.stop - s.start;
  const std::vector<float> norms = s.kind == Directions::kSphere ? sphere_norms(js, s.seed, numel)
                                                                 : std::vector<float>(js.size(), 1.0f);
  const acc_t beta = static_cast<acc_t>(s.beta);
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  const int64_t units = static_cast<int64_t>(js.size()) + 1;  // unit 0: the centre, if built
  at::parallel_for(0, units * blocks, grain_for(kBlock), [&](int64_t begin, int64_t end) {
    std::vector<float> u(kBlock);
    std::vector<acc_t> t(kBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t unit = task / blocks, e0 = (task % blocks) * kBlock, n = std::min(kBlock, numel - e0);
      if (unit > 0) direction_block(s.kind, s.seed, js[unit - 1], norms[unit - 1], e0, n, u.data());
      for (int64_t k = 0; k < nq; ++k) {
        if (slot[k] != unit - 1) continue;
        acc_t* dst = P + k * numel + e0;
        const acc_t* src = theta + e0;
        if (unit == 0) {
          std::copy(src, src + n, t.data());
        } else {
          const bool neg = bank_query(s.start + k, s.antithetic).negative;
          for (int64_t i = 0; i < n; ++i) {
            const acc_t step = beta * static_cast<acc_t>(u[i]);
            t[i] = src[i] + (neg ? -step : step);
          }
        }
        dispatch(act, [&](auto a) { activate_block<decltype(a)::value, acc_t>(t.data(), n, dst); });
      }
    }
  });
}

// Phase 2: out[k, b, c, h, :] for every query k from the rows of x and mask read once per (b, c, h).
template <typename acc_t, typename x_t>
void fill_canvases(const MaskedPerturbArgs& A, const x_t* x, const acc_t* mask, const acc_t* norm, const acc_t* P,
                   int64_t numel, int64_t nq, acc_t* out) {
  const int64_t rows = A.C * A.H;
  at::parallel_for(0, A.B * rows, grain_for(A.W * nq), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> u_row(A.W), m_row(A.W);
    std::vector<uint8_t> cov(A.W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / rows, c = (task % rows) / A.H, h = task % A.H;
      const auto kc = channel_constants<acc_t>(A.pw, norm, A.C, c);
      fill_placed_row<acc_t>(A, x + A.sx.at(b, c, 0, 0), h, u_row.data(), cov.data());
      fill_mask_row<acc_t>(A, mask, b, c, h, m_row.data());
      const int64_t a_off = A.sd.at(b, c, h, 0);
      dispatch_pointwise(A.pw, [&](auto p) {
        for (int64_t k = 0; k < nq; ++k) {
          perturb_row<decltype(p), acc_t>(A.W, u_row.data(), cov.data(), P + k * numel + a_off, m_row.data(), kc,
                                          out + (((k * A.B + b) * A.C + c) * A.H + h) * A.W);
        }
      });
    }
  });
}

Tensor perturbation_bank_cpu(const Tensor& x, const Tensor& theta_in, const std::optional<Tensor>& mask_in,
                             int64_t seed, int64_t q, double beta, c10::string_view directions, bool antithetic,
                             int64_t query_start, int64_t query_stop, RX_MASKED_PERTURB_OPTION_PARAMS) {
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, /*bank=*/false);
  check_bank_theta(theta_in);
  const Tensor theta = theta_in.contiguous();
  const std::optional<Tensor> mask = mask_in ? std::optional<Tensor>(mask_in->contiguous()) : std::nullopt;
  const auto A = make_masked_perturb_args(x, theta, mask, norm, o);
  const BankSpec s{static_cast<uint64_t>(seed), q, beta, parse_Directions(directions), antithetic, query_start,
                   query_stop};
  const int64_t numel = theta.numel();
  check_bank_spec(s, numel);
  const int64_t nq = s.stop - s.start;
  Tensor out = empty_large_cpu({nq, A.B, A.C, A.H, A.W}, theta.options());  // the opt-in block cache
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "perturbation_bank", [&] {
    using acc_t = scalar_t;
    Tensor programs = empty_large_cpu({nq, numel}, theta.options());
    fill_programs<acc_t>(s, o.activation, theta.const_data_ptr<acc_t>(), numel, programs.mutable_data_ptr<acc_t>());
    const acc_t* m = mask ? mask->const_data_ptr<acc_t>() : nullptr;
    if (x.scalar_type() == at::kByte) {
      fill_canvases<acc_t, uint8_t>(A, x.const_data_ptr<uint8_t>(), m, norm.const_data_ptr<acc_t>(),
                                    programs.const_data_ptr<acc_t>(), numel, nq, out.mutable_data_ptr<acc_t>());
    } else {
      fill_canvases<acc_t, acc_t>(A, x.const_data_ptr<acc_t>(), m, norm.const_data_ptr<acc_t>(),
                                  programs.const_data_ptr<acc_t>(), numel, nq, out.mutable_data_ptr<acc_t>());
    }
  });
  return out;
}

// out[i] = sum_{j=1..q} w_j u_j[i] (segmented: w_j / Delta_j[i]), j ascending.
template <typename acc_t>
void combine_blocks(const acc_t* w, int64_t q, uint64_t seed, Directions kind, int64_t numel, acc_t* out) {
  std::vector<uint32_t> js(q);
  for (int64_t j = 0; j < q; ++j) js[j] = static_cast<uint32_t>(j + 1);
  const std::vector<float> norms = kind == Directions::kSphere ? sphere_norms(js, seed, numel)
                                                               : std::vector<float>(q, 1.0f);
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, grain_for(kBlock * q), [&](int64_t begin, int64_t end) {
    std::vector<float> u(kBlock);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t e0 = blk * kBlock, n = std::min(kBlock, numel - e0);
      acc_t* acc = out + e0;
      std::fill(acc, acc + n, acc_t(0));
      for (int64_t j = 0; j < q; ++j) {
        direction_block(kind, seed, js[j], norms[j], e0, n, u.data());
        const acc_t wj = w[j];
        if (kind == Directions::kSegmented) {
          for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + wj / static_cast<acc_t>(u[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + wj * static_cast<acc_t>(u[i]);
        }
      }
    }
  });
}

Tensor perturbation_bank_combine_cpu(const Tensor& weights_in, int64_t seed, int64_t numel,
                                     c10::string_view directions) {
  check_combine_weights(weights_in);
  const Directions kind = parse_Directions(directions);
  check_combine_numel(kind, numel);
  const Tensor weights = weights_in.contiguous();
  Tensor out = at::empty({numel}, weights.options());
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "perturbation_bank_combine", [&] {
    combine_blocks<scalar_t>(weights.const_data_ptr<scalar_t>(), weights.numel(), static_cast<uint64_t>(seed), kind,
                             numel, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("perturbation_bank", &perturbation_bank_cpu);
  m.impl("perturbation_bank_combine", &perturbation_bank_combine_cpu);
}

}  // namespace reprogram_ext
