// PgIntake: see pg_intake.hpp. Design notes:
//
// * Intake group commit. One writer thread takes up to max_batch queued jobs
//   (accept_payment, accept_refund, update_idempotent_response) and runs them in one
//   transaction, each job inside SAVEPOINT job / RELEASE SAVEPOINT job, then COMMITs once.
//   Payment and response-update jobs need no decision between their statements, so a run
//   of consecutive such jobs is sent in ONE round trip with libpq pipeline mode
//   (SAVEPOINT, the job's statements, RELEASE for every job, one Sync). If a statement
//   fails, the server skips the rest of the pipeline: that job gets its error, we roll back
//   to its savepoint and pipeline the jobs after it again. Refund jobs need decisions
//   (lock, checks, rendered body), so they run statement by statement. Chosen over
//   multi-row INSERTs because per-job savepoints keep one bad job from failing the others
//   and each job keeps its own outcome (created or the stored record), in one round trip.
// * Idempotency: the idempotency table (merchant_id, key) is the arbiter, as in the
//   embedded store where payments and refunds share the key space: the record is inserted
//   first with ON CONFLICT DO NOTHING; only if it was inserted are the payment (or refund)
//   and its outbox row inserted, in the same statement. A concurrent request with the
//   same key waits on the conflicting row and, once that commits, reads the stored record
//   (READ COMMITTED: the next statement sees it) and reports created=false. The payment
//   and refund tables keep UNIQUE(merchant_id, idempotency_key), so even a bypass of the
//   record cannot store a duplicate (the job then fails with conflict "payment_exists").
// * Refunds take an advisory transaction lock per merchant (the balance check spans all
//   of the merchant's payments) and SELECT ... FOR UPDATE the payment row; the sums they
//   check are read in one statement, i.e. from one snapshot.
// * The intake's part of the lock order (pg_store.cpp): refund jobs run after the other
//   jobs of a batch, sorted by (merchant_id, payment id).
#include "adapters/postgres/pg_intake.hpp"

#include <algorithm>
#include <tuple>

#include "adapters/postgres/pg_core.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "common/log.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/store_codec.hpp"

namespace ps {
namespace pg {

// One queued intake write and, once the batch ran, its outcome.
struct IntakeJob {
  enum class Kind { payment, refund, update } kind = Kind::payment;
  AcceptPayment pay;
  AcceptRefund ref;
  std::string merchant_id, key, body;  // update
  int http_status = 0;
  AcceptCallback accept_cb;
  std::function<void(Result<void>)> update_cb;
  int64_t now = 0;

  std::optional<Error> error;
  AcceptOutcome outcome;
  std::optional<Event> event;       // to publish after commit
  int64_t outbox_id = 0;
  std::optional<Payment> accepted;  // for the payment-change listener

  void reset_outcome() {
    error.reset();
    outcome = AcceptOutcome{};
    event.reset();
    outbox_id = 0;
    accepted.reset();
  }
  // The caller's callback with this job's outcome.
  void answer() {
    if (kind == Kind::update) {
      if (update_cb) update_cb(error ? Result<void>(*error) : Result<void>());
    } else if (accept_cb) {
      accept_cb(error ? Result<AcceptOutcome>(*error) : Result<AcceptOutcome>(outcome));
    }
  }
};
using JobPtr = std::shared_ptr<IntakeJob>;

}  // namespace pg

using namespace pg;

namespace {

constexpr size_t kMaxQueue = 100000;            // queued intake jobs before "store_overloaded"
constexpr int kRefundLockClass = 0x70730002;    // advisory lock class: refunds of one merchant

std::optional<Error> run_pipelined(Conn& c, std::vector<JobPtr>& batch, size_t from, size_t to);
std::optional<Error> run_interactive(Conn& c, IntakeJob& j);
Result<void> refund_body(Conn& c, IntakeJob& j);

}  // namespace

// ---------- IntakeStore ----------

void PgIntake::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::payment;
  j->pay = std::move(cmd);
  j->accept_cb = std::move(cb);
  j->now = core_.clock.now_ms();
  submit(std::move(j));
}

