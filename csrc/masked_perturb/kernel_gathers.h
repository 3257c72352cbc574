// The per-thread gathers of the CUDA masked_perturb kernels (cuda.cu): the kernel arguments, the
// layouts, the vector loads and the gathers of grad_out / delta / the placed input for VEC
// consecutive canvas positions of a row. __host__ __device__, so that host tests run the kernels'
// thread code (tests/cpp/masked_perturb_mask_grad.cpp: masked_perturb_mask_grad_kernel's, through
// mask_grad_thread.h). On the device the loads are ld.global.nc (__ldg, inline PTX); on the host the
// same bytes are copied (memcpy), so both read the same values.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "masked_perturb/activation.h"
#include "masked_perturb/math.h"
#include "masked_perturb/specialize.h"

#if defined(__CUDACC__)
#define RX_GPU_HD __host__ __device__ __forceinline__
#else
#define RX_GPU_HD inline
#endif

namespace reprogram_ext {

// Copies whose offsets travel in the kernel arguments; more take the dynamic layout's device array.
constexpr int kMaxArgCopies = 16;

enum class MaskKind : int { kNone, kFull, kScaled };
constexpr int kDynamic = -1;

// Layout of a forward / backward call: resize mode, several copies or one, mask kind (kDynamic: read
// at run time), and whether every canvas stream is 16-byte aligned for 128-bit access.
template <int kResize_, bool kMulti_, int kMask_, bool kVec_>
struct Layout {
  static constexpr int kResize = kResize_;
  static constexpr bool kMulti = kMulti_;
  static constexpr int kMask = kMask_;
  static constexpr bool kVec = kVec_;
};
template <bool kVec>
using DynamicLayout = Layout<kDynamic, true, kDynamic, kVec>;

// Everything a kernel needs besides the tensors, by value (int32 or int64 index_t).
template <typename acc_t, typename index_t>
struct KernelArgs {
  index_t B, C, H, W;
  index_t Cd, Bd, Bm;      // delta's batch, mask's batch (1 = shared)
  index_t gpr;             // groups of VEC outputs per canvas row: ceil(W / VEC)
  index_t groups;          // B * C * H * gpr (forward) or C * H * gpr (backward, batch-shared forward)
  index_t plane;           // C * H * W
  FastDivmod div_gpr, div_h, div_c, div_s, div_j;  // int32 only
  index_t sx[4], sd[4], sm[4];  // element strides, 0 on broadcast dimensions
  index_t Hin, Win, Hr, Wr;
  acc_t lin_scale_h, lin_scale_w;    // bilinear: in / out
  float near_scale_h, near_scale_w;  // nearest: in / out (float, as torch)
  ResizeMode resize;
  MaskKind mask_kind;
  index_t mask_scale;
  bool x_vec;  // x rows 16-byte aligned in VEC pieces where a copy covers a whole group
  int num_copies;
  index_t oy[kMaxArgCopies], ox[kMaxArgCopies];
  const int64_t* offsets;  // device (oy, ox) pairs when num_copies > kMaxArgCopies
  Pointwise pw;
  index_t chunks;  // backward: batch chunks J
};

template <typename index_t>
RX_GPU_HD index_t divide(index_t n, index_t d, const FastDivmod& f) {
  if constexpr (std::is_same_v<index_t, int32_t>) {
    return static_cast<index_t>(f.div(static_cast<uint32_t>(n)));
  } else {
    return n / d;
  }
}

#if defined(__CUDACC__)
template <int kBytes> struct Bits;
template <> struct Bits<16> { using type = uint4; };
template <> struct Bits<8> { using type = uint2; };
template <> struct Bits<4> { using type = unsigned int; };
template <> struct Bits<2> { using type = unsigned short; };
#endif

// The float with bits b (__uint_as_float on the device).
RX_GPU_HD float float_from_bits(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  memcpy(&f, &b, 4);
  return f;
#endif
}

// v[0..N) = p[0..N) in one load of N * sizeof(T) bytes (p aligned to it).
template <typename T, int N>
RX_GPU_HD void load_vec(const T* p, T (&v)[N]) {
#if defined(__CUDA_ARCH__)
  using B = typename Bits<N * sizeof(T)>::type;
  const B bits = __ldg(reinterpret_cast<const B*>(p));
  memcpy(v, &bits, sizeof(B));
#else
  memcpy(v, p, N * sizeof(T));
#endif
}

// out[i] = acc_t(p[i]) from one load of N elements (p aligned to it). bfloat16 to float is exactly the
// bits shifted up by 16: per 32-bit word, the low element w << 16 and the high one w & 0xffff0000, one
// instruction each (nvcc's conversion of the high element was a PRMT and a shift).
template <typename acc_t, typename T, int N>
RX_GPU_HD void load_vec_as(const T* p, acc_t (&out)[N]) {
  if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<acc_t, float> && N % 2 == 0) {
    uint32_t w[N / 2];
    load_vec(reinterpret_cast<const uint32_t*>(p), w);  // the same N * 2 bytes in one load
#pragma unroll
    for (int k = 0; k < N / 2; ++k) {
      out[2 * k] = float_from_bits(w[k] << 16);
      out[2 * k + 1] = float_from_bits(w[k] & 0xffff0000u);
    }
  } else {
    T v[N];
    load_vec(p, v);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = static_cast<acc_t>(v[i]);
  }
}

