// The 16-bit CUDA flat forward's stores (masked_perturb_forward_flat_kernel, cuda.cu), executed on the
// host: every thread of every block of a launch, as the kernel walks them (flat_tiling.h), computes its
// pass values, stores a group inside the plane whole (the kernel's store_vec) and packs a group that
// crosses a plane's end with pack_group, then stores it with store_clipped after its passes
// (flat_clipped_store.h, the kernel's code). Checked: every output element written exactly once, with
// its value's bits (fp16 and bf16 patterns: signs, subnormals, infinities, NaNs), nothing written
// outside [0, B * plane) or at a position of the group outside the plane; every plane-start and
// plane-end misalignment and every pass count of the clipped groups occurs, so the store is exercised.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "expect.h"

#include "masked_perturb/flat_clipped_store.h"
#include "masked_perturb/flat_tiling.h"

using namespace reprogram_ext::flat_tiling;

namespace {

constexpr int VEC = 8;  // 16-byte groups of 2-byte elements
constexpr int64_t kGuard = 64;  // elements checked on either side of the output

struct Words {  // uint4 on the device
  uint32_t x, y, z, w;
};

// The bits of the value of output element k (sample b, position q: k = b * plane + q), as T:
// a conversion of a float of varied sign and exponent (fp16 subnormals at the low end, bf16's
// range), and every fifth element raw 16-bit pattern (NaNs, infinities, -0 among them).
template <typename T>
uint16_t value_bits(int64_t k) {
  const uint32_t h = static_cast<uint32_t>(k) * 2654435761u;
  if (k % 5 == 4) return static_cast<uint16_t>(h >> 16);
  const float f = std::ldexp((1.0f + (h & 0xffffu) / 65536.0f) * ((h >> 16) & 1 ? -1.0f : 1.0f),
                             static_cast<int>((h >> 17) % 48) - 28);
  return T(f).x;
}

// The value the kernel computes at a position outside the plane (never stored): a pattern of its own.
constexpr uint16_t kOffPlane = 0x7bad;

template <typename T>
struct Launch {
  int32_t plane, B;
  std::vector<int> writes;         // per element of [-kGuard, B * plane + kGuard)
  std::vector<uint16_t> written;   // the bits last written there
  std::vector<T> scratch_a, scratch_b;  // the output as store_clipped sees it, filled with a sentinel
  bool first_seen[VEC] = {}, end_seen[VEC] = {}, passes_seen[kPasses<VEC> + 1] = {};

  Launch(int32_t plane_, int32_t B_)
      : plane(plane_), B(B_), writes(static_cast<size_t>(plane_) * B_ + 2 * kGuard, 0),
        written(writes.size(), 0), scratch_a(writes.size(), T(0xaaaa, T::from_bits())),
        scratch_b(writes.size(), T(0x5555, T::from_bits())) {}

  void record(int64_t k, uint16_t bits) {
    ++writes[static_cast<size_t>(k + kGuard)];
    written[static_cast<size_t>(k + kGuard)] = bits;
  }

  // A clipped group's store: store_clipped on two copies of the output filled with different sentinels
  // (an element is written when either copy changed; its value is the copy that changed), then every
  // write recorded and the copies reset.
  void store_clipped_recorded(int64_t base, const Words (&kept)[kPasses<VEC>], int nj, int first, int end) {
    Words a[kPasses<VEC>], b[kPasses<VEC>];
    memcpy(a, kept, sizeof(a));
    memcpy(b, kept, sizeof(b));
    const int32_t stride = VEC * plane;
    store_clipped<T, VEC>(scratch_a.data() + (base + kGuard), stride, a, nj, first, end);
    store_clipped<T, VEC>(scratch_b.data() + (base + kGuard), stride, b, nj, first, end);
    for (size_t e = 0; e < scratch_a.size(); ++e) {
      const bool wa = scratch_a[e].x != 0xaaaa, wb = scratch_b[e].x != 0x5555;
      if (!wa && !wb) continue;
      EXPECT(!wa || !wb || scratch_a[e].x == scratch_b[e].x, "plane %d: element %lld differs between the copies", plane,
             static_cast<long long>(e) - kGuard);
      record(static_cast<int64_t>(e) - kGuard, wa ? scratch_a[e].x : scratch_b[e].x);
      scratch_a[e] = T(0xaaaa, T::from_bits());
      scratch_b[e] = T(0x5555, T::from_bits());
    }
  }

