// CUDA kernels of the perturbation bank and of the directions' weighted sum (formulas: math.h,
// reprogram_ext/ops/perturbation_bank/philox.py, docs/blackbox.md). The directions come from
// philox.h, the functions the CPU kernels run: every float operation rounded once (the _rn
// intrinsics, never contracted into an fma), so the bits equal the CPU's and the reference's.
//
// One thread per group of four elements (one Philox call):
// - bank_sphere_partials: S partials per (direction, block), int64 (exact: any order gives the
//   same sum), reduced in shared memory; the host sums the partials and takes ||z|| =
//   norm_from_fixed(S) (the same function, on the host);
// - bank_programs: theta + sign fl(beta u_j) for every query built (before the activation);
// - bank_combine: sum_j w_j u_j (segmented: w_j / Delta_j), j ascending.
// The canvases are masked_perturb's CUDA forward (the activation, mask, placement and
// normalisation there): one call with the programs as a prompt bank (bank=true, the canvases
// written once, straight into the [Q, B, ...] output) when theta is one program [1, C, H, W]
// shared by the batch; one call per query, copied into the bank, for per-sample programs.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "masked_perturb/options.h"
#include "perturbation_bank/args.h"

namespace reprogram_ext {
namespace {

using at::Tensor;

constexpr int kThreads = 256;  // groups of four elements per block

__device__ __forceinline__ float radd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double radd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float rmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double rmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float rdiv(float a, float b) { return philox::fdiv(a, b); }
__device__ __forceinline__ double rdiv(double a, double b) { return __ddiv_rn(a, b); }

__global__ void bank_sphere_partials(int64_t* partial, const uint32_t* js, uint64_t seed, int64_t numel,
                                     int64_t blocks) {
  __shared__ int64_t sums[kThreads];
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  int64_t s = 0;
  if (4 * g < numel) {
    float z[4];
    raw_direction4(Directions::kGaussian, seed, js[blockIdx.y], static_cast<uint64_t>(g), z);
    for (int l = 0; l < 4; ++l) s += 4 * g + l < numel ? philox::square_fixed(z[l]) : 0;
  }
  sums[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.y * blocks + blockIdx.x] = sums[0];
}

// One query per blockIdx.y: j (0: the centre), sign and the sphere's norm of its direction.
struct QueryArgs {
  const uint32_t* j;
  const uint8_t* negative;
  const float* norm;
};

template <typename acc_t>
__global__ void bank_programs(acc_t* out, const acc_t* theta, QueryArgs qa, Directions kind, uint64_t seed,
                              acc_t beta, int64_t numel) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (4 * g >= numel) return;
  acc_t* dst = out + static_cast<int64_t>(blockIdx.y) * numel;
  const uint32_t j = qa.j[blockIdx.y];
  float u[4] = {0.f, 0.f, 0.f, 0.f};
  if (j != 0) {
    raw_direction4(kind, seed, j, static_cast<uint64_t>(g), u);
    if (kind == Directions::kSphere) {
      const float norm = qa.norm[blockIdx.y];
      for (int l = 0; l < 4; ++l) u[l] = philox::fdiv(u[l], norm);
    }
  }
  const bool neg = qa.negative[blockIdx.y] != 0;
  for (int l = 0; l < 4; ++l) {
    const int64_t e = 4 * g + l;
    if (e >= numel) break;
    const acc_t step = rmul(beta, static_cast<acc_t>(u[l]));
    dst[e] = j == 0 ? theta[e] : radd(theta[e], neg ? -step : step);
  }
}

template <typename acc_t>
__global__ void bank_combine(acc_t* out, const acc_t* w, const float* norms, int64_t q, Directions kind,
                             uint64_t seed, int64_t numel) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (4 * g >= numel) return;
  acc_t acc[4] = {0, 0, 0, 0};
  for (int64_t j = 0; j < q; ++j) {
    float u[4];
    raw_direction4(kind, seed, static_cast<uint32_t>(j + 1), static_cast<uint64_t>(g), u);
    const acc_t wj = w[j];
    for (int l = 0; l < 4; ++l) {
      const float v = kind == Directions::kSphere ? philox::fdiv(u[l], norms[j]) : u[l];
      acc[l] = radd(acc[l], kind == Directions::kSegmented ? rdiv(wj, static_cast<acc_t>(v))
                                                           : rmul(wj, static_cast<acc_t>(v)));
    }
  }
  for (int l = 0; l < 4; ++l) {
    if (4 * g + l < numel) out[4 * g + l] = acc[l];
  }
}

unsigned grid_for(int64_t numel) { return static_cast<unsigned>((numel + 4 * kThreads - 1) / (4 * kThreads)); }

// ||z_j|| of each direction in js (float32, on the host: the exact int64 sums of the partials).
std::vector<float> sphere_norms_cuda(const std::vector<uint32_t>& js, uint64_t seed, int64_t numel,
                                     const at::TensorOptions& device, cudaStream_t stream) {
  const int64_t blocks = grid_for(numel);
  Tensor js_t = at::tensor(std::vector<int64_t>(js.begin(), js.end())).to(at::kInt).to(device.device());
  Tensor partial = at::empty({static_cast<int64_t>(js.size()), blocks}, device.dtype(at::kLong));
  bank_sphere_partials<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(js.size())), kThreads, 0, stream>>>(
      partial.mutable_data_ptr<int64_t>(), reinterpret_cast<const uint32_t*>(js_t.const_data_ptr<int32_t>()), seed,
      numel, blocks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const Tensor sums = partial.sum(1).cpu();
  std::vector<float> norms(js.size());
  for (size_t i = 0; i < js.size(); ++i) norms[i] = philox::norm_from_fixed(sums.const_data_ptr<int64_t>()[i]);
  return norms;
}

