// libFuzzer target for the data-plane message parsers: any bytes are parsed
// as a request and as a reply; whatever parses must re-encode to the same
// bytes (the parsers accept exactly what the encoders write).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "store/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvrecall;
  const absl::Span<const uint8_t> in(data, size);
  absl::StatusOr<Request> req = ParseRequest(in);
  if (req.ok()) {
    const std::string again = EncodeRequest(*req);
    if (again.size() != size || again.compare(0, size, reinterpret_cast<const char*>(data), size) != 0) std::abort();
  }
  absl::StatusOr<Reply> rep = ParseReply(in);
  if (rep.ok()) {
    const std::string again = EncodeReply(*rep);
    if (again.size() != size || again.compare(0, size, reinterpret_cast<const char*>(data), size) != 0) std::abort();
  }
  return 0;
}
