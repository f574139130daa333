#include "adapters/postgres/pg_rows.hpp"

#include <algorithm>

#include "domain/store_codec.hpp"

namespace ps::pg {

// Encoding helpers and the balance check: domain/store_codec.hpp (shared with SQLite).

// ---------- row decoders ----------

const char* const kPaymentCols =
    "id, merchant_id, idempotency_key, amount_minor, currency, source, description, metadata, "
    "status, failure_code, amount_refunded_minor, created_ms, updated_ms";
const char* const kPaymentColsP =
    "p.id, p.merchant_id, p.idempotency_key, p.amount_minor, p.currency, p.source, p.description, p.metadata, "
    "p.status, p.failure_code, p.amount_refunded_minor, p.created_ms, p.updated_ms";
Payment read_payment(const Res& q, int r) {
  Payment p;
  p.id = q.text(r, 0);
  p.merchant_id = q.text(r, 1);
  p.idempotency_key = q.text(r, 2);
  p.amount_minor = q.i64(r, 3);
  p.currency = q.text(r, 4);
  p.source = q.text(r, 5);
  p.description = q.text(r, 6);
  p.metadata = metadata_from_json(q.text(r, 7));
  p.status = parse_payment_status(q.text(r, 8)).value_or(PaymentStatus::processing);
  p.failure_code = q.text(r, 9);
  p.amount_refunded_minor = q.i64(r, 10);
  p.created_ms = q.i64(r, 11);
  p.updated_ms = q.i64(r, 12);
  return p;
}

const char* const kRefundCols =
    "id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, failure_code, "
    "created_ms, updated_ms";
Refund read_refund(const Res& q, int r) {
  Refund x;
  x.id = q.text(r, 0);
  x.payment_id = q.text(r, 1);
  x.merchant_id = q.text(r, 2);
  x.idempotency_key = q.text(r, 3);
  x.amount_minor = q.i64(r, 4);
  x.currency = q.text(r, 5);
  x.status = parse_refund_status(q.text(r, 6)).value_or(RefundStatus::processing);
  x.failure_code = q.text(r, 7);
  x.created_ms = q.i64(r, 8);
  x.updated_ms = q.i64(r, 9);
  return x;
}

// A merchant as found by one of its keys: FROM kMerchantKeyFrom.
const char* const kMerchantCols =
    "m.id, m.name, k.key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms, COALESCE(k.expires_ms, 0)";
const char* const kMerchantKeyFrom = " FROM api_keys k JOIN merchants m ON m.id = k.merchant_id";
Merchant read_merchant(const Res& q, int r) {
  Merchant m;
  m.id = q.text(r, 0);
  m.name = q.text(r, 1);
  m.api_key_hash = q.text(r, 2);
  m.rate_limit_per_s = q.f64(r, 3);
  m.rate_limit_burst = q.i64(r, 4);
  m.created_ms = q.i64(r, 5);
  m.key_expires_ms = q.i64(r, 6);
  return m;
}

const char* const kEndpointCols =
    "id, merchant_id, url, secret, enabled_events, created_ms, previous_secret, previous_secret_expires_ms, disabled";
WebhookEndpoint read_endpoint(const Res& q, int r, int b) {
  WebhookEndpoint e;
  e.id = q.text(r, b + 0);
  e.merchant_id = q.text(r, b + 1);
  e.url = q.text(r, b + 2);
  e.secret = q.text(r, b + 3);
  e.enabled_events = strings_from_json(q.text(r, b + 4));
  e.created_ms = q.i64(r, b + 5);
  e.previous_secret = q.text(r, b + 6);
  e.previous_secret_expires_ms = q.i64(r, b + 7);
  e.disabled = q.boolean(r, b + 8);
  return e;
}

const char* const kMerchantEventCols = "id, merchant_id, type, data_json, created_ms";
MerchantEvent read_merchant_event(const Res& q, int r, int b) {
  MerchantEvent m;
  m.id = q.text(r, b + 0);
  m.merchant_id = q.text(r, b + 1);
  m.type = q.text(r, b + 2);
  m.data_json = q.text(r, b + 3);
  m.created_ms = q.i64(r, b + 4);
  return m;
}

DeliveryStatus parse_delivery_status(const std::string& s) {
  if (s == "succeeded") return DeliveryStatus::succeeded;
  if (s == "failed") return DeliveryStatus::failed;
  return DeliveryStatus::pending;
}
WebhookDelivery read_delivery(const Res& q, int r, int b) {
  WebhookDelivery d;
  d.id = q.text(r, b + 0);
  d.event_id = q.text(r, b + 1);
  d.endpoint_id = q.text(r, b + 2);
  d.merchant_id = q.text(r, b + 3);
  d.status = parse_delivery_status(q.text(r, b + 4));
  d.attempts = int(q.i64(r, b + 5));
  d.next_attempt_ms = q.i64(r, b + 6);
  d.last_http_status = int(q.i64(r, b + 7));
  d.last_error = q.text(r, b + 8);
  return d;
}

const char* const kIdemSelect =
    "SELECT fingerprint, http_status, response_body, resource_id, created_ms FROM idempotency "
    "WHERE merchant_id = $1 AND key = $2";
std::optional<IdempotencyRecord> read_idem_row(const Res& q, const std::string& merchant_id, const std::string& key) {
  if (q.rows() == 0) return std::nullopt;
  IdempotencyRecord r;
  r.merchant_id = merchant_id;
  r.key = key;
  r.fingerprint = q.text(0, 0);
  r.http_status = int(q.i64(0, 1));
  r.response_body = q.text(0, 2);
  r.resource_id = q.text(0, 3);
  r.created_ms = q.i64(0, 4);
  return r;
}
Result<std::optional<IdempotencyRecord>> read_idempotency(Conn& c, const std::string& merchant_id,
                                                          const std::string& key) {
  PS_EXEC(q, c, kIdemSelect, Params(merchant_id, key));
  return read_idem_row(q, merchant_id, key);
}

// Statement inserting a journal entry and its postings once `gate` (a CTE name) yields a
// row (only a new entry: a repeated outcome inserts nothing); used inside the outcome
// statements of PgSink::apply (pg_sink.cpp). The database adds the postings to their
// maintained balances (schema 4's trigger). Parameters from `first` on: entry id, kind,
// merchant, payment, refund (NULL for settlements), created_ms, accounts[], currencies[],
// amounts[].
std::string entry_ctes(const std::string& gate, int first) {
  auto p = [&](int i) { return "$" + std::to_string(first + i); };
  return "ent AS (INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) "
         "SELECT " + p(0) + "::text, " + p(1) + "::text, " + p(2) + "::text, " + p(3) + "::text, " + p(4) +
         "::text, " + p(5) + "::bigint FROM " + gate + " WHERE " + p(0) + "::text <> '' "
         "ON CONFLICT DO NOTHING RETURNING id), "
         "pst AS (INSERT INTO postings(entry_id, seq, account, currency, amount_minor) "
         "SELECT ent.id, t.o, t.a, t.c, t.m FROM ent, unnest(" + p(6) + "::text[], " + p(7) + "::text[], " + p(8) +
         "::bigint[]) WITH ORDINALITY AS t(a, c, m, o)) ";
}
void add_entry_params(Params& ps, const std::optional<JournalEntry>& e) {
  if (!e) {
    ps.add("").add("").add("").add("").add_null().add(int64_t(0)).add("{}").add("{}").add("{}");
    return;
  }
  std::vector<std::string> acc, cur;
  std::vector<int64_t> amt;
  for (const auto& p : e->postings) {
    acc.push_back(p.account);
    cur.push_back(p.currency);
    amt.push_back(p.amount_minor);
  }
  ps.add(e->id).add(to_string(e->kind)).add(e->merchant_id).add(e->payment_id);
  if (e->refund_id.empty()) ps.add_null();
  else ps.add(e->refund_id);
  ps.add(e->created_ms).add(pg::text_array(acc)).add(pg::text_array(cur)).add(pg::int_array(amt));
}

const char* const kUpsertDeliveryIfFailed =
    "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
    "next_attempt_ms, last_http_status, last_error) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, "
    "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = '' "
    "WHERE webhook_deliveries.status = 'failed'";
Params delivery_params(const WebhookDelivery& d) {
  return Params(d.id, d.event_id, d.endpoint_id, d.merchant_id, to_string(d.status), int64_t(d.attempts),
                d.next_attempt_ms, int64_t(d.last_http_status), d.last_error);
}

int clamp_limit(int limit) { return std::clamp(limit, 1, int(kMaxListRows)); }

Result<std::vector<WebhookEndpoint>> live_endpoints(Conn& c, const std::string& merchant_id) {
  std::vector<WebhookEndpoint> out;
  PS_EXEC(q, c,
          std::string("SELECT ") + kEndpointCols +
              " FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_ms IS NULL ORDER BY created_ms, id",
          Params(merchant_id));
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_endpoint(q, i));
  return out;
}

}  // namespace ps::pg
