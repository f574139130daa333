#include "adapters/sqlite/sqlite_queries.hpp"

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

// ---------- PaymentQueries ----------

Result<std::optional<Payment>> SqliteQueries::get_payment(const std::string& merchant_id, const std::string& payment_id) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(payment_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<Payment>();
  return std::optional<Payment>(read_payment(q));
}

Result<std::vector<Payment>> SqliteQueries::list_payments(const std::string& merchant_id,
                                                        std::optional<PaymentStatus> status, const Page& page) {
  std::vector<Payment> out;
  PS_LEASE_FROM(core_, db);
  ReadTx tx(db);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_QUERY(q, db, "SELECT created_ms FROM payments WHERE id = ?1 AND merchant_id = ?2");
    q.bind_all(page.starting_after, merchant_id);
    PS_STEP(row, q);
    if (!row) return Error::invalid("cursor_invalid", "starting_after is not a payment of yours", "starting_after");
    cursor_ms = q.i64(0);
  }
  std::string sql = std::string("SELECT ") + kPaymentCols + " FROM payments WHERE merchant_id = ?1";
  if (status) sql += " AND status = ?2";
  if (cursor_ms) sql += " AND (created_ms < ?3 OR (created_ms = ?3 AND id < ?4))";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?5";
  PS_QUERY(q, db, sql);
  q.bind(1, merchant_id);
  if (status) q.bind(2, to_string(*status));
  if (cursor_ms) q.bind(3, *cursor_ms).bind(4, page.starting_after);
  q.bind(5, int64_t(clamp_limit(page.limit)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_payment(q));
  }
  return out;
}

Result<std::optional<Refund>> SqliteQueries::get_refund(const std::string& merchant_id, const std::string& refund_id) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string("SELECT ") + kRefundCols + " FROM refunds WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(refund_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<Refund>();
  return std::optional<Refund>(read_refund(q));
}

Result<std::vector<Balance>> SqliteQueries::balances(const std::string& merchant_id) {
  std::vector<Balance> out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db,
           "SELECT currency, -amount_minor FROM account_balances WHERE account = ?1 ORDER BY currency");
  q.bind(1, merchant_available_account(merchant_id));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(Balance{q.text(0), q.i64(1)});
  }
  return out;
}

Result<std::vector<JournalEntry>> SqliteQueries::entries_for_payment(const std::string& merchant_id,
                                                                   const std::string& payment_id) {
  std::vector<JournalEntry> out;
  PS_LEASE_FROM(core_, db);
  ReadTx tx(db);
  {
    PS_QUERY(q, db,
             "SELECT id, kind, merchant_id, payment_id, COALESCE(refund_id, ''), created_ms FROM journal_entries "
             "WHERE payment_id = ?1 AND merchant_id = ?2 "
             "ORDER BY created_ms, CASE kind WHEN 'settlement' THEN 0 ELSE 1 END, id");
    q.bind_all(payment_id, merchant_id);
    for (;;) {
      PS_STEP(row, q);
      if (!row) break;
      JournalEntry e;
      e.id = q.text(0);
      e.kind = q.text(1) == "refund" ? EntryKind::refund : EntryKind::settlement;
      e.merchant_id = q.text(2);
      e.payment_id = q.text(3);
      e.refund_id = q.text(4);
      e.created_ms = q.i64(5);
      out.push_back(std::move(e));
    }
  }
  for (auto& e : out) {
    PS_QUERY(q, db, "SELECT account, currency, amount_minor FROM postings WHERE entry_id = ?1 ORDER BY rowid");
    q.bind(1, e.id);
    for (;;) {
      PS_STEP(row, q);
      if (!row) break;
      e.postings.push_back(Posting{q.text(0), q.text(1), q.i64(2)});
    }
  }
  return out;
}

// ---------- MerchantStore ----------

