#include "adapters/sqlite/sqlite_intake.hpp"

#include <algorithm>
#include <map>

#include "adapters/sqlite/sqlite_rows.hpp"
#include "common/log.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/store_codec.hpp"

namespace ps {
using sqlite::Db;
using sqlite::Job;
using sqlite::JobCtx;
using sqlite::Query;
using namespace sqlite;   // row decoders and write helpers (sqlite_rows.hpp)

// ---------- IntakeStore ----------

void SqliteIntake::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  auto c = std::make_shared<AcceptPayment>(std::move(cmd));
  auto out = std::make_shared<AcceptOutcome>();
  const int64_t now = core_.clock().now_ms();
  Job job;
  job.body = [c, out, now](Db& db, JobCtx& ctx) -> Result<void> {
    auto existing = read_idempotency(db, c->record.merchant_id, c->record.key);
    if (!existing) return existing.error();
    if (*existing) {
      out->created = false;
      out->record = std::move(**existing);
      return {};
    }
    PS_TRY(store_new_payment(db, *c, now, ctx));
    out->created = true;
    out->record = c->record;
    return {};
  };
  job.done = [out, cb = std::move(cb)](Result<void> r) {
    if (!r) cb(r.error());
    else cb(std::move(*out));
  };
  core_.submit(std::move(job));
}

void SqliteIntake::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  auto c = std::make_shared<AcceptRefund>(std::move(cmd));
  auto out = std::make_shared<AcceptOutcome>();
  const int64_t now = core_.clock().now_ms();
  Job job;
  job.body = [c, out, now](Db& db, JobCtx& ctx) -> Result<void> {
    Refund refund = c->refund;
    auto existing = read_idempotency(db, c->record.merchant_id, c->record.key);
    if (!existing) return existing.error();
    if (*existing) {
      out->created = false;
      out->record = std::move(**existing);
      return {};
    }
    // The payment and the maintained rows (schema v2) in one statement: never a sum over
    // history, and one snapshot.
    Payment payment;
    int64_t processing_for_payment = 0, available = 0, processing_for_merchant = 0;
    {
      PS_QUERY(q, db,
               std::string("SELECT ") + kPaymentCols +
                   ", amount_refunding_minor, "
                   "COALESCE((SELECT -b.amount_minor FROM account_balances b WHERE b.account = ?3 "
                   "AND b.currency = payments.currency), 0), "
                   "COALESCE((SELECT r.amount_minor FROM refund_reservations r WHERE r.merchant_id = ?2 "
                   "AND r.currency = payments.currency), 0) "
                   "FROM payments WHERE id = ?1 AND merchant_id = ?2");
      q.bind_all(refund.payment_id, refund.merchant_id, merchant_available_account(refund.merchant_id));
      PS_STEP(row, q);
      if (!row) return Error::not_found("no payment " + refund.payment_id);
      payment = read_payment(q);
      processing_for_payment = q.i64(kPaymentColCount);
      available = q.i64(kPaymentColCount + 1);
      processing_for_merchant = q.i64(kPaymentColCount + 2);
    }
    auto amount = admit_refund(payment, RefundAdmission{refund.amount_minor, processing_for_payment, available,
                                                        processing_for_merchant});
    if (!amount) return amount.error();
    refund.amount_minor = *amount;
    refund.currency = payment.currency;
    {
      PS_QUERY(q, db,
               "INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
               "failure_code, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
      q.bind_all(refund.id, refund.payment_id, refund.merchant_id, refund.idempotency_key, refund.amount_minor,
                 refund.currency, to_string(refund.status), refund.failure_code, refund.created_ms,
                 refund.updated_ms);
      auto r = q.exec();
      if (!r) {
        if (sqlite::is_constraint(r.error()))
          return Error::conflict("refund_exists", "refund " + refund.id + " cannot be stored: " + r.error().message);
        return r.error();
      }
    }
    PS_TRY(reserve_refund(db, refund.payment_id, refund.merchant_id, refund.currency, refund.amount_minor));
    const Event& given = c->requested;
    Event ev = make_refund_event(refund, given.type.empty() ? event_types::refund_requested : given.type,
                                 given.source.empty() ? "/paystream/gateway" : given.source,
                                 given.time_ms ? given.time_ms : now, given.traceparent);
    if (!given.id.empty()) ev.id = given.id;
    auto ins = append_event(db, topic_for(ev.type), ev, 0, now, ctx);
    if (!ins) return ins.error();
    IdempotencyRecord rec = c->record;
    if (c->render) rec.response_body = c->render(refund);
    if (rec.resource_id.empty()) rec.resource_id = refund.id;
    PS_TRY(insert_idempotency(db, rec));
    out->created = true;
    out->record = std::move(rec);
    return {};
  };
  job.done = [out, cb = std::move(cb)](Result<void> r) {
    if (!r) cb(r.error());
    else cb(std::move(*out));
  };
  core_.submit(std::move(job));
}

void SqliteIntake::update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                             int http_status, std::string body,
                                             std::function<void(Result<void>)> cb) {
  Job job;
  job.body = [merchant_id, key, http_status, body = std::move(body)](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db, "UPDATE idempotency SET http_status = ?1, response_body = ?2 WHERE merchant_id = ?3 AND key = ?4");
    q.bind_all(int64_t(http_status), body, merchant_id, key);
    PS_TRY(q.exec());
    if (db.changes() == 0) return Error::not_found("no idempotency record for that key");
    return {};
  };
  job.done = std::move(cb);
  core_.submit(std::move(job));
}

Result<std::optional<IdempotencyRecord>> SqliteIntake::find_idempotency(const std::string& merchant_id,
                                                                       const std::string& key) {
  PS_LEASE_FROM(core_, db);
  return read_idempotency(db, merchant_id, key);
}


}  // namespace ps