void PgIntake::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::refund;
  j->ref = std::move(cmd);
  j->accept_cb = std::move(cb);
  j->now = core_.clock.now_ms();
  submit(std::move(j));
}

void PgIntake::update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                         std::string body, std::function<void(Result<void>)> cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::update;
  j->merchant_id = merchant_id;
  j->key = key;
  j->http_status = http_status;
  j->body = std::move(body);
  j->update_cb = std::move(cb);
  j->now = core_.clock.now_ms();
  submit(std::move(j));
}

Result<std::optional<IdempotencyRecord>> PgIntake::find_idempotency(const std::string& merchant_id,
                                                                   const std::string& key) {
  PS_LEASE(c);
  return read_idempotency(c, merchant_id, key);
}

// ---------- intake: queue, writer, batches ----------

void PgIntake::submit(JobPtr j) {
  std::unique_lock lk(core_.q_mu);
  if (core_.stopping) {
    lk.unlock();
    j->error = Error::unavailable("store_closed", "the store is shutting down");
    j->answer();
    return;
  }
  if (core_.queue.size() >= kMaxQueue) {
    lk.unlock();
    j->error = Error::unavailable("store_overloaded", "the store write queue is full");
    core_.completions->push({{[j] { j->answer(); }}, {}});
    return;
  }
  core_.queue.push_back(std::move(j));
  lk.unlock();
  core_.q_cv.notify_one();
}

void PgIntake::writer_loop() {
  for (;;) {
    std::vector<JobPtr> batch;
    {
      std::unique_lock lk(core_.q_mu);
      core_.q_cv.wait(lk, [&] { return core_.stopping || !core_.queue.empty(); });
      if (core_.queue.empty()) break;  // stopping and drained
      size_t n = std::min(std::max<size_t>(1, core_.opts.max_batch), core_.queue.size());
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(core_.queue.front()));
        core_.queue.pop_front();
      }
    }
    run_batch(batch);
  }
}

void PgIntake::run_batch(std::vector<JobPtr>& batch) {
  // Lock order (pg_store.cpp): the refund jobs last, by merchant and payment.
  auto refunds = std::stable_partition(batch.begin(), batch.end(),
                                       [](const JobPtr& j) { return j->kind != IntakeJob::Kind::refund; });
  std::stable_sort(refunds, batch.end(), [](const JobPtr& a, const JobPtr& b) {
    const Refund &x = a->ref.refund, &y = b->ref.refund;
    return std::tie(x.merchant_id, x.payment_id) < std::tie(y.merchant_id, y.payment_id);
  });
  auto t0 = std::chrono::steady_clock::now();
  std::optional<Error> abort;
  for (int attempt = 1;; ++attempt) {
    abort = run_batch_once(batch);
    if (!abort || !pg::is_retryable_transaction_error(*abort) || attempt >= kTxAttempts) break;
    StoreMetrics::get().intake_retries.inc();
    log::warn("intake transaction rolled back by a deadlock or serialization failure; running it again",
              {{"attempt", std::to_string(attempt)}, {"jobs", std::to_string(batch.size())},
               {"error", abort->message}});
    for (auto& j : batch) j->reset_outcome();  // the rolled-back attempt left nothing
    retry_backoff(attempt);
  }
  auto& m = StoreMetrics::get();
  m.tx_seconds.observe(since(t0));
  m.batch_size.observe(double(batch.size()));
  if (abort) {
    log::error("intake transaction failed", {{"error", abort->message}, {"jobs", std::to_string(batch.size())}});
    for (auto& j : batch) {
      if (!j->error) j->error = *abort;  // jobs that failed on their own keep their error
      j->event.reset();
      j->accepted.reset();
    }
  }

  std::vector<Payment> accepted;
  std::vector<Event> events;
  std::vector<int64_t> ids;
  std::vector<std::function<void()>> after_publish, now;
  for (auto& j : batch) {
    if (j->accepted) accepted.push_back(*j->accepted);
    if (j->event) {
      events.push_back(*j->event);
      ids.push_back(j->outbox_id);
      after_publish.push_back([j] { j->answer(); });
    } else {
      now.push_back([j] { j->answer(); });
    }
  }
  core_.changed(accepted);
  if (!now.empty()) core_.completions->push({std::move(now), {}});
  if (!events.empty()) core_.publish_then(std::move(events), std::move(ids), std::move(after_publish));
}

