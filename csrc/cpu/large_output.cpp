#include "cpu/large_output.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace reprogram_ext {
namespace {

void free_huge(void* p) { std::free(p); }

// Large requests: 2 MiB-aligned, rounded up to whole huge pages, advised MADV_HUGEPAGE.
// Small requests go to PyTorch's own CPU allocator.
struct HugePageAllocator final : at::Allocator {
  at::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePageBytes) return c10::GetCPUAllocator()->allocate(nbytes);
    const size_t len = (nbytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, kHugePageBytes, len) == 0 && p, "reprogram_ext: out of memory allocating ",
                nbytes, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, len, MADV_HUGEPAGE);  // advice only: ignored where THP is off
#endif
    return {p, p, &free_huge, at::Device(at::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

HugePageAllocator g_allocator;

}  // namespace

at::Tensor empty_large_cpu(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  constexpr c10::DispatchKeySet cpu_ks(c10::DispatchKey::CPU);
  return at::detail::empty_generic(sizes, &g_allocator, cpu_ks, c10::typeMetaToScalarType(options.dtype()),
                                   c10::MemoryFormat::Contiguous);
}

}  // namespace reprogram_ext
