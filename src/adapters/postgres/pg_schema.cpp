#include "adapters/postgres/pg_schema.hpp"

#include "adapters/postgres/pg_store.hpp"
#include "common/log.hpp"

namespace ps {
namespace {

// Step i (1-based) brings the schema from version i-1 to i. Append only; never edit.
// Money is BIGINT minor units; times are BIGINT milliseconds since the epoch; JSON kept
// as TEXT so it round-trips byte for byte (webhook bodies are signed).
const char* const kSteps[] = {
    // 1: initial schema
    R"SQL(
CREATE TABLE merchants(
  id TEXT COLLATE "C" PRIMARY KEY,
  name TEXT NOT NULL,
  api_key_hash TEXT NOT NULL UNIQUE,
  rate_limit_per_s DOUBLE PRECISION NOT NULL DEFAULT 0,
  rate_limit_burst BIGINT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL
);

CREATE TABLE payments(
  id TEXT COLLATE "C" PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
  currency TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  metadata TEXT NOT NULL DEFAULT '{}',
  status TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
  failure_code TEXT NOT NULL DEFAULT '',
  amount_refunded_minor BIGINT NOT NULL DEFAULT 0
    CHECK (amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_minor),
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  UNIQUE (merchant_id, idempotency_key)
);
-- GET /v1/payments, newest first, with and without a status filter.
CREATE INDEX payments_newest ON payments(merchant_id, created_ms DESC, id DESC);
CREATE INDEX payments_status_newest ON payments(merchant_id, status, created_ms DESC, id DESC);
-- Reconciliation counts by status (terminal vs processing).
CREATE INDEX payments_status ON payments(status);

CREATE TABLE refunds(
  id TEXT COLLATE "C" PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments(id),
  merchant_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
  currency TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
  failure_code TEXT NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds(payment_id, status);
CREATE INDEX refunds_merchant_processing ON refunds(merchant_id, currency) WHERE status = 'processing';

CREATE TABLE idempotency(
  merchant_id TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  http_status INT NOT NULL,
  response_body TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  PRIMARY KEY (merchant_id, key)
);

CREATE TABLE journal_entries(
  id TEXT COLLATE "C" PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('settlement', 'refund')),
  merchant_id TEXT NOT NULL,
  payment_id TEXT NOT NULL,
  refund_id TEXT,
  created_ms BIGINT NOT NULL
);
-- At most one settlement per payment and one reversal per refund, whatever the writer.
CREATE UNIQUE INDEX journal_one_settlement ON journal_entries(payment_id) WHERE kind = 'settlement';
CREATE UNIQUE INDEX journal_one_reversal ON journal_entries(refund_id) WHERE kind = 'refund';
CREATE INDEX journal_payment ON journal_entries(payment_id, created_ms);

CREATE TABLE postings(
  entry_id TEXT NOT NULL REFERENCES journal_entries(id),
  seq INT NOT NULL,
  account TEXT NOT NULL,
  currency TEXT NOT NULL,
  amount_minor BIGINT NOT NULL,
  PRIMARY KEY (entry_id, seq)
);
-- Balances: postings of merchant:<id>:available per currency.
CREATE INDEX postings_account ON postings(account, currency);

CREATE TABLE merchant_events(
  id TEXT COLLATE "C" PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  type TEXT NOT NULL,
  data_json TEXT NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX merchant_events_newest ON merchant_events(merchant_id, created_ms DESC, id DESC);

CREATE TABLE webhook_endpoints(
  id TEXT COLLATE "C" PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  url TEXT NOT NULL,
  secret TEXT NOT NULL,
  enabled_events TEXT NOT NULL DEFAULT '[]',
  created_ms BIGINT NOT NULL,
  deleted_ms BIGINT
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints(merchant_id, created_ms, id)
  WHERE deleted_ms IS NULL;

CREATE TABLE webhook_deliveries(
  id TEXT COLLATE "C" PRIMARY KEY,
  event_id TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  merchant_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_ms BIGINT NOT NULL DEFAULT 0,
  last_http_status INT NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  dead_letters INT NOT NULL DEFAULT 0
);
-- The notifier's due scan and the endpoint deletion both look at pending rows only.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_ms, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id) WHERE status = 'pending';

-- Transactional outbox: events (and webhook dead letters) committed with the state change,
-- deleted once the bus acknowledged them; the relay re-publishes what is left.
CREATE TABLE outbox(
  id BIGSERIAL PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('event', 'dead_letter')),
  payload TEXT NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX outbox_created ON outbox(created_ms, id);

-- Positions of the database-sink consumer groups (ledger, notifier), stored in the same
-- transaction as their effects.
CREATE TABLE consumer_positions(
  group_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INT NOT NULL,
  next_offset BIGINT NOT NULL,
  PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE dlq_replays(
  position BIGINT PRIMARY KEY,
  replayed_ms BIGINT NOT NULL
);
)SQL",
    // 2: the first copy of each event per consumer group (PgEventDedup): Kafka may hold an
    // event twice (outbox relay), and only the copy at the stored position is processed.
    R"SQL(
CREATE TABLE event_firsts(
  group_id TEXT COLLATE "C" NOT NULL,
  event_id TEXT COLLATE "C" NOT NULL,
  topic TEXT NOT NULL,
  partition INT NOT NULL,
  "offset" BIGINT NOT NULL,
  seen_ms BIGINT NOT NULL,
  PRIMARY KEY (group_id, event_id)
);
-- Retention purge: oldest first.
CREATE INDEX event_firsts_seen ON event_firsts(seen_ms);
)SQL",
    // 3: credentials that rotate. A merchant's API keys (the one in merchants.api_key_hash
    // is the newest; a key rotated out works until expires_ms), and a webhook endpoint's
    // previous secret (signed with too until previous_secret_expires_ms) and disabled flag.
    R"SQL(
CREATE TABLE api_keys(
  key_hash TEXT COLLATE "C" PRIMARY KEY,
  merchant_id TEXT NOT NULL REFERENCES merchants(id),
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT
);
CREATE INDEX api_keys_merchant ON api_keys(merchant_id);
INSERT INTO api_keys(key_hash, merchant_id, created_ms) SELECT api_key_hash, id, created_ms FROM merchants;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
)SQL",
    // 4: maintained balances (SPEC §5: "balances are maintained, never recomputed by
    // summing postings"): refund admission and GET /v1/balance read one row per account
    // and currency. A statement-level trigger adds every statement's new postings to
    // their rows (one upsert per account and currency, in key order), in the database
    // rather than in the store's statements so that a binary of schema 3 still running
    // during a rolling upgrade keeps the rows right too. The function keeps the schema's
    // search_path (a writer whose session names the table with its schema still reaches
    // this schema's balances). Postings are never updated or deleted. Backfilled from the
    // postings.
    R"SQL(
CREATE TABLE account_balances(
  account TEXT COLLATE "C" NOT NULL,
  currency TEXT COLLATE "C" NOT NULL,
  amount_minor BIGINT NOT NULL,
  PRIMARY KEY (account, currency)
);
CREATE FUNCTION postings_to_balances() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
  INSERT INTO account_balances AS b(account, currency, amount_minor)
    SELECT account, currency, SUM(amount_minor) FROM new_postings
    GROUP BY account, currency ORDER BY account, currency
    ON CONFLICT (account, currency) DO UPDATE SET amount_minor = b.amount_minor + excluded.amount_minor;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER postings_to_balances AFTER INSERT ON postings
  REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT EXECUTE FUNCTION postings_to_balances();
INSERT INTO account_balances(account, currency, amount_minor)
  SELECT account, currency, SUM(amount_minor) FROM postings GROUP BY account, currency;
)SQL",
};

// Advisory lock class for migrations; the second key is a hash of the schema name.
constexpr int kMigrationLockClass = 0x70730001;

}  // namespace

