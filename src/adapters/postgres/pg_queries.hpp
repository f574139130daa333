// PgQueries: what the API reads and the admin writes over PostgreSQL: payments, refunds,
// balances (maintained rows, never sums), journal entries, merchants and their API keys,
// webhook endpoints, merchant events.
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

class PgQueries : public PaymentQueries, public MerchantStore, public EndpointStore, public EventQueries {
 public:
  explicit PgQueries(pg::Core& core) : core_(core) {}

  // PaymentQueries
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id,
                                             const std::string& payment_id) override;
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id,
                                             std::optional<PaymentStatus> status,
                                             const Page& page) override;
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id,
                                           const std::string& refund_id) override;
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override;
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override;
  // MerchantStore
  Result<void> create_merchant(const Merchant& m) override;
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& key_hash) override;
  Result<std::vector<Merchant>> all_merchants() override;
  Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id,
                                                                 const std::string& new_key_hash, int64_t now_ms,
                                                                 int64_t old_keys_expire_ms) override;
  // EndpointStore
  Result<void> create_endpoint(const WebhookEndpoint& e) override;
  Result<std::vector<WebhookEndpoint>> list_endpoints(const std::string& merchant_id) override;
  Result<std::optional<WebhookEndpoint>> update_endpoint(const std::string& merchant_id, const std::string& endpoint_id,
                                                         const EndpointUpdate& update) override;
  Result<std::optional<WebhookEndpoint>> get_endpoint(const std::string& merchant_id,
                                                      const std::string& endpoint_id) override;
  Result<bool> delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) override;
  // EventQueries
  Result<std::vector<MerchantEvent>> list_events(const std::string& merchant_id, const Page& page) override;
  Result<std::optional<MerchantEvent>> get_event(const std::string& merchant_id,
                                                 const std::string& event_id) override;

 private:
  pg::Core& core_;
};

}  // namespace ps