// One attempt at the batch's transaction: BEGIN, every job, COMMIT (ROLLBACK on failure).
std::optional<Error> PgIntake::run_batch_once(std::vector<JobPtr>& batch) {
  auto lease = core_.pool.acquire();
  if (!lease) return lease.error();
  Conn& c = **lease;
  std::optional<Error> abort;
  if (auto b = c.exec_script("BEGIN"); !b) abort = b.error();
  size_t i = 0;
  while (!abort && i < batch.size()) {
    if (batch[i]->kind == IntakeJob::Kind::refund) {
      abort = run_interactive(c, *batch[i]);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < batch.size() && batch[j]->kind != IntakeJob::Kind::refund) ++j;
    abort = run_pipelined(c, batch, i, j);
    i = j;
  }
  if (!abort) {
    // The outbox rows' age starts now, at commit (pg_store.cpp): stamped in the same
    // round trip as the COMMIT (the ids are integers, safe to inline).
    std::vector<int64_t> outbox_ids;
    for (const auto& j : batch)
      if (j->outbox_id != 0 && !j->error) outbox_ids.push_back(j->outbox_id);
    std::string script;
    if (!outbox_ids.empty())
      script = "UPDATE outbox SET created_ms = " + std::to_string(core_.clock.now_ms()) + " WHERE id = ANY('" +
               pg::int_array(outbox_ids) + "'::bigint[]); ";
    if (auto cm = c.exec_script(script + "COMMIT"); !cm) abort = cm.error();
  }
  if (abort && c.healthy() && !c.idle()) (void)c.exec_script("ROLLBACK");
  return abort;
}

