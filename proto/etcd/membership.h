// Cluster membership on etcd's v3 gRPC API (proto/etcd/etcd_v3.proto).
//
// EtcdRegistration (servers): keeps `key` = `value` in etcd under a lease of
// `ttl` seconds, kept alive from a background thread; if the lease is lost
// (etcd restarted, a partition longer than the TTL) it registers again.
// Stop() revokes the lease, so the member disappears at once (drain).
//
// EtcdMembership (clients): the set of keys under a prefix, read once and
// then followed with a watch; `on_change` gets the whole member map after
// every change. If etcd goes away the last known membership stays in force
// while it reconnects with backoff.
//
// Thread safety: both are thread-safe; callbacks run on their thread.
#ifndef KVRECALL_PROTO_ETCD_MEMBERSHIP_H_
#define KVRECALL_PROTO_ETCD_MEMBERSHIP_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvrecall {

class EtcdRegistration {
 public:
  // Registers once before returning (UNAVAILABLE if etcd can not be
  // reached within `timeout`), then keeps the registration alive.
  static absl::StatusOr<std::unique_ptr<EtcdRegistration>> Start(const std::string& endpoint, const std::string& key,
                                                                 const std::string& value, int ttl_seconds,
                                                                 absl::Duration timeout = absl::Seconds(5));
  virtual ~EtcdRegistration() = default;
  virtual void Stop() = 0;  // revoke: deregister now
};

using MemberMap = std::map<std::string, std::string>;  // key (without prefix) -> value

class EtcdMembership {
 public:
  // Reads the members once before returning (UNAVAILABLE if etcd can not
  // be reached within `timeout`), then watches.
  static absl::StatusOr<std::unique_ptr<EtcdMembership>> Start(const std::string& endpoint, const std::string& prefix,
                                                               std::function<void(const MemberMap&)> on_change,
                                                               absl::Duration timeout = absl::Seconds(5));
  virtual ~EtcdMembership() = default;
  virtual MemberMap members() const = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_PROTO_ETCD_MEMBERSHIP_H_
