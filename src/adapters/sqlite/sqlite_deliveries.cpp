#include "adapters/sqlite/sqlite_deliveries.hpp"

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

// ---------- DeliveryStore ----------

Result<std::vector<WebhookEndpoint>> SqliteDeliveries::endpoints_for(const std::string& merchant_id) {
  PS_LEASE_FROM(core_, db);
  return live_endpoints(db, merchant_id);
}

Result<std::vector<DueDelivery>> SqliteDeliveries::due_deliveries(int64_t now_ms, size_t max) {
  std::vector<DueDelivery> out;
  if (max == 0) return out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db,
           "SELECT d.id, d.event_id, d.endpoint_id, d.merchant_id, d.status, d.attempts, d.next_attempt_ms, "
           "d.last_http_status, d.last_error, "
           "e.id, e.merchant_id, e.url, e.secret, e.enabled_events, e.created_ms, e.previous_secret, "
           "e.previous_secret_expires_ms, e.disabled, "
           "m.id, m.merchant_id, m.type, m.data_json, m.created_ms "
           "FROM webhook_deliveries d "
           "JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.deleted_ms IS NULL "
           "JOIN merchant_events m ON m.id = d.event_id "
           "WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1 "
           "ORDER BY d.next_attempt_ms, d.id LIMIT ?2");
  q.bind_all(now_ms, int64_t(std::min(max, kMaxListRows)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(DueDelivery{read_delivery(q, 0), read_endpoint(q, 9), read_merchant_event(q, 18)});
  }
  return out;
}

Result<void> SqliteDeliveries::record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) {
  const int64_t now = core_.clock().now_ms();
  return core_.run_sync([updated, dl = std::move(dead_letter), now](Db& db, JobCtx& ctx) -> Result<void> {
    bool existed = false;
    std::string prev_status;
    int64_t prev_dead_letters = 0;
    {
      PS_QUERY(q, db, "SELECT status, dead_letters FROM webhook_deliveries WHERE id = ?1");
      q.bind(1, updated.id);
      PS_STEP(row, q);
      if (row) {
        existed = true;
        prev_status = q.text(0);
        prev_dead_letters = q.i64(1);
      }
    }
    {
      PS_QUERY(q, db,
               "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
               "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
               "ON CONFLICT(id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
               "next_attempt_ms = excluded.next_attempt_ms, last_http_status = excluded.last_http_status, "
               "last_error = excluded.last_error");
      q.bind_all(updated.id, updated.event_id, updated.endpoint_id, updated.merchant_id, to_string(updated.status),
                 int64_t(updated.attempts), updated.next_attempt_ms, int64_t(updated.last_http_status),
                 updated.last_error);
      PS_TRY(q.exec());
    }
    if (dl && (!existed || prev_status != "failed")) {
      // One letter per time the delivery is given up on; a retried call adds nothing.
      std::string id = deterministic_id("dlq_", "wd:" + updated.id, std::to_string(prev_dead_letters));
      PS_TRY(append_dead_letter(db, *dl, id, now, ctx));
      PS_QUERY(q, db, "UPDATE webhook_deliveries SET dead_letters = dead_letters + 1 WHERE id = ?1");
      q.bind(1, updated.id);
      PS_TRY(q.exec());
    }
    return {};
  });
}

Result<bool> SqliteDeliveries::redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) {
  auto found = std::make_shared<bool>(false);
  auto r = core_.run_sync([=](Db& db, JobCtx&) -> Result<void> {
    std::string type;
    {
      PS_QUERY(q, db, "SELECT type FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
      q.bind_all(event_id, merchant_id);
      PS_STEP(row, q);
      if (!row) return {};
      type = q.text(0);
    }
    *found = true;
    auto live = live_endpoints(db, merchant_id);
    if (!live) return live.error();
    std::vector<WebhookEndpoint> endpoints = std::move(*live);
    for (const auto& e : endpoints) {
      if (!e.wants(type)) continue;
      PS_QUERY(q, db,
               "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
               "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, 'pending', 0, ?5, 0, '') "
               "ON CONFLICT(id) DO UPDATE SET status = 'pending', attempts = 0, "
               "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = ''");
      q.bind_all(deterministic_id("wd_", event_id, e.id), event_id, e.id, merchant_id, now_ms);
      PS_TRY(q.exec());
    }
    return {};
  });
  if (!r) return r.error();
  return *found;
}


}  // namespace ps
