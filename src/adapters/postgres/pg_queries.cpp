#include "adapters/postgres/pg_queries.hpp"

#include "adapters/postgres/pg_core.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/store_codec.hpp"

namespace ps {
using namespace pg;

// ---------- PaymentQueries ----------

Result<std::optional<Payment>> PgQueries::get_payment(const std::string& merchant_id, const std::string& payment_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = $1 AND merchant_id = $2",
          Params(payment_id, merchant_id));
  if (q.rows() == 0) return std::optional<Payment>();
  return std::optional<Payment>(read_payment(q, 0));
}

Result<std::vector<Payment>> PgQueries::list_payments(const std::string& merchant_id,
                                                    std::optional<PaymentStatus> status, const Page& page) {
  std::vector<Payment> out;
  PS_LEASE(c);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_EXEC(q, c, "SELECT created_ms FROM payments WHERE id = $1 AND merchant_id = $2",
            Params(page.starting_after, merchant_id));
    if (q.rows() == 0)
      return Error::invalid("cursor_invalid", "starting_after is not a payment of yours", "starting_after");
    cursor_ms = q.i64(0, 0);
  }
  std::string sql = std::string("SELECT ") + kPaymentCols + " FROM payments WHERE merchant_id = $1";
  Params ps(merchant_id);
  if (status) {
    ps.add(to_string(*status));
    sql += " AND status = $" + std::to_string(ps.size());
  }
  if (cursor_ms) {
    ps.add(*cursor_ms).add(page.starting_after);
    std::string a = "$" + std::to_string(ps.size() - 1), b = "$" + std::to_string(ps.size());
    sql += " AND (created_ms < " + a + " OR (created_ms = " + a + " AND id < " + b + "))";
  }
  ps.add(int64_t(clamp_limit(page.limit)));
  sql += " ORDER BY created_ms DESC, id DESC LIMIT $" + std::to_string(ps.size());
  PS_EXEC(q, c, sql, ps);
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_payment(q, i));
  return out;
}

Result<std::optional<Refund>> PgQueries::get_refund(const std::string& merchant_id, const std::string& refund_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kRefundCols + " FROM refunds WHERE id = $1 AND merchant_id = $2",
          Params(refund_id, merchant_id));
  if (q.rows() == 0) return std::optional<Refund>();
  return std::optional<Refund>(read_refund(q, 0));
}

Result<std::vector<Balance>> PgQueries::balances(const std::string& merchant_id) {
  std::vector<Balance> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          "SELECT currency, -amount_minor FROM account_balances WHERE account = $1 ORDER BY currency",
          Params(merchant_available_account(merchant_id)));
  for (int i = 0; i < q.rows(); ++i) out.push_back(Balance{q.text(i, 0), q.i64(i, 1)});
  return out;
}

Result<std::vector<JournalEntry>> PgQueries::entries_for_payment(const std::string& merchant_id,
                                                               const std::string& payment_id) {
  std::vector<JournalEntry> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          "SELECT e.id, e.kind, e.merchant_id, e.payment_id, COALESCE(e.refund_id, ''), e.created_ms, "
          "p.account, p.currency, p.amount_minor, p.seq IS NOT NULL "
          "FROM journal_entries e LEFT JOIN postings p ON p.entry_id = e.id "
          "WHERE e.payment_id = $1 AND e.merchant_id = $2 "
          "ORDER BY e.created_ms, CASE e.kind WHEN 'settlement' THEN 0 ELSE 1 END, e.id, p.seq",
          Params(payment_id, merchant_id));
  for (int i = 0; i < q.rows(); ++i) {
    if (out.empty() || out.back().id != q.text(i, 0)) {
      JournalEntry e;
      e.id = q.text(i, 0);
      e.kind = q.text(i, 1) == "refund" ? EntryKind::refund : EntryKind::settlement;
      e.merchant_id = q.text(i, 2);
      e.payment_id = q.text(i, 3);
      e.refund_id = q.text(i, 4);
      e.created_ms = q.i64(i, 5);
      out.push_back(std::move(e));
    }
    if (q.boolean(i, 9)) out.back().postings.push_back(Posting{q.text(i, 6), q.text(i, 7), q.i64(i, 8)});
  }
  return out;
}

