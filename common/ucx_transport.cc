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
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

// A UCP context + worker owned by one progress thread.
struct Worker {
  ucp_context_h ctx = nullptr;
  ucp_worker_h worker = nullptr;
  int efd = -1;       // the worker's event fd
  int wake_fd = -1;   // eventfd other threads write to
  int epoll_fd = -1;
  size_t max_am_header = 0;

  absl::Status Init(ucs_thread_mode_t mode = UCS_THREAD_MODE_SINGLE) {
    ucp_config_t* config = nullptr;
    if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK) return FromUcsStatus(st, "ucp_config_read");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    ucs_status_t st = ucp_init(&params, config, &ctx);
    ucp_config_release(config);
    if (st != UCS_OK) return FromUcsStatus(st, "ucp_init");
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = mode;
    if ((st = ucp_worker_create(ctx, &wp, &worker)) != UCS_OK) return FromUcsStatus(st, "ucp_worker_create");
    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
    if ((st = ucp_worker_query(worker, &attr)) != UCS_OK) return FromUcsStatus(st, "ucp_worker_query");
    max_am_header = attr.max_am_header;
    if ((st = ucp_worker_get_efd(worker, &efd)) != UCS_OK) return FromUcsStatus(st, "ucp_worker_get_efd");
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
  // Registers `region` with the context; the handle is appended to `mems`.
  absl::Status MapMemory(absl::Span<uint8_t> region, std::vector<ucp_mem_h>* mems) {
    ucp_mem_map_params_t p{};
    p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    p.address = region.data();
    p.length = region.size();
    ucp_mem_h mem = nullptr;
    const ucs_status_t st = ucp_mem_map(ctx, &p, &mem);
    if (st == UCS_OK) mems->push_back(mem);
    return FromUcsStatus(st, "ucp_mem_map");
  }

