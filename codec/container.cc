#include "codec/container.h"

#include <algorithm>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/bytes.h"
#include "common/crc32c.h"
#include "common/status.h"

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
  if (h.chunk_shift != 0 && (h.chunk_shift < kMinChunkShift || h.chunk_shift > kMaxChunkShift)) {
    return absl::InvalidArgumentError(absl::StrCat("chunk_shift ", h.chunk_shift, " is outside [", kMinChunkShift,
                                                   ", ", kMaxChunkShift, "] (or 0 for none)"));
  }
  if (h.layer_count == 0 ||
      uint64_t{h.layer_begin} + h.layer_count > static_cast<uint64_t>(h.layout.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", h.layer_begin, ", ",
                                                   uint64_t{h.layer_begin} + h.layer_count,
                                                   ") is outside the layout's ",
                                                   h.layout.num_layers, " layers"));
  }
  return absl::OkStatus();
}

uint64_t ChunkCount(uint64_t covered, int shift) { return (covered + (uint64_t{1} << shift) - 1) >> shift; }
uint64_t AlignUp(uint64_t x, int shift) { return ChunkCount(x, shift) << shift; }

uint32_t ChunkSum(const uint8_t* p, size_t n, bool crc) {
  return crc ? Crc32c(p, n) : static_cast<uint32_t>(Checksum64(p, n));
}

absl::Status ChunkMismatch(uint64_t c, uint64_t begin, uint64_t end, uint32_t stored, uint32_t actual) {
  return absl::DataLossError(absl::StrFormat("block chunk %d (bytes %d..%d) checksum mismatch: stored %08x, "
                                             "computed %08x", c, begin, end, stored, actual));
}

// Verifies the chunks c[0, n) (any order) of the `covered` bytes at p. CRC32C
// sums go four chunks at a time (Crc32c4), where the chunks are full.
absl::Status VerifyChunkList(const uint8_t* p, uint64_t covered, const uint8_t* sums, int shift, bool crc,
                             const uint64_t* c, size_t n, absl::FunctionRef<void(size_t)> before = [](size_t) {}) {
  const uint64_t size = uint64_t{1} << shift;
  size_t i = 0;
  if (crc) {
    for (; i + 4 <= n && ((c[i + 3] + 1) << shift) <= covered && ((c[i] + 1) << shift) <= covered &&
           ((c[i + 1] + 1) << shift) <= covered && ((c[i + 2] + 1) << shift) <= covered;
         i += 4) {
      before(i);
      const uint8_t* chunk[4] = {p + (c[i] << shift), p + (c[i + 1] << shift), p + (c[i + 2] << shift),
                                 p + (c[i + 3] << shift)};
      uint32_t actual[4];
      Crc32c4(chunk, static_cast<size_t>(size), actual);
      for (int k = 0; k < 4; ++k) {
        const uint32_t stored = LoadLE<uint32_t>(sums + 4 * c[i + k]);
        if (actual[k] != stored) {
          return ChunkMismatch(c[i + k], c[i + k] << shift, (c[i + k] + 1) << shift, stored, actual[k]);
        }
      }
    }
  }
  for (; i < n; ++i) {
    before(i);
    const uint64_t begin = c[i] << shift;
    const uint32_t actual = ChunkSum(p + begin, static_cast<size_t>(std::min(size, covered - begin)), crc);
    const uint32_t stored = LoadLE<uint32_t>(sums + 4 * c[i]);
    if (actual != stored) return ChunkMismatch(c[i], begin, std::min(begin + size, covered), stored, actual);
  }
  return absl::OkStatus();
}

// Verifies chunks [first, last] of the `covered` bytes at p.
absl::Status VerifyChunks(const uint8_t* p, uint64_t covered, const uint8_t* sums, int shift, bool crc,
                          uint64_t first, uint64_t last) {
  uint64_t c[64];
  for (uint64_t at = first; at <= last;) {
    size_t n = 0;
    for (; n < 64 && at <= last; ++n, ++at) c[n] = at;
    RETURN_IF_ERROR(VerifyChunkList(p, covered, sums, shift, crc, c, n));
  }
  return absl::OkStatus();
}

