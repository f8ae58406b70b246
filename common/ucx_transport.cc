#include "common/ucx_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "common/ucx_status.h"

namespace kvrecall {
namespace {

constexpr unsigned kAmRequest = 1;
constexpr unsigned kAmReply = 2;
constexpr uint32_t kBootstrapMagic = 0x4252564bu;  // "KVRB"
constexpr uint32_t kHeadInHeader = 1;
constexpr size_t kDiscardChunk = 64 << 10;

// The transport header at the start of every AM header.
struct WireHeader {
  uint64_t call_id;
  uint32_t head_len;
  uint32_t flags;
};
static_assert(sizeof(WireHeader) == 16, "wire header is 16 bytes");

}  // namespace

std::vector<std::pair<std::string, std::string>> UcxTuning(const std::string& tls) {
  std::vector<std::pair<std::string, std::string>> out;
  bool tcp_only = !tls.empty();  // empty: UCX's default, every transport
  for (absl::string_view t : absl::StrSplit(tls, ',', absl::SkipEmpty())) tcp_only &= t == "tcp" || t == "self";
  if (tcp_only) {
    out.push_back({"RNDV_THRESH", "256K"});
    // Eager messages up to 64 KiB in one segment: with UCX's 8 KiB segments a
    // 64 KiB block went as eight fragments, each its own send and copy.
    out.push_back({"TCP_TX_SEG_SIZE", "64K"});
    out.push_back({"TCP_RX_SEG_SIZE", "128K"});
  }
  return out;
}

namespace {

// UCX's configuration from the environment, with UcxTuning for what the
// environment leaves unset.
absl::Status ReadUcxConfig(ucp_config_t** config) {
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, config); st != UCS_OK) return FromUcsStatus(st, "ucp_config_read");
  const char* tls = std::getenv("UCX_TLS");
  for (const auto& [name, value] : UcxTuning(tls ? tls : "")) {
    if (std::getenv(absl::StrCat("UCX_", name).c_str()) == nullptr) (void)ucp_config_modify(*config, name.c_str(), value.c_str());
  }
  return absl::OkStatus();
}

// A UCP context for active messages with wakeup; `shared`: its workers are
// driven from different threads.
absl::Status NewContext(bool shared, ucp_context_h* ctx) {
  ucp_config_t* config = nullptr;
  if (absl::Status s = ReadUcxConfig(&config); !s.ok()) return s;
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = shared ? 1 : 0;
  const ucs_status_t st = ucp_init(&params, config, ctx);
  ucp_config_release(config);
  return FromUcsStatus(st, "ucp_init");
}

// A worker with its AM header limit and event fd, and `cb` as the handler of
// whole active messages `am_id`. On failure *worker is null.
absl::Status NewWorker(ucp_context_h ctx, ucs_thread_mode_t mode, unsigned am_id, ucp_am_recv_callback_t cb, void* arg,
                       ucp_worker_h* worker, size_t* max_am_header, int* efd) {
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = mode;
  if (ucs_status_t st = ucp_worker_create(ctx, &wp, worker); st != UCS_OK) {
    *worker = nullptr;
    return FromUcsStatus(st, "ucp_worker_create");
  }
  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  ucp_am_handler_param_t p{};
  p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                 UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  p.id = am_id;
  p.cb = cb;
  p.arg = arg;
  p.flags = UCP_AM_FLAG_WHOLE_MSG;
  absl::Status s = FromUcsStatus(ucp_worker_query(*worker, &attr), "ucp_worker_query");
  if (s.ok()) s = FromUcsStatus(ucp_worker_get_efd(*worker, efd), "ucp_worker_get_efd");
  if (s.ok()) s = FromUcsStatus(ucp_worker_set_am_recv_handler(*worker, &p), "ucp_worker_set_am_recv_handler");
  if (!s.ok()) {
    ucp_worker_destroy(*worker);
    *worker = nullptr;
    return s;
  }
  *max_am_header = attr.max_am_header;
  return absl::OkStatus();
}

// Registers `region` with the context.
absl::StatusOr<ucp_mem_h> MapRegion(ucp_context_h ctx, absl::Span<uint8_t> region) {
  ucp_mem_map_params_t p{};
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  p.address = region.data();
  p.length = region.size();
  ucp_mem_h mem = nullptr;
  if (ucs_status_t st = ucp_mem_map(ctx, &p, &mem); st != UCS_OK) return FromUcsStatus(st, "ucp_mem_map");
  return mem;
}

// A server loop's UCP worker (on the server's context), owned by its
// progress thread.
struct Worker {
  ucp_worker_h worker = nullptr;
  int efd = -1;       // the worker's event fd
  int wake_fd = -1;   // eventfd other threads write to
  int epoll_fd = -1;
  size_t max_am_header = 0;