  // Waits for an event or `ms` (call after ucp_worker_arm returned UCS_OK).
  void Sleep(int ms) {
    epoll_event evs[4];
    const int n = epoll_wait(epoll_fd, evs, 4, ms);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == wake_fd) {
        uint64_t v;
        (void)!read(wake_fd, &v, sizeof(v));
      }
    }
  }
  void SetAmHandler(unsigned id, ucp_am_recv_callback_t cb, void* arg) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                   UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    p.id = id;
    p.cb = cb;
    p.arg = arg;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    ucp_worker_set_am_recv_handler(worker, &p);
  }
  void Close() {
    if (worker) ucp_worker_destroy(worker);
    if (ctx) ucp_cleanup(ctx);
    if (wake_fd >= 0) close(wake_fd);
    if (epoll_fd >= 0) close(epoll_fd);
    worker = nullptr, ctx = nullptr, wake_fd = epoll_fd = -1;
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

class UcxServerImpl;

struct ServerCall {
  UcxServerImpl* server = nullptr;
  uint64_t id = 0;
  ucp_ep_h reply_ep = nullptr;
  std::unique_ptr<Exchange> ex;
  std::vector<uint8_t> discard;
  std::vector<ucp_dt_iov_t> recv_iov;
  std::string whole;  // head + payload when the head came in the data
  uint64_t payload_len = 0;
  std::vector<uint8_t> send_header;
  std::vector<ucp_dt_iov_t> send_iov;
};

class UcxServerImpl final : public UcxServer {
 public:
  explicit UcxServerImpl(RequestHandler* h) : handler_(h) {}
  ~UcxServerImpl() override { Shutdown(); }

  absl::Status Init(const UcxServerOptions& o) {
    if (absl::Status s = w_.Init(); !s.ok()) return s;
    ucp_address_t* addr = nullptr;
    size_t len = 0;
    if (ucs_status_t st = ucp_worker_get_address(w_.worker, &addr, &len); st != UCS_OK) {
      return FromUcsStatus(st, "ucp_worker_get_address");
    }
    address_blob_.assign(reinterpret_cast<const char*>(addr), len);
    ucp_worker_release_address(w_.worker, addr);
    w_.SetAmHandler(kAmRequest, &UcxServerImpl::OnRequest, this);
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
    w_.Watch(listen_fd_);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }
  std::string address() const override { return absl::StrCat(host_, ":", port_); }

  absl::Status RegisterMemory(absl::Span<uint8_t> region) override {
    std::promise<absl::Status> done;
    RunOnLoop([&] { done.set_value(w_.MapMemory(region, &mems_)); });
    return done.get_future().get();
  }

  void StopAccepting() override {
    while (in_flight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  void Shutdown() override {
    if (!thread_.joinable()) return;
    stop_ = true;
    w_.Wake();
    thread_.join();
    for (ucp_mem_h m : mems_) ucp_mem_unmap(w_.ctx, m);
    mems_.clear();
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
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

  void Loop() {
    while (!stop_) {
      bool busy = false;
      std::deque<std::function<void()>> tasks;
      {
        std::lock_guard<std::mutex> l(tasks_mu_);
        tasks.swap(tasks_);
      }
      for (auto& t : tasks) t(), busy = true;
      busy |= Accept();
      busy |= FlushReplies();
      w_.ProgressOrWait(busy, 50);
    }
    // Let outstanding sends finish or fail before the worker goes.
    for (int i = 0; i < 1000 && in_flight_.load() > 0; ++i) {
      ucp_worker_progress(w_.worker);
      FlushReplies();
    }
  }

  // Bootstrap: hand each connecting client our worker address.
  bool Accept() {
    bool any = false;
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) break;
      any = true;
      const uint32_t hdr[2] = {kBootstrapMagic, static_cast<uint32_t>(address_blob_.size())};
      timeval tv{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      (void)(WriteAll(fd, hdr, sizeof(hdr)) && WriteAll(fd, address_blob_.data(), address_blob_.size()));
      close(fd);
    }
    return any;
  }

  static ucs_status_t OnRequest(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                const ucp_am_recv_param_t* param) {
    auto* self = static_cast<UcxServerImpl*>(arg);
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
        call->ex->Finish(length == 0 ? absl::OkStatus() : Scatter(static_cast<const uint8_t*>(data), length, dest));
        self->Reply(call);
        return UCS_OK;
      }
      call->recv_iov = ToUcpIov(dest);
      self->ReceiveRndv(call, data);
      return UCS_OK;
    }
    // Head travels in the data: take the whole message, then split.
    if (wh.head_len > length) {
      call->ex = self->handler_->Begin({}, 0);  // malformed: an error reply
      call->ex->Finish(absl::OkStatus());
      if (rndv) ucp_am_data_release(self->w_.worker, data);
      self->Reply(call);
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
    call->ex->Finish(n == 0 ? absl::OkStatus() : Scatter(p + head_len, n, dest));
    call->whole.clear();
    Reply(call);
  }

  void ReceiveRndv(ServerCall* call, void* desc) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.cb.recv_am = &UcxServerImpl::OnRecvDone;
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
        call->ex->Finish(FromUcsStatus(status, "receive"));
        Reply(call);
        return;
      }
      SplitWhole(call, static_cast<uint32_t>(call->payload_len));
      return;
    }
    call->ex->Finish(FromUcsStatus(status, "payload receive"));
    Reply(call);
  }

  void Reply(ServerCall* call) { replies_.push_back(call); }

  bool FlushReplies() {
    if (replies_.empty()) return false;
    std::deque<ServerCall*> q;
    q.swap(replies_);
    for (ServerCall* call : q) SendReply(call);
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
    p.cb.send = &UcxServerImpl::OnSendDone;
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
  Worker w_;
  std::string address_blob_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::string host_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> in_flight_{0};
  std::deque<ServerCall*> replies_;  // progress thread only
  std::vector<ucp_mem_h> mems_;
  std::mutex tasks_mu_;
  std::deque<std::function<void()>> tasks_;
};

