#include "store/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvrecall {
namespace {

void Counter(std::string* out, const char* name, const char* help, uint64_t v, const char* type = "counter") {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", v, "\n");
}

void Histogram(std::string* out, const char* op, const LatencyHistogram::Snapshot& h) {
  uint64_t cum = 0;
  for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
    cum += h.counts[b];
    const std::string le = b + 1 >= LatencyHistogram::kBuckets
                               ? std::string("+Inf")
                               : absl::StrFormat("%g", LatencyHistogram::UpperBoundUs(b) / 1e6);
    absl::StrAppend(out, "kvrecall_request_seconds_bucket{op=\"", op, "\",le=\"", le, "\"} ", cum, "\n");
  }
  absl::StrAppend(out, "kvrecall_request_seconds_sum{op=\"", op, "\"} ", absl::StrFormat("%.6f", h.sum_us / 1e6), "\n");
  absl::StrAppend(out, "kvrecall_request_seconds_count{op=\"", op, "\"} ", h.count, "\n");
}

class HttpServerImpl final : public MetricsHttpServer {
 public:
  ~HttpServerImpl() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
  }
  int port() const override { return port_; }

  absl::Status Init(const std::string& bind_addr, int port, std::function<std::string()> render) {
    render_ = std::move(render);
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, bind_addr.c_str(), &sa.sin_addr) != 1 ||
        bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd_, 16) != 0) {
      return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", bind_addr, ":", port, ": ", strerror(errno)));
    }
    socklen_t sl = sizeof(sa);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &sl);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{2, 0};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      char buf[2048];
      size_t n = 0;
      while (n < sizeof(buf) - 1) {  // read the request head (bounded)
        const ssize_t r = recv(c, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0) break;
        n += size_t(r);
        buf[n] = '\0';
        if (std::strstr(buf, "\r\n\r\n") || std::strstr(buf, "\n\n")) break;
      }
      buf[n] = '\0';
      std::string resp;
      if (std::strncmp(buf, "GET /metrics", 12) == 0) {
        const std::string body = render_();
        resp = absl::StrCat("HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: ", body.size(),
                            "\r\nConnection: close\r\n\r\n", body);
      } else {
        resp = "HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
      }
      for (size_t off = 0; off < resp.size();) {
        const ssize_t w = send(c, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += size_t(w);
      }
      close(c);
    }
  }

  int fd_ = -1, port_ = 0;
  std::function<std::string()> render_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace

