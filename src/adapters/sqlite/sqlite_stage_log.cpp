#include "adapters/sqlite/sqlite_stage_log.hpp"

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

// ---------- StageLog ----------

Result<std::vector<Record>> SqliteStageLog::poll(const std::string& group, const std::vector<std::string>& topics,
                                              size_t max, std::chrono::milliseconds wait) {
  std::vector<Record> out;
  if (topics.empty() || max == 0) return out;
  max = std::min(max, kMaxPollRecords);
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const uint64_t version = core_.events_version();
    {
      PS_LEASE_FROM(core_, db);
      for (const auto& topic : topics) {
        int64_t position = 0;
        {
          PS_QUERY(q, db, "SELECT position FROM consumer_positions WHERE group_id = ?1 AND topic = ?2");
          q.bind_all(group, topic);
          auto p = scalar_i64(q);
          if (!p) return p.error();
          position = *p;
        }
        PS_QUERY(q, db,
                 std::string("SELECT ") + kEventCols +
                     " FROM events WHERE topic = ?1 AND offset > ?2 ORDER BY offset LIMIT ?3");
        q.bind_all(topic, position, int64_t(max));
        for (;;) {
          PS_STEP(row, q);
          if (!row) break;
          out.push_back(read_record(q));
        }
      }
    }
    if (!out.empty()) {
      std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) { return a.offset < b.offset; });
      if (out.size() > max) out.resize(max);
      return out;
    }
    if (!core_.wait_for_events(version, deadline)) return out;
  }
}

Result<void> SqliteStageLog::commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) {
  auto fx = std::make_shared<Effects>(std::move(effects));
  std::map<std::string, int64_t> positions;
  for (const auto& r : consumed) {
    auto& p = positions[r.topic];
    p = std::max(p, r.offset);
  }
  const int64_t now = core_.clock().now_ms();
  return core_.run_sync([group, positions, fx, now](Db& db, JobCtx& ctx) -> Result<void> {
    PS_TRY(apply_effects(db, *fx, now, ctx, /*append_produced=*/true));
    return store_positions(db, group, positions, ctx);
  });
}

Result<int64_t> SqliteStageLog::count_events(const std::string& topic) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, "SELECT COUNT(*) FROM events WHERE topic = ?1");
  q.bind(1, topic);
  return scalar_i64(q);
}

// ---------- DeadLetterStore ----------

namespace {
const char* const kDlqSelect =
    "SELECT e.offset, e.data, e.created_ms, r.dlq_offset IS NOT NULL FROM events e "
    "LEFT JOIN dead_letter_replays r ON r.dlq_offset = e.offset "
    "WHERE e.topic = 'tx.dlq' AND e.type = 'paystream.dead_letter' ";
Result<DeadLetterView> read_dlq_view(const Query& q) {
  auto d = decode_dead_letter(q.text(1));
  if (!d) return d.error();
  DeadLetterView v;
  v.offset = q.i64(0);
  v.letter = std::move(d.value());
  v.created_ms = q.i64(2);
  v.replayed = q.i64(3) != 0;
  return v;
}
}  // namespace

Result<std::vector<DeadLetterView>> SqliteStageLog::list_dead_letters(size_t limit) {
  std::vector<DeadLetterView> out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string(kDlqSelect) + "ORDER BY e.offset DESC LIMIT ?1");
  q.bind(1, int64_t(std::clamp<size_t>(limit, 1, kMaxListRows)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    auto v = read_dlq_view(q);
    if (!v) return v.error();
    out.push_back(std::move(v.value()));
  }
  return out;
}

Result<std::optional<DeadLetterView>> SqliteStageLog::get_dead_letter(int64_t offset) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string(kDlqSelect) + "AND e.offset = ?1");
  q.bind(1, offset);
  PS_STEP(row, q);
  if (!row) return std::optional<DeadLetterView>();
  auto v = read_dlq_view(q);
  if (!v) return v.error();
  return std::optional<DeadLetterView>(std::move(v.value()));
}

Result<void> SqliteStageLog::replay_dead_letter(int64_t offset) {
  const int64_t now = core_.clock().now_ms();
  return core_.run_sync([offset, now](Db& db, JobCtx& ctx) -> Result<void> {
    std::string data;
    bool replayed = false;
    {
      PS_QUERY(q, db, std::string(kDlqSelect) + "AND e.offset = ?1");
      q.bind(1, offset);
      PS_STEP(row, q);
      if (!row) return Error::not_found("no dead letter at offset " + std::to_string(offset));
      data = q.text(1);
      replayed = q.i64(3) != 0;
    }
    if (replayed)
      return Error::conflict("already_replayed", "dead letter " + std::to_string(offset) + " was already replayed");
    auto d = decode_dead_letter(data);
    if (!d) return d.error();
    const Record& orig = d->original;
    if (orig.topic.empty() || orig.topic == topics::dlq || orig.event.id.empty())
      return Error::unprocessable("dead_letter_not_replayable",
                                  "dead letter " + std::to_string(offset) + " has no original topic or event");
    // Prefer the copy in the log: a webhook dead letter carries the webhook body, not the
    // pipeline payload, and only the logged event is what the stages consume.
    Event event = orig.event;
    {
      PS_QUERY(q, db,
               std::string("SELECT ") + kEventCols + " FROM events WHERE topic = ?1 AND id = ?2 ORDER BY replay LIMIT 1");
      q.bind_all(orig.topic, orig.event.id);
      PS_STEP(row, q);
      if (row) event = read_record(q).event;
    }
    int64_t generation = 0;
    {
      PS_QUERY(q, db, "SELECT COALESCE(MAX(replay) + 1, 0) FROM events WHERE topic = ?1 AND id = ?2");
      q.bind_all(orig.topic, orig.event.id);
      auto g = scalar_i64(q);
      if (!g) return g.error();
      generation = *g;
    }
    int64_t new_offset = 0;
    auto ins = append_event(db, orig.topic, event, generation, now, ctx, &new_offset);
    if (!ins) return ins.error();
    if (!*ins) return Error::internal("replayed event was not appended");
    PS_QUERY(q, db, "INSERT INTO dead_letter_replays(dlq_offset, replayed_ms, new_offset) VALUES(?1, ?2, ?3)");
    q.bind_all(offset, now, new_offset);
    PS_TRY(q.exec());
    log::info("dead letter replayed", {{"dlq_offset", std::to_string(offset)},
                                      {"topic", orig.topic},
                                      {"new_offset", std::to_string(new_offset)},
                                      {"payment_id", orig.event.key}});
    return {};
  });
}


}  // namespace ps
