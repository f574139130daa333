// Row decoders and write helpers shared by the SQLite store's parts (internal).
#include "adapters/sqlite/sqlite_rows.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/store_codec.hpp"

namespace ps::sqlite {

// ---------- row decoders ----------

const char* const kPaymentCols =
    "id, merchant_id, idempotency_key, amount_minor, currency, source, description, metadata, "
    "status, failure_code, amount_refunded_minor, created_ms, updated_ms";
Payment read_payment(const Query& q) {
  Payment p;
  p.id = q.text(0);
  p.merchant_id = q.text(1);
  p.idempotency_key = q.text(2);
  p.amount_minor = q.i64(3);
  p.currency = q.text(4);
  p.source = q.text(5);
  p.description = q.text(6);
  p.metadata = metadata_from_json(q.text(7));
  p.status = parse_payment_status(q.text(8)).value_or(PaymentStatus::processing);
  p.failure_code = q.text(9);
  p.amount_refunded_minor = q.i64(10);
  p.created_ms = q.i64(11);
  p.updated_ms = q.i64(12);
  return p;
}

const char* const kRefundCols =
    "id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, failure_code, "
    "created_ms, updated_ms";
Refund read_refund(const Query& q) {
  Refund r;
  r.id = q.text(0);
  r.payment_id = q.text(1);
  r.merchant_id = q.text(2);
  r.idempotency_key = q.text(3);
  r.amount_minor = q.i64(4);
  r.currency = q.text(5);
  r.status = parse_refund_status(q.text(6)).value_or(RefundStatus::processing);
  r.failure_code = q.text(7);
  r.created_ms = q.i64(8);
  r.updated_ms = q.i64(9);
  return r;
}

// A merchant as found by one of its keys: FROM kMerchantKeyFrom.
const char* const kMerchantCols =
    "m.id, m.name, k.key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms, COALESCE(k.expires_ms, 0)";
const char* const kMerchantKeyFrom = " FROM api_keys k JOIN merchants m ON m.id = k.merchant_id";
Merchant read_merchant(const Query& q) {
  Merchant m;
  m.id = q.text(0);
  m.name = q.text(1);
  m.api_key_hash = q.text(2);
  m.rate_limit_per_s = q.f64(3);
  m.rate_limit_burst = q.i64(4);
  m.created_ms = q.i64(5);
  m.key_expires_ms = q.i64(6);
  return m;
}

const char* const kEndpointCols =
    "id, merchant_id, url, secret, enabled_events, created_ms, previous_secret, previous_secret_expires_ms, disabled";
WebhookEndpoint read_endpoint(const Query& q, int b) {
  WebhookEndpoint e;
  e.id = q.text(b + 0);
  e.merchant_id = q.text(b + 1);
  e.url = q.text(b + 2);
  e.secret = q.text(b + 3);
  e.enabled_events = strings_from_json(q.text(b + 4));
  e.created_ms = q.i64(b + 5);
  e.previous_secret = q.text(b + 6);
  e.previous_secret_expires_ms = q.i64(b + 7);
  e.disabled = q.i64(b + 8) != 0;
  return e;
}

const char* const kMerchantEventCols = "id, merchant_id, type, data_json, created_ms";
MerchantEvent read_merchant_event(const Query& q, int b) {
  MerchantEvent m;
  m.id = q.text(b + 0);
  m.merchant_id = q.text(b + 1);
  m.type = q.text(b + 2);
  m.data_json = q.text(b + 3);
  m.created_ms = q.i64(b + 4);
  return m;
}

DeliveryStatus parse_delivery_status(const std::string& s) {
  if (s == "succeeded") return DeliveryStatus::succeeded;
  if (s == "failed") return DeliveryStatus::failed;
  return DeliveryStatus::pending;
}
WebhookDelivery read_delivery(const Query& q, int b) {
  WebhookDelivery d;
  d.id = q.text(b + 0);
  d.event_id = q.text(b + 1);
  d.endpoint_id = q.text(b + 2);
  d.merchant_id = q.text(b + 3);
  d.status = parse_delivery_status(q.text(b + 4));
  d.attempts = int(q.i64(b + 5));
  d.next_attempt_ms = q.i64(b + 6);
  d.last_http_status = int(q.i64(b + 7));
  d.last_error = q.text(b + 8);
  return d;
}

const char* const kEventCols = "offset, topic, partition, key, id, type, source, time_ms, traceparent, data";
Record read_record(const Query& q) {
  Record r;
  r.offset = q.i64(0);
  r.topic = q.text(1);
  r.partition = int32_t(q.i64(2));
  r.event.key = q.text(3);
  r.event.id = q.text(4);
  r.event.type = q.text(5);
  r.event.source = q.text(6);
  r.event.time_ms = q.i64(7);
  r.event.traceparent = q.text(8);
  r.event.data = q.text(9);
  return r;
}


// ---------- write helpers (run on the writer connection inside a job) ----------

// Appends `e` to `topic` with replay generation `replay`; false if (topic, id, replay)
// already existed. An appended event is noted in `ctx` (for the pipeline backlog).
Result<bool> append_event(Db& db, std::string_view topic, const Event& e, int64_t replay, int64_t now_ms,
                          JobCtx& ctx, int64_t* offset_out) {
  PS_QUERY(q, db,
           "INSERT INTO events(topic, partition, key, id, type, source, time_ms, traceparent, data, replay, "
           "created_ms) VALUES(?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
           "ON CONFLICT(topic, id, replay) DO NOTHING");
  q.bind_all(topic, e.key, e.id, e.type, e.source, e.time_ms, e.traceparent, e.data, replay, now_ms);
  PS_TRY(q.exec());
  bool inserted = db.changes() > 0;
  if (inserted) {
    const int64_t offset = db.last_insert_rowid();
    if (offset_out) *offset_out = offset;
    ctx.events.emplace_back(std::string(topic), offset);
  }
  return inserted;
}

Result<void> append_dead_letter(Db& db, const DeadLetter& d, const std::string& id, int64_t now_ms,
                                JobCtx& ctx) {
  Event e;
  e.id = id;
  e.type = std::string(event_types::dead_letter);
  e.source = "/paystream/store";
  e.time_ms = now_ms;
  e.key = d.original.event.key;
  e.traceparent = d.original.event.traceparent;
  e.data = encode_dead_letter(d);
  auto r = append_event(db, topics::dlq, e, 0, now_ms, ctx);
  if (!r) return r.error();
  if (*r) {
    log::warn("dead letter stored", {{"dead_letter_id", id},
                                     {"topic", d.original.topic},
                                     {"offset", std::to_string(d.original.offset)},
                                     {"error", d.error},
                                     {"payment_id", d.original.event.key}});
  }
  return {};
}

std::string stage_dead_letter_id(const DeadLetter& d) {
  return deterministic_id("dlq_", d.original.topic + "#" + std::to_string(d.original.offset),
                          d.original.event.id);
}


Result<void> insert_entry(Db& db, const JournalEntry& e) {
  assert_balanced(e, "sqlite store");
  {
    PS_QUERY(q, db,
             "INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind_all(e.id, to_string(e.kind), e.merchant_id, e.payment_id);
    if (e.refund_id.empty()) q.bind_null(5); else q.bind(5, e.refund_id);
    q.bind(6, e.created_ms);
    PS_TRY(q.exec());
  }
  for (const auto& p : e.postings) {
    {
      PS_QUERY(q, db, "INSERT INTO postings(entry_id, account, currency, amount_minor) VALUES(?1, ?2, ?3, ?4)");
      q.bind_all(e.id, p.account, p.currency, p.amount_minor);
      PS_TRY(q.exec());
    }
    PS_QUERY(q, db,
             "INSERT INTO account_balances(account, currency, amount_minor) VALUES(?1, ?2, ?3) "
             "ON CONFLICT(account, currency) DO UPDATE SET amount_minor = amount_minor + excluded.amount_minor");
    q.bind_all(p.account, p.currency, p.amount_minor);
    PS_TRY(q.exec());
  }
  return {};
}

// Refunds still processing, reserved on their payment and per merchant and currency
// (added at intake, released when the refund is terminal). `delta` may be negative.
Result<void> reserve_refund(Db& db, const std::string& payment_id, const std::string& merchant_id,
                            const std::string& currency, int64_t delta) {
  {
    PS_QUERY(q, db, "UPDATE payments SET amount_refunding_minor = amount_refunding_minor + ?1 WHERE id = ?2");
    q.bind_all(delta, payment_id);
    PS_TRY(q.exec());
  }
  PS_QUERY(q, db,
           "INSERT INTO refund_reservations(merchant_id, currency, amount_minor) VALUES(?1, ?2, ?3) "
           "ON CONFLICT(merchant_id, currency) DO UPDATE SET amount_minor = amount_minor + excluded.amount_minor");
  q.bind_all(merchant_id, currency, delta);
  return q.exec();
}

Result<std::optional<IdempotencyRecord>> read_idempotency(Db& db, const std::string& merchant_id,
                                                          const std::string& key) {
  PS_QUERY(q, db,
           "SELECT fingerprint, http_status, response_body, resource_id, created_ms FROM idempotency "
           "WHERE merchant_id = ?1 AND key = ?2");
  q.bind_all(merchant_id, key);
  PS_STEP(row, q);
  if (!row) return std::optional<IdempotencyRecord>();
  IdempotencyRecord r;
  r.merchant_id = merchant_id;
  r.key = key;
  r.fingerprint = q.text(0);
  r.http_status = int(q.i64(1));
  r.response_body = q.text(2);
  r.resource_id = q.text(3);
  r.created_ms = q.i64(4);
  return std::optional<IdempotencyRecord>(std::move(r));
}

Result<void> insert_idempotency(Db& db, const IdempotencyRecord& r) {
  PS_QUERY(q, db,
           "INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, resource_id, "
           "created_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  q.bind_all(r.merchant_id, r.key, r.fingerprint, int64_t(r.http_status), r.response_body, r.resource_id,
             r.created_ms);
  return q.exec();
}

Result<int64_t> scalar_i64(Query& q) {
  PS_STEP(row, q);
  return row ? q.i64(0) : int64_t(0);
}

Result<void> upsert_delivery_if_failed(Db& db, const WebhookDelivery& d) {
  PS_QUERY(q, db,
           "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
           "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
           "ON CONFLICT(id) DO UPDATE SET status = 'pending', attempts = 0, "
           "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = '' "
           "WHERE webhook_deliveries.status = 'failed'");
  q.bind_all(d.id, d.event_id, d.endpoint_id, d.merchant_id, to_string(d.status), int64_t(d.attempts),
             d.next_attempt_ms, int64_t(d.last_http_status), d.last_error);
  return q.exec();
}

// A read transaction on a leased connection: one snapshot for several statements.


int clamp_limit(int limit) { return std::clamp(limit, 1, int(kMaxListRows)); }


Result<std::vector<WebhookEndpoint>> live_endpoints(Db& db, const std::string& merchant_id) {
  std::vector<WebhookEndpoint> out;
  PS_QUERY(q, db,
           std::string("SELECT ") + kEndpointCols +
               " FROM webhook_endpoints WHERE merchant_id = ?1 AND deleted_ms IS NULL ORDER BY created_ms, id");
  q.bind(1, merchant_id);
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_endpoint(q));
  }
  return out;
}