// ---------- MerchantStore ----------

Result<void> PgQueries::create_merchant(const Merchant& m) {
  auto r = core_.transact<void>([&](Conn& c) -> Result<void> {
    PS_TRY(c.exec(
        "INSERT INTO merchants(id, name, api_key_hash, rate_limit_per_s, rate_limit_burst, created_ms) "
        "VALUES($1, $2, $3, $4, $5, $6)",
        Params(m.id, m.name, m.api_key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms)));
    PS_TRY(c.exec("INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES($1, $2, $3)",
                  Params(m.api_key_hash, m.id, m.created_ms)));
    return {};
  });
  if (!r && r.error().kind == ErrorKind::conflict)
    return Error::conflict("merchant_exists", "a merchant with this id or key already exists");
  return r;
}

Result<std::optional<Merchant>> PgQueries::find_merchant_by_key_hash(const std::string& key_hash) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.key_hash = $1",
          Params(key_hash));
  if (q.rows() == 0) return std::optional<Merchant>();
  return std::optional<Merchant>(read_merchant(q, 0));
}

Result<std::vector<Merchant>> PgQueries::all_merchants() {
  std::vector<Merchant> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " ORDER BY m.created_ms, m.id, k.created_ms");
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_merchant(q, i));
  return out;
}

Result<std::optional<std::vector<Merchant>>> PgQueries::rotate_api_key(const std::string& merchant_id,
                                                                        const std::string& new_key_hash,
                                                                        int64_t now_ms, int64_t old_keys_expire_ms) {
  using Out = std::optional<std::vector<Merchant>>;
  auto r = core_.transact<Out>([&](Conn& c) -> Result<Out> {
    // The merchant row is locked first: concurrent rotations of one merchant serialise.
    PS_EXEC(u, c, "UPDATE merchants SET api_key_hash = $1 WHERE id = $2", Params(new_key_hash, merchant_id));
    if (u.affected() == 0) return Out();
    PS_TRY(c.exec("DELETE FROM api_keys WHERE merchant_id = $1 AND expires_ms IS NOT NULL AND expires_ms <= $2",
                  Params(merchant_id, now_ms)));
    PS_TRY(c.exec("UPDATE api_keys SET expires_ms = $1 WHERE merchant_id = $2 AND (expires_ms IS NULL OR expires_ms > $1)",
                  Params(old_keys_expire_ms, merchant_id)));
    PS_EXEC(q, c, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.merchant_id = $1",
            Params(merchant_id));
    std::vector<Merchant> others;
    for (int i = 0; i < q.rows(); ++i) others.push_back(read_merchant(q, i));
    PS_TRY(c.exec("INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES($1, $2, $3)",
                  Params(new_key_hash, merchant_id, now_ms)));
    return Out(std::move(others));
  });
  if (!r && r.error().kind == ErrorKind::conflict) return Error::conflict("api_key_exists", "this API key already exists");
  return r;
}

// ---------- EndpointStore ----------

Result<void> PgQueries::create_endpoint(const WebhookEndpoint& e) {
  PS_LEASE(c);
  auto r = c.exec(
      "INSERT INTO webhook_endpoints(id, merchant_id, url, secret, enabled_events, created_ms) "
      "VALUES($1, $2, $3, $4, $5, $6)",
      Params(e.id, e.merchant_id, e.url, e.secret, strings_to_json(e.enabled_events), e.created_ms));
  if (!r && r.error().kind == ErrorKind::conflict)
    return Error::conflict("endpoint_exists", "a webhook endpoint with this id already exists");
  if (!r) return r.error();
  return {};
}

Result<std::vector<WebhookEndpoint>> PgQueries::list_endpoints(const std::string& merchant_id) {
  PS_LEASE(c);
  return live_endpoints(c, merchant_id);
}

