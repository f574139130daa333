#include "app/dist_config.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <tuple>

#include "adapters/kafka/kafka.hpp"
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

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

bool readable(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

// A secret read from a file: the first line, without its line end (a trailing newline is
// what `echo pw > file` and Kubernetes secrets from literals leave). Empty if unreadable.
std::optional<std::string> read_secret_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  return line;
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
  opt(c, "--kafka-security-protocol", d.kafka_security_protocol,
      "Kafka transport: plaintext, ssl (TLS), sasl_plaintext, sasl_ssl (SASL over TLS)");
  opt(c, "--kafka-ssl-ca-location", d.kafka_ssl_ca_location,
      "PEM file of the CA(s) the brokers' certificates must chain to (ssl, sasl_ssl; default: the system's CAs)");
  opt(c, "--kafka-sasl-mechanism", d.kafka_sasl_mechanism, "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (sasl_*)");
  opt(c, "--kafka-sasl-username", d.kafka_sasl_username, "SASL user name (sasl_*)");
  // No default shown, and better given through the environment or a file: a flag's value
  // is visible to every user of the host in the process list.
  c.add_option("--kafka-sasl-password", d.kafka_sasl_password,
               "SASL password (sasl_*); prefer PAYSTREAM_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file")
      ->envname(env_name_for("--kafka-sasl-password"));
  opt(c, "--kafka-sasl-password-file", d.kafka_sasl_password_file,
      "file whose first line is the SASL password (instead of --kafka-sasl-password)");
}