// Asks for chunk c of a chunked view (of the `covered` bytes) and for its
// stored sum, far away at the block's end.
//
// The prefetch is an asm statement on x86-64: GCC 12 treats
// __builtin_prefetch as free of side effects and deleted these loops (and the
// functions around them) as dead code; the disassembly had no prefetch left.
inline void PrefetchLine(const uint8_t* p) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*p));
#else
  __builtin_prefetch(p);
#endif
}

void PrefetchChunk(const BlockView& view, uint64_t covered, uint64_t c) {
  const int shift = view.header.chunk_shift;
  const uint64_t end = std::min((c + 1) << shift, covered);
  for (uint64_t o = c << shift; o < end; o += 64) PrefetchLine(view.bytes.data() + o);
  PrefetchLine(view.chunk_sums.data() + 4 * c);
}

// The block's structure from its header, bounds-checked against the buffer
// but not yet verified by any checksum: section spans, chunk table, and the
// number of bytes the chunks cover (header + sections).
struct Structure {
  size_t header_bytes = 0;
  uint64_t total = 0;
  uint64_t covered = 0;
  int chunk_shift = 0;
  bool crc = false;  // chunk sums are CRC32C
};

absl::StatusOr<Structure> ReadStructure(absl::Span<const uint8_t> bytes, BlockView* view) {
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
  Structure st;
  st.header_bytes = kBlockFixedHeaderBytes + 8 * size_t{count};
  if (LoadLE<uint16_t>(p + kOffHeaderBytes) != st.header_bytes) {
    return absl::DataLossError(absl::StrCat("block header length ", LoadLE<uint16_t>(p + kOffHeaderBytes),
                                            " does not match ", count, " sections (want ", st.header_bytes, ")"));
  }
  st.total = LoadLE<uint64_t>(p + kOffTotalBytes);
  if (st.total > n) {
    return absl::DataLossError(absl::StrCat("block truncated: header says ", st.total, " bytes, have ", n));
  }
  if (st.total < n) {
    return absl::DataLossError(absl::StrCat("block has ", n - st.total, " trailing bytes after its ", st.total));
  }
  if (st.total < st.header_bytes + kBlockTrailerBytes) {
    return absl::DataLossError(absl::StrCat("block length ", st.total, " is smaller than its header"));
  }
  const uint16_t flags = LoadLE<uint16_t>(p + kOffFlags);
  if (((flags & kBlockFlagChunkSums) != 0) != ((flags & kBlockFlagAlignedSections) != 0)) {
    return absl::DataLossError(absl::StrCat("block flags 0x", absl::Hex(flags),
                                            ": chunk checksums and aligned sections go together"));
  }
  if (flags & kBlockFlagChunkSums) {
    const uint32_t shift = LoadLE<uint32_t>(p + kOffReserved);
    if (shift < kMinChunkShift || shift > kMaxChunkShift) {
      return absl::DataLossError(absl::StrCat("block chunk shift ", shift, " is outside [", kMinChunkShift, ", ",
                                              kMaxChunkShift, "]"));
    }
    st.chunk_shift = static_cast<int>(shift);
    st.crc = (flags & kBlockFlagCrc32cChunkSums) != 0;
  } else if (flags & kBlockFlagCrc32cChunkSums) {
    return absl::DataLossError(absl::StrCat("block flags 0x", absl::Hex(flags), ": a chunk sum kind without chunks"));
  }
  const uint64_t end = st.total - kBlockTrailerBytes;  // sections (with their alignment) + chunk table
  uint64_t at = st.header_bytes;                        // where the next section starts
  view->sections.clear();
  view->sections.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t len = LoadLE<uint64_t>(p + kOffSectionLengths + 8 * i);
    if (st.chunk_shift) at = AlignUp(at, st.chunk_shift);
    if (at > end || len > end - at) {
      return absl::DataLossError(absl::StrCat("section ", i, " length ", len, " points past the payload (",
                                              at > end ? 0 : end - at, " bytes left)"));
    }
    view->sections.emplace_back(p + at, static_cast<size_t>(len));
    at += len;
  }
  st.covered = at;
  const uint64_t table = st.chunk_shift ? 4 * ChunkCount(st.covered, st.chunk_shift) : 0;
  if (st.covered + table != end) {
    return absl::DataLossError(absl::StrCat("sections end at byte ", st.covered,
                                            table ? " and a chunk table of " : "", table ? absl::StrCat(table) : "",
                                            " follows, but the payload ends at ", end));
  }
  view->bytes = bytes.first(static_cast<size_t>(st.total));
  view->chunk_sums = absl::Span<const uint8_t>(p + st.covered, static_cast<size_t>(table));
  view->crc_chunk_sums = st.crc;
  return st;
}

