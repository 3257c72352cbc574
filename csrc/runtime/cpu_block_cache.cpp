#include "runtime/cpu_block_cache.h"

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace reprogram_ext {
namespace {

// Freed large blocks are kept, up to the limit set by set_cpu_cache_limit (0 by default: off), and
// handed to the next request of the same rounded size: a training loop's per-step output is then
// neither faulted in nor zeroed by the kernel again.
class BlockCache {
 public:
  void* take(size_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(len);
    if (it == blocks_.end()) return nullptr;
    void* p = it->second;
    blocks_.erase(it);
    cached_ -= len;
    return p;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : blocks_) std::free(kv.second);
    blocks_.clear();
    cached_ = 0;
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }
  void set_limit(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      budget_ = bytes;
      if (cached_ <= budget_) return;
    }
    clear();
  }
  void give(void* p, size_t len) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + len <= budget_) {
        blocks_.emplace(len, p);
        cached_ += len;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mu_;
  std::unordered_multimap<size_t, void*> blocks_;
  size_t cached_ = 0;
  size_t budget_ = 0;
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors may be freed at exit
  return *cache;
}

struct Block {
  void* ptr;
  size_t len;
};

// Blocks handed out (bytes), reported with every allocation and free to torch.profiler's memory
// profiling (profile_memory=True), as c10's own CPU allocator reports its allocations.
std::atomic<size_t> g_live_bytes{0};

void report(void* ptr, int64_t signed_len) {
  if (c10::memoryProfilingEnabled()) {
    c10::reportMemoryUsageToProfiler(ptr, signed_len, g_live_bytes.load(), 0, at::Device(at::kCPU));
  }
}

void release_block(void* ctx) {
  auto* b = static_cast<Block*>(ctx);
  g_live_bytes -= b->len;
  report(b->ptr, -static_cast<int64_t>(b->len));
  block_cache().give(b->ptr, b->len);
  delete b;
}

// Fresh blocks of at least this size are faulted in before the kernel writes them (prefault).
constexpr size_t kPrefaultBytes = size_t(16) << 20;

// Faults in every page of a fresh block [p, p + len), the threads of at::parallel_for taking
// contiguous parts of whole 2 MiB. The kernels write a large output in an order of their own (the
// masked_perturb forward: every thread writes a row of each sample, so all threads reach the same
// 2 MiB page at about the same time and their faults collide on it); the kernel's zeroing of the
// pages is then done once per page, by all threads at once. MADV_POPULATE_WRITE (Linux 5.14) faults a
// range in without touching it; where it is refused, one byte per 4 KiB page is written instead.
void prefault(void* p, size_t len) {
  char* base = static_cast<char*>(p);
  const int64_t parts = static_cast<int64_t>((len + kHugePageBytes - 1) / kHugePageBytes);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    char* lo = base + begin * kHugePageBytes;
    char* hi = std::min(base + len, base + end * kHugePageBytes);
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
    if (madvise(lo, hi - lo, MADV_POPULATE_WRITE) == 0) return;
#endif
    for (char* q = lo; q < hi; q += kPageBytes) *q = 0;
  });
}

// Requests of at least kCachedBytes are rounded up to whole 4 KiB pages and reused through the
// block cache; those of at least kHugePageBytes are also 2 MiB-aligned and advised MADV_HUGEPAGE
// (the kernel backs each whole 2 MiB of the block with a huge page, the tail with 4 KiB pages: no
// resident memory is wasted on rounding). Smaller requests go to PyTorch's own CPU allocator.
struct HugePageAllocator final : at::Allocator {
  at::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kCachedBytes) return c10::GetCPUAllocator()->allocate(nbytes);
    const bool huge = nbytes >= kHugePageBytes;
    const size_t len = (nbytes + kPageBytes - 1) / kPageBytes * kPageBytes;
    void* p = block_cache().take(len);
    if (!p) {
      TORCH_CHECK(posix_memalign(&p, huge ? kHugePageBytes : kPageBytes, len) == 0 && p,
                  "reprogram_ext: out of memory allocating ", nbytes, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (huge) madvise(p, len, MADV_HUGEPAGE);  // advice only: ignored where THP is off
#endif
      if (len >= kPrefaultBytes) prefault(p, len);
    }
    g_live_bytes += len;
    report(p, static_cast<int64_t>(len));
    return {p, new Block{p, len}, &release_block, at::Device(at::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

HugePageAllocator g_allocator;

}  // namespace

void empty_cpu_cache() { block_cache().clear(); }

int64_t cpu_cache_bytes() { return static_cast<int64_t>(block_cache().cached_bytes()); }

void set_cpu_cache_limit(int64_t megabytes) {
  TORCH_CHECK_VALUE(megabytes >= 0 && megabytes <= (int64_t(1) << 40),
                    "set_cpu_cache_limit: megabytes must be in [0, 2^40], got ", megabytes);
  block_cache().set_limit(static_cast<size_t>(megabytes) << 20);
}

at::Tensor empty_large_cpu(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  constexpr c10::DispatchKeySet cpu_ks(c10::DispatchKey::CPU);
  return at::detail::empty_generic(sizes, &g_allocator, cpu_ks, c10::typeMetaToScalarType(options.dtype()),
                                   c10::MemoryFormat::Contiguous);
}

}  // namespace reprogram_ext
