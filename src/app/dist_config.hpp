// Configuration of the distributed roles (gateway, worker, migrate, topics, dlq): where
// Kafka, PostgreSQL and Redis are, and the per-process settings. Same rules as
// ServeConfig: units in option names, flags win over PAYSTREAM_* environment variables,
// which win over a --config file of PAYSTREAM_*=value lines (the format
// `deploy/local/stack env` prints). Validated at start-up.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "adapters/postgres/pg_tls.hpp"
#include "common/result.hpp"

namespace CLI { class App; }

namespace ps::app {

struct DistConfig {
  // Kafka
  std::string kafka_brokers;            // PAYSTREAM_KAFKA_BROKERS, e.g. 127.0.0.1:19092
  std::string topic_prefix;             // prepended to every topic and consumer group name
  std::string instance_id;              // stable per process instance; default: host name
  int64_t kafka_transaction_timeout_ms = 10000;
  int64_t kafka_request_timeout_ms = 5000;
  // Kafka transport security (librdkafka security.protocol, ssl.*, sasl.*; docs/OPERATIONS.md)
  std::string kafka_security_protocol = "plaintext";  // plaintext, ssl, sasl_plaintext, sasl_ssl
  std::string kafka_ssl_ca_location;    // PEM CA file (or directory); empty: the system's CAs
  std::string kafka_sasl_mechanism;     // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (sasl_* only)
  std::string kafka_sasl_username;
  std::string kafka_sasl_password;      // secret: never logged, never in an error message
  std::string kafka_sasl_password_file; // or the password read from this file
  // PostgreSQL
  std::string postgres_url;             // PAYSTREAM_POSTGRES_URL
  std::string postgres_schema;          // empty: public
  std::string postgres_sslmode;         // empty: the URL's sslmode, else libpq's default (prefer)
  std::string postgres_sslrootcert;     // PEM CA file; required with verify-ca / verify-full
  int64_t db_pool_size = 8;
  int64_t db_statement_timeout_ms = 5000;
  int64_t intake_publish_wait_ms = 1000;  // then 202 anyway: the outbox row guarantees the event
  int64_t outbox_relay_after_ms = 30000;  // > kafka_request_timeout_ms: never races the first publish
  // Redis
  std::string redis_url;                // durable instance (noeviction)
  std::string redis_cache_url;          // cache instance (allkeys-lru)
  std::string redis_prefix = "ps:";
  int64_t redis_timeout_ms = 250;
  int64_t redis_pool_size = 8;
  int64_t session_ttl_s = 3600;
  int64_t status_processing_ttl_s = 30;
  int64_t status_terminal_ttl_s = 300;   // bounds staleness if a write-through and its DEL both fail
  int64_t status_warm_per_merchant = 20;  // gateway start: newest terminal payments cached per merchant
  int64_t status_warm_max = 10000;        // ... and in all (0: no warm-up)
  int64_t idempotency_in_flight_lease_ms = 15000;  // a crashed gateway pins a key at most this long
  // Workers
  std::vector<std::string> stages;      // fraud, processor, ledger, notifier
  std::string metrics_listen = "127.0.0.1:9100";
  std::string acquirer_url;             // the processor's acquirer (paystream acquirer-sim)

  struct Needs { bool kafka = false, postgres = false, redis = false; };
  Result<void> validate(Needs needs) const;
  // The librdkafka properties of the security options (the password read from
  // --kafka-sasl-password-file if that is set); empty for plaintext.
  Result<std::map<std::string, std::string>> kafka_security_properties() const;
  PgTls postgres_tls() const { return {postgres_sslmode, postgres_sslrootcert}; }
  std::string effective_instance_id(const std::string& role) const;

 private:
  Result<void> validate_transport_security(Needs needs) const;
};

void add_kafka_options(CLI::App& cmd, DistConfig& cfg);
void add_postgres_options(CLI::App& cmd, DistConfig& cfg);
void add_redis_options(CLI::App& cmd, DistConfig& cfg);
void add_worker_options(CLI::App& cmd, DistConfig& cfg);

// Loads `--config FILE` (or PAYSTREAM_CONFIG) before the command line is parsed: every
// PAYSTREAM_KEY=value line becomes an environment variable unless that variable is set
// already. Blank lines and lines starting with '#' are skipped; a key that no option of
// `app` reads is an error (a typo must not be ignored). Returns the file loaded, if any.
Result<std::string> load_config_file(int argc, char** argv, const CLI::App& app);

}  // namespace ps::app
