// Durable store ports used by the HTTP API (gateway) and the notifier.
//
// Durability: every write that reports success is durable (embedded: SQLite WAL,
// synchronous=FULL, group-committed; distributed: PostgreSQL commit).
// Uniqueness: (merchant_id, idempotency_key) is unique for payments and for refunds for
// ever; a payment has at most one settlement entry; a refund at most one reversal.
// Thread-safety: all methods may be called from any thread. Asynchronous methods run
// their callback exactly once, on a store thread, after the outcome is durable.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "domain/event.hpp"
#include "domain/model.hpp"
#include "ports/event_log.hpp"  // DeadLetter

namespace ps {

// The first response to an idempotent request, kept so retries replay it byte for byte.
struct IdempotencyRecord {
  std::string merchant_id;
  std::string key;
  std::string fingerprint;    // hex SHA-256 of method, path and body
  int http_status = 0;
  std::string response_body;
  std::string resource_id;    // payment or refund id
  int64_t created_ms = 0;
};

struct AcceptPayment {
  Payment payment;            // status processing, id = payment_id_for(merchant, key)
  Event initiated;            // payment.initiated, appended to tx.initiated
  IdempotencyRecord record;   // the 202 response
};
struct AcceptRefund {
  Refund refund;              // status processing, id = refund_id_for(merchant, key)
  Event requested;            // refund.requested, appended to tx.validated
  IdempotencyRecord record;   // the 202 response
  // Optional: renders record.response_body from the refund once its amount is resolved
  // (amount 0 = all refundable). Called inside the store transaction; must not block.
  std::function<std::string(const Refund&)> render;
};
// created=true: this call stored it. created=false: (merchant, key) already existed and
// `record` is what was stored first (the caller compares fingerprints).
struct AcceptOutcome {
  bool created = false;
  IdempotencyRecord record;
};
using AcceptCallback = std::function<void(Result<AcceptOutcome>)>;

class IntakeStore {
 public:
  virtual ~IntakeStore() = default;
  // Stores payment, initiated event and idempotency record in one transaction.
  virtual void accept_payment(AcceptPayment cmd, AcceptCallback cb) = 0;
  // In one transaction: checks the payment exists for the merchant and succeeded
  // (unprocessable "payment_not_succeeded"), that amount + amount_refunded + refunds still
  // processing <= payment amount ("amount_exceeds_refundable", param "amount"), and that
  // the merchant's available balance minus processing refunds covers it
  // ("insufficient_balance"); then stores refund, event and record.
  // The refund amount 0 means "all that is refundable" and is resolved inside the
  // transaction (the stored refund and response carry the resolved amount).
  virtual void accept_refund(AcceptRefund cmd, AcceptCallback cb) = 0;
  // Replaces the stored response (used when Prefer: wait turned a 202 into a 201).
  virtual void update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                          int http_status, std::string body,
                                          std::function<void(Result<void>)> cb) = 0;
  virtual Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                                    const std::string& key) = 0;
};

struct Page {
  int limit = 10;                 // 1..100
  std::string starting_after;     // cursor: id of the last object of the previous page
};

class PaymentQueries {
 public:
  virtual ~PaymentQueries() = default;
  virtual Result<std::optional<Payment>> get_payment(const std::string& merchant_id,
                                                     const std::string& payment_id) = 0;
  // Newest first (created_ms desc, id desc). starting_after of another merchant or
  // unknown: invalid_request "cursor_invalid", param "starting_after".
  virtual Result<std::vector<Payment>> list_payments(const std::string& merchant_id,
                                                     std::optional<PaymentStatus> status,
                                                     const Page& page) = 0;
  virtual Result<std::optional<Refund>> get_refund(const std::string& merchant_id,
                                                   const std::string& refund_id) = 0;
  virtual Result<std::vector<Balance>> balances(const std::string& merchant_id) = 0;
  virtual Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                                const std::string& payment_id) = 0;
};