// ---------------------------------------------------------------------------
// Client.

class UcxClient;

struct ClientCall {
  UcxClient* client = nullptr;
  uint64_t id = 0;
  CallArgs args;
  std::vector<uint8_t> header;
  std::vector<ucp_dt_iov_t> iov;
  absl::Status status;
  std::string reply_head;
  bool send_done = false, reply_done = false, receiving = false, sent = false;
  bool abandon = false;  // the caller gave up; the loop finishes it
  std::condition_variable cv;  // its caller waits here (with UcxClient::mu_)
  std::vector<uint8_t> discard;
  std::vector<ucp_dt_iov_t> recv_iov;
  std::string whole;
  uint32_t whole_head_len = 0;
  bool finished() const { return send_done && reply_done; }
};

class UcxClient final : public ClientTransport {
 public:
  UcxClient(std::string address, UcxClientOptions o) : address_(std::move(address)), opts_(o) {}
  ~UcxClient() override {
    stop_ = true;
    w_.Wake();
    if (thread_.joinable()) thread_.join();
    for (ucp_mem_h m : mems_) ucp_mem_unmap(w_.ctx, m);
    w_.Close();
  }

  absl::Status Init() {
    // Serialized: the loop thread and calling threads take turns (worker_mu_).
    if (absl::Status s = w_.Init(UCS_THREAD_MODE_SERIALIZED); !s.ok()) return s;
    w_.SetAmHandler(kAmReply, &UcxClient::OnReply, this);
    thread_ = std::thread([this] { Loop(); });
    // Connect eagerly so a wrong address fails at creation.
    std::promise<absl::Status> done;
    RunOnLoop([&] { done.set_value(Connect()); });
    return done.get_future().get();
  }

  std::string peer() const override { return address_; }

  absl::Status RegisterMemory(absl::Span<uint8_t> region) override {
    std::lock_guard<std::mutex> wl(worker_mu_);
    return w_.MapMemory(region, &mems_);
  }

