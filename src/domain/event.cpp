#include "domain/event.hpp"

#include <boost/json.hpp>

#include "domain/ids.hpp"

namespace ps {
namespace json = boost::json;

std::string_view topic_for(std::string_view t) {
  if (t == event_types::payment_initiated) return topics::initiated;
  if (t == event_types::payment_validated || t == event_types::refund_requested) return topics::validated;
  if (t == event_types::payment_succeeded || t == event_types::refund_succeeded) return topics::settled;
  if (t == event_types::payment_failed || t == event_types::refund_failed) return topics::failed;
  return topics::dlq;
}

std::string make_event_id(std::string_view subject_id, std::string_view type) {
  return deterministic_id("evt_", subject_id, type);
}

namespace {
json::object payment_obj(const Payment& p) {
  json::object o;
  o["id"] = p.id;
  o["merchant_id"] = p.merchant_id;
  o["idempotency_key"] = p.idempotency_key;
  o["amount"] = p.amount_minor;
  o["currency"] = p.currency;
  o["source"] = p.source;
  o["description"] = p.description;
  json::object md;
  for (const auto& [k, v] : p.metadata) md[k] = v;
  o["metadata"] = std::move(md);
  o["status"] = to_string(p.status);
  o["failure_code"] = p.failure_code;
  o["amount_refunded"] = p.amount_refunded_minor;
  o["created"] = p.created_ms;
  o["updated"] = p.updated_ms;
  return o;
}
json::object refund_obj(const Refund& r) {
  json::object o;
  o["id"] = r.id;
  o["payment_id"] = r.payment_id;
  o["merchant_id"] = r.merchant_id;
  o["idempotency_key"] = r.idempotency_key;
  o["amount"] = r.amount_minor;
  o["currency"] = r.currency;
  o["status"] = to_string(r.status);
  o["failure_code"] = r.failure_code;
  o["created"] = r.created_ms;
  o["updated"] = r.updated_ms;
  if (r.fee_refunded_minor != 0) o["fee_refunded"] = r.fee_refunded_minor;
  return o;
}

// Strict field readers: any missing or mistyped field is a schema error.
struct Reader {
  const json::object& o;
  bool ok = true;
  std::string missing;
  std::string str(const char* k) {
    auto* v = o.if_contains(k);
    if (!v || !v->is_string()) { fail(k); return {}; }
    return std::string(v->get_string());
  }
  int64_t i64(const char* k) {
    auto* v = o.if_contains(k);
    if (!v || !v->is_int64()) { fail(k); return 0; }
    return v->get_int64();
  }
  void fail(const char* k) { if (ok) missing = k; ok = false; }
};

Result<Payment> read_payment(const json::object& o) {
  Reader r{o, true, {}};
  Payment p;
  p.id = r.str("id");
  p.merchant_id = r.str("merchant_id");
  p.idempotency_key = r.str("idempotency_key");
  p.amount_minor = r.i64("amount");
  p.currency = r.str("currency");
  p.source = r.str("source");
  p.description = r.str("description");
  auto st = parse_payment_status(r.str("status"));
  p.failure_code = r.str("failure_code");
  p.amount_refunded_minor = r.i64("amount_refunded");
  p.created_ms = r.i64("created");
  p.updated_ms = r.i64("updated");
  if (auto* md = o.if_contains("metadata"); md && md->is_object()) {
    for (const auto& [k, v] : md->get_object()) {
      if (!v.is_string()) { r.fail("metadata"); break; }
      p.metadata[std::string(k)] = std::string(v.get_string());
    }
  } else {
    r.fail("metadata");
  }
  if (!r.ok) return Error::invalid("event_schema_invalid", "payment field missing or mistyped: " + r.missing, r.missing);
  if (!st) return Error::invalid("event_schema_invalid", "payment status unknown", "status");
  if (p.id.empty() || p.amount_minor <= 0) return Error::invalid("event_schema_invalid", "payment id or amount invalid");
  p.status = *st;
  return p;
}

Result<Refund> read_refund(const json::object& o) {
  Reader r{o, true, {}};
  Refund f;
  f.id = r.str("id");
  f.payment_id = r.str("payment_id");
  f.merchant_id = r.str("merchant_id");
  f.idempotency_key = r.str("idempotency_key");
  f.amount_minor = r.i64("amount");
  f.currency = r.str("currency");
  auto st = parse_refund_status(r.str("status"));
  f.failure_code = r.str("failure_code");
  f.created_ms = r.i64("created");
  f.updated_ms = r.i64("updated");
  if (!r.ok) return Error::invalid("event_schema_invalid", "refund field missing or mistyped: " + r.missing, r.missing);
  if (!st) return Error::invalid("event_schema_invalid", "refund status unknown", "status");
  if (f.id.empty() || f.amount_minor <= 0) return Error::invalid("event_schema_invalid", "refund id or amount invalid");
  if (auto* fee = o.if_contains("fee_refunded")) {  // optional: events before fees were refunded lack it
    if (!fee->is_int64() || fee->get_int64() < 0 || fee->get_int64() > f.amount_minor)
      return Error::invalid("event_schema_invalid", "refund fee_refunded must be an integer from 0 to amount",
                            "fee_refunded");
    f.fee_refunded_minor = fee->get_int64();
  }
  f.status = *st;
  return f;
}
}  // namespace

std::string encode_payload(const EventPayload& p) {
  json::object o;
  o["schema_version"] = kEventSchemaVersion;
  if (p.payment) o["payment"] = payment_obj(*p.payment);
  if (p.refund) o["refund"] = refund_obj(*p.refund);
  return json::serialize(o);
}

Result<EventPayload> decode_payload(std::string_view data) {
  boost::system::error_code ec;
  json::value v = json::parse(data, ec);
  if (ec || !v.is_object()) return Error::invalid("event_undecodable", "event data is not a JSON object");
  const auto& o = v.get_object();
  auto* ver = o.if_contains("schema_version");
  if (!ver || !ver->is_int64() || ver->get_int64() != kEventSchemaVersion)
    return Error::invalid("event_schema_invalid", "unsupported or missing schema_version", "schema_version");
  EventPayload out;
  if (auto* p = o.if_contains("payment")) {
    if (!p->is_object()) return Error::invalid("event_schema_invalid", "payment is not an object", "payment");
    auto r = read_payment(p->get_object());
    if (!r) return r.error();
    out.payment = std::move(r.value());
  }
  if (auto* f = o.if_contains("refund")) {
    if (!f->is_object()) return Error::invalid("event_schema_invalid", "refund is not an object", "refund");
    auto r = read_refund(f->get_object());
    if (!r) return r.error();
    out.refund = std::move(r.value());
  }
  if (!out.payment && !out.refund)
    return Error::invalid("event_schema_invalid", "event carries neither payment nor refund");
  return out;
}

std::string event_envelope_json(const Event& e) {
  json::object o;
  o["id"] = e.id;
  o["type"] = e.type;
  o["source"] = e.source;
  o["time_ms"] = e.time_ms;
  o["key"] = e.key;
  o["traceparent"] = e.traceparent;
  o["data"] = e.data;
  return json::serialize(o);
}

Event parse_event_envelope(std::string_view text) {
  Event e;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return e;
  const auto& o = v.get_object();
  auto str = [&](const char* k) {
    auto* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  e.id = str("id");
  e.type = str("type");
  e.source = str("source");
  if (auto* t = o.if_contains("time_ms"); t && t->is_int64()) e.time_ms = t->get_int64();
  e.key = str("key");
  e.traceparent = str("traceparent");
  e.data = str("data");
  return e;
}

Event make_payment_event(const Payment& p, std::string_view type, std::string_view source,
                         int64_t now_ms, std::string traceparent) {
  Event e;
  e.id = make_event_id(p.id, type);
  e.type = std::string(type);
  e.source = std::string(source);
  e.time_ms = now_ms;
  e.key = p.id;
  e.traceparent = std::move(traceparent);
  e.data = encode_payload(EventPayload{p, std::nullopt});
  return e;
}

Event make_refund_event(const Refund& r, std::string_view type, std::string_view source,
                        int64_t now_ms, std::string traceparent) {
  Event e;
  e.id = make_event_id(r.id, type);
  e.type = std::string(type);
  e.source = std::string(source);
  e.time_ms = now_ms;
  e.key = r.payment_id;
  e.traceparent = std::move(traceparent);
  e.data = encode_payload(EventPayload{std::nullopt, r});
  return e;
}

Event admitted_refund_event(const Event& given, const Refund& resolved, int64_t now_ms) {
  Event ev = make_refund_event(resolved, given.type.empty() ? event_types::refund_requested : given.type,
                               given.source.empty() ? "/paystream/gateway" : given.source,
                               given.time_ms ? given.time_ms : now_ms, given.traceparent);
  if (!given.id.empty()) ev.id = given.id;
  return ev;
}

}  // namespace ps