  absl::Status Init(ucp_context_h ctx, unsigned am_id, ucp_am_recv_callback_t cb, void* arg) {
    if (absl::Status st = NewWorker(ctx, UCS_THREAD_MODE_SINGLE, am_id, cb, arg, &worker, &max_am_header, &efd);
        !st.ok()) {
      return st;
    }
    wake_fd = eventfd(0, EFD_NONBLOCK);
    epoll_fd = epoll_create1(0);
    if (wake_fd < 0 || epoll_fd < 0) return absl::InternalError("eventfd/epoll");
    for (int fd : {efd, wake_fd}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    }
    return absl::OkStatus();
  }
  void Watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }
  void Wake() const {
    const uint64_t one = 1;
    (void)!write(wake_fd, &one, sizeof(one));
  }
  // Progress until idle; then sleep until an event or `ms`.
  void ProgressOrWait(bool busy, int ms) {
    while (ucp_worker_progress(worker) > 0) busy = true;
    if (busy) return;
    // Poll briefly before sleeping: a reply or the next request usually
    // follows within microseconds, and an epoll wakeup costs more.
    for (int i = 0; i < 64; ++i) {
      if (ucp_worker_progress(worker) > 0) return;
    }
    if (ucp_worker_arm(worker) != UCS_OK) return;  // events pending: go around again
    epoll_event evs[4];
    const int n = epoll_wait(epoll_fd, evs, 4, ms);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == wake_fd) {
        uint64_t v;
        (void)!read(wake_fd, &v, sizeof(v));
      }
    }
  }
  void Close() {
    if (worker) ucp_worker_destroy(worker);
    if (wake_fd >= 0) close(wake_fd);
    if (epoll_fd >= 0) close(epoll_fd);
    worker = nullptr, wake_fd = epoll_fd = -1;
  }
};

std::vector<ucp_dt_iov_t> ToUcpIov(const MutableIov& v) {
  std::vector<ucp_dt_iov_t> out;
  for (const auto& s : v) {
    if (!s.empty()) out.push_back({s.data(), s.size()});
  }
  return out;
}

// Buffer arguments for an iovec: contiguous (the fast path UCX optimizes
// best) for zero or one span, UCP_DATATYPE_IOV otherwise.
void SetBuffer(const std::vector<ucp_dt_iov_t>& iov, ucp_request_param_t* p, void** buf, size_t* count) {
  if (iov.size() <= 1) {
    p->datatype = ucp_dt_make_contig(1);
    *buf = iov.empty() ? nullptr : iov[0].buffer;
    *count = iov.empty() ? 0 : iov[0].length;
    return;
  }
  p->datatype = ucp_dt_make_iov();
  *buf = const_cast<ucp_dt_iov_t*>(iov.data());
  *count = iov.size();
}

// Copies `n` eager bytes into a scattered destination of the same total.
absl::Status Scatter(const uint8_t* src, size_t n, const MutableIov& dst) {
  if (IovBytes(dst) != n) return absl::InvalidArgumentError(absl::StrCat(n, " payload bytes for ", IovBytes(dst), " bytes of buffers"));
  for (const auto& d : dst) {
    std::memcpy(d.data(), src, d.size());
    src += d.size();
  }
  return absl::OkStatus();
}

// A destination that absorbs and drops `n` bytes (repeating one buffer).
MutableIov DiscardIov(std::vector<uint8_t>* buf, uint64_t n) {
  MutableIov v;
  if (n == 0) return v;
  buf->resize(kDiscardChunk);
  for (uint64_t left = n; left > 0;) {
    const uint64_t k = std::min<uint64_t>(left, buf->size());
    v.push_back({buf->data(), k});
    left -= k;
  }
  return v;
}

// Receives and drops a rendezvous payload. (Receiving it, rather than
// ucp_am_data_release, completes the sender's request the ordinary way:
// with UCX 1.13 over shared memory a released rendezvous message made the
// sender's worker see an acknowledgement for a request it had freed.)
void DiscardRndv(ucp_worker_h worker, void* desc, size_t length) {
  auto* buf = new std::vector<uint8_t>(length);
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  p.cb.recv_am = [](void* request, ucs_status_t, size_t, void* user_data) {
    delete static_cast<std::vector<uint8_t>*>(user_data);
    ucp_request_free(request);
  };
  p.user_data = buf;
  p.datatype = ucp_dt_make_contig(1);
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker, desc, buf->data(), length, &p);
  if (r == nullptr || UCS_PTR_IS_ERR(r)) delete buf;
}

bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    c += w, n -= size_t(w);
  }
  return true;
}

bool ReadAll(int fd, void* p, size_t n, int timeout_ms) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t r = recv(fd, c, n, 0);
    if (r <= 0) return false;
    c += r, n -= size_t(r);
  }
  return true;
}

absl::Status ParseHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), port) || *port <= 0 || *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not host:port"));
  }
  *host = address.substr(0, colon);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Server.

class ServerLoop;

// The worker threads that run heavy exchanges' Finish, shared by a server's
// loops (so that heavy work runs on as many threads as were asked for,
// however many loops feed it). Closed once at shutdown: it finishes what was
// submitted, and later submissions are refused (the loop runs them inline).
class HeavyPool {
 public:
  explicit HeavyPool(int threads) {
    if (threads > 0) pool_ = std::make_unique<ThreadPool>(threads);
  }
  bool Submit(std::function<void()> fn) {
    std::lock_guard<std::mutex> l(mu_);
    if (!pool_) return false;
    pool_->Submit(std::move(fn));
    return true;
  }
  void Close() {
    std::unique_ptr<ThreadPool> p;
    {
      std::lock_guard<std::mutex> l(mu_);
      p = std::move(pool_);
    }
    p.reset();  // joins its threads after running what was queued
  }

 private:
  std::mutex mu_;
  std::unique_ptr<ThreadPool> pool_;
};

