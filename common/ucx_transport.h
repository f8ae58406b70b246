// The data-plane transport on UCX ucp active messages (common/transport.h).
//
// Connection: the server listens on a TCP port for bootstrap only: a client
// connects, reads the server's UCP worker address, and opens a UCP endpoint
// to it (so every UCX_TLS works, shm included). Requests are active
// messages sent with a reply flag; the server answers on the reply
// endpoint.
//
// Messages: the AM header carries a 16-byte transport header (call id, head
// length, flags) and, when it fits the worker's AM header limit, the
// protocol head; the AM data carries the payload (gathered from the
// caller's spans, UCP_DATATYPE_IOV), or head + payload when the head is too
// big for the header. Large payloads use UCX rendezvous and land directly
// in the destination the handler or the sink names (reserved arena space on
// the server, the caller's buffers on the client): no extra payload copy.
// Small (eager) payloads are copied once out of UCX's receive buffer.
//
// Threads: the server runs one or more progress threads (loops), each owning
// a UCP worker on a shared context; the bootstrap hands each new client lane
// the next loop's worker address, round robin, so lanes' requests are
// received, copied and verified in parallel. The handler runs on the loop,
// except heavy exchanges' Finish (Exchange::Heavy), which runs on a pool of
// worker threads shared by the loops and hands the reply back to its loop. The client has no thread of its own: it keeps
// lanes (a UCP worker + endpoint each, created on demand, up to 64), and a
// caller takes a free lane and drives it itself, so a call crosses threads
// only to the server and back. A call past its deadline returns
// DEADLINE_EXCEEDED once UCX no longer touches its buffers (the lane's
// endpoint is closed if a send or receive is stuck; its next call
// reconnects). A peer failure fails the call with UNAVAILABLE where the
// transport can detect it (tcp); over shared memory, which has no
// peer-failure detection, the deadline does.
//
// Tuning: both sides apply UcxTuning() for every UCX variable the
// environment does not set (UCX_<NAME>).
#ifndef KVRECALL_COMMON_UCX_TRANSPORT_H_
#define KVRECALL_COMMON_UCX_TRANSPORT_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/transport.h"

namespace kvrecall {

struct UcxServerOptions {
  std::string bind_address = "127.0.0.1";
  int port = 0;  // 0: an ephemeral port (see UcxServer::port)
  // Progress threads, each with its own UCP worker; client lanes are spread
  // over them round robin as they connect. 0: min(cores, 2).
  int progress_threads = 0;
  // Threads that run heavy exchanges' Finish (Exchange::Heavy), shared by
  // the progress threads; the rest run on the progress thread. 0: one per
  // core; negative: none (all inline).
  int workers = 0;
};

class UcxServer {
 public:
  // Starts the progress thread. UNAVAILABLE if the port can not be bound,
  // UCX errors converted (common/ucx_status.h). `handler` must outlive it.
  static absl::StatusOr<std::unique_ptr<UcxServer>> Start(RequestHandler* handler, const UcxServerOptions& options);
  virtual ~UcxServer() = default;
  virtual int port() const = 0;
  virtual std::string address() const = 0;  // "host:port"
  // Registers memory (the host arena) with UCX once, up front.
  virtual absl::Status RegisterMemory(absl::Span<uint8_t> region) = 0;
  // Drain: new requests are answered UNAVAILABLE; returns once the ones in
  // flight have been answered.
  virtual void StopAccepting() = 0;
  // Stops the progress thread and releases UCX (also done by the destructor).
  virtual void Shutdown() = 0;
};

struct UcxClientOptions {
  absl::Duration connect_timeout = absl::Seconds(5);
};

// kvrecall's UCX settings for a UCX_TLS value: when TCP is the only
// transport, rendezvous from 256 KiB up (UCX's automatic threshold sent
// 64 KiB blocks by rendezvous, which over TCP saves no copy and costs a
// round trip: 64 KiB gets with four requesters went 0.8 -> 1.5 GB/s), and
// 64 KiB send segments (8 KiB by default: a 64 KiB block was eight
// fragments; 64 KiB puts with four requesters went from 0.66-0.85x to
// 1.14-1.30x Redis's throughput).
// Pairs of (name without "UCX_", value).
std::vector<std::pair<std::string, std::string>> UcxTuning(const std::string& tls);

// Connects to "host:port". UNAVAILABLE if no server answers there.
absl::StatusOr<std::unique_ptr<ClientTransport>> ConnectUcx(const std::string& address,
                                                           const UcxClientOptions& options = {});

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_UCX_TRANSPORT_H_