namespace pg {

Result<int> stored_version(Conn& c) {
  auto t = c.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (!t) return t.error();
  if (!t->boolean(0, 0)) return 0;
  auto v = c.exec("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  if (!v) return v.error();
  return int(v->i64(0, 0));
}

}  // namespace pg

int pg_schema_version() { return pg::kSchemaVersion; }

Result<int> pg_migrate(const std::string& url, const std::string& schema, const PgTls& tls) {
  return pg::migrate_to(url, schema, tls, pg::kSchemaVersion);
}

namespace pg {

Result<int> migrate_to(const std::string& url, const std::string& schema, const PgTls& tls, int to_version) {
  static_assert(sizeof(kSteps) / sizeof(kSteps[0]) == pg::kSchemaVersion);
  if (to_version < 1 || to_version > pg::kSchemaVersion)
    return Error::invalid("schema_version_invalid", "no schema version " + std::to_string(to_version));
  pg::ConnOptions o;
  o.url = url;
  o.tls = tls;
  o.statement_timeout_ms = 60000;  // DDL may wait for locks held by running traffic
  auto cr = pg::Conn::connect(o);
  if (!cr) return cr.error();
  pg::Conn& c = **cr;
  auto fail = [&](const Error& e) -> Result<int> {
    if (c.healthy() && !c.idle()) (void)c.exec_script("ROLLBACK");
    return e;
  };
  if (auto r = c.exec_script("BEGIN"); !r) return fail(r.error());
  // Serialises concurrent migrators of the same schema until COMMIT (also CREATE SCHEMA,
  // which is not safe to race).
  if (auto r = c.exec("SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))",
                      pg::Params(kMigrationLockClass, schema));
      !r)
    return fail(r.error());
  if (!schema.empty()) {
    std::string q = c.quote_ident(schema);
    if (auto r = c.exec_script("CREATE SCHEMA IF NOT EXISTS " + q + "; SET LOCAL search_path = " + q); !r)
      return fail(r.error());
  }
  if (auto r = c.exec_script(
          "CREATE TABLE IF NOT EXISTS schema_migrations("
          "version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())");
      !r)
    return fail(r.error());
  auto v = pg::stored_version(c);
  if (!v) return fail(v.error());
  const int from = *v;
  if (from > pg::kSchemaVersion)
    return fail(Error::internal("database schema version " + std::to_string(from) + " is newer than this binary's " +
                                std::to_string(pg::kSchemaVersion)));
  for (int step = from; step < to_version; ++step) {
    if (auto r = c.exec_script(kSteps[step]); !r) return fail(r.error());
    if (auto r = c.exec("INSERT INTO schema_migrations(version) VALUES($1)", pg::Params(step + 1)); !r)
      return fail(r.error());
  }
  if (auto r = c.exec_script("COMMIT"); !r) return fail(r.error());
  if (from < to_version)
    log::info("database migrated", {{"schema", schema.empty() ? "(default)" : schema},
                                    {"from_version", std::to_string(from)},
                                    {"to_version", std::to_string(to_version)}});
  return std::max(from, to_version);
}

}  // namespace pg
}  // namespace ps
