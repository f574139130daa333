#include "app/dist_config.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <set>

#include "app/config.hpp"

namespace ps::app {
namespace {

template <class T>
CLI::Option* opt(CLI::App& c, const std::string& flag, T& var, const std::string& help) {
  return c.add_option(flag, var, help)->envname(env_name_for(flag))->capture_default_str();
}

bool valid_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  auto port = s.substr(colon + 1);
  return !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos &&
         std::stoul(port) <= 65535;
}

void collect_env_names(const CLI::App& app, std::set<std::string>& out) {
  for (const CLI::Option* o : app.get_options())
    if (!o->get_envname().empty()) out.insert(o->get_envname());
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    collect_env_names(*sub, out);
}

}  // namespace

void add_kafka_options(CLI::App& c, DistConfig& d) {
  opt(c, "--kafka-brokers", d.kafka_brokers, "Kafka bootstrap servers HOST:PORT[,HOST:PORT]");
  opt(c, "--topic-prefix", d.topic_prefix, "prefix of every topic and consumer group (isolation)");
  opt(c, "--instance-id", d.instance_id, "stable id of this process instance (Kafka transactional ids); default: host name");
  opt(c, "--kafka-transaction-timeout-ms", d.kafka_transaction_timeout_ms, "Kafka transaction timeout");
  opt(c, "--kafka-request-timeout-ms", d.kafka_request_timeout_ms, "Kafka produce/admin timeout");
}

void add_postgres_options(CLI::App& c, DistConfig& d) {
  opt(c, "--postgres-url", d.postgres_url, "PostgreSQL connection URL");
  opt(c, "--postgres-schema", d.postgres_schema, "PostgreSQL schema (empty: public)");
  opt(c, "--db-pool-size", d.db_pool_size, "PostgreSQL connections in the pool");
  opt(c, "--db-statement-timeout-ms", d.db_statement_timeout_ms, "PostgreSQL statement timeout");
  opt(c, "--outbox-relay-after-ms", d.outbox_relay_after_ms, "re-publish outbox events not acknowledged after this");
  opt(c, "--intake-publish-wait-ms", d.intake_publish_wait_ms,
      "longest a payment's answer waits for Kafka's acknowledgement (the committed outbox row guarantees the event)");
}

void add_redis_options(CLI::App& c, DistConfig& d) {
  opt(c, "--redis-url", d.redis_url, "Redis for idempotency and rate limits (maxmemory-policy noeviction)");
  opt(c, "--redis-cache-url", d.redis_cache_url, "Redis for sessions and payment status (LRU)");
  opt(c, "--redis-prefix", d.redis_prefix, "prefix of every Redis key");
  opt(c, "--redis-timeout-ms", d.redis_timeout_ms, "timeout of one Redis call");
  opt(c, "--redis-pool-size", d.redis_pool_size, "Redis connections per instance");
  opt(c, "--session-ttl-s", d.session_ttl_s, "lifetime of a cached API-key session");
  opt(c, "--status-processing-ttl-s", d.status_processing_ttl_s, "lifetime of a cached processing payment");
  opt(c, "--status-terminal-ttl-s", d.status_terminal_ttl_s, "lifetime of a cached terminal payment");
  opt(c, "--status-warm-per-merchant", d.status_warm_per_merchant,
      "gateway start, before /readyz: newest terminal payments per merchant put in the status cache");
  opt(c, "--status-warm-max", d.status_warm_max, "gateway start: payments put in the status cache in all (0: none)");
  opt(c, "--idempotency-in-flight-lease-ms", d.idempotency_in_flight_lease_ms,
      "a key held by a crashed gateway answers 409 at most this long");
}

void add_worker_options(CLI::App& c, DistConfig& d) {
  opt(c, "--stage", d.stages, "stages to run: fraud, processor, ledger, notifier (comma list or repeated)")
      ->delimiter(',')->required();
  opt(c, "--metrics-listen", d.metrics_listen, "HOST:PORT of /metrics, /healthz, /readyz (port 0 picks one)");
  opt(c, "--acquirer-url", d.acquirer_url, "acquirer base URL (paystream acquirer-sim), for the processor");
}

