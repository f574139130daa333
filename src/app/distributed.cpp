// Wiring of the distributed roles (SPEC §1): `paystream gateway` and `paystream worker`.
// The same stages and API as `paystream serve`, with the Kafka, PostgreSQL and Redis
// adapters in place of SQLite and the in-process structures. Nothing else differs.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>

#include "adapters/http/http_acquirer.hpp"
#include "adapters/http/host_resolver.hpp"
#include "adapters/http/http_client.hpp"
#include "adapters/http/http_server.hpp"
#include "adapters/kafka/kafka.hpp"
#include "adapters/postgres/pg_activity_monitor.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "adapters/redis/redis.hpp"
#include "api/api.hpp"
#include "app/commands.hpp"
#include "app/dist_config.hpp"
#include "app/wiring.hpp"
#include "common/log.hpp"
#include "ports/clock.hpp"
#include "stages/stage_runner.hpp"

namespace ps::app {
using std::chrono::milliseconds;
using std::chrono::seconds;

KafkaOptions kafka_options(const DistConfig& d, const std::string& role) {
  KafkaOptions k;
  k.brokers = d.kafka_brokers;
  k.client_id = "paystream-" + role;
  k.instance_id = d.effective_instance_id(role);
  k.topic_prefix = d.topic_prefix;
  k.transaction_timeout_ms = int(d.kafka_transaction_timeout_ms);
  k.request_timeout_ms = int(d.kafka_request_timeout_ms);
  // validate() has read the password file once already; a failure now leaves the
  // properties out, and the broker refuses the connection (a clear log line either way).
  if (auto sec = d.kafka_security_properties(); sec) k.security = std::move(*sec);
  else log::error("Kafka security settings", {{"error", sec.error().message}});
  return k;
}

PgOptions pg_options(const DistConfig& d) {
  PgOptions p;
  p.url = d.postgres_url;
  p.schema = d.postgres_schema;
  p.tls = d.postgres_tls();
  p.pool_size = size_t(d.db_pool_size);
  p.statement_timeout_ms = int(d.db_statement_timeout_ms);
  p.relay_after_ms = int(d.outbox_relay_after_ms);
  p.publish_wait_ms = int(d.intake_publish_wait_ms);
  return p;
}

Result<std::unique_ptr<RedisClient>> open_redis(const DistConfig& d, const std::string& url,
                                                const std::string& name) {
  RedisOptions r;
  r.url = url;
  r.name = name;
  r.key_prefix = d.redis_prefix;
  r.timeout_ms = int(d.redis_timeout_ms);
  r.pool_size = size_t(d.redis_pool_size);
  auto client = RedisClient::open(r);
  if (!client) return client.error();
  // Refuse to start without Redis: caches must be warm before /readyz turns true.
  if (auto p = (*client)->ping(); !p) return p.error();
  return client;
}

namespace {

int config_error(const char* role, const Error& e) {
  std::cerr << "paystream " << role << ": " << e.message << "\n";
  return 2;
}

// With TLS or SASL, credentials and certificates the brokers refuse are a configuration
// error at start-up (exit 2), not an endless stream of retries behind a ready process.
Result<void> check_kafka_access(const DistConfig& d, const std::string& role) {
  auto sec = d.kafka_security_properties();
  if (!sec || sec->empty()) return ok();  // plaintext: nothing to refuse
  return check_broker_access(kafka_options(d, role), milliseconds(std::max<int64_t>(d.kafka_request_timeout_ms, 1000)));
}

int startup_error(const char* what, const Error& e) {
  log::error(what, {{"error", e.message}});
  return 1;
}

}  // namespace

int run_gateway(const ServeConfig& cfg, const DistConfig& d) {
  apply_log_level(cfg.log_level);
  if (auto v = cfg.validate(); !v) return config_error("gateway", v.error());
  if (auto v = d.validate({true, true, true}); !v) return config_error("gateway", v.error());
  const char* admin_env = std::getenv("PAYSTREAM_ADMIN_KEY");
  if (!admin_env || !*admin_env)
    return config_error("gateway", Error::invalid("config_invalid",
        "PAYSTREAM_ADMIN_KEY is required (gateways are stateless: every gateway needs the same admin key)", "admin_key"));
  if (auto k = check_admin_key(admin_env); !k) return config_error("gateway", k.error());
  if (auto a = check_kafka_access(d, "gateway"); !a) return config_error("gateway", a.error());
  sigset_t signals = block_shutdown_signals();
  SystemClock clock;
  log_webhook_targets(cfg);

  auto publisher = KafkaPublisher::open(kafka_options(d, "gateway"));
  if (!publisher) return startup_error("cannot open Kafka producer", publisher.error());
  PgOptions po = pg_options(d);
  po.relay_interval_ms = 1000;  // every gateway relays the outbox (SKIP LOCKED shares it)
  po.listen_terminal = true;    // Prefer: wait
  auto store = PgStore::open(po, clock, **publisher);
  if (!store) return startup_error("cannot open PostgreSQL store", store.error());
  auto durable = open_redis(d, d.redis_url, "durable");
  if (!durable) return startup_error("cannot open Redis (durable)", durable.error());
  auto cache = open_redis(d, d.redis_cache_url, "cache");
  if (!cache) return startup_error("cannot open Redis (cache)", cache.error());

  RedisIdempotencyCache idempotency(**durable, seconds(cfg.idempotency_ttl_s),
                                    milliseconds(d.idempotency_in_flight_lease_ms));
  RedisRateLimiter rate_limiter(**durable);
  RedisCachedMerchants merchants(**store, **cache, seconds(d.session_ttl_s));
  RedisCachedPayments payments(**store, **cache, seconds(d.status_processing_ttl_s), seconds(d.status_terminal_ttl_s));
  // The gateway only ever writes payments in `processing`, which the cache never serves:
  // no write-through here, so the intake writer thread makes no Redis calls.
  (*store)->set_payment_change_listener([&payments](const std::vector<Payment>& changed) {
    std::vector<Payment> terminal;
    for (const auto& p : changed)
      if (p.status != PaymentStatus::processing) terminal.push_back(p);
    if (!terminal.empty()) payments.put(terminal);
  });
  RedisEvictionsMonitor evictions({durable->get(), cache->get()}, std::chrono::seconds(5));
  PgActivityMonitor pg_activity(d.postgres_url, std::chrono::seconds(5), d.postgres_tls());  // lock contention

  Api api(ApiDeps{**store, payments, merchants, **store, **store, **store, idempotency, rate_limiter, clock,
                  nullptr, &system_resolver()},
          api_config(cfg, admin_env));
  auto warmed_merchants = api.warm();  // the session cache, before /readyz
  if (!warmed_merchants) return startup_error("cannot warm caches", warmed_merchants.error());
  // The payment-status cache too: the newest terminal payments of every merchant (a new
  // gateway after a cache restart would otherwise send every status poll to PostgreSQL).
  {
    std::vector<std::string> ids;
    for (const auto& m : *warmed_merchants) ids.push_back(m.id);
    auto warmed = payments.warm(ids, size_t(d.status_warm_per_merchant), size_t(d.status_warm_max));
    if (!warmed) return startup_error("cannot warm the payment-status cache", warmed.error());
    log::info("payment-status cache warmed", {{"payments", std::to_string(*warmed)}, {"merchants", std::to_string(ids.size())}});
  }
  (*store)->set_terminal_listener([&api](const std::vector<std::string>& ids) { api.notify_terminal(ids); });

  HttpServerOptions http_opts = http_options(cfg);
  HttpServer server(http_opts, [&api](HttpRequest req, Respond respond) { api.handle(std::move(req), std::move(respond)); });
  auto port = server.start();
  if (!port) return startup_error("cannot listen", port.error());
  api.set_ready(true);
  log::always("listening", {{"address", http_opts.host + ":" + std::to_string(*port)}, {"role", "gateway"}});

  log::info("shutting down", {{"signal", wait_for_shutdown(signals)}});
  api.set_draining(true);
  server.stop_accepting();
  if (!server.drain(int(cfg.shutdown_timeout_ms))) log::warn("in-flight requests still running at shutdown timeout");
  server.stop();
  (*publisher)->flush(milliseconds(cfg.shutdown_timeout_ms));
  store->reset();  // before the publisher it calls back into
  log::info("stopped");
  return 0;
}

int run_worker(const ServeConfig& cfg, const DistConfig& d) {
  apply_log_level(cfg.log_level);
  if (auto v = cfg.validate(); !v) return config_error("worker", v.error());
  auto has = [&d](const char* s) { return std::find(d.stages.begin(), d.stages.end(), s) != d.stages.end(); };
  const bool needs_redis = has("fraud") || has("ledger");
  if (auto v = d.validate({true, true, needs_redis}); !v) return config_error("worker", v.error());
  std::string role = "worker";
  for (const auto& s : d.stages) role += "-" + s;
  if (auto a = check_kafka_access(d, role); !a) return config_error("worker", a.error());
  sigset_t signals = block_shutdown_signals();
  SystemClock clock;
  log_webhook_targets(cfg);

  auto publisher = KafkaPublisher::open(kafka_options(d, role));
  if (!publisher) return startup_error("cannot open Kafka producer", publisher.error());
  PgOptions po = pg_options(d);
  if (has("notifier")) po.relay_interval_ms = 1000;  // webhook dead letters go through the outbox
  auto store = PgStore::open(po, clock, **publisher);
  if (!store) return startup_error("cannot open PostgreSQL store", store.error());
  // Copies of one event (an outbox re-publish) reach each stage once: first position wins.
  auto dedup = PgEventDedup::open(po);
  if (!dedup) return startup_error("cannot open PostgreSQL event dedup", dedup.error());
  KafkaStageLogOptions lo;
  lo.kafka = kafka_options(d, role);
  lo.database_groups = {"ledger", "notifier"};
  lo.sink = store->get();
  lo.dedup = dedup->get();
  auto stage_log = KafkaStageLog::open(lo);
  if (!stage_log) return startup_error("cannot open Kafka consumer", stage_log.error());

  std::unique_ptr<RedisClient> durable, cache;
  if (has("fraud")) {
    auto r = open_redis(d, d.redis_url, "durable");
    if (!r) return startup_error("cannot open Redis (durable)", r.error());
    durable = std::move(*r);
  }
  std::unique_ptr<RedisCachedPayments> status_cache;
  if (has("ledger")) {  // write-through of payment status on change
    auto r = open_redis(d, d.redis_cache_url, "cache");
    if (!r) return startup_error("cannot open Redis (cache)", r.error());
    cache = std::move(*r);
    status_cache = std::make_unique<RedisCachedPayments>(**store, *cache, seconds(d.status_processing_ttl_s),
                                                         seconds(d.status_terminal_ttl_s));
    (*store)->set_payment_change_listener(
        [c = status_cache.get()](const std::vector<Payment>& changed) { c->put(changed); });
  }

  // Stages: exactly the objects `paystream serve` builds, on other ports.
  std::unique_ptr<RedisVelocityCounter> velocity;
  std::unique_ptr<HttpRiskProvider> risk;
  std::unique_ptr<FraudStage> fraud;
  std::unique_ptr<HttpAcquirer> acquirer;
  std::unique_ptr<ProcessorStage> processor;
  std::unique_ptr<LedgerStage> ledger;
  HttpWebhookSender webhook_sender(cfg.webhook_policy(), &system_resolver());
  std::unique_ptr<NotifierStage> notifier;
  std::unique_ptr<WebhookDispatcher> dispatcher;
  RunnerOptions run_opts;
  run_opts.batch_max = size_t(cfg.stage_batch_max);
  std::vector<std::unique_ptr<StageRunner>> runners;
  auto runner = [&](const char* group, std::vector<std::string> topics, Stage& stage) {
    runners.push_back(std::make_unique<StageRunner>(group, std::move(topics), **stage_log, stage, clock, run_opts));
  };
  const std::string t_initiated(topics::initiated), t_validated(topics::validated),
      t_settled(topics::settled), t_failed(topics::failed);
  if (has("fraud")) {
    velocity = std::make_unique<RedisVelocityCounter>(*durable);
    if (!cfg.risk_url.empty()) risk = std::make_unique<HttpRiskProvider>(cfg.risk_url);
    fraud = std::make_unique<FraudStage>(*velocity, clock, fraud_config(cfg), risk.get());
    runner("fraud", {t_initiated}, *fraud);
  }
  if (has("processor")) {
    acquirer = std::make_unique<HttpAcquirer>(d.acquirer_url);
    processor = std::make_unique<ProcessorStage>(*acquirer, clock, processor_config(cfg));
    runner("processor", {t_validated}, *processor);
  }
  if (has("ledger")) {
    ledger = std::make_unique<LedgerStage>(clock, fee_config(cfg));
    runner("ledger", {t_settled, t_failed}, *ledger);
  }
  if (has("notifier")) {
    notifier = std::make_unique<NotifierStage>(**store, clock);
    dispatcher = std::make_unique<WebhookDispatcher>(**store, webhook_sender, clock, dispatcher_options(cfg));
    runner("notifier", {t_settled, t_failed}, *notifier);
  }

  std::atomic<bool> ready{false};
  ServeConfig ops = cfg;
  ops.listen = d.metrics_listen;
  ops.http_threads = 1;
  HttpServerOptions ops_opts = http_options(ops);
  HttpServer ops_server(ops_opts, ops_handler(ready));
  auto port = ops_server.start();
  if (!port) return startup_error("cannot listen (metrics)", port.error());

  for (auto& r : runners) r->start();
  if (dispatcher) dispatcher->start();
  ready = true;
  std::string stages_list;
  for (const auto& s : d.stages) stages_list += (stages_list.empty() ? "" : ",") + s;
  log::always("listening", {{"address", ops_opts.host + ":" + std::to_string(*port)},
                          {"role", "worker"}, {"stages", stages_list}});

  log::info("shutting down", {{"signal", wait_for_shutdown(signals)}});
  ready = false;
  for (auto& r : runners) r->stop();  // each finishes and commits the batch in hand
  if (dispatcher) dispatcher->stop();
  (*stage_log)->close();
  (*publisher)->flush(milliseconds(cfg.shutdown_timeout_ms));
  ops_server.stop();
  runners.clear();
  stage_log->reset();  // it calls into the store (position sink) and the dedup
  store->reset();      // before the status cache its listener writes to
  log::info("stopped");
  return 0;
}

}  // namespace ps::app
