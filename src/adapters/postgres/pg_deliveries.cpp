// PgDeliveries: see pg_deliveries.hpp. Design notes:
//
// * Webhook deliveries are claimed: due_deliveries moves next_attempt_ms of the rows it
//   returns to now + kDeliveryLeaseMs in the same statement (SKIP LOCKED), so notifier
//   replicas never get the same delivery while an attempt may be running; the rows are
//   returned with their original next_attempt_ms. This store instance remembers its claims
//   and returns them again (like the embedded store, a pending due row stays due until an
//   attempt is recorded) while they are still its own (row pending, lease value unchanged).
//   record_attempt only updates rows still 'pending' (or inserts a missing one): a stale
//   attempt never overwrites a terminal row and then writes no dead letter.
#include "adapters/postgres/pg_deliveries.hpp"

#include <algorithm>
#include <future>
#include <map>
#include <set>
#include <tuple>

#include "adapters/postgres/pg_core.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "common/log.hpp"
#include "domain/ids.hpp"
#include "domain/store_codec.hpp"

namespace ps {
using namespace pg;

namespace {

constexpr auto kDeadLetterWait = std::chrono::seconds(10);  // record_attempt waits this long
constexpr int64_t kDeliveryLeaseMs = 60000;     // a claimed webhook delivery (> an attempt's timeout)

}  // namespace

// ---------- DeliveryStore ----------

Result<std::vector<WebhookEndpoint>> PgDeliveries::endpoints_for(const std::string& merchant_id) {
  PS_LEASE(c);
  return live_endpoints(c, merchant_id);
}

// Claims due rows (file comment). Rows this instance claimed before and still owns are
// returned again first-class; new claims fill up to `max`.
Result<std::vector<DueDelivery>> PgDeliveries::due_deliveries(int64_t now_ms, size_t max) {
  static const std::string kCols =
      "d.id, d.event_id, d.endpoint_id, d.merchant_id, d.status, d.attempts, d.next_attempt_ms, "
      "d.last_http_status, d.last_error, "
      "e.id, e.merchant_id, e.url, e.secret, e.enabled_events, e.created_ms, e.previous_secret, "
      "e.previous_secret_expires_ms, e.disabled, "
      "m.id, m.merchant_id, m.type, m.data_json, m.created_ms ";
  static const std::string kJoins =
      "JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.deleted_ms IS NULL "
      "JOIN merchant_events m ON m.id = d.event_id ";
  std::vector<DueDelivery> out;
  max = std::min(max, kMaxListRows);
  if (max == 0) return out;
  auto& im = core_;
  std::map<std::string, Core::Claim> own;  // due now, claimed by this instance earlier
  {
    std::lock_guard g(im.claim_mu);
    for (auto it = im.claims.begin(); it != im.claims.end();) {
      if (it->second.lease_ms <= now_ms) {  // expired: anyone may claim it again (us included)
        it = im.claims.erase(it);
        continue;
      }
      if (it->second.due_ms <= now_ms) own.emplace(it->first, it->second);
      ++it;
    }
  }
  PS_LEASE(c);
  if (!own.empty()) {
    std::vector<std::string> ids;
    for (const auto& [id, cl] : own) ids.push_back(id);
    PS_EXEC(q, c, "SELECT " + kCols + "FROM webhook_deliveries d " + kJoins +
                      "WHERE d.id = ANY($1::text[]) AND d.status = 'pending'",
            Params(pg::text_array(ids)));
    std::set<std::string> still;
    for (int i = 0; i < q.rows(); ++i) {
      DueDelivery dd{read_delivery(q, i, 0), read_endpoint(q, i, 9), read_merchant_event(q, i, 18)};
      const auto& cl = own.at(dd.delivery.id);
      if (dd.delivery.next_attempt_ms != cl.lease_ms) continue;  // rescheduled by someone else
      dd.delivery.next_attempt_ms = cl.due_ms;
      still.insert(dd.delivery.id);
      out.push_back(std::move(dd));
    }
    std::lock_guard g(im.claim_mu);
    for (const auto& [id, cl] : own)
      if (!still.count(id)) im.claims.erase(id);
  }
  if (out.size() < max) {
    const int64_t lease_ms = now_ms + kDeliveryLeaseMs;
    // The claim: lock due rows (SKIP LOCKED: another replica's claim is not waited for),
    // move them out of everyone's due window, return them with the old next_attempt_ms.
    PS_EXEC(q, c,
            "WITH due AS (SELECT d.id, d.next_attempt_ms FROM webhook_deliveries d " + kJoins +
                "WHERE d.status = 'pending' AND d.next_attempt_ms <= $1 "
                "ORDER BY d.next_attempt_ms, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED), "
                "claimed AS (UPDATE webhook_deliveries w SET next_attempt_ms = $3 FROM due WHERE w.id = due.id "
                "RETURNING w.id, w.event_id, w.endpoint_id, w.merchant_id, w.status, w.attempts, "
                "due.next_attempt_ms, w.last_http_status, w.last_error) "
                "SELECT " + kCols + "FROM claimed d " + kJoins,
            Params(now_ms, int64_t(max - out.size()), lease_ms));
    std::lock_guard g(im.claim_mu);
    for (int i = 0; i < q.rows(); ++i) {
      DueDelivery dd{read_delivery(q, i, 0), read_endpoint(q, i, 9), read_merchant_event(q, i, 18)};
      im.claims[dd.delivery.id] = Core::Claim{dd.delivery.next_attempt_ms, lease_ms};
      out.push_back(std::move(dd));
    }
  }
  std::sort(out.begin(), out.end(), [](const DueDelivery& x, const DueDelivery& y) {
    return std::tie(x.delivery.next_attempt_ms, x.delivery.id) < std::tie(y.delivery.next_attempt_ms, y.delivery.id);
  });
  if (out.size() > max) out.resize(max);  // own claims left out stay ours for the next call
  return out;
}

Result<void> PgDeliveries::record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) {
  const int64_t now = core_.clock.now_ms();
  int64_t outbox_id = 0;
  bool stale = false;
  auto r = core_.transact<void>([&](Conn& c) -> Result<void> {
    // Only a pending row is updated (or a missing one inserted): a late attempt of another
    // replica never overwrites succeeded/failed, and a retried call adds nothing.
    PS_EXEC(q, c,
            "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
            "next_attempt_ms, last_http_status, last_error) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
            "next_attempt_ms = excluded.next_attempt_ms, last_http_status = excluded.last_http_status, "
            "last_error = excluded.last_error WHERE webhook_deliveries.status = 'pending' RETURNING 1",
            delivery_params(updated));
    stale = q.rows() == 0;
    if (dead_letter && !stale) {
      // One letter per time the delivery is given up on.
      PS_EXEC(d, c, "INSERT INTO outbox(kind, payload, created_ms) VALUES('dead_letter', $1, $2) RETURNING id",
              Params(encode_dead_letter(*dead_letter), now));
      outbox_id = d.i64(0, 0);
      PS_TRY(c.exec("UPDATE webhook_deliveries SET dead_letters = dead_letters + 1 WHERE id = $1", Params(updated.id)));
    }
    return {};
  });
  if (r) {
    std::lock_guard g(core_.claim_mu);
    core_.claims.erase(updated.id);
  } else {
    outbox_id = 0;
  }
  if (stale)
    log::info("webhook attempt not recorded: the delivery is no longer pending",
              {{"delivery_id", updated.id}, {"status", std::string(to_string(updated.status))}});
  if (!r || outbox_id == 0) return r;
  log::warn("dead letter stored", {{"delivery_id", updated.id},
                                   {"topic", dead_letter->original.topic},
                                   {"offset", std::to_string(dead_letter->original.offset)},
                                   {"error", dead_letter->error},
                                   {"payment_id", dead_letter->original.event.key}});
  // Publish now and wait (bounded), so the letter is on tx.dlq when this returns in the
  // normal case; if the bus is slow or down the relay publishes it later.
  auto comp = core_.completions;
  auto done = std::make_shared<std::promise<bool>>();
  auto fut = done->get_future();
  comp->started({outbox_id}, true);
  core_.publisher.publish_dead_letter(*dead_letter, [comp, done, outbox_id](Result<void> pr) {
    if (!pr) log::warn("publishing a dead letter failed; the outbox relay will retry", {{"error", pr.error().message}});
    comp->published({outbox_id}, {{}, pr ? std::vector<int64_t>{outbox_id} : std::vector<int64_t>{}});
    done->set_value(pr.ok());
  });
  if (fut.wait_for(kDeadLetterWait) != std::future_status::ready)
    log::warn("dead letter publish not acknowledged yet; the outbox relay will retry",
              {{"delivery_id", updated.id}});
  return {};
}

Result<bool> PgDeliveries::redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) {
  return core_.transact<bool>([&](Conn& c) -> Result<bool> {
    std::string type;
    {
      PS_EXEC(q, c, "SELECT type FROM merchant_events WHERE id = $1 AND merchant_id = $2",
              Params(event_id, merchant_id));
      if (q.rows() == 0) return false;
      type = q.text(0, 0);
    }
    PS_EXEC(q, c,
            std::string("SELECT ") + kEndpointCols +
                " FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_ms IS NULL ORDER BY created_ms, id",
            Params(merchant_id));
    for (int i = 0; i < q.rows(); ++i) {
      WebhookEndpoint e = read_endpoint(q, i);
      if (!e.wants(type)) continue;
      PS_TRY(c.exec(
          "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
          "next_attempt_ms, last_http_status, last_error) VALUES($1, $2, $3, $4, 'pending', 0, $5, 0, '') "
          "ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, "
          "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = ''",
          Params(deterministic_id("wd_", event_id, e.id), event_id, e.id, merchant_id, now_ms)));
    }
    return true;
  });
}

}  // namespace ps
