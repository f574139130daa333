// Domain objects of paystream. Plain data; no I/O. Times are milliseconds since the
// Unix epoch (UTC); money is int64 minor units of `currency`.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ps {

enum class PaymentStatus { processing, succeeded, failed };
enum class RefundStatus { processing, succeeded, failed };
std::string_view to_string(PaymentStatus s);
std::string_view to_string(RefundStatus s);
std::optional<PaymentStatus> parse_payment_status(std::string_view s);
std::optional<RefundStatus> parse_refund_status(std::string_view s);

using Metadata = std::map<std::string, std::string>;

struct Merchant {
  std::string id;            // "mer_..."
  std::string name;
  std::string api_key_hash;  // hex SHA-256 of the API key; the key itself is never stored
  double rate_limit_per_s = 0;  // 0 = platform default
  int64_t rate_limit_burst = 0; // 0 = platform default
  int64_t created_ms = 0;
  // As found by an API key (MerchantStore::find_merchant_by_key_hash, all_merchants):
  // api_key_hash is that key's hash and key_expires_ms when it stops working, 0 = never
  // (a key rotated out keeps working for its grace period; see rotate_api_key).
  int64_t key_expires_ms = 0;
  // Whether the key this record was found by still works at now_ms.
  bool key_valid_at(int64_t now_ms) const { return key_expires_ms == 0 || now_ms < key_expires_ms; }
};

struct Payment {
  std::string id;               // "pay_" + deterministic hash of (merchant, idempotency key)
  std::string merchant_id;
  std::string idempotency_key;
  int64_t amount_minor = 0;
  std::string currency;
  std::string source;           // opaque payment-method token; internal, not in the API object
  std::string description;
  Metadata metadata;
  PaymentStatus status = PaymentStatus::processing;
  std::string failure_code;     // empty unless failed
  int64_t amount_refunded_minor = 0;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

struct Refund {
  std::string id;               // "re_" + deterministic hash of (merchant, idempotency key)
  std::string payment_id;
  std::string merchant_id;
  std::string idempotency_key;
  int64_t amount_minor = 0;
  std::string currency;
  RefundStatus status = RefundStatus::processing;
  std::string failure_code;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  // The share of the payment's fee this refund gives back (decided at admission,
  // domain/ledger_rules.hpp refund_fee_share; carried by the refund's events to the ledger).
  int64_t fee_refunded_minor = 0;
};

// Ledger accounts. Names are stable strings so every store spells them the same:
//   "merchant:<merchant_id>:available", "platform:fees", "acquirer:clearing".
struct Posting {
  std::string account;
  std::string currency;
  int64_t amount_minor = 0;     // debit positive, credit negative; a journal entry sums to 0
};

enum class EntryKind { settlement, refund };
std::string_view to_string(EntryKind k);

struct JournalEntry {
  std::string id;               // "je_..." deterministic: settlement per payment, one per refund
  EntryKind kind = EntryKind::settlement;
  std::string merchant_id;
  std::string payment_id;
  std::string refund_id;        // empty for settlements
  std::vector<Posting> postings;
  int64_t created_ms = 0;
};

struct Balance {
  std::string currency;
  int64_t available_minor = 0;
};

struct WebhookEndpoint {
  std::string id;               // "we_..."
  std::string merchant_id;
  std::string url;
  std::string secret;           // "whsec_" + base64 of 32 random bytes
  std::vector<std::string> enabled_events;  // empty or {"*"} = all
  int64_t created_ms = 0;
  // Secret rotation: the secret it replaced is signed with too until this time (0: none).
  std::string previous_secret{};
  int64_t previous_secret_expires_ms = 0;
  bool disabled = false;  // gets no deliveries (its pending ones were failed when disabled)
  // Whether an event of this type is delivered to it (false while disabled).
  bool wants(std::string_view event_type) const;
  // The secrets to sign with at now_ms: the current one, then the previous one while its
  // overlap lasts (Standard Webhooks: one signature per secret).
  std::vector<std::string_view> signing_secrets(int64_t now_ms) const;
};

// A merchant-facing event (GET /v1/events and webhook body).
struct MerchantEvent {
  std::string id;               // same id as the pipeline CloudEvent that produced it
  std::string merchant_id;
  std::string type;             // "payment.succeeded", ...
  std::string data_json;        // the payment or refund API object, serialised
  int64_t created_ms = 0;
};

enum class DeliveryStatus { pending, succeeded, failed };  // failed = dead-lettered
std::string_view to_string(DeliveryStatus s);

struct WebhookDelivery {
  std::string id;               // "wd_..." = hash(event id, endpoint id)
  std::string event_id;
  std::string endpoint_id;
  std::string merchant_id;
  DeliveryStatus status = DeliveryStatus::pending;
  int attempts = 0;
  int64_t next_attempt_ms = 0;
  int last_http_status = 0;
  std::string last_error;
};

}  // namespace ps
