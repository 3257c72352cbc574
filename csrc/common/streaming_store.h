// Non-temporal ("streaming") stores of rows (any element type) for the CPU kernels' large outputs.
//
// A regular store to a line that is not in the cache first reads the line (read for ownership),
// so writing a cold output moves its bytes twice: read, then write back. A streaming store
// (MOVNTPS) goes through the write-combining buffers straight to memory without that read, and
// does not fill the caches with an output larger than they are. It only pays for whole 64-byte
// lines: a partial line is merged at the memory controller. So a row is stored with regular stores
// up to its first 64-byte boundary and after its last one, and with streaming stores between.
// Streaming stores are weakly ordered: a thread calls streaming_fence() (SFENCE) after its last
// one, before another thread may read what it wrote. Elsewhere than x86-64 these are plain copies.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RX_HAVE_STREAMING_STORES 1
#else
#define RX_HAVE_STREAMING_STORES 0
#endif

namespace reprogram_ext {

constexpr size_t kLineBytes = 64;

// Outputs of at least this many bytes are written with streaming stores. Measured on this project's
// CPU machine (bench/notes/cpu_masked_perturb.md, "streaming stores"): with the output's previous
// use still in the caches and its consumer reading it right after, regular stores were faster for a
// 9.6 MB output and streaming stores for 14.5 MB and up; with the output cold, streaming stores were
// faster from 9.6 MB up.
constexpr size_t kStreamingMinBytes = size_t(16) << 20;

// dst[0, n) = src[0, n) (n elements of T): regular stores for the partial 64-byte lines at both ends,
// streaming stores (16 bytes each, SSE2: every x86-64 CPU has them) for the whole lines between.
// dst must be aligned to sizeof(T), as every tensor's data are.
template <typename T>
inline void store_row_streaming(const T* __restrict src, T* __restrict dst, int64_t n) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(T);
#if RX_HAVE_STREAMING_STORES
  const auto* s = reinterpret_cast<const char*>(src);
  auto* d = reinterpret_cast<char*>(dst);
  size_t head = (kLineBytes - reinterpret_cast<uintptr_t>(d) % kLineBytes) % kLineBytes;
  if (head > bytes) head = bytes;
  if (head) std::memcpy(d, s, head);
  size_t i = head;
  for (; i + kLineBytes <= bytes; i += kLineBytes) {
    for (size_t q = 0; q < kLineBytes; q += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + q), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + q)));
  }
  if (i < bytes) std::memcpy(d + i, s + i, bytes - i);
#else
  std::memcpy(dst, src, bytes);
#endif
}

// Orders this thread's streaming stores before its later stores (SFENCE): call once after the last.
inline void streaming_fence() {
#if RX_HAVE_STREAMING_STORES
  _mm_sfence();
#endif
}

}  // namespace reprogram_ext