Result<void> DistConfig::validate(Needs needs) const {
  auto bad = [](std::string param, std::string msg) { return Error::invalid("config_invalid", msg, param); };
  if (needs.kafka && kafka_brokers.empty())
    return bad("kafka_brokers", "--kafka-brokers (PAYSTREAM_KAFKA_BROKERS) is required");
  if (needs.postgres && postgres_url.empty())
    return bad("postgres_url", "--postgres-url (PAYSTREAM_POSTGRES_URL) is required");
  if (needs.redis && redis_url.empty()) return bad("redis_url", "--redis-url (PAYSTREAM_REDIS_URL) is required");
  if (needs.redis && redis_cache_url.empty())
    return bad("redis_cache_url", "--redis-cache-url (PAYSTREAM_REDIS_CACHE_URL) is required");
  if (kafka_transaction_timeout_ms < 1000 || kafka_transaction_timeout_ms > 900000)
    return bad("kafka_transaction_timeout_ms", "--kafka-transaction-timeout-ms must be 1000..900000");
  if (kafka_request_timeout_ms < 100) return bad("kafka_request_timeout_ms", "--kafka-request-timeout-ms must be >= 100");
  if (db_pool_size < 1 || db_pool_size > 256) return bad("db_pool_size", "--db-pool-size must be 1..256");
  if (db_statement_timeout_ms < 100) return bad("db_statement_timeout_ms", "--db-statement-timeout-ms must be >= 100");
  if (intake_publish_wait_ms < 0 || intake_publish_wait_ms > 60000)
    return bad("intake_publish_wait_ms", "--intake-publish-wait-ms must be 0..60000");
  // The relay must not re-publish an event whose first publish may still be in flight.
  if (outbox_relay_after_ms < kafka_request_timeout_ms + 5000)
    return bad("outbox_relay_after_ms", "--outbox-relay-after-ms must exceed --kafka-request-timeout-ms by at least 5000");
  if (redis_timeout_ms < 1 || redis_timeout_ms > 60000) return bad("redis_timeout_ms", "--redis-timeout-ms must be 1..60000");
  if (redis_pool_size < 1 || redis_pool_size > 256) return bad("redis_pool_size", "--redis-pool-size must be 1..256");
  if (idempotency_in_flight_lease_ms < 1000)
    return bad("idempotency_in_flight_lease_ms", "--idempotency-in-flight-lease-ms must be >= 1000");
  if (status_warm_per_merchant < 1 || status_warm_per_merchant > 100)
    return Error::invalid("config_invalid", "--status-warm-per-merchant must be 1..100", "status_warm_per_merchant");
  if (status_warm_max < 0 || status_warm_max > 1000000)
    return Error::invalid("config_invalid", "--status-warm-max must be 0..1000000", "status_warm_max");
  if (session_ttl_s < 1 || status_processing_ttl_s < 1 || status_terminal_ttl_s < 1)
    return bad("ttl", "cache TTLs must be >= 1 s");
  static const std::set<std::string> known = {"fraud", "processor", "ledger", "notifier"};
  for (const auto& s : stages)
    if (!known.count(s)) return bad("stage", "unknown stage '" + s + "' (fraud, processor, ledger, notifier)");
  if (!stages.empty() && !valid_host_port(metrics_listen))
    return bad("metrics_listen", "--metrics-listen must be HOST:PORT");
  for (const auto& s : stages)
    if (s == "processor" && acquirer_url.empty())
      return bad("acquirer_url", "--acquirer-url is required for the processor stage");
  return ok();
}

std::string DistConfig::effective_instance_id(const std::string& role) const {
  if (!instance_id.empty()) return instance_id;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return role;
  return std::string(host) + "-" + role;
}

Result<std::string> load_config_file(int argc, char** argv, const CLI::App& app) {
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) path = argv[i + 1];
    else if (a.rfind("--config=", 0) == 0) path = a.substr(9);
  }
  if (path.empty())
    if (const char* env = std::getenv("PAYSTREAM_CONFIG"); env && *env) path = env;
  if (path.empty()) return std::string();
  std::ifstream in(path);
  if (!in) return Error::invalid("config_invalid", "cannot read config file " + path, "config");
  std::set<std::string> known;
  collect_env_names(app, known);
  known.insert("PAYSTREAM_ADMIN_KEY");  // read by the gateway directly (never a flag: keeps it out of ps)
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    line = line.substr(first);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.rfind("export ", 0) == 0) line = line.substr(7);
    auto eq = line.find('=');
    if (eq == std::string::npos)
      return Error::invalid("config_invalid", path + ":" + std::to_string(n) + ": expected KEY=value", "config");
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    if (!known.count(key))
      return Error::invalid("config_invalid", path + ":" + std::to_string(n) + ": unknown setting " + key, "config");
    setenv(key.c_str(), value.c_str(), /*overwrite=*/0);
  }
  return path;
}

}  // namespace ps::app
