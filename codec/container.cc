#include "codec/container.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/bytes.h"

namespace kvrecall {
namespace {

// Offsets of the fixed header (doc/formats.md).
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffHeaderBytes = 6;
constexpr size_t kOffCodec = 8;
constexpr size_t kOffFlags = 10;
constexpr size_t kOffSectionCount = 12;
constexpr size_t kOffTotalBytes = 16;
constexpr size_t kOffFingerprint = 24;
constexpr size_t kOffLayout = 40;
constexpr size_t kOffLayerBegin = 64;
constexpr size_t kOffLayerCount = 68;
constexpr size_t kOffFirstToken = 72;
constexpr size_t kOffTokenCount = 80;
constexpr size_t kOffReserved = 84;
constexpr size_t kOffSectionLengths = 88;
static_assert(kOffLayout + kEncodedLayoutBytes == kOffLayerBegin, "layout size");
static_assert(kOffSectionLengths == kBlockFixedHeaderBytes, "header size");

absl::Status CheckHeader(const BlockHeader& h) {
  if (absl::Status s = h.layout.Validate(); !s.ok()) return s;
  if (h.layer_count == 0 ||
      uint64_t{h.layer_begin} + h.layer_count > static_cast<uint64_t>(h.layout.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", h.layer_begin, ", ",
                                                   uint64_t{h.layer_begin} + h.layer_count,
                                                   ") is outside the layout's ",
                                                   h.layout.num_layers, " layers"));
  }
  return absl::OkStatus();
}

}  // namespace

bool operator==(const BlockHeader& a, const BlockHeader& b) {
  return a.codec_id == b.codec_id && a.layout == b.layout && a.layer_begin == b.layer_begin &&
         a.layer_count == b.layer_count && a.first_token == b.first_token &&
         a.token_count == b.token_count && a.fingerprint == b.fingerprint;
}

absl::StatusOr<std::string> BuildBlock(const BlockHeader& header,
                                       const std::vector<absl::Span<const uint8_t>>& sections) {
  if (absl::Status s = CheckHeader(header); !s.ok()) return s;
  if (sections.size() > kMaxBlockSections) {
    return absl::InvalidArgumentError(
        absl::StrCat(sections.size(), " sections; at most ", kMaxBlockSections));
  }
  const size_t header_bytes = kBlockFixedHeaderBytes + 8 * sections.size();
  uint64_t total = header_bytes + kBlockTrailerBytes;
  for (const auto& s : sections) total += s.size();
  if (total > kMaxBlockBytes) {
    return absl::InvalidArgumentError(absl::StrCat("block of ", total, " bytes exceeds ", kMaxBlockBytes));
  }
  std::string out(header_bytes, '\0');
  uint8_t* h = reinterpret_cast<uint8_t*>(out.data());
  StoreLE<uint32_t>(h + kOffMagic, kBlockMagic);
  StoreLE<uint16_t>(h + kOffVersion, kBlockFormatVersion);
  StoreLE<uint16_t>(h + kOffHeaderBytes, static_cast<uint16_t>(header_bytes));
  StoreLE<uint16_t>(h + kOffCodec, header.codec_id);
  StoreLE<uint16_t>(h + kOffFlags, 0);
  StoreLE<uint32_t>(h + kOffSectionCount, static_cast<uint32_t>(sections.size()));
  StoreLE<uint64_t>(h + kOffTotalBytes, total);
  StoreLE<uint64_t>(h + kOffFingerprint, header.fingerprint.lo);
  StoreLE<uint64_t>(h + kOffFingerprint + 8, header.fingerprint.hi);
  EncodeLayout(header.layout, h + kOffLayout);
  StoreLE<uint32_t>(h + kOffLayerBegin, header.layer_begin);
  StoreLE<uint32_t>(h + kOffLayerCount, header.layer_count);
  StoreLE<uint64_t>(h + kOffFirstToken, header.first_token);
  StoreLE<uint32_t>(h + kOffTokenCount, header.token_count);
  StoreLE<uint32_t>(h + kOffReserved, 0);
  for (size_t i = 0; i < sections.size(); ++i) {
    StoreLE<uint64_t>(h + kOffSectionLengths + 8 * i, sections[i].size());
  }
  out.reserve(total);
  for (const auto& s : sections) out.append(reinterpret_cast<const char*>(s.data()), s.size());
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  return out;
}