Result<void> SqliteQueries::create_merchant(const Merchant& m) {
  return core_.run_sync([m](Db& db, JobCtx&) -> Result<void> {
    {
      PS_QUERY(q, db,
               "INSERT INTO merchants(id, name, api_key_hash, rate_limit_per_s, rate_limit_burst, created_ms) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
      q.bind_all(m.id, m.name, m.api_key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms);
      auto r = q.exec();
      if (!r && sqlite::is_constraint(r.error()))
        return Error::conflict("merchant_exists", "a merchant with this id or key already exists");
      PS_TRY(r);
    }
    PS_QUERY(q, db, "INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES(?1, ?2, ?3)");
    q.bind_all(m.api_key_hash, m.id, m.created_ms);
    auto r = q.exec();
    if (!r && sqlite::is_constraint(r.error()))
      return Error::conflict("merchant_exists", "a merchant with this id or key already exists");
    return r;
  });
}

Result<std::optional<Merchant>> SqliteQueries::find_merchant_by_key_hash(const std::string& key_hash) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.key_hash = ?1");
  q.bind(1, key_hash);
  PS_STEP(row, q);
  if (!row) return std::optional<Merchant>();
  return std::optional<Merchant>(read_merchant(q));
}

Result<std::vector<Merchant>> SqliteQueries::all_merchants() {
  std::vector<Merchant> out;
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " ORDER BY m.created_ms, m.id, k.created_ms");
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_merchant(q));
  }
  return out;
}

Result<std::optional<std::vector<Merchant>>> SqliteQueries::rotate_api_key(const std::string& merchant_id,
                                                                              const std::string& new_key_hash,
                                                                              int64_t now_ms,
                                                                              int64_t old_keys_expire_ms) {
  auto out = std::make_shared<std::optional<std::vector<Merchant>>>();
  auto r = core_.run_sync([=](Db& db, JobCtx&) -> Result<void> {
    {
      PS_QUERY(q, db, "UPDATE merchants SET api_key_hash = ?1 WHERE id = ?2");
      q.bind_all(new_key_hash, merchant_id);
      auto u = q.exec();
      if (!u && sqlite::is_constraint(u.error()))
        return Error::conflict("api_key_exists", "this API key already exists");
      PS_TRY(u);
    }
    if (db.changes() == 0) return {};
    {
      PS_QUERY(q, db, "DELETE FROM api_keys WHERE merchant_id = ?1 AND expires_ms IS NOT NULL AND expires_ms <= ?2");
      q.bind_all(merchant_id, now_ms);
      PS_TRY(q.exec());
    }
    {
      PS_QUERY(q, db,
               "UPDATE api_keys SET expires_ms = ?1 WHERE merchant_id = ?2 AND (expires_ms IS NULL OR expires_ms > ?1)");
      q.bind_all(old_keys_expire_ms, merchant_id);
      PS_TRY(q.exec());
    }
    std::vector<Merchant> others;
    {
      PS_QUERY(q, db, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.merchant_id = ?1");
      q.bind(1, merchant_id);
      for (;;) {
        PS_STEP(row, q);
        if (!row) break;
        others.push_back(read_merchant(q));
      }
    }
    PS_QUERY(q, db, "INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES(?1, ?2, ?3)");
    q.bind_all(new_key_hash, merchant_id, now_ms);
    auto ins = q.exec();
    if (!ins && sqlite::is_constraint(ins.error()))
      return Error::conflict("api_key_exists", "this API key already exists");
    PS_TRY(ins);
    *out = std::move(others);
    return {};
  });
  if (!r) return r.error();
  return *out;
}

// ---------- EndpointStore ----------

Result<void> SqliteQueries::create_endpoint(const WebhookEndpoint& e) {
  return core_.run_sync([e](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db,
             "INSERT INTO webhook_endpoints(id, merchant_id, url, secret, enabled_events, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind_all(e.id, e.merchant_id, e.url, e.secret, strings_to_json(e.enabled_events), e.created_ms);
    auto r = q.exec();
    if (!r && sqlite::is_constraint(r.error()))
      return Error::conflict("endpoint_exists", "a webhook endpoint with this id already exists");
    return r;
  });
}

Result<std::vector<WebhookEndpoint>> SqliteQueries::list_endpoints(const std::string& merchant_id) {
  PS_LEASE_FROM(core_, db);
  return live_endpoints(db, merchant_id);
}

Result<std::optional<WebhookEndpoint>> SqliteQueries::get_endpoint(const std::string& merchant_id,
                                                                 const std::string& endpoint_id) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db,
           std::string("SELECT ") + kEndpointCols +
               " FROM webhook_endpoints WHERE id = ?1 AND merchant_id = ?2 AND deleted_ms IS NULL");
  q.bind_all(endpoint_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<WebhookEndpoint>();
  return std::optional<WebhookEndpoint>(read_endpoint(q));
}