// The header fields, once the header's bytes are verified.
absl::Status ReadFields(const uint8_t* p, const Structure& st, BlockView* view) {
  const uint16_t flags = LoadLE<uint16_t>(p + kOffFlags);
  if ((flags & ~(kBlockFlagChunkSums | kBlockFlagAlignedSections | kBlockFlagCrc32cChunkSums)) != 0 ||
      (!st.chunk_shift && LoadLE<uint32_t>(p + kOffReserved) != 0)) {
    return absl::DataLossError("block flags or reserved fields are not zero");
  }
  absl::StatusOr<KvLayout> layout = DecodeLayout(p + kOffLayout);
  if (!layout.ok()) return layout.status();
  BlockHeader& h = view->header;
  h.codec_id = LoadLE<uint16_t>(p + kOffCodec);
  h.layout = *layout;
  h.layer_begin = LoadLE<uint32_t>(p + kOffLayerBegin);
  h.layer_count = LoadLE<uint32_t>(p + kOffLayerCount);
  h.first_token = LoadLE<uint64_t>(p + kOffFirstToken);
  h.token_count = LoadLE<uint32_t>(p + kOffTokenCount);
  h.fingerprint.lo = LoadLE<uint64_t>(p + kOffFingerprint);
  h.fingerprint.hi = LoadLE<uint64_t>(p + kOffFingerprint + 8);
  h.chunk_shift = st.chunk_shift;
  if (absl::Status s = CheckHeader(h); !s.ok()) return absl::DataLossError(absl::StrCat("block header: ", s.message()));
  return absl::OkStatus();
}

}  // namespace

bool operator==(const BlockHeader& a, const BlockHeader& b) {
  return a.codec_id == b.codec_id && a.layout == b.layout && a.layer_begin == b.layer_begin &&
         a.layer_count == b.layer_count && a.first_token == b.first_token &&
         a.token_count == b.token_count && a.fingerprint == b.fingerprint && a.chunk_shift == b.chunk_shift;
}