struct ServerCall {
  ServerLoop* server = nullptr;
  uint64_t id = 0;
  ucp_ep_h reply_ep = nullptr;
  std::unique_ptr<Exchange> ex;
  std::vector<uint8_t> discard;
  std::vector<ucp_dt_iov_t> recv_iov;
  std::string whole;  // head + payload when the head came in the data
  uint64_t payload_len = 0;
  std::vector<uint8_t> send_header;
  std::vector<ucp_dt_iov_t> send_iov;
  absl::Status payload_status;
};

// One progress thread and its UCP worker: it receives requests, runs the
// handler (heavy exchanges' Finish on its own worker pool) and sends the
// replies. A server runs one or more; each client lane is served by one.
class ServerLoop {
 public:
  ServerLoop(RequestHandler* h, ucp_context_h ctx, HeavyPool* heavy) : handler_(h), ctx_(ctx), heavy_(heavy) {}
  ~ServerLoop() { Shutdown(); }

  // Creates the worker. `listen_fd` >= 0: this loop also answers bootstrap
  // connections on it, handing each the address next_address() names.
  absl::Status Init(int listen_fd, std::function<const std::string&()> next_address) {
    if (absl::Status s = w_.Init(ctx_, kAmRequest, &ServerLoop::OnRequest, this); !s.ok()) return s;
    ucp_address_t* addr = nullptr;
    size_t len = 0;
    if (ucs_status_t st = ucp_worker_get_address(w_.worker, &addr, &len); st != UCS_OK) {
      return FromUcsStatus(st, "ucp_worker_get_address");
    }
    address_blob_.assign(reinterpret_cast<const char*>(addr), len);
    ucp_worker_release_address(w_.worker, addr);
    listen_fd_ = listen_fd;
    next_address_ = std::move(next_address);
    if (listen_fd_ >= 0) w_.Watch(listen_fd_);
    return absl::OkStatus();
  }
  void Start() { thread_ = std::thread([this] { Loop(); }); }
  const std::string& address_blob() const { return address_blob_; }
  int64_t in_flight() const { return in_flight_.load(); }

  // Shutdown, in two steps around closing the heavy pool: stop taking
  // requests (the loop keeps sending the replies of those in progress), then
  // once the pool is closed, drain and join.
  void RequestStop() {
    stop_ = true;
    w_.Wake();
  }
  void Shutdown() {
    if (thread_.joinable()) {
      stop_ = true;
      pool_closed_ = true;
      w_.Wake();
      thread_.join();
    }
    w_.Close();
  }

