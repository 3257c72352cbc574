// Allocation of large CPU outputs on transparent huge pages.
//
// Writing a freshly allocated multi-MB tensor costs one page fault per 4 KiB page (for a 38.5 MB
// canvas that is ~9,400 faults, more than the kernel's own work). Outputs of at least
// kHugePageBytes are allocated 2 MiB-aligned and advised MADV_HUGEPAGE, so the kernel backs them
// with 2 MiB pages where it allows (THP "madvise" or "always" mode); elsewhere this is a plain
// aligned allocation. Opt-in: freed blocks of at least kCachedBytes are cached for reuse by the next
// output of the same size, up to the limit set_cpu_cache_limit sets (0 by default: no cache;
// Python: reprogram_ext.runtime.set_cpu_cache_limit, or REPROGRAM_EXT_CPU_CACHE_MB at import). glibc
// returns freed 64 KiB-2 MiB chunks at the top of its heap to the kernel and faults them in again on
// the next step (measured: ~72 faults, ~150 us, per 1 MB label-mapping gradient). Handed-out blocks are
// reported to torch.profiler's memory profiling like c10's allocations. Fresh blocks of 16 MiB or more
// are faulted in by all threads at once before they are handed out (prefault, cpu_block_cache.cpp). Tensors made here are
// ordinary resizable CPU tensors.
#pragma once

#include <ATen/ATen.h>

namespace reprogram_ext {

constexpr size_t kHugePageBytes = size_t(2) << 20;
constexpr size_t kPageBytes = size_t(4) << 10;
constexpr size_t kCachedBytes = size_t(64) << 10;

// at::empty(sizes, options) for a CPU tensor: cached when >= kCachedBytes, huge-page backed when large.
at::Tensor empty_large_cpu(at::IntArrayRef sizes, const at::TensorOptions& options);

// Frees every cached block (as torch.cuda.empty_cache does for CUDA): reprogram_ext.empty_cpu_cache().
void empty_cpu_cache();

// Caps the cached bytes at `megabytes` MiB (0: no caching; blocks over the new cap are freed).
void set_cpu_cache_limit(int64_t megabytes);

// Bytes of freed blocks the cache holds now.
int64_t cpu_cache_bytes();

}  // namespace reprogram_ext
