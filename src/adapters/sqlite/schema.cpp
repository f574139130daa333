#include "adapters/sqlite/schema.hpp"

#include <string>

namespace ps::sqlite {
namespace {

// Step i (1-based) brings the schema from version i-1 to i. Append only; never edit.
const char* const kSteps[] = {
    // 1: initial schema
    R"SQL(
CREATE TABLE events(
  offset INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL DEFAULT 0,
  key TEXT NOT NULL DEFAULT '',
  id TEXT NOT NULL,
  type TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  time_ms INTEGER NOT NULL DEFAULT 0,
  traceparent TEXT NOT NULL DEFAULT '',
  data TEXT NOT NULL DEFAULT '',
  replay INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL DEFAULT 0,
  UNIQUE(topic, id, replay)
);
CREATE INDEX events_topic_offset ON events(topic, offset);

CREATE TABLE consumer_positions(
  group_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY(group_id, topic)
);

CREATE TABLE dead_letter_replays(
  dlq_offset INTEGER PRIMARY KEY REFERENCES events(offset),
  replayed_ms INTEGER NOT NULL,
  new_offset INTEGER NOT NULL
);

CREATE TABLE merchants(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  api_key_hash TEXT NOT NULL UNIQUE,
  rate_limit_per_s REAL NOT NULL DEFAULT 0,
  rate_limit_burst INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL
);

CREATE TABLE payments(
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL UNIQUE,
  merchant_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  amount_minor INTEGER NOT NULL CHECK(amount_minor > 0),
  currency TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  metadata TEXT NOT NULL DEFAULT '{}',
  status TEXT NOT NULL CHECK(status IN ('processing','succeeded','failed')),
  failure_code TEXT NOT NULL DEFAULT '',
  amount_refunded_minor INTEGER NOT NULL DEFAULT 0
    CHECK(amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_minor),
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  UNIQUE(merchant_id, idempotency_key)
);
CREATE INDEX payments_newest ON payments(merchant_id, created_ms DESC, id DESC);
CREATE INDEX payments_status_newest ON payments(merchant_id, status, created_ms DESC, id DESC);

CREATE TABLE refunds(
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments(id),
  merchant_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  amount_minor INTEGER NOT NULL CHECK(amount_minor > 0),
  currency TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('processing','succeeded','failed')),
  failure_code TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  UNIQUE(merchant_id, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds(payment_id, status);
CREATE INDEX refunds_merchant_processing ON refunds(merchant_id, currency) WHERE status = 'processing';

CREATE TABLE idempotency(
  merchant_id TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  http_status INTEGER NOT NULL,
  response_body TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY(merchant_id, key)
);

CREATE TABLE journal_entries(
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK(kind IN ('settlement','refund')),
  merchant_id TEXT NOT NULL,
  payment_id TEXT NOT NULL,
  refund_id TEXT,
  created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX journal_one_settlement ON journal_entries(payment_id) WHERE kind = 'settlement';
CREATE UNIQUE INDEX journal_one_reversal ON journal_entries(refund_id) WHERE kind = 'refund';

CREATE TABLE postings(
  entry_id TEXT NOT NULL REFERENCES journal_entries(id),
  account TEXT NOT NULL,
  currency TEXT NOT NULL,
  amount_minor INTEGER NOT NULL
);
CREATE INDEX postings_entry ON postings(entry_id);
CREATE INDEX postings_account ON postings(account, currency);

CREATE TABLE merchant_events(
  id TEXT PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  type TEXT NOT NULL,
  data_json TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE INDEX merchant_events_newest ON merchant_events(merchant_id, created_ms DESC, id DESC);

CREATE TABLE webhook_endpoints(
  id TEXT PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  url TEXT NOT NULL,
  secret TEXT NOT NULL,
  enabled_events TEXT NOT NULL DEFAULT '[]',
  created_ms INTEGER NOT NULL,
  deleted_ms INTEGER
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints(merchant_id);

CREATE TABLE webhook_deliveries(
  id TEXT PRIMARY KEY,
  event_id TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  merchant_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('pending','succeeded','failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  last_http_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  dead_letters INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_ms);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, status);
)SQL",
    // 2: maintained balances (SPEC §5: "balances are maintained, never recomputed by
    // summing postings"): every posting adds to its account's row in the same
    // transaction; refunds still processing are reserved on their payment and per
    // merchant and currency, so refund admission and GET /v1/balance read one row each.
    // Backfilled from the rows of version 1.
    R"SQL(
CREATE TABLE account_balances(
  account TEXT NOT NULL,
  currency TEXT NOT NULL,
  amount_minor INTEGER NOT NULL,
  PRIMARY KEY(account, currency)
) WITHOUT ROWID;
INSERT INTO account_balances(account, currency, amount_minor)
  SELECT account, currency, SUM(amount_minor) FROM postings GROUP BY account, currency;

ALTER TABLE payments ADD COLUMN amount_refunding_minor INTEGER NOT NULL DEFAULT 0;
UPDATE payments SET amount_refunding_minor =
  (SELECT COALESCE(SUM(r.amount_minor), 0) FROM refunds r WHERE r.payment_id = payments.id AND r.status = 'processing')
  WHERE id IN (SELECT payment_id FROM refunds WHERE status = 'processing');

CREATE TABLE refund_reservations(
  merchant_id TEXT NOT NULL,
  currency TEXT NOT NULL,
  amount_minor INTEGER NOT NULL,
  PRIMARY KEY(merchant_id, currency)
) WITHOUT ROWID;
INSERT INTO refund_reservations(merchant_id, currency, amount_minor)
  SELECT merchant_id, currency, SUM(amount_minor) FROM refunds WHERE status = 'processing'
  GROUP BY merchant_id, currency;
)SQL",
    // 3: the log-first engine (--engine log): the log position its projection has
    // reached (written in the same transaction as the rows it projected; 0 = nothing
    // projected, or no log), and the dead letters `paystream dlq replay` asked it to replay.
    R"SQL(
CREATE TABLE log_projection(
  id INTEGER PRIMARY KEY CHECK(id = 1),
  lsn INTEGER NOT NULL
);
INSERT INTO log_projection(id, lsn) VALUES(1, 0);
CREATE TABLE dead_letter_replay_requests(
  dlq_offset INTEGER PRIMARY KEY,
  requested_ms INTEGER NOT NULL
);
)SQL",
    // 4: credentials that rotate. A merchant's API keys (the one in merchants.api_key_hash
    // is the newest; a key rotated out works until expires_ms), and a webhook endpoint's
    // previous secret (signed with too until previous_secret_expires_ms) and disabled flag.
    R"SQL(
CREATE TABLE api_keys(
  key_hash TEXT PRIMARY KEY,
  merchant_id TEXT NOT NULL REFERENCES merchants(id),
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER
);
CREATE INDEX api_keys_merchant ON api_keys(merchant_id);
INSERT INTO api_keys(key_hash, merchant_id, created_ms) SELECT api_key_hash, id, created_ms FROM merchants;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
)SQL",
};

}  // namespace

Result<void> migrate(Db& db) {
  static_assert(sizeof(kSteps) / sizeof(kSteps[0]) == kSchemaVersion);
  int version = 0;
  {
    auto q = db.query("PRAGMA user_version");
    if (!q) return q.error();
    auto row = q->step();
    if (!row) return row.error();
    version = *row ? int(q->i64(0)) : 0;
  }  // the statement is reset here, before writing
  if (version > kSchemaVersion)
    return Error::internal("database schema version " + std::to_string(version) +
                           " is newer than this binary's " + std::to_string(kSchemaVersion));
  for (int v = version; v < kSchemaVersion; ++v) {
    if (auto r = db.exec("BEGIN IMMEDIATE"); !r) return r;
    auto r = db.exec(kSteps[v]);
    if (r) r = db.exec("PRAGMA user_version = " + std::to_string(v + 1));
    if (r) r = db.exec("COMMIT");
    if (!r) {
      (void)db.exec("ROLLBACK");
      return r;
    }
  }
  return {};
}

}  // namespace ps::sqlite
