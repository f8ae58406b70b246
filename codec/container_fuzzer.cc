// libFuzzer target: ParseBlock (and ParseBlockForRows + VerifyBlockRanges)
// must reject or accept any byte string without
// crashing or reading out of bounds, and anything it accepts must round-trip
// through BuildBlock to the identical bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codec/container.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The row reader's partial parse, and verifying ranges of what it accepts.
  if (auto partial = kvrecall::ParseBlockForRows(absl::Span<const uint8_t>(data, size)); partial.ok()) {
    std::vector<absl::Span<const uint8_t>> ranges(partial->sections.begin(), partial->sections.end());
    (void)kvrecall::VerifyBlockRanges(*partial, ranges);
  }
  auto view = kvrecall::ParseBlock(absl::Span<const uint8_t>(data, size));
  if (!view.ok()) return 0;
  auto rebuilt = kvrecall::BuildBlock(view->header, view->sections);
  if (!rebuilt.ok() || rebuilt->size() != size ||
      std::memcmp(rebuilt->data(), data, size) != 0) {
    std::abort();  // an accepted block must be canonical
  }
  return 0;
}