Result<void> store_new_payment(Db& db, const AcceptPayment& c, int64_t now_ms, JobCtx& ctx,
                               bool append_initiated) {
  const Payment& p = c.payment;
  int64_t seq = 0;
  {
    PS_QUERY(q, db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM payments");
    auto s = scalar_i64(q);
    if (!s) return s.error();
    seq = *s;
  }
  {
    PS_QUERY(q, db,
             "INSERT INTO payments(id, seq, merchant_id, idempotency_key, amount_minor, currency, source, "
             "description, metadata, status, failure_code, amount_refunded_minor, created_ms, updated_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
    q.bind_all(p.id, seq, p.merchant_id, p.idempotency_key, p.amount_minor, p.currency, p.source,
               p.description, metadata_to_json(p.metadata), to_string(p.status), p.failure_code,
               p.amount_refunded_minor, p.created_ms, p.updated_ms);
    auto r = q.exec();
    if (!r) {
      if (is_constraint(r.error()))
        return Error::conflict("payment_exists", "payment " + p.id + " cannot be stored: " + r.error().message);
      return r.error();
    }
  }
  if (append_initiated) {
    auto ins = append_event(db, topic_for(c.initiated.type), c.initiated, 0, now_ms, ctx);
    if (!ins) return ins.error();
  }
  return insert_idempotency(db, c.record);
}

Result<void> apply_effects(Db& db, const Effects& fx, int64_t now, JobCtx& ctx, bool append_produced) {
  for (size_t i = 0; append_produced && i < fx.produce.size(); ++i) {
    const Event& e = fx.produce[i];
    auto r = append_event(db, topic_for(e.type), e, 0, now, ctx);
    if (!r) return r.error();
  }
  for (const auto& po : fx.payment_outcomes) {
    const Payment& p = po.payment;
    PS_TRY(check_outcome(po));
    {
      PS_QUERY(q, db,
               "UPDATE payments SET status = ?1, failure_code = ?2, updated_ms = ?3 "
               "WHERE id = ?4 AND status = 'processing'");
      q.bind_all(to_string(p.status), p.failure_code, p.updated_ms ? p.updated_ms : now, p.id);
      PS_TRY(q.exec());
    }
    if (db.changes() == 0) continue;  // already terminal (or unknown): idempotent no-op
    if (po.settlement) PS_TRY(insert_entry(db, *po.settlement));
    ctx.terminal_ids.push_back(p.id);
  }
  for (const auto& ro : fx.refund_outcomes) {
    const Refund& r = ro.refund;
    PS_TRY(check_outcome(ro));
    std::string payment_id, merchant_id, currency;
    int64_t amount = 0;
    bool changed = false;
    {
      PS_QUERY(q, db,
               "UPDATE refunds SET status = ?1, failure_code = ?2, updated_ms = ?3 "
               "WHERE id = ?4 AND status = 'processing' RETURNING payment_id, amount_minor, merchant_id, currency");
      q.bind_all(to_string(r.status), r.failure_code, r.updated_ms ? r.updated_ms : now, r.id);
      PS_STEP(row, q);
      if (row) {
        changed = true;
        payment_id = q.text(0);
        amount = q.i64(1);
        merchant_id = q.text(2);
        currency = q.text(3);
        PS_TRY(q.exec());
      }
    }
    if (!changed) continue;
    // Terminal either way: the reservation is released (a succeeded refund's amount
    // moves to amount_refunded and its reversal posting below).
    PS_TRY(reserve_refund(db, payment_id, merchant_id, currency, -amount));
    if (!ro.reversal) continue;
    PS_TRY(insert_entry(db, *ro.reversal));
    PS_QUERY(q, db, "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + ?1, updated_ms = ?2 WHERE id = ?3");
    q.bind_all(amount, r.updated_ms ? r.updated_ms : now, payment_id);
    PS_TRY(q.exec());
  }
  for (const auto& me : fx.merchant_events) {
    PS_QUERY(q, db,
             "INSERT INTO merchant_events(id, merchant_id, type, data_json, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING");
    q.bind_all(me.id, me.merchant_id, me.type, me.data_json, me.created_ms);
    PS_TRY(q.exec());
  }
  for (const auto& d : fx.deliveries) PS_TRY(upsert_delivery_if_failed(db, d));
  for (const auto& dl : fx.dead_letters) PS_TRY(append_dead_letter(db, dl, stage_dead_letter_id(dl), now, ctx));
  return {};
}

Result<void> store_positions(Db& db, const std::string& group, const std::map<std::string, int64_t>& positions,
                             JobCtx& ctx) {
  for (const auto& [topic, offset] : positions) {
    PS_QUERY(q, db,
             "INSERT INTO consumer_positions(group_id, topic, position) VALUES(?1, ?2, ?3) "
             "ON CONFLICT(group_id, topic) DO UPDATE SET position = max(position, excluded.position)");
    q.bind_all(group, topic, offset);
    PS_TRY(q.exec());
    ctx.positions.emplace_back(group, topic, offset);
  }
  return {};
}

Result<std::optional<RefundBasis>> read_refund_basis(Db& db, const std::string& merchant_id,
                                                     const std::string& payment_id) {
  // The payment and the maintained rows (schema v2) in one statement: never a sum over
  // history, and one snapshot.
  PS_QUERY(q, db,
           std::string("SELECT ") + kPaymentCols +
               ", amount_refunding_minor, "
               "COALESCE((SELECT -b.amount_minor FROM account_balances b WHERE b.account = ?3 "
               "AND b.currency = payments.currency), 0), "
               "COALESCE((SELECT r.amount_minor FROM refund_reservations r WHERE r.merchant_id = ?2 "
               "AND r.currency = payments.currency), 0), "
               "(SELECT lsn FROM log_projection WHERE id = 1), "
               "COALESCE((SELECT -SUM(f.amount_minor) FROM postings f WHERE f.entry_id = ?4 AND f.account = ?5), 0) "
               "FROM payments WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(payment_id, merchant_id, merchant_available_account(merchant_id), settlement_entry_id(payment_id),
             kFeesAccount);
  PS_STEP(row, q);
  if (!row) return std::optional<RefundBasis>();
  RefundBasis b;
  b.payment = read_payment(q);
  b.processing_for_payment = q.i64(kPaymentColCount);
  b.available = q.i64(kPaymentColCount + 1);
  b.processing_for_merchant = q.i64(kPaymentColCount + 2);
  b.projected_lsn = uint64_t(q.i64(kPaymentColCount + 3));
  b.payment_fee = q.i64(kPaymentColCount + 4);
  return std::optional<RefundBasis>(std::move(b));
}

Result<void> store_new_refund(Db& db, const Refund& refund, const Event* requested, const IdempotencyRecord& rec,
                              int64_t now_ms, JobCtx& ctx) {
  {
    PS_QUERY(q, db,
             "INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
             "failure_code, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    q.bind_all(refund.id, refund.payment_id, refund.merchant_id, refund.idempotency_key, refund.amount_minor,
               refund.currency, to_string(refund.status), refund.failure_code, refund.created_ms, refund.updated_ms);
    auto r = q.exec();
    if (!r) {
      if (is_constraint(r.error()))
        return Error::conflict("refund_exists", "refund " + refund.id + " cannot be stored: " + r.error().message);
      return r.error();
    }
  }
  PS_TRY(reserve_refund(db, refund.payment_id, refund.merchant_id, refund.currency, refund.amount_minor));
  if (requested) {
    auto ins = append_event(db, topic_for(requested->type), *requested, 0, now_ms, ctx);
    if (!ins) return ins.error();
  }
  return insert_idempotency(db, rec);
}

}  // namespace ps::sqlite
