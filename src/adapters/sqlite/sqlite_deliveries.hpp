// SqliteDeliveries: the notifier's webhook delivery bookkeeping (DeliveryStore).
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps {

class SqliteDeliveries : public DeliveryStore {
 public:
  explicit SqliteDeliveries(sqlite::Core& core) : core_(core) {}

  // DeliveryStore
  Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) override;
  Result<std::vector<DueDelivery>> due_deliveries(int64_t now_ms, size_t max) override;
  Result<void> record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) override;
  // Delivery ids are deterministic_id("wd_", event_id, endpoint_id), as the notifier makes them.
  Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) override;

 private:
  sqlite::Core& core_;
};

}  // namespace ps
