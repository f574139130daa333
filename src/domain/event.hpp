// Pipeline events: CloudEvents 1.0 attributes plus a JSON data payload carrying a
// schema version. The key of every event is its payment id (ordering per payment).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "domain/model.hpp"

namespace ps {

namespace topics {
inline constexpr std::string_view initiated = "tx.initiated";
inline constexpr std::string_view validated = "tx.validated";
inline constexpr std::string_view settled = "tx.settled";
inline constexpr std::string_view failed = "tx.failed";
inline constexpr std::string_view dlq = "tx.dlq";
}  // namespace topics

namespace event_types {
inline constexpr std::string_view payment_initiated = "payment.initiated";
inline constexpr std::string_view payment_validated = "payment.validated";
inline constexpr std::string_view payment_succeeded = "payment.succeeded";
inline constexpr std::string_view payment_failed = "payment.failed";
inline constexpr std::string_view refund_requested = "refund.requested";
inline constexpr std::string_view refund_succeeded = "refund.succeeded";
inline constexpr std::string_view refund_failed = "refund.failed";
inline constexpr std::string_view dead_letter = "paystream.dead_letter";
}  // namespace event_types

inline constexpr int kEventSchemaVersion = 1;

struct Event {
  std::string id;           // ce_id: deterministic per (subject, type), so a redelivered
                            // stage re-produces the same id and consumers can dedupe
  std::string type;         // ce_type
  std::string source;       // ce_source, e.g. "/paystream/fraud"
  int64_t time_ms = 0;      // ce_time
  std::string key;          // payment id
  std::string traceparent;  // W3C trace context, carried from the HTTP request
  std::string data;         // JSON, see encode_payload
};

// The topic an event type is written to. refund.requested skips fraud: it goes to
// tx.validated directly (see docs/ARCHITECTURE.md).
std::string_view topic_for(std::string_view event_type);

// Deterministic event id: "evt_" + 24 hex chars of SHA-256(subject_id + "|" + type).
std::string make_event_id(std::string_view subject_id, std::string_view type);

// Payload of a pipeline event: a payment (payment.*) or a refund (refund.*).
struct EventPayload {
  std::optional<Payment> payment;
  std::optional<Refund> refund;
};
std::string encode_payload(const EventPayload& p);
// Fails (invalid_request, code "event_undecodable"/"event_schema_invalid") on bad data.
Result<EventPayload> decode_payload(std::string_view data);

// The whole event — CloudEvents attributes and data (as a string) — as one JSON object:
// {"id","type","source","time_ms","key","traceparent","data"}. Used where an event is
// stored or shown outside the log (dead letters, `paystream dlq show`).
std::string event_envelope_json(const Event& e);
// The reverse; missing fields stay empty (a dead letter keeps whatever it could read).
Event parse_event_envelope(std::string_view json);

// Builds an event for a payment or refund with the given type and source.
Event make_payment_event(const Payment& p, std::string_view type, std::string_view source,
                         int64_t now_ms, std::string traceparent);
Event make_refund_event(const Refund& r, std::string_view type, std::string_view source,
                        int64_t now_ms, std::string traceparent);
// The event of an admitted refund (amount resolved): `given` (AcceptRefund::requested)
// rebuilt around the resolved refund, keeping its id, type, source, time and trace when
// set (refund.requested, the gateway and now otherwise). Every store's intake calls it.
Event admitted_refund_event(const Event& given, const Refund& resolved, int64_t now_ms);

}  // namespace ps
