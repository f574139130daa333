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
      if (pw.payment) {
        PS_TRY(store_new_payment(db, *pw.payment, pw.now_ms, ctx));
      } else {
        PS_QUERY(q, db, "UPDATE idempotency SET http_status = ?1, response_body = ?2 WHERE merchant_id = ?3 AND key = ?4");
        q.bind_all(int64_t(pw.http_status), pw.body, pw.merchant_id, pw.key);
        PS_TRY(q.exec());
        if (db.changes() == 0)
          return Error::internal("log record " + std::to_string(pw.lsn) + " replaces the response of a key the store does not hold");
      }
      last = pw.lsn;
    }
    PS_QUERY(q, db, "UPDATE log_projection SET lsn = ?1 WHERE id = 1");
    q.bind(1, int64_t(last));
    return q.exec();
  });
}

}  // namespace ps