absl::StatusOr<std::string> BuildBlock(const BlockHeader& header,
                                       const std::vector<absl::Span<const uint8_t>>& sections) {
  if (absl::Status s = CheckHeader(header); !s.ok()) return s;
  if (sections.size() > kMaxBlockSections) {
    return absl::InvalidArgumentError(
        absl::StrCat(sections.size(), " sections; at most ", kMaxBlockSections));
  }
  const size_t header_bytes = kBlockFixedHeaderBytes + 8 * sections.size();
  std::vector<uint64_t> offsets;  // of each section; with chunk sums, on chunk boundaries
  uint64_t covered = header_bytes;
  for (const auto& s : sections) {
    if (header.chunk_shift) covered = AlignUp(covered, header.chunk_shift);
    offsets.push_back(covered);
    covered += s.size();
  }
  const uint64_t chunks = header.chunk_shift ? ChunkCount(covered, header.chunk_shift) : 0;
  const uint64_t total = covered + 4 * chunks + kBlockTrailerBytes;
  if (total > kMaxBlockBytes) {
    return absl::InvalidArgumentError(absl::StrCat("block of ", total, " bytes exceeds ", kMaxBlockBytes));
  }
  std::string out(header_bytes, '\0');  // then zeros up to each section
  uint8_t* h = reinterpret_cast<uint8_t*>(out.data());
  StoreLE<uint32_t>(h + kOffMagic, kBlockMagic);
  StoreLE<uint16_t>(h + kOffVersion, kBlockFormatVersion);
  StoreLE<uint16_t>(h + kOffHeaderBytes, static_cast<uint16_t>(header_bytes));
  StoreLE<uint16_t>(h + kOffCodec, header.codec_id);
  StoreLE<uint16_t>(h + kOffFlags, header.chunk_shift
                                        ? kBlockFlagChunkSums | kBlockFlagAlignedSections | kBlockFlagCrc32cChunkSums
                                        : 0);
  StoreLE<uint32_t>(h + kOffSectionCount, static_cast<uint32_t>(sections.size()));
  StoreLE<uint64_t>(h + kOffTotalBytes, total);
  StoreLE<uint64_t>(h + kOffFingerprint, header.fingerprint.lo);
  StoreLE<uint64_t>(h + kOffFingerprint + 8, header.fingerprint.hi);
  EncodeLayout(header.layout, h + kOffLayout);
  StoreLE<uint32_t>(h + kOffLayerBegin, header.layer_begin);
  StoreLE<uint32_t>(h + kOffLayerCount, header.layer_count);
  StoreLE<uint64_t>(h + kOffFirstToken, header.first_token);
  StoreLE<uint32_t>(h + kOffTokenCount, header.token_count);
  StoreLE<uint32_t>(h + kOffReserved, static_cast<uint32_t>(header.chunk_shift));
  for (size_t i = 0; i < sections.size(); ++i) {
    StoreLE<uint64_t>(h + kOffSectionLengths + 8 * i, sections[i].size());
  }
  out.reserve(total);
  for (size_t i = 0; i < sections.size(); ++i) {
    out.resize(offsets[i], '\0');
    out.append(reinterpret_cast<const char*>(sections[i].data()), sections[i].size());
  }
  for (uint64_t c = 0; c < chunks; ++c) {
    const uint64_t begin = c << header.chunk_shift;
    const size_t len = static_cast<size_t>(std::min(uint64_t{1} << header.chunk_shift, covered - begin));
    AppendLE<uint32_t>(&out, ChunkSum(reinterpret_cast<const uint8_t*>(out.data()) + begin, len, /*crc=*/true));
  }
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  return out;
}

namespace {

// ParseBlock after ReadStructure: every checksum, then the fields.
absl::StatusOr<BlockView> VerifyWhole(const uint8_t* p, const Structure& st, BlockView view) {
  // (Read here, not by ReadStructure: a row read does not touch the block's last bytes.)
  view.checksum = LoadLE<uint64_t>(p + st.total - kBlockTrailerBytes);
  const uint64_t actual = Checksum64(p, st.total - kBlockTrailerBytes);
  if (view.checksum != actual) {
    return absl::DataLossError(
        absl::StrFormat("block checksum mismatch: stored %016x, computed %016x", view.checksum, actual));
  }
  if (st.chunk_shift) {  // an accepted block is canonical: its chunk sums must be right, its gaps zero
    RETURN_IF_ERROR(VerifyChunks(p, st.covered, view.chunk_sums.data(), st.chunk_shift, st.crc, 0,
                                 ChunkCount(st.covered, st.chunk_shift) - 1));
    uint64_t gap = st.header_bytes;
    for (const absl::Span<const uint8_t>& sec : view.sections) {
      const uint64_t start = static_cast<uint64_t>(sec.data() - p);
      for (uint64_t i = gap; i < start; ++i) {
        if (p[i] != 0) return absl::DataLossError(absl::StrCat("block padding byte ", i, " is not zero"));
      }
      gap = start + sec.size();
    }
  }
  RETURN_IF_ERROR(ReadFields(p, st, &view));
  return view;
}

}  // namespace

absl::StatusOr<BlockView> ParseBlock(absl::Span<const uint8_t> bytes) {
  BlockView view;
  ASSIGN_OR_RETURN(const Structure st, ReadStructure(bytes, &view));
  return VerifyWhole(bytes.data(), st, std::move(view));
}