  // One thread (bx, by, t) of the kernel: its passes, then its clipped group's store.
  void thread(int32_t bx, int32_t by, int t) {
    constexpr int G = kGroups<VEC>;
    const int gl = t % G, s = t / G;
    if (gl == G - 1) return;
    const int nj = passes<VEC>(by, s, B);
    if (nj == 0) return;
    const int32_t b0 = sample<VEC>(by, 0, s);
    const int32_t q0 = window_start<VEC>(bx) + group_slot<VEC>(gl, b0, plane);
    const bool whole = group_in_plane<VEC>(q0, plane);
    Words kept[kPasses<VEC>];
    for (int j = 0; j < nj; ++j) {
      const int32_t b = sample<VEC>(by, j, s);
      T vals[VEC];
      for (int i = 0; i < VEC; ++i) {
        const int32_t q = q0 + i;
        vals[i] = T(q >= 0 && q < plane ? value_bits<T>(static_cast<int64_t>(b) * plane + q) : kOffPlane, T::from_bits());
      }
      if (whole) {  // store_vec: the 16 bytes at b * plane + q0
        for (int i = 0; i < VEC; ++i) record(static_cast<int64_t>(b) * plane + q0 + i, vals[i].x);
      } else {
        pack_group(kept[j], vals);
      }
    }
    if (!whole) {
      const int first = clipped_first(q0), end = clipped_end<VEC>(q0, plane);
      if (q0 < 0) first_seen[first] = true;
      if (plane - q0 < VEC) end_seen[end] = true;
      passes_seen[nj] = true;
      store_clipped_recorded(static_cast<int64_t>(b0) * plane + q0, kept, nj, first, end);
    }
  }

  void run() {
    for (int32_t by = 0; by < blocks_y<VEC>(B); ++by)
      for (int32_t bx = 0; bx < blocks_x<VEC>(plane); ++bx)
        for (int t = 0; t < kThreads; ++t) thread(bx, by, t);
    for (int64_t k = -kGuard; k < static_cast<int64_t>(plane) * B + kGuard; ++k) {
      const size_t e = static_cast<size_t>(k + kGuard);
      const bool inside = k >= 0 && k < static_cast<int64_t>(plane) * B;
      EXPECT(writes[e] == (inside ? 1 : 0), "sizeof %zu plane %d B %d: element %lld written %d times", sizeof(T), plane, B,
             static_cast<long long>(k), writes[e]);
      if (inside && writes[e] == 1)
        EXPECT(written[e] == value_bits<T>(k), "sizeof %zu plane %d B %d: element %lld = 0x%04x, expected 0x%04x", sizeof(T),
               plane, B, static_cast<long long>(k), written[e], value_bits<T>(k));
    }
  }
};

// Every misalignment (first 1 .. 7 at the plane's start, end 1 .. 7 at its end) and pass count 1 .. 4
// of the clipped groups seen over the launches of T.
template <typename T>
void check_type() {
  // odd and even planes not a multiple of 8, around the block edges (a block writes 248 positions per
  // sample), a plane that is a multiple of 8 (no clipped group), Elsayed's 3 x 223 x 225
  const int32_t planes[] = {1, 2, 3, 5, 6, 7, 9, 13, 72, 247, 249, 251, 253, 255, 497, 1001, 3 * 223 * 225};
  const int32_t batches[] = {1, 2, 3, 7, 8, 9, 16, 17, 25, 33};
  bool first_seen[VEC] = {}, end_seen[VEC] = {}, passes_seen[kPasses<VEC> + 1] = {};
  for (int32_t plane : planes) {
    for (int32_t B : batches) {
      if (plane > 100000 && B != 17) continue;  // Elsayed's plane at its benchmark batch only
      Launch<T> launch(plane, B);
      launch.run();
      for (int i = 0; i < VEC; ++i) first_seen[i] |= launch.first_seen[i], end_seen[i] |= launch.end_seen[i];
      for (int n = 0; n <= kPasses<VEC>; ++n) passes_seen[n] |= launch.passes_seen[n];
    }
  }
  for (int i = 1; i < VEC; ++i) {
    EXPECT(first_seen[i], "sizeof %zu: no clipped group with first = %d", sizeof(T), i);
    EXPECT(end_seen[i], "sizeof %zu: no clipped group with end = %d", sizeof(T), i);
  }
  for (int n = 1; n <= kPasses<VEC>; ++n) EXPECT(passes_seen[n], "sizeof %zu: no clipped group of %d passes", sizeof(T), n);
}

}  // namespace

int main() {
  check_type<c10::Half>();
  check_type<c10::BFloat16>();
  return report();
}
