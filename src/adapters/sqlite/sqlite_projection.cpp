#include "adapters/sqlite/sqlite_projection.hpp"

#include "adapters/sqlite/sqlite_rows.hpp"

namespace ps {
using sqlite::Db;
using sqlite::JobCtx;
using namespace sqlite;  // statement macros and write helpers (sqlite_rows.hpp)

namespace {
Result<uint64_t> read_projected(Db& db) {
  PS_QUERY(q, db, "SELECT lsn FROM log_projection WHERE id = 1");
  auto v = scalar_i64(q);
  if (!v) return v.error();
  return uint64_t(*v);
}

Result<void> apply(Db& db, const ProjectedWrite& w, JobCtx& ctx) {
  switch (w.kind) {
    case ProjectedWrite::Kind::payment:
      if (!w.payment) return Error::internal("log record " + std::to_string(w.lsn) + " has no payment");
      return store_new_payment(db, *w.payment, w.now_ms, ctx, /*append_initiated=*/false);
    case ProjectedWrite::Kind::response: {
      PS_QUERY(q, db, "UPDATE idempotency SET http_status = ?1, response_body = ?2 WHERE merchant_id = ?3 AND key = ?4");
      q.bind_all(int64_t(w.http_status), w.body, w.merchant_id, w.key);
      PS_TRY(q.exec());
      if (db.changes() == 0)
        return Error::internal("log record " + std::to_string(w.lsn) +
                               " replaces the response of a key the store does not hold");
      return ok();
    }
    case ProjectedWrite::Kind::refund:
      return store_new_refund(db, w.refund, nullptr, w.refund_record, w.now_ms, ctx);
    case ProjectedWrite::Kind::stage_commit:
      PS_TRY(apply_effects(db, w.effects, w.now_ms, ctx, /*append_produced=*/false));
      return store_positions(db, w.group, w.positions, ctx);
    case ProjectedWrite::Kind::replay: {
      PS_QUERY(q, db, "INSERT INTO dead_letter_replays(dlq_offset, replayed_ms, new_offset) VALUES(?1, ?2, ?3)");
      q.bind_all(w.dlq_offset, w.now_ms, w.new_offset);
      PS_TRY(q.exec());
      PS_QUERY(d, db, "DELETE FROM dead_letter_replay_requests WHERE dlq_offset = ?1");
      d.bind(1, w.dlq_offset);
      return d.exec();
    }
  }
  return Error::internal("log record " + std::to_string(w.lsn) + " of an unknown kind");
}
}  // namespace

Result<uint64_t> SqliteProjection::projected_lsn() {
  PS_LEASE_FROM(core_, db);
  return read_projected(db);
}

Result<void> SqliteProjection::project(const std::vector<ProjectedWrite>& writes) {
  if (writes.empty()) return ok();
  // run_sync returns only after the job ran or was refused, so the job may use `writes`.
  const std::vector<ProjectedWrite>* w = &writes;
  return core_.run_sync([w](Db& db, JobCtx& ctx) -> Result<void> {
    auto at = read_projected(db);
    if (!at) return at.error();
    uint64_t last = *at;
    for (const ProjectedWrite& pw : *w) {
      if (pw.lsn <= last) continue;
      PS_TRY(apply(db, pw, ctx));
      last = pw.lsn;
    }
    PS_QUERY(q, db, "UPDATE log_projection SET lsn = ?1 WHERE id = 1");
    q.bind(1, int64_t(last));
    return q.exec();
  }, /*durable=*/false);  // the log holds it: a commit lost at power loss is projected again
}

Result<std::optional<RefundBasis>> SqliteProjection::refund_basis(const std::string& merchant_id,
                                                                 const std::string& payment_id) {
  PS_LEASE_FROM(core_, db);
  return read_refund_basis(db, merchant_id, payment_id);
}

Result<std::map<std::pair<std::string, std::string>, int64_t>> SqliteProjection::positions() {
  std::map<std::pair<std::string, std::string>, int64_t> out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, "SELECT group_id, topic, position FROM consumer_positions");
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out[{q.text(0), q.text(1)}] = q.i64(2);
  }
  return out;
}

Result<int64_t> SqliteProjection::unconsumed_store_events(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& groups) {
  int64_t n = 0;
  PS_LEASE_FROM(core_, db);
  for (const auto& [group, topics] : groups)
    for (const auto& topic : topics) {
      PS_QUERY(q, db,
               "SELECT COUNT(*) FROM events WHERE topic = ?1 AND offset > "
               "COALESCE((SELECT position FROM consumer_positions WHERE group_id = ?2 AND topic = ?1), 0)");
      q.bind_all(topic, group);
      auto c = scalar_i64(q);
      if (!c) return c.error();
      n += *c;
    }
  return n;
}

Result<std::optional<std::string>> SqliteProjection::merchant_of_event(const std::string& event_id) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, "SELECT merchant_id FROM merchant_events WHERE id = ?1");
  q.bind(1, event_id);
  PS_STEP(row, q);
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(q.text(0));
}

Result<std::vector<int64_t>> SqliteProjection::replay_requests() {
  std::vector<int64_t> out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, "SELECT dlq_offset FROM dead_letter_replay_requests ORDER BY requested_ms, dlq_offset LIMIT 100");
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(q.i64(0));
  }
  return out;
}

Result<void> SqliteProjection::drop_replay_request(int64_t dlq_offset) {
  return core_.run_sync([dlq_offset](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db, "DELETE FROM dead_letter_replay_requests WHERE dlq_offset = ?1");
    q.bind(1, dlq_offset);
    return q.exec();
  });
}

Result<void> SqliteProjection::request_replay(int64_t dlq_offset, int64_t now_ms) {
  return core_.run_sync([dlq_offset, now_ms](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db,
             "INSERT INTO dead_letter_replay_requests(dlq_offset, requested_ms) VALUES(?1, ?2) "
             "ON CONFLICT(dlq_offset) DO NOTHING");
    q.bind_all(dlq_offset, now_ms);
    return q.exec();
  });
}

}  // namespace ps