absl::StatusOr<BlockView> ParseBlockForRows(absl::Span<const uint8_t> bytes) {
  BlockView view;
  ASSIGN_OR_RETURN(const Structure st, ReadStructure(bytes, &view));
  if (!st.chunk_shift) return VerifyWhole(bytes.data(), st, std::move(view));
  // The header, then section 0 (codec parameters, read by CodecForBlock).
  const uint8_t* p = bytes.data();
  const uint64_t end0 = view.sections.empty() ? st.header_bytes
                                              : static_cast<uint64_t>(view.sections[0].data() - p) +
                                                    view.sections[0].size();
  RETURN_IF_ERROR(VerifyChunks(p, st.covered, view.chunk_sums.data(), st.chunk_shift, st.crc, 0,
                               (std::max<uint64_t>(end0, 1) - 1) >> st.chunk_shift));
  RETURN_IF_ERROR(ReadFields(p, st, &view));
  view.partial = true;
  return view;
}

absl::Status VerifyBlockRanges(const BlockView& view, absl::Span<const absl::Span<const uint8_t>> ranges) {
  if (!view.partial) return absl::OkStatus();
  const int shift = view.header.chunk_shift;
  const uint8_t* p = view.bytes.data();
  const uint64_t covered = static_cast<uint64_t>(view.chunk_sums.data() - p);  // the table follows them
  // The chunks under the ranges, each once: ranges come in order within a
  // section (rows ascending), so a run of adjacent rows shares its boundary
  // chunks with the previous range.
  std::vector<uint64_t> chunks;
  chunks.reserve(2 * ranges.size());
  uint64_t lo = 1, hi = 0;  // the last run of listed chunks (empty)
  for (const absl::Span<const uint8_t>& r : ranges) {
    if (r.empty()) continue;
    if (r.data() < p || r.data() + r.size() > p + covered) {
      return absl::InvalidArgumentError("range outside the block's header and sections");
    }
    uint64_t first = uint64_t(r.data() - p) >> shift;
    const uint64_t last = uint64_t(r.data() + r.size() - 1 - p) >> shift;
    if (first >= lo && first <= hi) first = hi + 1;  // its head is listed already
    if (first > last) continue;
    for (uint64_t c = first; c <= last; ++c) chunks.push_back(c);
    if (first != hi + 1 || lo > hi) lo = first;
    hi = last;
  }
  // Scattered rows are a walk of DRAM misses: ask for a few chunks ahead
  // while hashing the current ones (up to four at a time).
  constexpr size_t kAhead = 8;
  size_t asked = std::min(kAhead, chunks.size());
  for (size_t i = 0; i < asked; ++i) PrefetchChunk(view, covered, chunks[i]);
  return VerifyChunkList(p, covered, view.chunk_sums.data(), shift, view.crc_chunk_sums, chunks.data(),
                         chunks.size(), [&](size_t i) {
                           for (; asked < chunks.size() && asked < i + 4 + kAhead; ++asked) {
                             PrefetchChunk(view, covered, chunks[asked]);
                           }
                         });
}

void PrefetchBlockRanges(const BlockView& view, absl::Span<const absl::Span<const uint8_t>> ranges) {
  if (!view.partial) return;
  const int shift = view.header.chunk_shift;
  const uint8_t* p = view.bytes.data();
  const uint64_t covered = static_cast<uint64_t>(view.chunk_sums.data() - p);
  uint64_t done = ~uint64_t{0};  // the last chunk asked for (adjacent rows share chunks)
  for (const absl::Span<const uint8_t>& r : ranges) {
    if (r.empty() || r.data() < p || r.data() + r.size() > p + covered) continue;
    const uint64_t first = uint64_t(r.data() - p) >> shift, last = uint64_t(r.data() + r.size() - 1 - p) >> shift;
    for (uint64_t c = first; c <= last; ++c) {
      if (c == done) continue;
      PrefetchChunk(view, covered, c);
      done = c;
    }
  }
}

}  // namespace kvrecall