using MaskedPerturbForward = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, at::IntArrayRef,
                                    const Tensor&, at::IntArrayRef, c10::string_view, c10::string_view,
                                    c10::string_view, c10::string_view, std::optional<at::ArrayRef<double>>, int64_t, bool);

Tensor perturbation_bank_cuda(const Tensor& x, const Tensor& theta_in, const std::optional<Tensor>& mask,
                              int64_t seed, int64_t q, double beta, c10::string_view directions, bool antithetic,
                              int64_t query_start, int64_t query_stop, RX_MASKED_PERTURB_OPTION_PARAMS) {
  check_bank_theta(theta_in);
  const c10::cuda::CUDAGuard guard(theta_in.device());
  const Tensor theta = theta_in.contiguous();
  const BankSpec s{static_cast<uint64_t>(seed), q, beta, parse_Directions(directions), antithetic, query_start,
                   query_stop};
  const int64_t numel = theta.numel();
  check_bank_spec(s, numel);
  const int64_t nq = s.stop - s.start;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<uint32_t> js;
  std::vector<int64_t> slot;
  query_directions(s, &js, &slot);
  const std::vector<float> norms = s.kind == Directions::kSphere && !js.empty()
                                       ? sphere_norms_cuda(js, s.seed, numel, theta.options(), stream)
                                       : std::vector<float>(js.size(), 1.0f);
  std::vector<int64_t> qj(nq), qneg(nq);
  std::vector<float> qnorm(nq, 1.0f);
  for (int64_t k = 0; k < nq; ++k) {
    const BankQuery b = bank_query(s.start + k, s.antithetic);
    qj[k] = b.j;
    qneg[k] = b.negative;
    if (slot[k] >= 0) qnorm[k] = norms[slot[k]];
  }
  const auto dev = theta.device();
  const Tensor qj_t = at::tensor(qj).to(at::kInt).to(dev), qneg_t = at::tensor(qneg).to(at::kByte).to(dev);
  const Tensor qnorm_t = at::tensor(qnorm).to(dev);
  Tensor programs = at::empty({nq, numel}, theta.options());
  const QueryArgs qa{reinterpret_cast<const uint32_t*>(qj_t.const_data_ptr<int32_t>()), qneg_t.const_data_ptr<uint8_t>(),
                     qnorm_t.const_data_ptr<float>()};
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "perturbation_bank_cuda", [&] {
    bank_programs<scalar_t><<<dim3(grid_for(numel), static_cast<unsigned>(nq)), kThreads, 0, stream>>>(
        programs.mutable_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), qa, s.kind, s.seed,
        static_cast<scalar_t>(s.beta), numel);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  static auto forward = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("reprogram_ext::masked_perturb_forward", "")
                            .typed<MaskedPerturbForward>();
  if (theta.dim() == 4 && theta.size(0) == 1) {  // the queries as one prompt bank [Q, C, H, W]
    const Tensor canvases = forward.call(x, programs.view({nq, theta.size(1), theta.size(2), theta.size(3)}), mask,
                                         RX_MASKED_PERTURB_OPTION_ARGS, /*bank=*/true);
    return canvases.view({nq, canvases.size(0) / nq, canvases.size(1), canvases.size(2), canvases.size(3)});
  }
  Tensor out;
  for (int64_t k = 0; k < nq; ++k) {
    const Tensor canvas = forward.call(x, programs[k].view(theta.sizes()), mask, RX_MASKED_PERTURB_OPTION_ARGS,
                                              /*bank=*/false);
    if (k == 0) out = at::empty({nq, canvas.size(0), canvas.size(1), canvas.size(2), canvas.size(3)}, canvas.options());
    out[k].copy_(canvas);
  }
  return out;
}

Tensor perturbation_bank_combine_cuda(const Tensor& weights_in, int64_t seed, int64_t numel,
                                      c10::string_view directions) {
  check_combine_weights(weights_in);
  const Directions kind = parse_Directions(directions);
  check_combine_numel(kind, numel);
  const c10::cuda::CUDAGuard guard(weights_in.device());
  const Tensor weights = weights_in.contiguous();
  const int64_t q = weights.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<uint32_t> js(q);
  for (int64_t j = 0; j < q; ++j) js[j] = static_cast<uint32_t>(j + 1);
  const std::vector<float> norms = kind == Directions::kSphere
                                       ? sphere_norms_cuda(js, static_cast<uint64_t>(seed), numel, weights.options(),
                                                           stream)
                                       : std::vector<float>(q, 1.0f);
  const Tensor norms_t = at::tensor(norms).to(weights.device());
  Tensor out = at::empty({numel}, weights.options());
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "perturbation_bank_combine_cuda", [&] {
    bank_combine<scalar_t><<<grid_for(numel), kThreads, 0, stream>>>(
        out.mutable_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(), norms_t.const_data_ptr<float>(), q, kind,
        static_cast<uint64_t>(seed), numel);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("perturbation_bank", &perturbation_bank_cuda);
  m.impl("perturbation_bank_combine", &perturbation_bank_combine_cuda);
}

}  // namespace reprogram_ext