namespace {

// Payment and response-update jobs from..to (exclusive): pipelined, see the file comment.
std::optional<Error> run_pipelined(Conn& c, std::vector<JobPtr>& batch, size_t from, size_t to) {
  static const std::string kPaymentSql =
      "WITH idem AS (INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
      "resource_id, created_ms) VALUES($1, $2, $3, $4, $5, $6, $7) "
      "ON CONFLICT (merchant_id, key) DO NOTHING RETURNING 1), "
      "pay AS (INSERT INTO payments(id, merchant_id, idempotency_key, amount_minor, currency, source, description, "
      "metadata, status, failure_code, amount_refunded_minor, created_ms, updated_ms) "
      "SELECT $8::text, $9::text, $10::text, $11::bigint, $12::text, $13::text, $14::text, $15::text, $16::text, "
      "$17::text, $18::bigint, $19::bigint, $20::bigint FROM idem RETURNING 1), "
      "ob AS (INSERT INTO outbox(kind, payload, created_ms) SELECT 'event', $21::text, $22::bigint FROM pay "
      "RETURNING id) "
      "SELECT (SELECT count(*) FROM idem), (SELECT id FROM ob)";
  static const std::string kUpdateSql =
      "UPDATE idempotency SET http_status = $1, response_body = $2 WHERE merchant_id = $3 AND key = $4";

  size_t k = from;
  while (k < to) {
    std::vector<Stmt> stmts;
    std::vector<size_t> first(to - k);  // index of each job's SAVEPOINT
    for (size_t m = k; m < to; ++m) {
      IntakeJob& j = *batch[m];
      first[m - k] = stmts.size();
      stmts.push_back({"SAVEPOINT job", {}});
      if (j.kind == IntakeJob::Kind::payment) {
        const Payment& p = j.pay.payment;
        const IdempotencyRecord& r = j.pay.record;
        Params ps(r.merchant_id, r.key, r.fingerprint, r.http_status, r.response_body, r.resource_id, r.created_ms);
        ps.add(p.id).add(p.merchant_id).add(p.idempotency_key).add(p.amount_minor).add(p.currency).add(p.source);
        ps.add(p.description).add(metadata_to_json(p.metadata)).add(to_string(p.status)).add(p.failure_code);
        ps.add(p.amount_refunded_minor).add(p.created_ms).add(p.updated_ms);
        ps.add(event_envelope_json(j.pay.initiated)).add(j.now);
        stmts.push_back({kPaymentSql, std::move(ps)});
        stmts.push_back({kIdemSelect, Params(r.merchant_id, r.key)});
      } else {
        stmts.push_back({kUpdateSql, Params(j.http_status, j.body, j.merchant_id, j.key)});
      }
      stmts.push_back({"RELEASE SAVEPOINT job", {}});
    }
    auto pr = c.pipeline(stmts);
    const size_t done = pr.error ? pr.failed_at : stmts.size();
    size_t m = k;
    for (; m < to; ++m) {
      size_t b = first[m - k];
      size_t e = (m + 1 < to) ? first[m + 1 - k] : stmts.size();
      if (e > done) break;  // this job did not complete
      IntakeJob& j = *batch[m];
      if (j.kind == IntakeJob::Kind::payment) {
        const Res& ins = pr.results[b + 1];
        const Res& rec = pr.results[b + 2];
        if (ins.i64(0, 0) == 1) {
          j.outcome.created = true;
          j.outcome.record = j.pay.record;
          j.event = j.pay.initiated;
          j.outbox_id = ins.i64(0, 1);
          j.accepted = j.pay.payment;
        } else if (auto r = read_idem_row(rec, j.pay.record.merchant_id, j.pay.record.key)) {
          j.outcome.created = false;
          j.outcome.record = std::move(*r);
        } else {
          j.error = Error::internal("idempotency record neither inserted nor found for key " + j.pay.record.key);
        }
      } else if (pr.results[b + 1].affected() == 0) {
        j.error = Error::not_found("no idempotency record for that key");
      }
    }
    if (!pr.error) return std::nullopt;
    // Job m failed. A failure outside its own statements, a lost connection or a deadlock
    // (run_batch runs the whole transaction again) fails the batch.
    size_t b = first[m - k];
    size_t e = (m + 1 < to) ? first[m + 1 - k] : stmts.size();
    if (!c.healthy() || pr.failed_at == b || pr.failed_at == e - 1 || pg::is_retryable_transaction_error(*pr.error))
      return pr.error;
    IntakeJob& j = *batch[m];
    Error err = *pr.error;
    if (j.kind == IntakeJob::Kind::payment && err.kind == ErrorKind::conflict)
      err = Error::conflict("payment_exists", "payment " + j.pay.payment.id + " cannot be stored: " + err.message);
    j.error = err;
    if (auto r = c.exec_script("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"); !r) return r.error();
    k = m + 1;
  }
  return std::nullopt;
}

std::optional<Error> run_interactive(Conn& c, IntakeJob& j) {
  if (auto r = c.exec_script("SAVEPOINT job"); !r) return r.error();
  Result<void> r = refund_body(c, j);
  if (r) {
    if (auto rel = c.exec_script("RELEASE SAVEPOINT job"); !rel) return rel.error();
    return std::nullopt;
  }
  // The connection (and the transaction) is gone, or a deadlock: run_batch runs it again.
  if (!c.healthy() || pg::is_retryable_transaction_error(r.error())) return r.error();
  j.reset_outcome();
  j.error = r.error();
  if (auto rb = c.exec_script("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"); !rb) return rb.error();
  return std::nullopt;
}

// accept_refund inside the batch transaction; the checks and error codes of the embedded store.
Result<void> refund_body(Conn& c, IntakeJob& j) {
  const AcceptRefund& cmd = j.ref;
  Refund refund = cmd.refund;
  const IdempotencyRecord& given = cmd.record;
  // Serialise refunds of this merchant: the balance check spans all its payments. Taken
  // before reading the record so a concurrent request with the same key is seen.
  PS_TRY(c.exec("SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))",
                Params(kRefundLockClass, refund.merchant_id)));
  {
    auto existing = read_idempotency(c, given.merchant_id, given.key);
    if (!existing) return existing.error();
    if (*existing) {
      j.outcome.created = false;
      j.outcome.record = std::move(**existing);
      return {};
    }
  }
  Payment payment;
  {
    PS_EXEC(q, c, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = $1 AND merchant_id = $2 FOR UPDATE",
            Params(refund.payment_id, refund.merchant_id));
    if (q.rows() == 0) return Error::not_found("no payment " + refund.payment_id);
    payment = read_payment(q, 0);
  }
  int64_t processing_for_payment = 0, available = 0, processing_for_merchant = 0, payment_fee = 0;
  {
    // One statement, one snapshot: a ledger commit between separate reads could otherwise
    // be half seen (reversal posted but refund still counted as processing, or the reverse).
    PS_EXEC(q, c,
            "SELECT (SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE payment_id = $1 AND status = 'processing'), "
            "COALESCE((SELECT -amount_minor FROM account_balances WHERE account = $2 AND currency = $3), 0), "
            "(SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE merchant_id = $4 AND currency = $3 "
            "AND status = 'processing'), "
            "(SELECT COALESCE(-SUM(amount_minor), 0) FROM postings WHERE entry_id = $5 AND account = $6)",
            Params(payment.id, merchant_available_account(payment.merchant_id), payment.currency, payment.merchant_id,
                   settlement_entry_id(payment.id), kFeesAccount));
    processing_for_payment = q.i64(0, 0);
    available = q.i64(0, 1);
    processing_for_merchant = q.i64(0, 2);
    payment_fee = q.i64(0, 3);
  }
  auto admitted = admit_refund(payment, RefundAdmission{refund.amount_minor, processing_for_payment, available,
                                                        processing_for_merchant, true, payment_fee});
  if (!admitted) return admitted.error();
  refund.amount_minor = admitted->amount_minor;
  refund.fee_refunded_minor = admitted->fee_share_minor;
  refund.currency = payment.currency;

  Event ev = admitted_refund_event(cmd.requested, refund, j.now);
  IdempotencyRecord rec = given;
  if (cmd.render) rec.response_body = cmd.render(refund);
  if (rec.resource_id.empty()) rec.resource_id = refund.id;

  Params ps(rec.merchant_id, rec.key, rec.fingerprint, rec.http_status, rec.response_body, rec.resource_id,
            rec.created_ms);
  ps.add(refund.id).add(refund.payment_id).add(refund.merchant_id).add(refund.idempotency_key);
  ps.add(refund.amount_minor).add(refund.currency).add(to_string(refund.status)).add(refund.failure_code);
  ps.add(refund.created_ms).add(refund.updated_ms).add(event_envelope_json(ev)).add(j.now);
  auto ins = c.exec(
      "WITH idem AS (INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
      "resource_id, created_ms) VALUES($1, $2, $3, $4, $5, $6, $7) "
      "ON CONFLICT (merchant_id, key) DO NOTHING RETURNING 1), "
      "rf AS (INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
      "failure_code, created_ms, updated_ms) SELECT $8::text, $9::text, $10::text, $11::text, $12::bigint, "
      "$13::text, $14::text, $15::text, $16::bigint, $17::bigint FROM idem RETURNING 1), "
      "ob AS (INSERT INTO outbox(kind, payload, created_ms) SELECT 'event', $18::text, $19::bigint FROM rf "
      "RETURNING id) "
      "SELECT (SELECT count(*) FROM idem), (SELECT id FROM ob)",
      ps);
  if (!ins) {
    if (ins.error().kind == ErrorKind::conflict)
      return Error::conflict("refund_exists", "refund " + refund.id + " cannot be stored: " + ins.error().message);
    return ins.error();
  }
  if (ins->i64(0, 0) == 0) {  // the key was taken meanwhile (by a payment): replay its record
    auto existing = read_idempotency(c, given.merchant_id, given.key);
    if (!existing) return existing.error();
    if (!*existing) return Error::internal("idempotency record neither inserted nor found for key " + given.key);
    j.outcome.created = false;
    j.outcome.record = std::move(**existing);
    return {};
  }
  j.outcome.created = true;
  j.outcome.record = std::move(rec);
  j.outbox_id = ins->i64(0, 1);
  j.event = std::move(ev);
  return {};
}

}  // namespace

}  // namespace ps
