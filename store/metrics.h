// Prometheus text exposition (version 0.0.4) of a store's counters: the
// same numbers as the gRPC Stats call, for GET /metrics.
#ifndef KVRECALL_STORE_METRICS_H_
#define KVRECALL_STORE_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "store/block_store.h"
#include "store/service.h"

namespace kvrecall {

std::string FormatPrometheus(const StoreStats& store, const ServiceStats& service);

// A minimal HTTP/1.0 server answering GET /metrics with `render()` on its
// own thread (other paths: 404). Port 0 picks one.
class MetricsHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& bind, int port,
                                                                   std::function<std::string()> render);
  virtual ~MetricsHttpServer() = default;
  virtual int port() const = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_METRICS_H_