 private:
  void RunOnLoop(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(tasks_mu_);
      tasks_.push_back(std::move(fn));
    }
    w_.Wake();
  }

  bool RunTasks() {
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard<std::mutex> l(tasks_mu_);
      tasks.swap(tasks_);
    }
    for (auto& t : tasks) t();
    return !tasks.empty();
  }

  void Loop() {
    while (!stop_) {
      bool busy = RunTasks();
      busy |= Accept();
      busy |= FlushReplies();
      w_.ProgressOrWait(busy, 50);
    }
    // Heavy exchanges in progress queue their replies as tasks until the
    // server has closed the pool.
    while (!pool_closed_) {
      bool busy = RunTasks();
      busy |= FlushReplies();
      w_.ProgressOrWait(busy, 1);
    }
    // Let outstanding sends finish or fail before the worker goes.
    for (int i = 0; i < 1000 && in_flight_.load() > 0; ++i) {
      ucp_worker_progress(w_.worker);
      RunTasks();
      FlushReplies();
    }
  }

  // Bootstrap: hand each connecting client lane the next loop's worker address.
  bool Accept() {
    if (listen_fd_ < 0) return false;
    bool any = false;
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) break;
      any = true;
      const std::string& blob = next_address_();
      const uint32_t hdr[2] = {kBootstrapMagic, static_cast<uint32_t>(blob.size())};
      timeval tv{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      (void)(WriteAll(fd, hdr, sizeof(hdr)) && WriteAll(fd, blob.data(), blob.size()));
      close(fd);
    }
    return any;
  }

  static ucs_status_t OnRequest(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                const ucp_am_recv_param_t* param) {
    auto* self = static_cast<ServerLoop*>(arg);
    if (header_length < sizeof(WireHeader) || !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
      return UCS_OK;  // not ours: nobody to answer; drop
    }
    WireHeader wh;
    std::memcpy(&wh, header, sizeof(wh));
    auto* call = new ServerCall();
    call->server = self;
    call->id = wh.call_id;
    call->reply_ep = param->reply_ep;
    self->in_flight_.fetch_add(1);
    const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
    const auto* hdr_bytes = static_cast<const uint8_t*>(header) + sizeof(WireHeader);
    if (wh.flags & kHeadInHeader) {
      if (header_length - sizeof(WireHeader) != wh.head_len) wh.head_len = uint32_t(header_length - sizeof(WireHeader));
      call->payload_len = length;
      call->ex = self->handler_->Begin({hdr_bytes, wh.head_len}, length);
      MutableIov dest = call->ex->PayloadDestination();
      if (IovBytes(dest) != length) dest = DiscardIov(&call->discard, length);  // refused: absorb and drop
      if (!rndv) {
        self->Complete(call, length == 0 ? absl::OkStatus() : Scatter(static_cast<const uint8_t*>(data), length, dest));
        return UCS_OK;
      }
      call->recv_iov = ToUcpIov(dest);
      self->ReceiveRndv(call, data);
      return UCS_OK;
    }
    // Head travels in the data: take the whole message, then split.
    if (wh.head_len > length) {
      call->ex = self->handler_->Begin({}, 0);  // malformed: an error reply
      if (rndv) DiscardRndv(self->w_.worker, data, length);
      self->Complete(call, absl::OkStatus());
      return UCS_OK;
    }
    call->whole.resize(length);
    if (!rndv) {
      std::memcpy(call->whole.data(), data, length);
      self->SplitWhole(call, wh.head_len);
      return UCS_OK;
    }
    call->payload_len = wh.head_len;  // remembered for SplitWhole
    call->recv_iov = {{call->whole.data(), call->whole.size()}};
    self->ReceiveRndv(call, data);
    return UCS_OK;
  }

  void SplitWhole(ServerCall* call, uint32_t head_len) {
    const auto* p = reinterpret_cast<const uint8_t*>(call->whole.data());
    const uint64_t n = call->whole.size() - head_len;
    call->ex = handler_->Begin({p, head_len}, n);
    MutableIov dest = call->ex->PayloadDestination();
    if (IovBytes(dest) != n) dest = DiscardIov(&call->discard, n);
    const absl::Status st = n == 0 ? absl::OkStatus() : Scatter(p + head_len, n, dest);
    call->whole.clear();
    Complete(call, st);
  }

  void ReceiveRndv(ServerCall* call, void* desc) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.cb.recv_am = &ServerLoop::OnRecvDone;
    p.user_data = call;
    void* buf;
    size_t count;
    SetBuffer(call->recv_iov, &p, &buf, &count);
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(w_.worker, desc, buf, count, &p);
    if (r == nullptr) {
      RecvDone(call, UCS_OK);
    } else if (UCS_PTR_IS_ERR(r)) {
      RecvDone(call, UCS_PTR_STATUS(r));
    }
  }

  static void OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* call = static_cast<ServerCall*>(user_data);
    call->server->RecvDone(call, status);
    ucp_request_free(request);
  }

  void RecvDone(ServerCall* call, ucs_status_t status) {
    if (!call->whole.empty() || (call->ex == nullptr)) {
      if (status != UCS_OK) {
        call->ex = handler_->Begin({}, 0);
        Complete(call, FromUcsStatus(status, "receive"));
        return;
      }
      SplitWhole(call, static_cast<uint32_t>(call->payload_len));
      return;
    }
    Complete(call, FromUcsStatus(status, "payload receive"));
  }

  // The payload arrived (or failed to): the handler's Finish and the reply
  // run from the loop, outside UCX's callbacks, so that UCX completes the
  // transfer (a rendezvous acknowledgement) before a slow handler runs.
  void Complete(ServerCall* call, absl::Status payload_status) {
    call->payload_status = std::move(payload_status);
    replies_.push_back(call);
  }

  bool FlushReplies() {
    if (replies_.empty()) return false;
    std::deque<ServerCall*> q;
    q.swap(replies_);
    for (ServerCall* call : q) {
      if (call->ex->Heavy() && heavy_->Submit([this, call] {
            call->ex->Finish(call->payload_status);
            RunOnLoop([this, call] { SendReply(call); });
          })) {
        continue;
      }
      call->ex->Finish(call->payload_status);
      SendReply(call);
    }
    return true;
  }

  void SendReply(ServerCall* call) {
    const absl::string_view head = call->ex->reply_head();
    const ConstIov payload = call->ex->reply_payload();
    WireHeader wh{call->id, static_cast<uint32_t>(head.size()), 0};
    const bool in_header = sizeof(WireHeader) + head.size() <= w_.max_am_header;
    if (in_header) wh.flags |= kHeadInHeader;
    call->send_header.resize(sizeof(WireHeader) + (in_header ? head.size() : 0));
    std::memcpy(call->send_header.data(), &wh, sizeof(wh));
    if (in_header) std::memcpy(call->send_header.data() + sizeof(wh), head.data(), head.size());
    if (!in_header) call->send_iov.push_back({const_cast<char*>(head.data()), head.size()});
    for (const auto& s : payload) {
      if (!s.empty()) call->send_iov.push_back({const_cast<uint8_t*>(s.data()), s.size()});
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.cb.send = &ServerLoop::OnSendDone;
    p.user_data = call;
    void* buf;
    size_t count;
    SetBuffer(call->send_iov, &p, &buf, &count);
    ucs_status_ptr_t r =
        ucp_am_send_nbx(call->reply_ep, kAmReply, call->send_header.data(), call->send_header.size(), buf, count, &p);
    if (r == nullptr || UCS_PTR_IS_ERR(r)) Done(call);
  }

  static void OnSendDone(void* request, ucs_status_t, void* user_data) {
    auto* call = static_cast<ServerCall*>(user_data);
    call->server->Done(call);
    ucp_request_free(request);
  }

  void Done(ServerCall* call) {
    delete call;  // releases the exchange (leases, reservations)
    in_flight_.fetch_sub(1);
  }

  RequestHandler* handler_;
  ucp_context_h ctx_;
  Worker w_;
  std::string address_blob_;
  int listen_fd_ = -1;  // owned by the server
  std::function<const std::string&()> next_address_;
  std::thread thread_;
  HeavyPool* heavy_;  // the server's
  std::atomic<bool> stop_{false}, pool_closed_{false};
  std::atomic<int64_t> in_flight_{0};
  std::deque<ServerCall*> replies_;  // progress thread only
  std::mutex tasks_mu_;
  std::deque<std::function<void()>> tasks_;
};