#if defined(__CUDACC__)
// bits = *p when `load` (one predicated ld.global.nc), else 0. Inline PTX: with a C++ branch, nvcc
// 13.0 selected the 16-bit lanes of the result one by one (PRMTs) instead of the loaded registers.
__device__ __forceinline__ void ldg_or_zero(const uint4* p, bool load, uint4& bits) {
  asm("{\n .reg .pred q;\n setp.ne.b32 q, %5, 0;\n mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n"
      " mov.b32 %3, 0;\n @q ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n}"
      : "=r"(bits.x), "=r"(bits.y), "=r"(bits.z), "=r"(bits.w) : "l"(p), "r"(static_cast<int>(load)));
}
__device__ __forceinline__ void ldg_or_zero(const uint2* p, bool load, uint2& bits) {
  asm("{\n .reg .pred q;\n setp.ne.b32 q, %3, 0;\n mov.b32 %0, 0;\n mov.b32 %1, 0;\n"
      " @q ld.global.nc.v2.u32 {%0, %1}, [%2];\n}"
      : "=r"(bits.x), "=r"(bits.y) : "l"(p), "r"(static_cast<int>(load)));
}
__device__ __forceinline__ void ldg_or_zero(const unsigned int* p, bool load, unsigned int& bits) {
  asm("{\n .reg .pred q;\n setp.ne.b32 q, %2, 0;\n mov.b32 %0, 0;\n @q ld.global.nc.u32 %0, [%1];\n}"
      : "=r"(bits) : "l"(p), "r"(static_cast<int>(load)));
}
#endif

// v[0..N) = p[0..N) when `load`, else zero bits (p aligned to N * sizeof(T) bytes when `load`).
template <typename T, int N>
RX_GPU_HD void load_vec_or_zero(const T* p, bool load, T (&v)[N]) {
#if defined(__CUDA_ARCH__)
  using B = typename Bits<N * sizeof(T)>::type;
  B bits;
  ldg_or_zero(reinterpret_cast<const B*>(p), load, bits);
  memcpy(v, &bits, sizeof(B));
#else
  if (load) memcpy(v, p, N * sizeof(T));
  else memset(v, 0, N * sizeof(T));
#endif
}

