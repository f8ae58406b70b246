// The data-plane protocol (doc/protocol.md): versioned fixed-size header,
// namespace token, op-specific body, and an optional bulk payload that
// travels separately (UCX rendezvous into registered memory, or attached in
// process). Encoders build messages; parsers validate every length, count
// and offset against hard limits and return INVALID_ARGUMENT for malformed
// input (UNIMPLEMENTED for an unknown version) — they never read outside the
// given bytes and never allocate more than the limits allow.
//
// Thread safety: free functions over caller-owned data; thread-compatible.
#ifndef KVRECALL_STORE_PROTOCOL_H_
#define KVRECALL_STORE_PROTOCOL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "codec/block_key.h"

namespace kvrecall {

inline constexpr uint32_t kProtocolMagic = 0x4d52564bu;  // "KVRM"
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kHeaderBytes = 40;
inline constexpr uint32_t kMaxTokenBytes = 256;
inline constexpr uint32_t kMaxBodyBytes = 8u << 20;        // metadata, not payload
inline constexpr uint64_t kMaxPayloadBytes = 1ull << 31;   // one message's bulk data
inline constexpr uint32_t kMaxItems = 65536;               // keys per batch
inline constexpr uint64_t kMaxGatherRows = 1u << 22;       // rows per gather request
inline constexpr uint32_t kMaxErrorBytes = 4096;
inline constexpr uint64_t kMaxAttendQueryBytes = 16u << 20;
inline constexpr uint32_t kMaxAttendGroup = 64;
inline constexpr uint32_t kMaxRecallSamples = 4096;

enum class Op : uint16_t {
  kPut = 1,
  kGet = 2,
  kExists = 3,
  kDelete = 4,
  kGather = 5,
  kAttend = 6,
  kRecall = 7,  // live-recall samples of retrieval sessions, for the server's metrics
};
inline constexpr uint16_t kLastOp = uint16_t(Op::kRecall);
inline constexpr uint16_t kReplyBit = 0x8000;  // op 0 | kReplyBit: error reply to an unreadable request

// Request flags.
inline constexpr uint32_t kFlagDurable = 1u << 0;  // Put: acknowledge only once on stable storage
inline constexpr uint32_t kFlagGatherCompressed = 1u << 1;  // Gather: whole blocks, not decoded rows
inline constexpr uint32_t kKnownFlags = kFlagDurable | kFlagGatherCompressed;

struct MessageHeader {
  uint16_t version = kProtocolVersion;
  uint16_t op = 0;           // Op, | kReplyBit in replies
  uint64_t request_id = 0;
  uint32_t status = 0;       // replies: absl::StatusCode of the whole request
  uint32_t token_len = 0;
  uint32_t body_len = 0;
  uint32_t flags = 0;
  uint64_t payload_len = 0;
};

struct PutItem {
  BlockKey key;
  uint64_t offset = 0;  // within the payload; items are back to back in order
  uint32_t length = 0;
};

struct GatherItem {
  BlockKey key;
  std::vector<uint32_t> rows;  // token offsets within the block
};

// One live-recall sample (client/retrieval_session.h): a query head's
// selection against exact attention. Recalls in [0, 1], error >= 0.
struct RecallSample {
  float topk_recall = 0, mass_recall = 0, output_error = 0;
};

struct Request {
  MessageHeader header;
  std::string token;
  std::vector<BlockKey> keys;      // Get, Exists (a chain, in order), Delete
  std::vector<PutItem> puts;       // Put
  std::vector<GatherItem> gathers; // Gather, Attend (the rows attended over)
  // Attend: query heads per KV head, and the logit scale; the queries
  // ([layer_count][kv_heads][group][head_dim] f32) are the payload.
  uint32_t attend_group = 0;
  float attend_scale = 0;
  std::vector<RecallSample> recall;  // Recall
  Op op() const { return static_cast<Op>(header.op); }
};

// Per-item result: code is an absl::StatusCode (OK, NOT_FOUND for a miss,
// ...); offset/length locate the item's bytes in the reply payload.
struct ReplyItem {
  uint8_t code = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

struct Reply {
  MessageHeader header;
  std::string error;               // when header.status != OK
  std::vector<ReplyItem> items;    // Put, Get, Delete, Gather
  uint32_t prefix = 0;             // Exists: leading keys present
  std::vector<bool> present;       // Exists: per key
  absl::Status status() const;     // the whole request's status
};

// Encoding. The payload itself is not part of the returned bytes; its
// length goes into the header.
std::string EncodeRequest(const Request& request);
std::string EncodeReply(const Reply& reply);
// A whole-request error reply to `request_id`/`op`.
Reply ErrorReply(uint64_t request_id, uint16_t op, const absl::Status& status);

// Reads only the fixed header: INVALID_ARGUMENT for bad magic, lengths over
// the limits or a header whose lengths do not match `wire_len`;
// UNIMPLEMENTED for another version.
absl::StatusOr<MessageHeader> ParseHeader(absl::Span<const uint8_t> wire);
absl::StatusOr<Request> ParseRequest(absl::Span<const uint8_t> wire);
absl::StatusOr<Reply> ParseReply(absl::Span<const uint8_t> wire);

}  // namespace kvrecall

#endif  // KVRECALL_STORE_PROTOCOL_H_