class UcxServerImpl final : public UcxServer {
 public:
  explicit UcxServerImpl(RequestHandler* h) : handler_(h) {}
  ~UcxServerImpl() override { Shutdown(); }

  absl::Status Init(const UcxServerOptions& o) {
    const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int nloops = o.progress_threads > 0 ? o.progress_threads : std::min(hw, 2);
    // The loops' workers are driven from different threads, and memory is
    // registered from the caller's: a thread-safe context.
    if (absl::Status s = NewContext(/*shared=*/true, &ctx_); !s.ok()) return s;
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(o.port));
    if (inet_pton(AF_INET, o.bind_address.c_str(), &sa.sin_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("bind address '", o.bind_address, "' is not an IPv4 address"));
    }
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(listen_fd_, 128) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", o.bind_address, ":", o.port, ": ", strerror(errno)));
    }
    socklen_t sl = sizeof(sa);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &sl);
    port_ = ntohs(sa.sin_port);
    host_ = o.bind_address;
    heavy_ = std::make_unique<HeavyPool>(o.workers == 0 ? hw : o.workers);
    for (int i = 0; i < nloops; ++i) {
      loops_.push_back(std::make_unique<ServerLoop>(handler_, ctx_, heavy_.get()));
      // Every loop answers bootstrap connections (whichever is free first:
      // one busy with a slow request must not hold up new lanes); each new
      // lane is handed the next loop's worker, round robin.
      absl::Status s = loops_.back()->Init(listen_fd_, [this]() -> const std::string& {
        return loops_[next_.fetch_add(1) % loops_.size()]->address_blob();
      });
      if (!s.ok()) return s;
    }
    for (auto& l : loops_) l->Start();
    return absl::OkStatus();
  }

  int port() const override { return port_; }
  std::string address() const override { return absl::StrCat(host_, ":", port_); }

  absl::Status RegisterMemory(absl::Span<uint8_t> region) override {
    absl::StatusOr<ucp_mem_h> mem = MapRegion(ctx_, region);
    if (!mem.ok()) return mem.status();
    std::lock_guard<std::mutex> l(mems_mu_);
    mems_.push_back(*mem);
    return absl::OkStatus();
  }

  void StopAccepting() override {
    for (;;) {
      int64_t n = 0;
      for (auto& l : loops_) n += l->in_flight();
      if (n == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void Shutdown() override {
    for (auto& l : loops_) l->RequestStop();
    if (heavy_) heavy_->Close();  // the loops send the replies of what it finishes
    for (auto& l : loops_) l->Shutdown();
    loops_.clear();
    for (ucp_mem_h m : mems_) ucp_mem_unmap(ctx_, m);
    mems_.clear();
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    if (ctx_) ucp_cleanup(ctx_);
    ctx_ = nullptr;
  }

 private:
  RequestHandler* handler_;
  ucp_context_h ctx_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  std::string host_;
  std::unique_ptr<HeavyPool> heavy_;
  std::vector<std::unique_ptr<ServerLoop>> loops_;
  std::atomic<size_t> next_{0};
  std::mutex mems_mu_;
  std::vector<ucp_mem_h> mems_;
};

// ---------------------------------------------------------------------------
// Client.
//
// Lanes: a lane is a UCP worker and an endpoint to the server, used by one
// calling thread at a time. The caller drives its lane itself (sends,
// progresses, waits on the worker's event fd), so a call crosses threads
// twice (caller -> server progress thread -> caller), as a blocking socket
// client does, with no client progress thread and no lock shared between
// callers while a call is in flight. Lanes are created on demand, up to
// kMaxLanes; a thread prefers the lane it used last.

constexpr size_t kMaxLanes = 64;

struct Lane;

// One call on a lane. UCX callbacks reach it through the lane (`cur`) or the
// request's user data; it lives until UCX holds nothing of it.
struct LaneCall {
  Lane* lane = nullptr;
  uint64_t id = 0;
  CallArgs* args = nullptr;
  std::vector<uint8_t> header;
  std::vector<ucp_dt_iov_t> iov;
  absl::Status status;
  std::string reply_head;
  bool send_done = false, reply_done = false, receiving = false;
  std::vector<uint8_t> discard;
  std::vector<ucp_dt_iov_t> recv_iov;
  std::string whole;
  uint32_t whole_head_len = 0;
  bool finished() const { return send_done && reply_done; }
};

struct Lane {
  ucp_worker_h worker = nullptr;
  ucp_ep_h ep = nullptr;
  int efd = -1;
  size_t max_am_header = 0;
  bool broken = false;
  absl::Status broken_status;
  uint64_t next_id = 0;
  LaneCall* cur = nullptr;  // the call in flight, if any
  bool busy = false;        // guarded by UcxClient::lanes_mu_
};

class UcxClient final : public ClientTransport {
 public:
  UcxClient(std::string address, UcxClientOptions o) : address_(std::move(address)), opts_(o) {}
  ~UcxClient() override {
    for (auto& lane : lanes_) {
      if (lane->worker == nullptr) continue;
      CloseEp(lane.get());
      ucp_worker_destroy(lane->worker);
    }
    lanes_.clear();
    for (ucp_mem_h m : mems_) ucp_mem_unmap(ctx_, m);
    if (ctx_) ucp_cleanup(ctx_);
  }

  absl::Status Init() {
    std::string host;
    int port;
    if (absl::Status s = ParseHostPort(address_, &host, &port); !s.ok()) return s;
    // Lanes' workers are driven from different threads.
    if (absl::Status s = NewContext(/*shared=*/true, &ctx_); !s.ok()) return s;
    // One lane up front, so that a wrong address fails at creation.
    absl::StatusOr<Lane*> lane = Acquire();
    if (!lane.ok()) return lane.status();
    Release(*lane);
    return absl::OkStatus();
  }

  std::string peer() const override { return address_; }

  absl::Status RegisterMemory(absl::Span<uint8_t> region) override {
    ASSIGN_OR_RETURN(ucp_mem_h mem, MapRegion(ctx_, region));
    std::lock_guard<std::mutex> l(lanes_mu_);
    mems_.push_back(mem);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Call(CallArgs args) override {
    absl::StatusOr<Lane*> lane = Acquire();
    if (!lane.ok()) return lane.status();
    absl::StatusOr<std::string> r = CallOn(*lane, &args);
    Release(*lane);
    return r;
  }

 private:
  // A free lane (the caller's last one if free), a new one, or the first to
  // be released.
  absl::StatusOr<Lane*> Acquire() {
    thread_local const UcxClient* last_client = nullptr;
    thread_local size_t last_lane = 0;
    std::unique_lock<std::mutex> l(lanes_mu_);
    for (;;) {
      const size_t n = lanes_.size();
      const size_t start = last_client == this && last_lane < n ? last_lane : 0;
      for (size_t k = 0; k < n; ++k) {
        const size_t i = (start + k) % n;
        if (!lanes_[i]->busy) {
          lanes_[i]->busy = true;
          ++active_;
          last_client = this, last_lane = i;
          return lanes_[i].get();
        }
      }
      if (n + creating_ < kMaxLanes) {
        // A new lane, made outside the lock (the bootstrap connects over TCP).
        ++creating_;
        l.unlock();
        auto lane = std::make_unique<Lane>();
        absl::Status s = OpenWorker(lane.get());
        if (s.ok() && !(s = Connect(lane.get())).ok()) ucp_worker_destroy(lane->worker);
        l.lock();
        --creating_;
        if (!s.ok()) {
          lanes_cv_.notify_all();
          return s;
        }
        lane->busy = true;
        ++active_;
        lanes_.push_back(std::move(lane));
        last_client = this, last_lane = lanes_.size() - 1;
        return lanes_.back().get();
      }
      lanes_cv_.wait(l);
    }
  }

  void Release(Lane* lane) {
    {
      std::lock_guard<std::mutex> l(lanes_mu_);
      lane->busy = false;
      --active_;
    }
    lanes_cv_.notify_one();
  }

  // A fresh worker for the lane (one thread at a time: its holder); on
  // failure the lane has none.
  absl::Status OpenWorker(Lane* lane) {
    return NewWorker(ctx_, UCS_THREAD_MODE_SERIALIZED, kAmReply, &UcxClient::OnReply, lane, &lane->worker,
                     &lane->max_am_header, &lane->efd);
  }

  // Bootstrap (the server's worker address over TCP) + endpoint.
  absl::Status Connect(Lane* lane) {
    std::string host;
    int port;
    if (absl::Status s = ParseHostPort(address_, &host, &port); !s.ok()) return s;
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) {
      return absl::UnavailableError(absl::StrCat("cannot resolve ", address_));
    }
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(opts_.connect_timeout));
    uint32_t hdr[2];
    std::string blob;
    bool ok = rc == 0 && ReadAll(fd, hdr, sizeof(hdr), ms) && hdr[0] == kBootstrapMagic && hdr[1] > 0 && hdr[1] < (1u << 20);
    if (ok) {
      blob.resize(hdr[1]);
      ok = ReadAll(fd, blob.data(), blob.size(), ms);
    }
    close(fd);
    if (!ok) return absl::UnavailableError(absl::StrCat("no kvrecall server at ", address_));
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(blob.data());
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &UcxClient::OnEpError;
    ep.err_handler.arg = lane;
    ucp_ep_h h = nullptr;
    ucs_status_t st = ucp_ep_create(lane->worker, &ep, &h);
    if (st != UCS_OK) {
      // Shared-memory transports can not detect a dead peer (no PEER error
      // mode); there deadlines are what fail calls to a dead server.
      ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
      st = ucp_ep_create(lane->worker, &ep, &h);
    }
    if (st != UCS_OK) return FromUcsStatus(st, absl::StrCat("ucp_ep_create to ", address_));
    lane->ep = h;
    lane->broken = false;
    return absl::OkStatus();
  }

  static void OnEpError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* lane = static_cast<Lane*>(arg);
    lane->broken = true;
    lane->broken_status = FromUcsStatus(status, "connection to the server");
  }

  // Closes the endpoint; UCX completes its outstanding operations (with
  // errors) before this returns.
  static void CloseEp(Lane* lane) {
    if (lane->ep == nullptr) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = ucp_ep_close_nbx(lane->ep, &p);
    while (r != nullptr && UCS_PTR_IS_PTR(r) && ucp_request_check_status(r) == UCS_INPROGRESS) {
      ucp_worker_progress(lane->worker);
    }
    if (r != nullptr && UCS_PTR_IS_PTR(r)) ucp_request_free(r);
    lane->ep = nullptr;
  }

  absl::StatusOr<std::string> CallOn(Lane* lane, CallArgs* args) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + absl::ToChronoNanoseconds(args->timeout);
    if (lane->broken) CloseEp(lane);
    if (lane->worker == nullptr) {
      if (absl::Status s = OpenWorker(lane); !s.ok()) return s;
    }
    if (lane->ep == nullptr) {
      if (absl::Status s = Connect(lane); !s.ok()) return s;
    }
    auto c = std::make_unique<LaneCall>();
    c->lane = lane;
    c->id = ++lane->next_id;
    c->args = args;
    lane->cur = c.get();
    Send(c.get());
    // Spin on the worker a little before sleeping on its event fd: a reply
    // usually follows within microseconds and a wakeup costs more. Spin
    // when this is the only call in flight (up to 200 us: nobody else wants
    // the CPU); with several, not at all: the server needs the cores (over
    // TCP every idle progress is a syscall).
    const auto spin = std::chrono::microseconds(active_.load(std::memory_order_relaxed) <= 1 ? 200 : 0);
    auto idle_since = Clock::now();
    bool timed_out = false, broken = false;
    while (!c->finished()) {
      if (lane->broken) {
        if (c->status.ok()) c->status = lane->broken_status;
        broken = true;
        break;
      }
      if (ucp_worker_progress(lane->worker) > 0) {
        idle_since = Clock::now();
        continue;
      }
      const auto now = Clock::now();
      if (now >= deadline) {
        timed_out = true;
        break;
      }
      if (now - idle_since < spin) continue;
      if (ucp_worker_arm(lane->worker) != UCS_OK) continue;  // events pending
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
      pollfd pfd{lane->efd, POLLIN, 0};
      (void)poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, 100)));
      idle_since = Clock::now();
    }
    lane->cur = nullptr;  // a late reply finds no call and is dropped
    if ((timed_out || broken) && (!c->send_done || c->receiving)) {
      // Abandoned while UCX still holds the caller's buffers (the peer is
      // not taking or not finishing data, or the connection failed): close
      // the endpoint, which completes what UCX holds with errors; the next
      // call reconnects. A failed connection completes at once; a live but
      // stalled peer gets 2 ms before Detach gives up the lane's worker.
      CloseEp(lane);
      Drain(lane, c.get(), std::chrono::milliseconds(broken ? 200 : 2));
    }
    if (timed_out) {
      if (!Detach(lane, std::move(c))) {
        return absl::DeadlineExceededError(absl::StrCat("no reply from ", address_, " within ",
                                                        absl::FormatDuration(args->timeout), " (connection closed)"));
      }
      return absl::DeadlineExceededError(
          absl::StrCat("no reply from ", address_, " within ", absl::FormatDuration(args->timeout)));
    }
    if (!c->status.ok()) {
      absl::Status st = c->status;
      Detach(lane, std::move(c));
      return st;
    }
    return std::move(c->reply_head);
  }

  // Frees a finished call. When UCX still holds a call after its endpoint
  // was force-closed (UCX 1.13 leaves a rendezvous send pending, and a late
  // acknowledgement from a live server then trips an assertion in the
  // worker), the lane's worker goes too (the next call opens a fresh one)
  // and the call's memory is left allocated: nothing can reach the caller's
  // buffers any more. Returns whether the call had finished.
  static bool Detach(Lane* lane, std::unique_ptr<LaneCall> c) {
    if (c->send_done && !c->receiving) c->reply_done = true;
    if (c->finished()) return true;
    CloseEp(lane);
    ucp_worker_destroy(lane->worker);
    lane->worker = nullptr;
    lane->efd = -1;
    (void)c.release();
    return false;
  }

  // Progresses until the call's UCX requests have completed (after the
  // endpoint was closed they complete with errors); bounded.
  static void Drain(Lane* lane, LaneCall* c, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!(c->send_done && !c->receiving) && std::chrono::steady_clock::now() < until) ucp_worker_progress(lane->worker);
    if (c->send_done && !c->receiving) c->reply_done = true;
  }

  void Send(LaneCall* c) {
    Lane* lane = c->lane;
    const std::string& head = c->args->head;
    WireHeader wh{c->id, static_cast<uint32_t>(head.size()), 0};
    const bool in_header = sizeof(WireHeader) + head.size() <= lane->max_am_header;
    if (in_header) wh.flags |= kHeadInHeader;
    c->header.resize(sizeof(WireHeader) + (in_header ? head.size() : 0));
    std::memcpy(c->header.data(), &wh, sizeof(wh));
    if (in_header) std::memcpy(c->header.data() + sizeof(wh), head.data(), head.size());
    else c->iov.push_back({const_cast<char*>(head.data()), head.size()});
    for (const auto& s : c->args->payload) {
      if (!s.empty()) c->iov.push_back({const_cast<uint8_t*>(s.data()), s.size()});
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
                     UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &UcxClient::OnSendDone;
    p.user_data = c;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    void* buf;
    size_t count;
    SetBuffer(c->iov, &p, &buf, &count);
    ucs_status_ptr_t r = ucp_am_send_nbx(lane->ep, kAmRequest, c->header.data(), c->header.size(), buf, count, &p);
    if (r == nullptr) {
      SendDone(c, UCS_OK);
    } else if (UCS_PTR_IS_ERR(r)) {
      SendDone(c, UCS_PTR_STATUS(r));
    }
  }

  static void OnSendDone(void* request, ucs_status_t status, void* user_data) {
    SendDone(static_cast<LaneCall*>(user_data), status);
    ucp_request_free(request);
  }

  static void SendDone(LaneCall* c, ucs_status_t status) {
    c->send_done = true;
    if (status != UCS_OK) {
      if (c->status.ok()) c->status = FromUcsStatus(status, "send to the server");
      if (!c->lane->broken) c->lane->broken = true, c->lane->broken_status = c->status;  // reconnect next time
      if (!c->receiving) c->reply_done = true;
    }
  }

  static ucs_status_t OnReply(void* arg, const void* header, size_t header_length, void* data, size_t length,
                              const ucp_am_recv_param_t* param) {
    auto* lane = static_cast<Lane*>(arg);
    const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
    WireHeader wh{};
    if (header_length >= sizeof(WireHeader)) std::memcpy(&wh, header, sizeof(wh));
    LaneCall* c = lane->cur;
    if (header_length < sizeof(WireHeader) || c == nullptr || wh.call_id != c->id || c->reply_done || c->receiving) {
      if (rndv) DiscardRndv(lane->worker, data, length);  // a late reply to an abandoned call: drop it
      return UCS_OK;
    }
    if (wh.flags & kHeadInHeader) {
      c->reply_head.assign(static_cast<const char*>(header) + sizeof(WireHeader), header_length - sizeof(WireHeader));
      Deliver(c, data, length, rndv);
      return UCS_OK;
    }
    if (wh.head_len > length) {
      if (rndv) DiscardRndv(lane->worker, data, length);
      if (c->status.ok()) c->status = absl::InternalError("reply head longer than the message");
      c->reply_done = true;
      return UCS_OK;
    }
    c->whole.resize(length);
    c->whole_head_len = wh.head_len;
    if (!rndv) {
      std::memcpy(c->whole.data(), data, length);
      SplitWhole(c);
      return UCS_OK;
    }
    c->recv_iov = {{c->whole.data(), c->whole.size()}};
    Receive(c, data);
    return UCS_OK;
  }

  static void SplitWhole(LaneCall* c) {
    c->reply_head = c->whole.substr(0, c->whole_head_len);
    std::string rest = c->whole.substr(c->whole_head_len);
    c->whole.clear();
    Deliver(c, rest.data(), rest.size(), false);
  }

  // Routes the reply payload into the sink's buffers.
  static void Deliver(LaneCall* c, void* data, size_t length, bool rndv) {
    MutableIov dest;
    absl::Status st;
    if (c->args->sink) {
      absl::StatusOr<MutableIov> d =
          c->args->sink({reinterpret_cast<const uint8_t*>(c->reply_head.data()), c->reply_head.size()}, length);
      if (d.ok()) dest = *d;
      else st = d.status();
    } else if (length > 0) {
      st = absl::InvalidArgumentError("reply carries a payload and the call has no sink");
    }
    if (st.ok() && IovBytes(dest) != length) st = absl::InvalidArgumentError("sink buffers do not match the reply payload");
    if (!st.ok()) dest = DiscardIov(&c->discard, length);
    if (!st.ok() && c->status.ok()) c->status = st;
    if (!rndv) {
      if (length > 0) (void)Scatter(static_cast<const uint8_t*>(data), length, dest);
      c->reply_done = true;
      return;
    }
    c->recv_iov = ToUcpIov(dest);
    Receive(c, data);
  }

  static void Receive(LaneCall* c, void* desc) {
    c->receiving = true;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.cb.recv_am = &UcxClient::OnRecvDone;
    p.user_data = c;
    void* buf;
    size_t count;
    SetBuffer(c->recv_iov, &p, &buf, &count);
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(c->lane->worker, desc, buf, count, &p);
    if (r == nullptr) RecvDone(c, UCS_OK);
    else if (UCS_PTR_IS_ERR(r)) RecvDone(c, UCS_PTR_STATUS(r));
  }

  static void OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
    RecvDone(static_cast<LaneCall*>(user_data), status);
    ucp_request_free(request);
  }

  static void RecvDone(LaneCall* c, ucs_status_t status) {
    c->receiving = false;
    if (!c->whole.empty() && status == UCS_OK) {
      SplitWhole(c);
      return;
    }
    if (status != UCS_OK && c->status.ok()) c->status = FromUcsStatus(status, "reply payload");
    c->reply_done = true;
  }

  std::string address_;
  UcxClientOptions opts_;
  ucp_context_h ctx_ = nullptr;
  std::mutex lanes_mu_;
  std::condition_variable lanes_cv_;
  std::vector<std::unique_ptr<Lane>> lanes_;  // guarded by lanes_mu_ (a lane's insides: by its holder)
  size_t creating_ = 0;                       // lanes being made; guarded by lanes_mu_
  std::atomic<int> active_{0};                // lanes held by callers
  std::vector<ucp_mem_h> mems_;               // guarded by lanes_mu_
};

}  // namespace

absl::StatusOr<std::unique_ptr<UcxServer>> UcxServer::Start(RequestHandler* handler, const UcxServerOptions& options) {
  auto s = std::make_unique<UcxServerImpl>(handler);
  if (absl::Status st = s->Init(options); !st.ok()) return st;
  return std::unique_ptr<UcxServer>(std::move(s));
}

absl::StatusOr<std::unique_ptr<ClientTransport>> ConnectUcx(const std::string& address, const UcxClientOptions& options) {
  auto c = std::make_unique<UcxClient>(address, options);
  if (absl::Status st = c->Init(); !st.ok()) return st;
  return std::unique_ptr<ClientTransport>(std::move(c));
}

}  // namespace kvrecall