// out[i] = src[i] as acc_t for the group's VEC positions: one vector load on 128-bit layouts, else
// element by element, 0 off the canvas.
template <class L, typename acc_t, typename T, int VEC, typename AR>
RX_GPU_HD void load_group(const AR& pa, const T* __restrict__ src, decltype(AR::W) w0,
                                           acc_t (&out)[VEC]) {
  if constexpr (L::kVec) {
    T v[VEC];
    load_vec(src, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = static_cast<acc_t>(v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = w0 + i < pa.W ? static_cast<acc_t>(src[i]) : static_cast<acc_t>(0);
  }
}

// ---- per-thread gathers (VEC consecutive canvas positions w0 .. w0 + VEC of row (b, c, h)) -------

// True for position i of the group when it lies on the canvas (always with 128-bit layouts).
template <class L, int VEC, typename AR>
RX_GPU_HD bool on_canvas(const AR& p, decltype(AR::W) w0, int i) {
  return L::kVec || w0 + i < p.W;
}

// a[i] = act(delta[b, c, h, w0 + i]) (b = 0 when delta is shared) and, when dact, its derivative.
template <class L, Activation kAct, int VEC, typename acc_t, typename scalar_t, typename AR, typename index_t>
RX_GPU_HD void gather_delta(const AR& p, const scalar_t* __restrict__ delta, index_t b, index_t c,
                                             index_t h, index_t w0, acc_t (&a)[VEC]) {
  const index_t row_off = b * p.sd[0] + c * p.sd[1] + h * p.sd[2];  // one address per thread
  if constexpr (L::kVec) {
    acc_t v[VEC];
    load_vec_as(delta + (row_off + w0), v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) a[i] = activate<kAct>(v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i)
      a[i] = on_canvas<L, VEC>(p, w0, i) ? activate<kAct>(static_cast<acc_t>(delta[row_off + (w0 + i) * p.sd[3]]))
                                         : static_cast<acc_t>(0);
  }
}

// u[i] = sum over the copies covering (h, w0 + i) of the resized input there, cov[i] = covered;
// x_bc = b * sx[0] + c * sx[1] (an element offset). Copies are added in order, as on the CPU.
template <class L, int VEC, typename acc_t, typename x_t, typename AR, typename index_t>
RX_GPU_HD void gather_placed(const AR& p, const x_t* __restrict__ x, index_t x_bc, index_t h,
                                              index_t w0, acc_t (&u)[VEC], bool (&cov)[VEC]) {
  if constexpr (L::kResize == static_cast<int>(ResizeMode::kNone) && !L::kMulti) {
    // One copy, no resize, a group wholly inside or outside it (x_vec, Wr % VEC == 0 and the
    // copy's column offset a multiple of VEC): xw0 is a multiple of VEC, so "inside" is
    // 0 <= y < Hr and 0 <= xw0 < Wr. Outside, the zero bits of v read as u = 0.
    using uindex_t = std::make_unsigned_t<index_t>;
    const index_t y = h - p.oy[0], xw0 = w0 - p.ox[0];
    const bool inside = static_cast<uindex_t>(y) < static_cast<uindex_t>(p.Hr) &&
                        static_cast<uindex_t>(xw0) < static_cast<uindex_t>(p.Wr);
    x_t v[VEC];
    load_vec_or_zero(x + (x_bc + y * p.sx[2] + xw0), inside, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      u[i] = load_input<acc_t>(v, i);
      cov[i] = inside;
    }
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      u[i] = static_cast<acc_t>(0);
      cov[i] = false;
    }
    const ResizeMode resize = L::kResize == kDynamic ? p.resize : static_cast<ResizeMode>(L::kResize);
    const int n = L::kMulti ? p.num_copies : 1;
    for (int k = 0; k < n; ++k) {
      index_t oy, ox;
      if (L::kResize == kDynamic && p.offsets != nullptr) {
        oy = static_cast<index_t>(p.offsets[2 * k]);
        ox = static_cast<index_t>(p.offsets[2 * k + 1]);
      } else {
        oy = p.oy[k];
        ox = p.ox[k];
      }
      const index_t y = h - oy, xw0 = w0 - ox;
      if (y < 0 || y >= p.Hr || xw0 + VEC <= 0 || xw0 >= p.Wr) continue;
      if (resize == ResizeMode::kNone) {
        const index_t xr = x_bc + y * p.sx[2];
        // A fixed layout is only chosen with x_vec and Wr % VEC == 0: a group lies wholly inside or
        // wholly outside each copy, and the single copy's value is assigned (no 0 + v).
        if (L::kResize != kDynamic || (p.x_vec && xw0 >= 0 && xw0 + VEC <= p.Wr)) {
          x_t v[VEC];
          load_vec(x + (xr + xw0), v);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            u[i] = L::kMulti ? u[i] + load_input<acc_t>(v, i) : load_input<acc_t>(v, i);
            cov[i] = true;
          }
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const index_t xw = xw0 + i;
            if (xw >= 0 && xw < p.Wr) {
              u[i] += load_input<acc_t>(x, xr + xw * p.sx[3]);
              cov[i] = true;
            }
          }
        }
      } else if (resize == ResizeMode::kNearest) {
        const index_t xr = x_bc + nearest_source<index_t>(y, p.Hin, p.Hr, p.near_scale_h) * p.sx[2];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const index_t xw = xw0 + i;
          if (xw >= 0 && xw < p.Wr) {
            u[i] += load_input<acc_t>(x, xr + nearest_source<index_t>(xw, p.Win, p.Wr, p.near_scale_w) * p.sx[3]);
            cov[i] = true;
          }
        }
      } else {
        const auto ty = linear_tap<acc_t, index_t>(y, p.Hin, p.lin_scale_h);
        const x_t* r0 = x + (x_bc + ty.i0 * p.sx[2]);
        const x_t* r1 = x + (x_bc + ty.i1 * p.sx[2]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const index_t xw = xw0 + i;
          if (xw >= 0 && xw < p.Wr) {
            u[i] += bilinear_value<acc_t>(r0, r1, p.sx[3], ty, linear_tap<acc_t, index_t>(xw, p.Win, p.lin_scale_w));
            cov[i] = true;
          }
        }
      }
    }
  }
}

// Per-channel constants: only those P reads are loaded.
template <class P, typename acc_t, typename AR, typename index_t>
RX_GPU_HD ChannelConstants<acc_t> constants_of(const AR& p, const acc_t* __restrict__ norm, index_t c) {
  if constexpr (P::kDynamic) {
    return channel_constants<acc_t>(p.pw, norm, p.C, c);
  } else {
    ChannelConstants<acc_t> k{};
    if constexpr (P::kNormalize == Normalize::kBefore) {
      k.before_mean = norm[c];
      k.before_inv_std = norm[p.C + c];
    } else if constexpr (P::kNormalize == Normalize::kAfter) {
      k.after_mean = norm[c];
      k.after_inv_std = norm[p.C + c];
    }
    return k;
  }
}

}  // namespace reprogram_ext
