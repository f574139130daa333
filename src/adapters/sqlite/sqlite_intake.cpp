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
    auto basis = read_refund_basis(db, refund.merchant_id, refund.payment_id);
    if (!basis) return basis.error();
    if (!*basis) return Error::not_found("no payment " + refund.payment_id);
    const RefundBasis& b = **basis;
    auto admitted = admit_refund(b.payment, RefundAdmission{refund.amount_minor, b.processing_for_payment, b.available,
                                                            b.processing_for_merchant, true, b.payment_fee});
    if (!admitted) return admitted.error();
    refund.amount_minor = admitted->amount_minor;
    refund.fee_refunded_minor = admitted->fee_share_minor;
    refund.currency = b.payment.currency;
    Event ev = admitted_refund_event(c->requested, refund, now);
    IdempotencyRecord rec = c->record;
    if (c->render) rec.response_body = c->render(refund);
    if (rec.resource_id.empty()) rec.resource_id = refund.id;
    PS_TRY(store_new_refund(db, refund, &ev, rec, now, ctx));
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