// A merchant has one or more API keys, stored as SHA-256 hashes. The key created with the
// merchant never expires until it is rotated out; rotation adds a key and gives the others
// an expiry (the grace period), after which they are refused.
class MerchantStore {
 public:
  virtual ~MerchantStore() = default;
  // Stores the merchant and m.api_key_hash as its first key.
  virtual Result<void> create_merchant(const Merchant& m) = 0;
  // The merchant owning the key, with api_key_hash = key_hash and the key's expiry
  // (key_expires_ms); expired keys are returned too: the caller checks key_valid_at(now).
  virtual Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& key_hash) = 0;
  // One record per stored key (as find_merchant_by_key_hash returns it); warms the caches.
  virtual Result<std::vector<Merchant>> all_merchants() = 0;
  // In one transaction: adds new_key_hash as a key of the merchant that never expires,
  // makes every other key of the merchant stop at old_keys_expire_ms at the latest (at or
  // before now_ms: refused at once) and deletes keys already expired at now_ms.
  // Returns the merchant's other keys still stored, as find_merchant_by_key_hash returns
  // them (with their new expiry: cached sessions must be replaced), or nullopt if there is
  // no such merchant.
  virtual Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id,
                                                                         const std::string& new_key_hash,
                                                                         int64_t now_ms,
                                                                         int64_t old_keys_expire_ms) = 0;
};

// A change to a webhook endpoint; unset fields stay as they are.
struct EndpointUpdate {
  std::optional<std::string> url;
  std::optional<std::vector<std::string>> enabled_events;
  std::optional<bool> disabled;          // disabling fails its pending deliveries ("endpoint_disabled")
  std::optional<std::string> new_secret; // rotation: the current secret becomes the previous one
  int64_t previous_secret_expires_ms = 0;  // with new_secret: until then both sign
};

// The endpoint after `u` (the one rule both stores apply inside their transaction).
inline WebhookEndpoint apply_endpoint_update(WebhookEndpoint e, const EndpointUpdate& u) {
  if (u.url) e.url = *u.url;
  if (u.enabled_events) e.enabled_events = *u.enabled_events;
  if (u.disabled) e.disabled = *u.disabled;
  if (u.new_secret) {
    e.previous_secret = std::move(e.secret);
    e.secret = *u.new_secret;
    e.previous_secret_expires_ms = u.previous_secret_expires_ms;
  }
  return e;
}

class EndpointStore {
 public:
  virtual ~EndpointStore() = default;
  virtual Result<void> create_endpoint(const WebhookEndpoint& e) = 0;
  virtual Result<std::vector<WebhookEndpoint>> list_endpoints(const std::string& merchant_id) = 0;
  virtual Result<std::optional<WebhookEndpoint>> get_endpoint(const std::string& merchant_id,
                                                              const std::string& endpoint_id) = 0;
  // false if there was no such endpoint for the merchant. Pending deliveries to a deleted
  // endpoint are abandoned.
  virtual Result<bool> delete_endpoint(const std::string& merchant_id,
                                       const std::string& endpoint_id) = 0;
  // Applies the update in one transaction; the endpoint as it is after it, or nullopt if
  // the merchant has no such (undeleted) endpoint. Deliveries already due keep the URL
  // they are sent to next from the row, so a URL change applies to their next attempt.
  virtual Result<std::optional<WebhookEndpoint>> update_endpoint(const std::string& merchant_id,
                                                                 const std::string& endpoint_id,
                                                                 const EndpointUpdate& update) = 0;
};

class EventQueries {
 public:
  virtual ~EventQueries() = default;
  virtual Result<std::vector<MerchantEvent>> list_events(const std::string& merchant_id,
                                                         const Page& page) = 0;  // newest first
  virtual Result<std::optional<MerchantEvent>> get_event(const std::string& merchant_id,
                                                         const std::string& event_id) = 0;
};

// Webhook delivery bookkeeping for the notifier's delivery loop.
struct DueDelivery {
  WebhookDelivery delivery;
  WebhookEndpoint endpoint;
  MerchantEvent event;
};
class DeliveryStore {
 public:
  virtual ~DeliveryStore() = default;
  virtual Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) = 0;
  // Pending deliveries with next_attempt_ms <= now_ms, oldest first, at most max.
  virtual Result<std::vector<DueDelivery>> due_deliveries(int64_t now_ms, size_t max) = 0;
  // Records an attempt's result (status, attempts, next_attempt_ms, last_* fields).
  // With a dead letter, the letter is appended to tx.dlq in the same transaction.
  virtual Result<void> record_attempt(const WebhookDelivery& updated,
                                      std::optional<DeadLetter> dead_letter) = 0;
  // Manual redelivery: every enabled endpoint of the merchant gets a delivery of this
  // event due now (resetting attempts). false if the event is not the merchant's.
  virtual Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id,
                                 int64_t now_ms) = 0;
};

}  // namespace ps