Result<std::optional<WebhookEndpoint>> PgQueries::get_endpoint(const std::string& merchant_id,
                                                             const std::string& endpoint_id) {
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kEndpointCols +
              " FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_ms IS NULL",
          Params(endpoint_id, merchant_id));
  if (q.rows() == 0) return std::optional<WebhookEndpoint>();
  return std::optional<WebhookEndpoint>(read_endpoint(q, 0));
}

Result<bool> PgQueries::delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) {
  const int64_t now = core_.clock.now_ms();
  return core_.transact<bool>([&](Conn& c) -> Result<bool> {
    PS_EXEC(q, c,
            "UPDATE webhook_endpoints SET deleted_ms = $1 WHERE id = $2 AND merchant_id = $3 AND deleted_ms IS NULL",
            Params(now, endpoint_id, merchant_id));
    if (q.affected() == 0) return false;
    PS_TRY(c.exec("UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_deleted' "
                  "WHERE endpoint_id = $1 AND status = 'pending'",
                  Params(endpoint_id)));
    return true;
  });
}

Result<std::optional<WebhookEndpoint>> PgQueries::update_endpoint(const std::string& merchant_id,
                                                                const std::string& endpoint_id,
                                                                const EndpointUpdate& u) {
  using Out = std::optional<WebhookEndpoint>;
  return core_.transact<Out>([&](Conn& c) -> Result<Out> {
    PS_EXEC(q, c,
            std::string("SELECT ") + kEndpointCols +
                " FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_ms IS NULL FOR UPDATE",
            Params(endpoint_id, merchant_id));
    if (q.rows() == 0) return Out();
    const WebhookEndpoint cur = read_endpoint(q, 0);
    WebhookEndpoint e = apply_endpoint_update(cur, u);
    PS_TRY(c.exec("UPDATE webhook_endpoints SET url = $1, enabled_events = $2, disabled = $3, secret = $4, "
                  "previous_secret = $5, previous_secret_expires_ms = $6 WHERE id = $7",
                  Params(e.url, strings_to_json(e.enabled_events), e.disabled, e.secret, e.previous_secret,
                         e.previous_secret_expires_ms, endpoint_id)));
    if (e.disabled && !cur.disabled)
      PS_TRY(c.exec("UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_disabled' "
                    "WHERE endpoint_id = $1 AND status = 'pending'",
                    Params(endpoint_id)));
    return Out(std::move(e));
  });
}

// ---------- EventQueries ----------

Result<std::vector<MerchantEvent>> PgQueries::list_events(const std::string& merchant_id, const Page& page) {
  std::vector<MerchantEvent> out;
  PS_LEASE(c);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_EXEC(q, c, "SELECT created_ms FROM merchant_events WHERE id = $1 AND merchant_id = $2",
            Params(page.starting_after, merchant_id));
    if (q.rows() == 0)
      return Error::invalid("cursor_invalid", "starting_after is not an event of yours", "starting_after");
    cursor_ms = q.i64(0, 0);
  }
  std::string sql = std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE merchant_id = $1";
  Params ps(merchant_id);
  if (cursor_ms) {
    ps.add(*cursor_ms).add(page.starting_after);
    sql += " AND (created_ms < $2 OR (created_ms = $2 AND id < $3))";
  }
  ps.add(int64_t(clamp_limit(page.limit)));
  sql += " ORDER BY created_ms DESC, id DESC LIMIT $" + std::to_string(ps.size());
  PS_EXEC(q, c, sql, ps);
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_merchant_event(q, i));
  return out;
}

Result<std::optional<MerchantEvent>> PgQueries::get_event(const std::string& merchant_id, const std::string& event_id) {
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE id = $1 AND merchant_id = $2",
          Params(event_id, merchant_id));
  if (q.rows() == 0) return std::optional<MerchantEvent>();
  return std::optional<MerchantEvent>(read_merchant_event(q, 0));
}

}  // namespace ps
