// The 16-bit CUDA flat forward's (masked_perturb_forward_flat_kernel, cuda.cu) store of the groups that
// cross a plane's end: the kernel parks such a group's 8 values, packed into a 16-byte word group
// (element 2 k in the low half of word k, element 2 k + 1 in its high half: memcpy of the 8 values),
// and after its passes stores the elements inside the plane one by one. __host__ __device__, so that
// tests/cpp/masked_perturb_flat_clipped_store.cpp runs this unpacking on the host for every thread of a
// launch and checks that every output element is written exactly once, with its value, and nothing
// outside the plane is touched.
#pragma once

#include <cstdint>
#include <cstring>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace flat_tiling {

// Whether the group at plane positions q0 .. q0 + VEC - 1 lies inside a plane of `plane` positions (then
// the kernel stores it as one 16-byte group; else it parks it and store_clipped stores it).
template <int VEC, typename index_t>
C10_HOST_DEVICE inline bool group_in_plane(index_t q0, index_t plane) { return q0 >= 0 && q0 + VEC <= plane; }

// w = the 8 2-byte values v packed into 4 32-bit words (memcpy: v[2 k] the low half of word k, v[2 k + 1]
// its high half, on the little-endian host and device alike).
template <typename Words, typename T>
C10_HOST_DEVICE inline void pack_group(Words& w, const T (&v)[8]) {
  static_assert(sizeof(Words) == 16 && sizeof(T) == 2, "pack_group: 8 2-byte values into 16 bytes");
  memcpy(&w, v, sizeof(Words));
}

// The first element of a group at plane positions q0 .. q0 + VEC - 1 that lies in the plane:
// -q0 when the group starts before position 0, else 0.
template <typename index_t>
C10_HOST_DEVICE inline int clipped_first(index_t q0) { return q0 < 0 ? static_cast<int>(-q0) : 0; }

// One past the last element of that group in a plane of `plane` positions: plane - q0 when the group
// runs over the plane's end, else VEC.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline int clipped_end(index_t q0, index_t plane) {
  return plane - q0 < VEC ? static_cast<int>(plane - q0) : VEC;
}

// (hi:lo) >> 16 as 32 bits: the high half of lo, then the low half of hi. The same code on the host
// and the device, where it compiles to one funnel shift (SHF, as __funnelshift_r(lo, hi, 16) does).
C10_HOST_DEVICE inline uint32_t shift_down_half(uint32_t lo, uint32_t hi) { return (lo >> 16) | (hi << 16); }

// o[j * stride + i] = element i of the 16-byte word group bits[j] (8 elements of a 2-byte T) for
// first <= i < end and j < n: all the passes' groups at once (the passes share the positions, so first
// and end; pass j's output is stride = VEC * plane elements after pass j - 1's). Words: 4 32-bit words
// x, y, z, w (uint4 on the device). A rolled loop shifting the groups down by one element per step:
// fewer instructions than unrolled stores and their lane extractions, no local memory. bits is
// consumed (shifted).
template <typename T, int VEC, int J, typename index_t, typename Words>
C10_HOST_DEVICE inline void store_clipped(T* o, index_t stride, Words (&bits)[J], int n, int first, int end) {
  static_assert(VEC == 8 && sizeof(T) == 2, "store_clipped: 16-byte groups of 2-byte elements");
#pragma unroll 1
  for (int i = 0; i < end; ++i) {
#pragma unroll
    for (int j = 0; j < J; ++j) {
      if (j >= n) break;
      if (i >= first) *reinterpret_cast<unsigned short*>(o + (j * stride + i)) = static_cast<unsigned short>(bits[j].x);
      bits[j].x = shift_down_half(bits[j].x, bits[j].y), bits[j].y = shift_down_half(bits[j].y, bits[j].z);
      bits[j].z = shift_down_half(bits[j].z, bits[j].w), bits[j].w >>= 16;
    }
  }
}

}  // namespace flat_tiling
}  // namespace reprogram_ext