Result<bool> SqliteQueries::delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) {
  auto deleted = std::make_shared<bool>(false);
  const int64_t now = core_.clock().now_ms();
  auto r = core_.run_sync([=](Db& db, JobCtx&) -> Result<void> {
    {
      PS_QUERY(q, db,
               "UPDATE webhook_endpoints SET deleted_ms = ?1 WHERE id = ?2 AND merchant_id = ?3 AND deleted_ms IS NULL");
      q.bind_all(now, endpoint_id, merchant_id);
      PS_TRY(q.exec());
    }
    *deleted = db.changes() > 0;
    if (!*deleted) return {};
    PS_QUERY(q, db,
             "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_deleted' "
             "WHERE endpoint_id = ?1 AND status = 'pending'");
    q.bind(1, endpoint_id);
    return q.exec();
  });
  if (!r) return r.error();
  return *deleted;
}

Result<std::optional<WebhookEndpoint>> SqliteQueries::update_endpoint(const std::string& merchant_id,
                                                                      const std::string& endpoint_id,
                                                                      const EndpointUpdate& u) {
  auto out = std::make_shared<std::optional<WebhookEndpoint>>();
  auto r = core_.run_sync([=](Db& db, JobCtx&) -> Result<void> {
    std::optional<WebhookEndpoint> cur;
    {
      PS_QUERY(q, db,
               std::string("SELECT ") + kEndpointCols +
                   " FROM webhook_endpoints WHERE id = ?1 AND merchant_id = ?2 AND deleted_ms IS NULL");
      q.bind_all(endpoint_id, merchant_id);
      PS_STEP(row, q);
      if (!row) return {};
      cur = read_endpoint(q);
    }
    WebhookEndpoint e = apply_endpoint_update(*cur, u);
    {
      PS_QUERY(q, db,
               "UPDATE webhook_endpoints SET url = ?1, enabled_events = ?2, disabled = ?3, secret = ?4, "
               "previous_secret = ?5, previous_secret_expires_ms = ?6 WHERE id = ?7");
      q.bind_all(e.url, strings_to_json(e.enabled_events), int64_t(e.disabled ? 1 : 0), e.secret, e.previous_secret,
                 e.previous_secret_expires_ms, endpoint_id);
      PS_TRY(q.exec());
    }
    if (e.disabled && !cur->disabled) {
      PS_QUERY(q, db,
               "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_disabled' "
               "WHERE endpoint_id = ?1 AND status = 'pending'");
      q.bind(1, endpoint_id);
      PS_TRY(q.exec());
    }
    *out = std::move(e);
    return {};
  });
  if (!r) return r.error();
  return *out;
}

// ---------- EventQueries ----------

Result<std::vector<MerchantEvent>> SqliteQueries::list_events(const std::string& merchant_id, const Page& page) {
  std::vector<MerchantEvent> out;
  PS_LEASE_FROM(core_, db);
  ReadTx tx(db);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_QUERY(q, db, "SELECT created_ms FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
    q.bind_all(page.starting_after, merchant_id);
    PS_STEP(row, q);
    if (!row) return Error::invalid("cursor_invalid", "starting_after is not an event of yours", "starting_after");
    cursor_ms = q.i64(0);
  }
  std::string sql = std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE merchant_id = ?1";
  if (cursor_ms) sql += " AND (created_ms < ?2 OR (created_ms = ?2 AND id < ?3))";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?4";
  PS_QUERY(q, db, sql);
  q.bind(1, merchant_id);
  if (cursor_ms) q.bind(2, *cursor_ms).bind(3, page.starting_after);
  q.bind(4, int64_t(clamp_limit(page.limit)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_merchant_event(q));
  }
  return out;
}

Result<std::optional<MerchantEvent>> SqliteQueries::get_event(const std::string& merchant_id,
                                                            const std::string& event_id) {
  PS_LEASE_FROM(core_, db);
  PS_QUERY(q, db,
           std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(event_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<MerchantEvent>();
  return std::optional<MerchantEvent>(read_merchant_event(q));
}


}  // namespace ps