absl::StatusOr<BlockView> ParseBlock(absl::Span<const uint8_t> bytes) {
  const size_t n = bytes.size();
  const uint8_t* p = bytes.data();
  if (n < kBlockFixedHeaderBytes + kBlockTrailerBytes) {
    return absl::DataLossError(absl::StrCat("block truncated: ", n, " bytes, smaller than the minimal ",
                                            kBlockFixedHeaderBytes + kBlockTrailerBytes));
  }
  const uint32_t magic = LoadLE<uint32_t>(p + kOffMagic);
  if (magic != kBlockMagic) {
    return absl::DataLossError(absl::StrFormat("bad block magic 0x%08x (want 0x%08x \"KVRC\")", magic, kBlockMagic));
  }
  const uint16_t version = LoadLE<uint16_t>(p + kOffVersion);
  if (version != kBlockFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("unknown block format version ", version,
                                                 " (this reader knows ", kBlockFormatVersion, ")"));
  }
  const uint32_t count = LoadLE<uint32_t>(p + kOffSectionCount);
  if (count > kMaxBlockSections) {
    return absl::DataLossError(absl::StrCat("block has ", count, " sections; at most ", kMaxBlockSections));
  }
  const size_t header_bytes = kBlockFixedHeaderBytes + 8 * size_t{count};
  if (LoadLE<uint16_t>(p + kOffHeaderBytes) != header_bytes) {
    return absl::DataLossError(absl::StrCat("block header length ", LoadLE<uint16_t>(p + kOffHeaderBytes),
                                            " does not match ", count, " sections (want ", header_bytes, ")"));
  }
  const uint64_t total = LoadLE<uint64_t>(p + kOffTotalBytes);
  if (total > n) {
    return absl::DataLossError(absl::StrCat("block truncated: header says ", total, " bytes, have ", n));
  }
  if (total < n) {
    return absl::DataLossError(absl::StrCat("block has ", n - total, " trailing bytes after its ", total));
  }
  if (total < header_bytes + kBlockTrailerBytes) {
    return absl::DataLossError(absl::StrCat("block length ", total, " is smaller than its header"));
  }
  const uint64_t payload = total - header_bytes - kBlockTrailerBytes;
  uint64_t sum = 0;
  BlockView view;
  view.sections.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t len = LoadLE<uint64_t>(p + kOffSectionLengths + 8 * i);
    if (len > payload - sum) {
      return absl::DataLossError(absl::StrCat("section ", i, " length ", len, " points past the payload (",
                                              payload - sum, " bytes left)"));
    }
    view.sections.emplace_back(p + header_bytes + sum, static_cast<size_t>(len));
    sum += len;
  }
  if (sum != payload) {
    return absl::DataLossError(absl::StrCat("section lengths sum to ", sum, " but the payload is ", payload));
  }
  const uint64_t stored = LoadLE<uint64_t>(p + total - kBlockTrailerBytes);
  const uint64_t actual = Checksum64(p, total - kBlockTrailerBytes);
  if (stored != actual) {
    return absl::DataLossError(absl::StrFormat("block checksum mismatch: stored %016x, computed %016x", stored, actual));
  }
  if (LoadLE<uint16_t>(p + kOffFlags) != 0 || LoadLE<uint32_t>(p + kOffReserved) != 0) {
    return absl::DataLossError("block flags or reserved fields are not zero");
  }
  absl::StatusOr<KvLayout> layout = DecodeLayout(p + kOffLayout);
  if (!layout.ok()) return layout.status();
  BlockHeader& h = view.header;
  h.codec_id = LoadLE<uint16_t>(p + kOffCodec);
  h.layout = *layout;
  h.layer_begin = LoadLE<uint32_t>(p + kOffLayerBegin);
  h.layer_count = LoadLE<uint32_t>(p + kOffLayerCount);
  h.first_token = LoadLE<uint64_t>(p + kOffFirstToken);
  h.token_count = LoadLE<uint32_t>(p + kOffTokenCount);
  h.fingerprint.lo = LoadLE<uint64_t>(p + kOffFingerprint);
  h.fingerprint.hi = LoadLE<uint64_t>(p + kOffFingerprint + 8);
  if (absl::Status s = CheckHeader(h); !s.ok()) return absl::DataLossError(absl::StrCat("block header: ", s.message()));
  view.checksum = stored;
  return view;
}

}  // namespace kvrecall
