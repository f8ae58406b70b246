// The gRPC control plane (proto/kvrecall/v1/admin.proto) over a BlockStore
// and its data-plane service. Admin calls need metadata
// "kvrecall-admin-token"; Pin/Unpin need the namespace's "kvrecall-token".
// Status codes map 1:1 (proto/grpc_status.h). Thread-safe.
#ifndef KVRECALL_STORE_ADMIN_SERVICE_H_
#define KVRECALL_STORE_ADMIN_SERVICE_H_

#include <functional>
#include <mutex>
#include <string>

#include "proto/kvrecall/v1/admin.grpc.pb.h"
#include "store/block_store.h"
#include "store/service.h"

namespace kvrecall {

class AdminService final : public kvrecall::v1::Admin::Service {
 public:
  // `drain` stops the data plane (called once by Drain); `address` is the
  // UCX bootstrap address reported by Health.
  AdminService(BlockStore* store, StoreService* service, std::string admin_token, std::string data_address,
               std::function<void()> drain);

  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse*) override;
  grpc::Status Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse*) override;
  grpc::Status CreateNamespace(grpc::ServerContext*, const v1::CreateNamespaceRequest*,
                               v1::CreateNamespaceResponse*) override;
  grpc::Status SetQuota(grpc::ServerContext*, const v1::SetQuotaRequest*, v1::SetQuotaResponse*) override;
  grpc::Status Pin(grpc::ServerContext*, const v1::PinRequest*, v1::PinResponse*) override;
  grpc::Status Unpin(grpc::ServerContext*, const v1::PinRequest*, v1::PinResponse*) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainResponse*) override;

 private:
  grpc::Status PinOrUnpin(grpc::ServerContext* ctx, const v1::PinRequest* req, v1::PinResponse* resp, bool pin);

  BlockStore* store_;
  StoreService* service_;
  std::string admin_token_, data_address_;
  std::function<void()> drain_;
  std::once_flag drain_once_;
  const int64_t start_us_;
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_ADMIN_SERVICE_H_
