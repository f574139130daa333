// PgEventDedup: the EventDedup port over table event_firsts (schema step 2).
//
// One statement per call: the batch goes in as arrays, a CTE inserts every (group, event
// id) -> position that is absent (ON CONFLICT DO NOTHING) and the statement returns the
// newly inserted rows plus the rows that existed before it started. A row committed by a
// concurrent caller after our snapshot but before our insert is in neither (the insert
// waited for it and skipped, the select cannot see it): those ids are read again in a
// second statement (a new snapshot), which only happens when two callers race on one id.
//
// Within one batch two copies of the same id are inserted once (the first in record
// order, i.e. the lower offset of the partition) and both are compared with what is stored.
// Ids are sent sorted, so concurrent callers take the unique-index locks in one order and
// cannot deadlock each other.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <tuple>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_schema.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "common/log.hpp"

namespace ps {
namespace {

constexpr int64_t kRetentionMs = 7LL * 24 * 3600 * 1000;  // far longer than any redelivery window
constexpr int64_t kPurgeIntervalMs = 3600LL * 1000;
constexpr size_t kPurgeBatch = 10000;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using Position = std::tuple<std::string, int32_t, int64_t>;  // topic, partition, offset

constexpr const char* kInsertAndRead = R"SQL(
WITH input AS (
  SELECT * FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) AS t(event_id, topic, partition, "offset")
), ins AS (
  INSERT INTO event_firsts(group_id, event_id, topic, partition, "offset", seen_ms)
  SELECT $1::text, event_id, topic, partition, "offset", $6::bigint FROM input
  ON CONFLICT DO NOTHING
  RETURNING event_id, topic, partition, "offset"
)
SELECT event_id, topic, partition, "offset" FROM ins
UNION ALL
SELECT event_id, topic, partition, "offset" FROM event_firsts
 WHERE group_id = $1::text AND event_id = ANY($2::text[])
)SQL";

constexpr const char* kRead = R"SQL(
SELECT event_id, topic, partition, "offset" FROM event_firsts
 WHERE group_id = $1::text AND event_id = ANY($2::text[])
)SQL";

// Oldest first, a bounded batch (the ctid sub-select keeps the DELETE on the seen_ms index).
constexpr const char* kPurge = R"SQL(
DELETE FROM event_firsts WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM event_firsts WHERE seen_ms < $1::bigint ORDER BY seen_ms LIMIT $2::int))
)SQL";

void collect(const pg::Res& res, std::map<std::string, Position>& out) {
  for (int i = 0; i < res.rows(); ++i)
    out.emplace(res.text(i, 0), Position{res.text(i, 1), int32_t(res.i64(i, 2)), res.i64(i, 3)});
}

}  // namespace

struct PgEventDedup::Impl {
  explicit Impl(pg::PoolOptions o) : pool(std::move(o)) {}
  pg::Pool pool;
  std::atomic<int64_t> next_purge_ms{0};  // 0: purge on the first call
};

PgEventDedup::PgEventDedup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PgEventDedup::~PgEventDedup() = default;

Result<std::unique_ptr<PgEventDedup>> PgEventDedup::open(const PgOptions& opts) {
  pg::PoolOptions po;
  po.conn = pg::ConnOptions{opts.url, opts.schema, opts.connect_timeout_ms, opts.statement_timeout_ms, opts.tls};
  po.size = 2;
  po.wait_timeout_ms = opts.pool_wait_timeout_ms;
  auto impl = std::make_unique<Impl>(std::move(po));
  {
    auto lease = impl->pool.acquire();
    if (!lease) return lease.error();
    auto v = pg::stored_version(**lease);
    if (!v) return v.error();
    if (*v < 2)
      return Error::internal("database schema version " + std::to_string(*v) +
                             " has no event_firsts table (needs 2); apply the migrations first");
  }
  return std::unique_ptr<PgEventDedup>(new PgEventDedup(std::move(impl)));
}

Result<std::vector<bool>> PgEventDedup::first_copies(const std::string& group, const std::vector<Record>& records) {
  std::vector<bool> out(records.size(), true);  // empty ids are always first
  // The first copy of each id in record order: what gets inserted.
  std::map<std::string, const Record*> firsts;
  for (const auto& r : records)
    if (!r.event.id.empty()) firsts.emplace(r.event.id, &r);
  if (firsts.empty()) return out;

  std::vector<std::string> ids, topics;  // sorted by id (std::map order)
  std::vector<int64_t> partitions, offsets;
  for (const auto& [id, r] : firsts) {
    ids.push_back(id);
    topics.push_back(r->topic);
    partitions.push_back(r->partition);
    offsets.push_back(r->offset);
  }
  const int64_t now = wall_ms();

  auto lease = impl_->pool.acquire();
  if (!lease) return lease.error();
  const std::string ids_param = pg::text_array(ids);
  auto res = (*lease)->exec(kInsertAndRead, pg::Params(group, ids_param, pg::text_array(topics),
                                                       pg::int_array(partitions), pg::int_array(offsets), now));
  if (!res) return res.error();
  std::map<std::string, Position> stored;
  collect(*res, stored);
  if (stored.size() < firsts.size()) {  // a concurrent caller won an id (see the file comment)
    auto again = (*lease)->exec(kRead, pg::Params(group, ids_param));
    if (!again) return again.error();
    collect(*again, stored);
  }
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    if (r.event.id.empty()) continue;
    auto it = stored.find(r.event.id);
    if (it == stored.end())
      return Error::unavailable("event_dedup_unavailable", "no stored position for event " + r.event.id);
    out[i] = it->second == Position{r.topic, r.partition, r.offset};
  }

  // Retention, at most once an hour per process (whoever claims the slot runs it).
  int64_t due = impl_->next_purge_ms.load();
  if (now >= due && impl_->next_purge_ms.compare_exchange_strong(due, now + kPurgeIntervalMs)) {
    auto p = (*lease)->exec(kPurge, pg::Params(now - kRetentionMs, kPurgeBatch));
    if (!p) log::warn("event dedup purge failed", {{"error", p.error().message}});
    else if (p->affected() > 0) log::info("event dedup entries purged", {{"rows", std::to_string(p->affected())}});
  }
  return out;
}

Result<size_t> PgEventDedup::purge(int64_t cutoff_ms, size_t max_rows) {
  auto lease = impl_->pool.acquire();
  if (!lease) return lease.error();
  auto p = (*lease)->exec(kPurge, pg::Params(cutoff_ms, max_rows));
  if (!p) return p.error();
  return size_t(p->affected());
}

}  // namespace ps
