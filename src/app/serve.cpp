// The one place that chooses adapters and wires them to the stages and the API for the
// embedded shape. Start order: store, simulator, API (warmed), HTTP, stages; stop order
// is the reverse, draining first (SPEC §7).
#include <boost/json.hpp>
#include <filesystem>
#include <iostream>
#include <memory>

#include "adapters/http/host_resolver.hpp"
#include "adapters/http/http_client.hpp"
#include "adapters/http/http_server.hpp"
#include "adapters/memory/idempotency_cache.hpp"
#include "adapters/memory/rate_limiter.hpp"
#include "adapters/memory/velocity_counter.hpp"
#include "adapters/sim/acquirer_simulator.hpp"
#include "adapters/embedded/log_engine.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "api/api.hpp"
#include "app/commands.hpp"
#include "app/config.hpp"
#include "app/wiring.hpp"
#include "common/log.hpp"
#include "domain/pipeline_backlog.hpp"
#include "ports/clock.hpp"
#include "stages/fraud_stage.hpp"
#include "stages/ledger_stage.hpp"
#include "stages/notifier_stage.hpp"
#include "stages/processor_stage.hpp"
#include "stages/stage_runner.hpp"

namespace ps::app {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

int run_serve(const ServeConfig& cfg) {
  apply_log_level(cfg.log_level);
  if (auto v = cfg.validate(); !v) {
    std::cerr << "paystream serve: " << v.error().message << "\n";
    return 2;
  }
  sigset_t signals = block_shutdown_signals();
  SystemClock clock;
  log_webhook_targets(cfg);

  // Private at rest: the directory 0700, every file in it 0600.
  if (auto d = prepare_data_dir(cfg.data_dir, {"paystream.db", "paystream.db-wal", "paystream.db-shm",
                                               "acquirer-sim.db", "acquirer-sim.db-wal", "acquirer-sim.db-shm",
                                               "admin.key"});
      !d) {
    log::error("cannot create data dir", {{"path", cfg.data_dir}, {"error", d.error().message}});
    return 1;
  }
  std::string admin_key;
  try {
    admin_key = load_or_create_admin_key(cfg.data_dir);
  } catch (const std::exception& e) {
    log::error("admin key", {{"error", e.what()}});
    return 1;
  }
  if (auto k = check_admin_key(admin_key); !k) {
    std::cerr << "paystream serve: " << k.error().message << "\n";
    return 2;
  }

  // --- adapters -------------------------------------------------------------------
  SqliteOptions store_opts;
  store_opts.path = (fs::path(cfg.data_dir) / "paystream.db").string();
  store_opts.sync_full = cfg.fsync;
  store_opts.max_batch = size_t(cfg.store_max_batch);
  store_opts.max_queue = size_t(cfg.store_max_queue);
  // The engine's projection writes the same hot pages (balances, index roots) many times a
  // second: checkpointing them every 500 ms instead of 25 ms copies each once per interval.
  if (cfg.engine == "log") store_opts.checkpoint_interval_ms = 500;
  if (cfg.engine == "sqlite" && fs::exists(fs::path(cfg.data_dir) / "engine-log")) {
    // The log engine's stages keep their records in its log, which this engine never reads.
    log::error("this data dir is run by the log engine; start it with --engine log (switching back is not supported)",
               {{"data_dir", cfg.data_dir}});
    return 1;
  }
  auto opened = SqliteStore::open(store_opts, clock);
  if (!opened) {
    log::error("cannot open store", {{"path", store_opts.path}, {"error", opened.error().message}});
    return 1;
  }
  std::unique_ptr<SqliteStore> store = std::move(opened.value());
  AcquirerSimOptions sim_opts;
  sim_opts.db_path = (fs::path(cfg.data_dir) / "acquirer-sim.db").string();
  sim_opts.latency = milliseconds(cfg.acquirer_latency_ms);
  sim_opts.failure_rate = cfg.acquirer_failure_rate;
  sim_opts.seed = cfg.acquirer_seed;
  sim_opts.sync_full = cfg.fsync;
  auto acquirer = std::make_unique<AcquirerSimulator>(sim_opts);

  InMemoryIdempotencyCache idempotency(std::chrono::seconds(cfg.idempotency_ttl_s));
  InMemoryRateLimiter rate_limiter;
  InMemoryVelocityCounter velocity;
  HttpWebhookSender webhook_sender(cfg.webhook_policy(), &system_resolver());
  std::unique_ptr<HttpRiskProvider> risk;
  if (!cfg.risk_url.empty()) risk = std::make_unique<HttpRiskProvider>(cfg.risk_url);

  // --- stages ---------------------------------------------------------------------
  FraudStage fraud(velocity, clock, fraud_config(cfg), risk.get());

  ProcessorStage processor(*acquirer, clock, processor_config(cfg));

  LedgerStage ledger(clock, fee_config(cfg));

  NotifierStage notifier(*store, clock);
  WebhookDispatcher dispatcher(*store, webhook_sender, clock, dispatcher_options(cfg));

  // --- engine ---------------------------------------------------------------------
  // Intake admission: the backlog of the stages that take a payment to a terminal status.
  auto topic = [](std::string_view t) { return std::string(t); };
  PipelineBacklog backlog({{"fraud", {topic(topics::initiated)}},
                           {"processor", {topic(topics::validated)}},
                           {"ledger", {topic(topics::settled), topic(topics::failed)}}});
  wal::PosixLogFs log_fs;
  std::unique_ptr<LogEngine> engine;
  std::unique_ptr<EngineStageLog> engine_log;
  std::unique_ptr<EngineQueries> engine_queries;
  if (cfg.engine == "log") {
    LogEngineOptions eo;
    eo.log.dir = (fs::path(cfg.data_dir) / "engine-log").string();
    eo.log.sync = cfg.fsync;
    eo.backlog = &backlog;
    eo.groups = {{"fraud", {topic(topics::initiated)}},
                 {"processor", {topic(topics::validated)}},
                 {"ledger", {topic(topics::settled), topic(topics::failed)}},
                 {"notifier", {topic(topics::settled), topic(topics::failed)}}};
    auto e = LogEngine::open(eo, log_fs, *store, clock);
    if (!e) {
      log::error("cannot open the engine log", {{"dir", eo.log.dir}, {"error", e.error().message}});
      return 1;
    }
    engine = std::move(e.value());
    engine_log = std::make_unique<EngineStageLog>(*engine);
    engine_queries = std::make_unique<EngineQueries>(*engine);
  } else if (auto b = store->attach_backlog(backlog); !b) {
    log::error("cannot load the pipeline backlog", {{"error", b.error().message}});
    return 1;
  }
  StageLog& stage_log = engine_log ? static_cast<StageLog&>(*engine_log) : *store;
  IntakeStore& intake = engine ? static_cast<IntakeStore&>(*engine) : *store;
  PaymentQueries& payment_queries = engine_queries ? static_cast<PaymentQueries&>(*engine_queries) : *store;
  const BacklogProbe* backlog_probe = engine ? static_cast<const BacklogProbe*>(engine.get()) : &backlog;

  RunnerOptions run_opts;
  run_opts.batch_max = size_t(cfg.stage_batch_max);
  std::vector<std::unique_ptr<StageRunner>> runners;
  runners.push_back(std::make_unique<StageRunner>("fraud", std::vector{topic(topics::initiated)}, stage_log, fraud, clock, run_opts));
  runners.push_back(std::make_unique<StageRunner>("processor", std::vector{topic(topics::validated)}, stage_log, processor, clock, run_opts));
  runners.push_back(std::make_unique<StageRunner>("ledger", std::vector{topic(topics::settled), topic(topics::failed)}, stage_log, ledger, clock, run_opts));
  runners.push_back(std::make_unique<StageRunner>("notifier", std::vector{topic(topics::settled), topic(topics::failed)}, stage_log, notifier, clock, run_opts));

  // --- API and HTTP ---------------------------------------------------------------
  ApiConfig acfg = api_config(cfg, admin_key);
  acfg.max_backlog_records = uint64_t(cfg.max_backlog_records);
  acfg.max_backlog_age_ms = cfg.max_backlog_age_ms;
  Api api(ApiDeps{intake, payment_queries, *store, *store, *store, *store, idempotency, rate_limiter, clock, backlog_probe,
                  &system_resolver()},
          std::move(acfg));
  if (auto w = api.warm(); !w) {
    log::error("cannot warm caches", {{"error", w.error().message}});
    return 1;
  }
  store->set_terminal_listener([&api](const std::vector<std::string>& ids) { api.notify_terminal(ids); });

  HttpServerOptions http_opts = http_options(cfg);
  HttpServer server(http_opts, [&api](HttpRequest req, Respond respond) { api.handle(std::move(req), std::move(respond)); });
  auto port = server.start();
  if (!port) {
    log::error("cannot listen", {{"listen", cfg.listen}, {"error", port.error().message}});
    return 1;
  }

  for (auto& r : runners) r->start();
  dispatcher.start();
  api.set_ready(true);
  log::always("listening", {{"address", http_opts.host + ":" + std::to_string(*port)},
                          {"data_dir", fs::absolute(cfg.data_dir).string()}});

  log::info("shutting down", {{"signal", wait_for_shutdown(signals)}});

  // Drain: readiness false and new requests refused, in-flight requests finish, then
  // the stages stop at a committed position.
  api.set_draining(true);
  server.stop_accepting();
  if (!server.drain(int(cfg.shutdown_timeout_ms)))
    log::warn("in-flight requests still running at shutdown timeout");
  for (auto& r : runners) r->stop();
  dispatcher.stop();
  server.stop();
  engine_queries.reset();
  engine_log.reset();
  engine.reset();
  store.reset();
  log::info("stopped");
  return 0;
}

int run_routes() {
  boost::json::array out;
  for (const auto& r : Api::routes()) {
    boost::json::object o;
    o["method"] = r.method;
    o["path"] = r.path;
    out.push_back(std::move(o));
  }
  std::cout << boost::json::serialize(out) << "\n";
  return 0;
}

}  // namespace ps::app