std::string FormatPrometheus(const StoreStats& s, const ServiceStats& v) {
  std::string out;
  Counter(&out, "kvrecall_host_capacity_bytes", "Host tier arena size.", s.host.capacity, "gauge");
  Counter(&out, "kvrecall_host_used_bytes", "Host tier bytes in use (size classes).", s.host.used_bytes, "gauge");
  Counter(&out, "kvrecall_host_blocks", "Blocks in the host tier.", s.host.blocks, "gauge");
  Counter(&out, "kvrecall_host_evictions_total", "Blocks evicted from the host tier.", s.host.evictions);
  if (s.has_ssd) {
    Counter(&out, "kvrecall_ssd_budget_bytes", "SSD tier byte budget.", s.ssd.budget, "gauge");
    Counter(&out, "kvrecall_ssd_used_bytes", "SSD tier payload bytes.", s.ssd.bytes, "gauge");
    Counter(&out, "kvrecall_ssd_blocks", "Blocks in the SSD tier.", s.ssd.blocks, "gauge");
    Counter(&out, "kvrecall_ssd_evictions_total", "Blocks evicted from the SSD tier.", s.ssd.evictions);
  }
  Counter(&out, "kvrecall_puts_total", "Blocks stored.", s.puts);
  Counter(&out, "kvrecall_put_bytes_total", "Bytes stored.", s.put_bytes);
  Counter(&out, "kvrecall_gets_total", "Block reads.", s.gets);
  Counter(&out, "kvrecall_get_bytes_total", "Bytes read.", s.get_bytes);
  absl::StrAppend(&out, "# HELP kvrecall_hits_total Reads served, by tier.\n# TYPE kvrecall_hits_total counter\n",
                  "kvrecall_hits_total{tier=\"host\"} ", s.hits_host, "\nkvrecall_hits_total{tier=\"ssd\"} ", s.hits_ssd,
                  "\n");
  Counter(&out, "kvrecall_misses_total", "Reads of absent blocks.", s.misses);
  Counter(&out, "kvrecall_checksum_failures_total", "Stored copies that failed verification (dropped).",
          s.checksum_failures);
  Counter(&out, "kvrecall_rejected_requests_total", "Malformed, unauthenticated or refused requests.", s.rejected);
  Counter(&out, "kvrecall_demotions_total", "Blocks written back to SSD on host eviction.", s.demotions);
  Counter(&out, "kvrecall_promotions_total", "SSD hits copied into the host tier.", s.promotions);
  Counter(&out, "kvrecall_demotions_dropped_total", "Evicted blocks not written back (demotion queue full).",
          s.demotions_dropped);
  absl::StrAppend(&out, "# HELP kvrecall_namespace_host_bytes Host bytes per namespace.\n",
                  "# TYPE kvrecall_namespace_host_bytes gauge\n");
  for (const NamespaceStats& n : s.namespaces) {
    absl::StrAppend(&out, "kvrecall_namespace_host_bytes{namespace=\"", n.name, "\"} ", n.host_bytes, "\n");
  }
  absl::StrAppend(&out, "# HELP kvrecall_request_seconds Data-plane request latency.\n",
                  "# TYPE kvrecall_request_seconds histogram\n");
  Histogram(&out, "put", v.put);
  Histogram(&out, "get", v.get);
  Histogram(&out, "exists", v.exists);
  Histogram(&out, "delete", v.del);
  Histogram(&out, "gather", v.gather);
  Histogram(&out, "attend", v.attend);
  // Live recall of retrieval sessions (the retrieval SLO).
  const RecallStats& r = v.recall;
  absl::StrAppend(&out, "# HELP kvrecall_retrieval_mass_recall Attention mass covered by the selected tokens, per ",
                  "sampled query head (reported by retrieval sessions).\n",
                  "# TYPE kvrecall_retrieval_mass_recall histogram\n");
  uint64_t cum = 0;
  for (size_t b = 0; b < RecallStats::kMassBounds.size(); ++b) {
    cum += r.mass_counts[b];
    absl::StrAppend(&out, "kvrecall_retrieval_mass_recall_bucket{le=\"", RecallStats::kMassBounds[b], "\"} ", cum,
                    "\n");
  }
  absl::StrAppend(&out, "kvrecall_retrieval_mass_recall_bucket{le=\"+Inf\"} ", r.samples, "\n",
                  "kvrecall_retrieval_mass_recall_sum ", r.mass_recall_sum, "\n",
                  "kvrecall_retrieval_mass_recall_count ", r.samples, "\n");
  absl::StrAppend(&out, "# HELP kvrecall_retrieval_topk_recall Share of the selected tokens that are in the exact ",
                  "top-K, per sampled query head.\n# TYPE kvrecall_retrieval_topk_recall summary\n",
                  "kvrecall_retrieval_topk_recall_sum ", r.topk_recall_sum, "\n",
                  "kvrecall_retrieval_topk_recall_count ", r.samples, "\n");
  absl::StrAppend(&out, "# HELP kvrecall_retrieval_output_error Relative error of the attention output against exact ",
                  "attention, per sampled query head.\n# TYPE kvrecall_retrieval_output_error summary\n",
                  "kvrecall_retrieval_output_error_sum ", r.output_error_sum, "\n",
                  "kvrecall_retrieval_output_error_count ", r.samples, "\n");
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& bind, int port,
                                                                           std::function<std::string()> render) {
  auto s = std::make_unique<HttpServerImpl>();
  if (absl::Status st = s->Init(bind, port, std::move(render)); !st.ok()) return st;
  return std::unique_ptr<MetricsHttpServer>(std::move(s));
}

}  // namespace kvrecall
