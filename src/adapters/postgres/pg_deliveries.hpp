// PgDeliveries: the notifier's webhook delivery bookkeeping (DeliveryStore) over PostgreSQL.
// * DeliveryStore: due_deliveries claims its rows for 60 s (FOR UPDATE SKIP LOCKED), so
//   several notifier replicas never send the same delivery; record_attempt only updates a
//   row still pending (a stale attempt is a no-op) and, with a dead letter, writes the
//   letter to the outbox in the same transaction (published to tx.dlq, relay as fallback).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/stores.hpp"

namespace ps {

namespace pg {
struct Core;
}  // namespace pg

class PgDeliveries : public DeliveryStore {
 public:
  explicit PgDeliveries(pg::Core& core) : core_(core) {}

  // DeliveryStore
  Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) override;
  Result<std::vector<DueDelivery>> due_deliveries(int64_t now_ms, size_t max) override;
  Result<void> record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) override;
  Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) override;

 private:
  pg::Core& core_;
};

}  // namespace ps