void add_postgres_options(CLI::App& c, DistConfig& d) {
  opt(c, "--postgres-url", d.postgres_url, "PostgreSQL connection URL");
  opt(c, "--postgres-schema", d.postgres_schema, "PostgreSQL schema (empty: public)");
  opt(c, "--postgres-sslmode", d.postgres_sslmode,
      "libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full (overrides the URL's; empty: the URL's, else prefer)");
  opt(c, "--postgres-sslrootcert", d.postgres_sslrootcert,
      "PEM file of the CA(s) the server certificate must chain to (overrides the URL's; required with verify-ca/verify-full)");
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
  if (auto t = validate_transport_security(needs); !t) return t;
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

Result<void> DistConfig::validate_transport_security(Needs needs) const {
  auto bad = [](std::string param, std::string msg) { return Error::invalid("config_invalid", msg, param); };
  // Kafka. librdkafka takes the protocol in either case; the rules below compare lower case.
  const std::string proto = lower(kafka_security_protocol);
  static const std::set<std::string> protocols = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
  if (!protocols.count(proto))
    return bad("kafka_security_protocol", "--kafka-security-protocol must be plaintext, ssl, sasl_plaintext or sasl_ssl (got '" +
                                              kafka_security_protocol + "')");
  const bool tls = proto == "ssl" || proto == "sasl_ssl";
  const bool sasl = proto == "sasl_plaintext" || proto == "sasl_ssl";
  if (!kafka_ssl_ca_location.empty()) {
    if (!tls)
      return bad("kafka_ssl_ca_location", "--kafka-ssl-ca-location needs --kafka-security-protocol ssl or sasl_ssl (it is " + proto + ")");
    if (!readable(kafka_ssl_ca_location))
      return bad("kafka_ssl_ca_location", "--kafka-ssl-ca-location: cannot read " + kafka_ssl_ca_location);
  }
  if (!sasl) {
    // SASL settings with a protocol that does not use them are a mistake, not a no-op.
    const char* given = !kafka_sasl_mechanism.empty()       ? "--kafka-sasl-mechanism"
                        : !kafka_sasl_username.empty()      ? "--kafka-sasl-username"
                        : !kafka_sasl_password.empty()      ? "--kafka-sasl-password"
                        : !kafka_sasl_password_file.empty() ? "--kafka-sasl-password-file"
                                                            : nullptr;
    if (given)
      return bad("kafka_security_protocol", std::string(given) + " needs --kafka-security-protocol sasl_ssl or sasl_plaintext (it is " +
                                                proto + ")");
  } else {
    static const std::set<std::string> mechanisms = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};
    if (kafka_sasl_mechanism.empty())
      return bad("kafka_sasl_mechanism", "--kafka-sasl-mechanism (PAYSTREAM_KAFKA_SASL_MECHANISM) is required with " + proto);
    if (!mechanisms.count(kafka_sasl_mechanism))
      return bad("kafka_sasl_mechanism", "--kafka-sasl-mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got '" +
                                             kafka_sasl_mechanism + "')");
    if (kafka_sasl_username.empty())
      return bad("kafka_sasl_username", "--kafka-sasl-username (PAYSTREAM_KAFKA_SASL_USERNAME) is required with " + proto);
    if (!kafka_sasl_password.empty() && !kafka_sasl_password_file.empty())
      return bad("kafka_sasl_password", "give --kafka-sasl-password or --kafka-sasl-password-file, not both");
    if (!kafka_sasl_password_file.empty()) {
      auto pw = read_secret_file(kafka_sasl_password_file);
      if (!pw) return bad("kafka_sasl_password_file", "--kafka-sasl-password-file: cannot read " + kafka_sasl_password_file);
      if (pw->empty()) return bad("kafka_sasl_password_file", "--kafka-sasl-password-file: " + kafka_sasl_password_file + " is empty");
    } else if (kafka_sasl_password.empty()) {
      return bad("kafka_sasl_password", "--kafka-sasl-password (PAYSTREAM_KAFKA_SASL_PASSWORD) or --kafka-sasl-password-file is required with " + proto);
    }
  }
  // What the rules above cannot see (an unparsable CA file, a mechanism this librdkafka
  // build lacks) fails here, at start-up, as librdkafka would when the first client opens.
  if (needs.kafka && proto != "plaintext") {
    auto props = kafka_security_properties();
    if (!props) return props.error();
    if (auto c = check_client_properties(*props); !c) {
      std::string why = c.error().message;
      // librdkafka names properties, not values; make sure a password never slips through.
      const std::string pw = props->count("sasl.password") ? props->at("sasl.password") : "";
      for (size_t at; !pw.empty() && (at = why.find(pw)) != std::string::npos;) why.replace(at, pw.size(), "***");
      const char* param = why.find("ssl.ca") != std::string::npos ? "kafka_ssl_ca_location"
                          : why.find("sasl") != std::string::npos ? "kafka_sasl_mechanism"
                                                                  : "kafka_security_protocol";
      return bad(param, "Kafka security settings rejected by librdkafka: " + why);
    }
  }
  // Redis: hiredis 0.14 (Debian 12) has no TLS. Say so instead of "must start with redis://".
  for (const auto& [param, flag, url] : {std::tuple{"redis_url", "--redis-url", &redis_url},
                                         std::tuple{"redis_cache_url", "--redis-cache-url", &redis_cache_url}})
    if (lower(*url).rfind("rediss://", 0) == 0)
      return bad(param, std::string(flag) + ": rediss:// (Redis over TLS) is not supported: Debian's hiredis 0.14 has no TLS; "
                        "keep Redis on a private segment or behind a TLS sidecar on loopback (docs/OPERATIONS.md, Transport security)");
  // PostgreSQL.
  static const std::set<std::string> sslmodes = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
  if (!postgres_sslmode.empty() && !sslmodes.count(postgres_sslmode))
    return bad("postgres_sslmode", "--postgres-sslmode must be disable, allow, prefer, require, verify-ca or verify-full (got '" +
                                       postgres_sslmode + "')");
  if (!postgres_sslrootcert.empty()) {
    if (postgres_sslmode == "disable")
      return bad("postgres_sslrootcert", "--postgres-sslrootcert has no effect with --postgres-sslmode disable");
    if (!readable(postgres_sslrootcert))
      return bad("postgres_sslrootcert", "--postgres-sslrootcert: cannot read " + postgres_sslrootcert);
  }
  if ((postgres_sslmode == "verify-ca" || postgres_sslmode == "verify-full") && postgres_sslrootcert.empty())
    return bad("postgres_sslrootcert", "--postgres-sslrootcert (PAYSTREAM_POSTGRES_SSLROOTCERT) is required with --postgres-sslmode " +
                                           postgres_sslmode);
  return ok();
}

Result<std::map<std::string, std::string>> DistConfig::kafka_security_properties() const {
  std::map<std::string, std::string> p;
  const std::string proto = lower(kafka_security_protocol);
  if (proto == "plaintext") return p;
  p["security.protocol"] = proto;
  if (proto == "ssl" || proto == "sasl_ssl") {
    // Verify the broker's host name against its certificate (librdkafka's default since
    // 2.0, set explicitly so it cannot depend on the library version).
    p["ssl.endpoint.identification.algorithm"] = "https";
    if (!kafka_ssl_ca_location.empty()) p["ssl.ca.location"] = kafka_ssl_ca_location;
  }
  if (proto == "sasl_plaintext" || proto == "sasl_ssl") {
    p["sasl.mechanisms"] = kafka_sasl_mechanism;
    p["sasl.username"] = kafka_sasl_username;
    if (!kafka_sasl_password_file.empty()) {
      auto pw = read_secret_file(kafka_sasl_password_file);
      if (!pw || pw->empty())
        return Error::invalid("config_invalid", "--kafka-sasl-password-file: cannot read " + kafka_sasl_password_file,
                              "kafka_sasl_password_file");
      p["sasl.password"] = *pw;
    } else {
      p["sasl.password"] = kafka_sasl_password;
    }
  }
  return p;
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