  absl::StatusOr<std::string> Call(CallArgs args) override {
    auto call = std::make_shared<ClientCall>();
    call->client = this;
    const absl::Duration timeout = args.timeout;
    call->args = std::move(args);
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    {
      std::lock_guard<std::mutex> l(mu_);
      call->id = ++next_id_;
      submit_.push_back(call);
    }
    // A lone caller drives the worker itself (no thread hop out or back);
    // with several calls in flight the loop thread drives for all of them.
    bool alone;
    {
      std::lock_guard<std::mutex> l(mu_);
      alone = calls_.empty() && submit_.size() == 1;
    }
    if (!alone) w_.Wake();
    for (;;) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (call->finished()) break;
        alone = alone && calls_.size() + submit_.size() <= 1;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      if (alone && worker_mu_.try_lock()) {
        const auto until = std::min(deadline, now + std::chrono::microseconds(300));
        bool done = false;
        while (!done && std::chrono::steady_clock::now() < until) {
          Step();
          std::lock_guard<std::mutex> l(mu_);
          done = call->finished();
        }
        worker_mu_.unlock();
        if (!done) w_.Wake();
        continue;
      }
      std::unique_lock<std::mutex> l(mu_);
      call->cv.wait_until(l, alone ? std::min(deadline, now + std::chrono::microseconds(300)) : deadline,
                          [&] { return call->finished(); });
    }
    std::unique_lock<std::mutex> l(mu_);
    if (!call->finished()) {
      // Past the deadline: the loop detaches the call and makes sure UCX is
      // done with the caller's buffers before we return.
      call->abandon = true;
      l.unlock();
      w_.Wake();
      l.lock();
      call->cv.wait(l, [&] { return call->finished(); });
      if (call->status.ok() && call->reply_done && !call->reply_head.empty()) return call->reply_head;
      return absl::DeadlineExceededError(absl::StrCat("no reply from ", address_, " within ", absl::FormatDuration(timeout)));
    }
    if (!call->status.ok()) return call->status;
    return call->reply_head;
  }

 private:
  void RunOnLoop(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      tasks_.push_back(std::move(fn));
    }
    w_.Wake();
  }

  // Bootstrap + endpoint, on the loop thread.
  absl::Status Connect() {
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
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    ucs_status_t st = ucp_ep_create(w_.worker, &ep, &h);
    if (st != UCS_OK) {
      // Shared-memory transports can not detect a dead peer (no PEER error
      // mode); there deadlines are what fail calls to a dead server.
      ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
      st = ucp_ep_create(w_.worker, &ep, &h);
    }
    if (st != UCS_OK) return FromUcsStatus(st, absl::StrCat("ucp_ep_create to ", address_));
    ep_ = h;
    return absl::OkStatus();
  }

  static void OnEpError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* self = static_cast<UcxClient*>(arg);
    self->broken_ = true;
    self->broken_status_ = FromUcsStatus(status, absl::StrCat("connection to ", self->address_));
  }

  void CloseEp() {
    if (ep_ == nullptr) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = ucp_ep_close_nbx(ep_, &p);
    while (r != nullptr && UCS_PTR_IS_PTR(r) && ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(w_.worker);
    if (r != nullptr && UCS_PTR_IS_PTR(r)) ucp_request_free(r);
    ep_ = nullptr;
  }

  // One round of work on the worker. REQUIRES: worker_mu_ held.
  bool Step() {
    bool busy = false;
    std::deque<std::shared_ptr<ClientCall>> submit;
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard<std::mutex> l(mu_);
      submit.swap(submit_);
      tasks.swap(tasks_);
    }
    for (auto& t : tasks) t(), busy = true;
    if (broken_) HandleBroken(), busy = true;
    for (auto& c : submit) Send(c), busy = true;
    busy |= HandleAbandoned();
    while (ucp_worker_progress(w_.worker) > 0) busy = true;
    return busy;
  }

  void Loop() {
    while (!stop_) {
      bool sleep = false;
      {
        std::lock_guard<std::mutex> wl(worker_mu_);
        bool busy = Step();
        for (int i = 0; !busy && i < 64; ++i) busy = ucp_worker_progress(w_.worker) > 0;
        sleep = !busy && ucp_worker_arm(w_.worker) == UCS_OK;
      }
      if (sleep) w_.Sleep(20);
    }
    std::lock_guard<std::mutex> wl(worker_mu_);
    broken_status_ = absl::UnavailableError("transport shut down");
    HandleBroken();
  }

  // The endpoint failed: every call waiting for a reply fails; calls with a
  // send or receive still in UCX's hands finish when UCX completes them.
  void HandleBroken() {
    broken_ = false;
    CloseEp();  // completes outstanding operations with errors
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [id, c] : calls_) {
      if (c->status.ok()) c->status = broken_status_;
      c->send_done = true;
      if (!c->receiving) c->reply_done = true;
      c->cv.notify_one();
    }
    for (auto it = calls_.begin(); it != calls_.end();) it = it->second->finished() ? calls_.erase(it) : std::next(it);
  }

  bool HandleAbandoned() {
    std::vector<std::shared_ptr<ClientCall>> stuck;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto it = calls_.begin(); it != calls_.end();) {
        ClientCall& c = *it->second;
        if (!c.abandon || c.finished()) {
          ++it;
          continue;
        }
        if (c.send_done && !c.receiving) {  // nothing of the caller's in UCX: detach
          c.reply_done = true;
          if (c.status.ok()) c.status = absl::DeadlineExceededError("deadline");
          c.reply_head.clear();
          c.cv.notify_one();
          it = calls_.erase(it);
          continue;
        }
        if (!c.send_done) stuck.push_back(it->second);
        ++it;
      }
    }
    if (stuck.empty()) return false;
    // A send UCX still holds past its deadline: the peer is not taking data.
    broken_status_ = absl::DeadlineExceededError("send did not complete before the deadline");
    HandleBroken();
    return true;
  }

  void Send(const std::shared_ptr<ClientCall>& c) {
    if (ep_ == nullptr) {
      absl::Status s = Connect();
      if (!s.ok()) return Fail(c, s);
    }
    const std::string& head = c->args.head;
    WireHeader wh{c->id, static_cast<uint32_t>(head.size()), 0};
    const bool in_header = sizeof(WireHeader) + head.size() <= w_.max_am_header;
    if (in_header) wh.flags |= kHeadInHeader;
    c->header.resize(sizeof(WireHeader) + (in_header ? head.size() : 0));
    std::memcpy(c->header.data(), &wh, sizeof(wh));
    if (in_header) std::memcpy(c->header.data() + sizeof(wh), head.data(), head.size());
    else c->iov.push_back({const_cast<char*>(head.data()), head.size()});
    for (const auto& s : c->args.payload) {
      if (!s.empty()) c->iov.push_back({const_cast<uint8_t*>(s.data()), s.size()});
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      calls_[c->id] = c;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
                     UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &UcxClient::OnSendDone;
    p.user_data = c.get();
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    void* buf;
    size_t count;
    SetBuffer(c->iov, &p, &buf, &count);
    ucs_status_ptr_t r = ucp_am_send_nbx(ep_, kAmRequest, c->header.data(), c->header.size(), buf, count, &p);
    if (r == nullptr) {
      SendDone(c.get(), UCS_OK);
    } else if (UCS_PTR_IS_ERR(r)) {
      SendDone(c.get(), UCS_PTR_STATUS(r));
    }
  }

  void Fail(const std::shared_ptr<ClientCall>& c, const absl::Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    c->status = s;
    c->send_done = c->reply_done = true;
    calls_.erase(c->id);
    c->cv.notify_one();
  }

  static void OnSendDone(void* request, ucs_status_t status, void* user_data) {
    auto* c = static_cast<ClientCall*>(user_data);
    c->client->SendDone(c, status);
    ucp_request_free(request);
  }

  void SendDone(ClientCall* c, ucs_status_t status) {
    std::lock_guard<std::mutex> l(mu_);
    c->send_done = true;
    if (status != UCS_OK) {
      if (c->status.ok()) c->status = FromUcsStatus(status, absl::StrCat("send to ", address_));
      if (!c->receiving) c->reply_done = true;
    }
    if (c->finished()) calls_.erase(c->id);
    c->cv.notify_one();
  }

  static ucs_status_t OnReply(void* arg, const void* header, size_t header_length, void* data, size_t length,
                              const ucp_am_recv_param_t* param) {
    auto* self = static_cast<UcxClient*>(arg);
    const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
    if (header_length < sizeof(WireHeader)) {
      if (rndv) ucp_am_data_release(self->w_.worker, data);
      return UCS_OK;
    }
    WireHeader wh;
    std::memcpy(&wh, header, sizeof(wh));
    std::shared_ptr<ClientCall> c;
    {
      std::lock_guard<std::mutex> l(self->mu_);
      auto it = self->calls_.find(wh.call_id);
      if (it != self->calls_.end() && !it->second->reply_done && !it->second->receiving) c = it->second;
    }
    if (c == nullptr) {  // late reply to an abandoned call: drop it
      if (rndv) ucp_am_data_release(self->w_.worker, data);
      return UCS_OK;
    }
    if (wh.flags & kHeadInHeader) {
      c->reply_head.assign(static_cast<const char*>(header) + sizeof(WireHeader), header_length - sizeof(WireHeader));
      self->Deliver(c, data, length, rndv);
      return UCS_OK;
    }
    if (wh.head_len > length) return self->Complete(c, absl::InternalError("reply head longer than the message")), UCS_OK;
    c->whole.resize(length);
    c->whole_head_len = wh.head_len;
    if (!rndv) {
      std::memcpy(c->whole.data(), data, length);
      self->SplitWhole(c);
      return UCS_OK;
    }
    c->recv_iov = {{c->whole.data(), c->whole.size()}};
    self->Receive(c, data);
    return UCS_OK;
  }

  void SplitWhole(const std::shared_ptr<ClientCall>& c) {
    c->reply_head = c->whole.substr(0, c->whole_head_len);
    std::string rest = c->whole.substr(c->whole_head_len);
    c->whole.clear();
    Deliver(c, rest.data(), rest.size(), false);
  }

  // Routes the reply payload into the sink's buffers.
  void Deliver(const std::shared_ptr<ClientCall>& c, void* data, size_t length, bool rndv) {
    MutableIov dest;
    absl::Status st;
    if (c->args.sink) {
      absl::StatusOr<MutableIov> d =
          c->args.sink({reinterpret_cast<const uint8_t*>(c->reply_head.data()), c->reply_head.size()}, length);
      if (d.ok()) dest = *d;
      else st = d.status();
    } else if (length > 0) {
      st = absl::InvalidArgumentError("reply carries a payload and the call has no sink");
    }
    if (st.ok() && IovBytes(dest) != length) st = absl::InvalidArgumentError("sink buffers do not match the reply payload");
    if (!st.ok()) dest = DiscardIov(&c->discard, length);
    if (!rndv) {
      if (length > 0) (void)Scatter(static_cast<const uint8_t*>(data), length, dest);
      Complete(c, st);
      return;
    }
    c->recv_iov = ToUcpIov(dest);
    c->status = st;
    Receive(c, data);
  }

  void Receive(const std::shared_ptr<ClientCall>& c, void* desc) {
    {
      std::lock_guard<std::mutex> l(mu_);
      c->receiving = true;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.cb.recv_am = &UcxClient::OnRecvDone;
    p.user_data = c.get();
    void* buf;
    size_t count;
    SetBuffer(c->recv_iov, &p, &buf, &count);
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(w_.worker, desc, buf, count, &p);
    if (r == nullptr) RecvDone(c.get(), UCS_OK);
    else if (UCS_PTR_IS_ERR(r)) RecvDone(c.get(), UCS_PTR_STATUS(r));
  }

  static void OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* c = static_cast<ClientCall*>(user_data);
    c->client->RecvDone(c, status);
    ucp_request_free(request);
  }

  void RecvDone(ClientCall* c, ucs_status_t status) {
    std::shared_ptr<ClientCall> keep;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = calls_.find(c->id);
      if (it != calls_.end()) keep = it->second;
      c->receiving = false;
    }
    if (!c->whole.empty() && status == UCS_OK && keep) {
      SplitWhole(keep);
      return;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (status != UCS_OK && c->status.ok()) c->status = FromUcsStatus(status, "reply payload");
    c->reply_done = true;
    if (c->finished()) calls_.erase(c->id);
    c->cv.notify_one();
  }

  void Complete(const std::shared_ptr<ClientCall>& c, const absl::Status& st) {
    std::lock_guard<std::mutex> l(mu_);
    if (!st.ok() && c->status.ok()) c->status = st;
    c->reply_done = true;
    if (c->finished()) calls_.erase(c->id);
    c->cv.notify_one();
  }

  std::string address_;
  UcxClientOptions opts_;
  Worker w_;
  ucp_ep_h ep_ = nullptr;  // guarded by worker_mu_
  std::mutex worker_mu_;   // whoever holds it drives the UCP worker
  std::vector<ucp_mem_h> mems_;  // guarded by worker_mu_
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> broken_{false};
  absl::Status broken_status_;  // loop thread only
  std::mutex mu_;
  uint64_t next_id_ = 0;
  std::deque<std::shared_ptr<ClientCall>> submit_;
  std::deque<std::function<void()>> tasks_;
  std::map<uint64_t, std::shared_ptr<ClientCall>> calls_;
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
