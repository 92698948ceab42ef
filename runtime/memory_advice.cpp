// embag::advise_huge_pages: transparent huge pages for the caller's tables (see embag.h).
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "embag/embag.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace embag {

Status advise_huge_pages(void* data, size_t bytes) {
  if (data == nullptr && bytes > 0) {
    return Status(StatusCode::kInvalidArgument,
                  "advise_huge_pages: data is null but bytes is " + std::to_string(bytes));
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(data);
  // Whole huge pages only: rounding outwards would advise memory that is not the caller's.
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (start + bytes) & ~(kHugePage - 1);
  if (bytes == 0 || end <= begin) return Status::Ok();
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) != 0) {
    const int error = errno;
    return Status(StatusCode::kUnsupported,
                  std::string("advise_huge_pages: madvise(MADV_HUGEPAGE) failed: ") +
                      std::strerror(error) + " (no transparent huge pages in this kernel?)");
  }
  return Status::Ok();
#else
  (void)bytes;
  return Status(StatusCode::kUnsupported,
                "advise_huge_pages: transparent huge pages are a Linux feature");
#endif
}

}  // namespace embag
