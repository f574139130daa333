// PgSink: see pg_sink.hpp. Design notes:
//
// * PositionSink::apply sends the whole transaction (BEGIN, every outcome as one statement
//   with data-modifying CTEs, events, deliveries, positions) in one pipeline, reads which
//   payments changed (RETURNING), then NOTIFY and COMMIT in a second round trip.
// * Lock order (pg_store.cpp): apply first locks every payment it updates, by
//   (merchant_id, payment id), then the balance rows its entries post to.
#include "adapters/postgres/pg_sink.hpp"

#include <algorithm>
#include <set>

#include "adapters/postgres/pg_core.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "common/log.hpp"
#include "domain/store_codec.hpp"

namespace ps {
using namespace pg;

namespace {

constexpr size_t kNotifyChunkBytes = 7000;      // NOTIFY payloads must stay below 8000 bytes

// Comma-separated chunks below kNotifyChunkBytes.
std::vector<std::string> notify_chunks(const std::vector<std::string>& ids) {
  std::vector<std::string> out;
  std::string cur;
  for (const auto& id : ids) {
    if (!cur.empty() && cur.size() + 1 + id.size() > kNotifyChunkBytes) {
      out.push_back(std::move(cur));
      cur.clear();
    }
    if (!cur.empty()) cur += ',';
    cur += id;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

}  // namespace

// ---------- PositionSink ----------

Result<void> PgSink::apply(const std::string& group, const std::vector<Record>& consumed, const Effects& effects) {
  // Validation first: nothing is sent for an outcome the embedded store would refuse.
  for (const auto& po : effects.payment_outcomes) PS_TRY(check_outcome(po));
  for (const auto& ro : effects.refund_outcomes) PS_TRY(check_outcome(ro));
  const int64_t now = core_.clock.now_ms();
  std::map<TopicPartition, int64_t> next;
  for (const auto& r : consumed) {
    auto [it, fresh] = next.emplace(TopicPartition{r.topic, r.partition}, r.offset + 1);
    if (!fresh) it->second = std::max(it->second, r.offset + 1);
  }

  static const std::string kPaymentOutcome =
      std::string("WITH upd AS (UPDATE payments SET status = $2, failure_code = $3, updated_ms = $4 "
                  "WHERE id = $1 AND status = 'processing' RETURNING ") +
      kPaymentCols + "), " + entry_ctes("upd", 5) + "SELECT " + kPaymentCols + " FROM upd";
  static const std::string kRefundOutcome =
      std::string("WITH upd AS (UPDATE refunds SET status = $2, failure_code = $3, updated_ms = $4 "
                  "WHERE id = $1 AND status = 'processing' RETURNING payment_id, amount_minor), ") +
      entry_ctes("upd", 5) +
      ", pay AS (UPDATE payments p SET amount_refunded_minor = p.amount_refunded_minor + upd.amount_minor, "
      "updated_ms = $4 FROM upd WHERE p.id = upd.payment_id AND EXISTS (SELECT 1 FROM ent) RETURNING " +
      kPaymentColsP + ") SELECT * FROM pay";

  std::vector<Stmt> stmts;
  stmts.push_back({"BEGIN", {}});
  {
    // Lock order (pg_store.cpp): every payment this transaction updates, locked first in
    // the order intake refunds lock them.
    std::vector<std::string> ids;
    for (const auto& po : effects.payment_outcomes) ids.push_back(po.payment.id);
    for (const auto& ro : effects.refund_outcomes) ids.push_back(ro.refund.payment_id);
    if (!ids.empty())
      stmts.push_back({"SELECT 1 FROM payments WHERE id = ANY($1::text[]) "
                       "ORDER BY merchant_id COLLATE \"C\", id FOR NO KEY UPDATE",
                       Params(pg::text_array(ids))});
    // Then the balance rows its entries post to, in one order (account, currency): each
    // entry's statement updates its rows (the trigger), and two applies touching
    // acquirer:clearing in EUR and USD in opposite orders would otherwise deadlock. Only
    // postings write balances; intake reads them. A row that does not exist yet is not
    // locked: its first two inserters are serialised by the primary key (rarely a
    // deadlock, run again as above).
    std::set<std::pair<std::string, std::string>> rows;
    auto posts_to = [&rows](const std::optional<JournalEntry>& e) {
      if (e)
        for (const auto& pp : e->postings) rows.emplace(pp.account, pp.currency);
    };
    for (const auto& po : effects.payment_outcomes) posts_to(po.settlement);
    for (const auto& ro : effects.refund_outcomes) posts_to(ro.reversal);
    if (!rows.empty()) {
      std::vector<std::string> acc, cur;
      for (const auto& [a, cu] : rows) {
        acc.push_back(a);
        cur.push_back(cu);
      }
      stmts.push_back({"SELECT 1 FROM account_balances b JOIN unnest($1::text[], $2::text[]) AS t(a, c) "
                       "ON b.account = t.a AND b.currency = t.c ORDER BY b.account, b.currency FOR UPDATE OF b",
                       Params(pg::text_array(acc), pg::text_array(cur))});
    }
  }
  const size_t pay_first = stmts.size();
  for (const auto& po : effects.payment_outcomes) {
    const Payment& p = po.payment;
    Params ps(p.id, to_string(p.status), p.failure_code, p.updated_ms ? p.updated_ms : now);
    add_entry_params(ps, po.settlement);
    stmts.push_back({kPaymentOutcome, std::move(ps)});
  }
  const size_t ref_first = stmts.size();
  for (const auto& ro : effects.refund_outcomes) {
    const Refund& r = ro.refund;
    Params ps(r.id, to_string(r.status), r.failure_code, r.updated_ms ? r.updated_ms : now);
    add_entry_params(ps, ro.reversal);
    stmts.push_back({kRefundOutcome, std::move(ps)});
  }
  const size_t ref_end = stmts.size();
  for (const auto& me : effects.merchant_events)
    stmts.push_back({"INSERT INTO merchant_events(id, merchant_id, type, data_json, created_ms) "
                     "VALUES($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                     Params(me.id, me.merchant_id, me.type, me.data_json, me.created_ms)});
  for (const auto& d : effects.deliveries) stmts.push_back({kUpsertDeliveryIfFailed, delivery_params(d)});
  for (const auto& [tp, offset] : next)
    stmts.push_back({"INSERT INTO consumer_positions(group_id, topic, partition, next_offset) "
                     "VALUES($1, $2, $3, $4) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                     "next_offset = GREATEST(consumer_positions.next_offset, excluded.next_offset)",
                     Params(group, tp.first, int64_t(tp.second), offset)});

  PS_LEASE(c);
  // One attempt: the statements, then NOTIFY and COMMIT; the payments that changed.
  auto attempt = [&]() -> Result<std::vector<Payment>> {
    auto t0 = std::chrono::steady_clock::now();
    auto fail = [&](const Error& e) -> Result<std::vector<Payment>> {
      if (c.healthy() && !c.idle()) (void)c.exec_script("ROLLBACK");
      StoreMetrics::get().tx_seconds.observe(since(t0));
      return e;
    };
    auto pr = c.pipeline(stmts);
    if (pr.error) return fail(*pr.error);
    std::vector<Payment> changed;
    std::vector<std::string> terminal;
    for (size_t i = pay_first; i < ref_end; ++i) {
      const Res& q = pr.results[i];
      for (int row = 0; row < q.rows(); ++row) {
        changed.push_back(read_payment(q, row));
        if (i < ref_first) terminal.push_back(changed.back().id);
      }
    }
    // NOTIFY inside the transaction: delivered to listeners exactly when it commits.
    std::vector<Stmt> tail;
    for (auto& chunk : notify_chunks(terminal))
      tail.push_back({"SELECT pg_notify($1, $2)", Params(core_.channel, chunk)});
    tail.push_back({"COMMIT", {}});
    auto pc = c.pipeline(tail);
    if (pc.error) return fail(*pc.error);
    StoreMetrics::get().tx_seconds.observe(since(t0));
    return changed;
  };
  for (int n = 1;; ++n) {
    auto r = attempt();
    if (r) {
      core_.changed(*r);
      return {};
    }
    if (!pg::is_retryable_transaction_error(r.error()) || n >= kTxAttempts) return r.error();
    StoreMetrics::get().apply_retries.inc();
    log::warn("apply transaction rolled back by a deadlock or serialization failure; running it again",
              {{"group", group}, {"attempt", std::to_string(n)}, {"error", r.error().message}});
    retry_backoff(n);
  }
}

Result<std::map<TopicPartition, int64_t>> PgSink::positions(const std::string& group) {
  std::map<TopicPartition, int64_t> out;
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT topic, partition, next_offset FROM consumer_positions WHERE group_id = $1", Params(group));
  for (int i = 0; i < q.rows(); ++i) out[{q.text(i, 0), int32_t(q.i64(i, 1))}] = q.i64(i, 2);
  return out;
}

// ---------- dead-letter replay bookkeeping ----------

Result<bool> PgSink::mark_dead_letter_replayed(int64_t position, int64_t now_ms) {
  PS_LEASE(c);
  PS_EXEC(q, c, "INSERT INTO dlq_replays(position, replayed_ms) VALUES($1, $2) ON CONFLICT (position) DO NOTHING",
          Params(position, now_ms));
  return q.affected() > 0;
}

Result<void> PgSink::unmark_dead_letter_replayed(int64_t position) {
  PS_LEASE(c);
  PS_TRY(c.exec("DELETE FROM dlq_replays WHERE position = $1", Params(position)));
  return {};
}

Result<bool> PgSink::dead_letter_replayed(int64_t position) {
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT 1 FROM dlq_replays WHERE position = $1", Params(position));
  return q.rows() > 0;
}

Result<std::optional<std::string>> PgSink::merchant_of_event(const std::string& event_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT merchant_id FROM merchant_events WHERE id = $1", Params(event_id));
  if (q.rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(q.text(0, 0));
}

}  // namespace ps
