// paystream: one binary, every role (SPEC §1). `paystream serve` runs the embedded shape;
// gateway, worker and acquirer-sim are the processes of the distributed shape.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include "app/acquirer_sim_server.hpp"
#include "app/bench_options.hpp"
#include "app/commands.hpp"
#include "app/config.hpp"
#include "app/dist_config.hpp"
#include "bench/bench.hpp"

namespace {

// Every role accepts --config FILE (PAYSTREAM_*=value lines); load_config_file reads it
// before parsing, this only keeps the parser from rejecting the flag.
void add_config_flag(CLI::App& c, std::string& path) {
  c.add_option("--config", path, "file of PAYSTREAM_*=value lines (flags and environment win)")
      ->envname("PAYSTREAM_CONFIG");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"paystream — payment transaction platform"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "paystream 0.1.0");
  std::string config_path;

  ps::app::ServeConfig serve_cfg;
  auto* serve = app.add_subcommand("serve", "run every role in one process (embedded shape, SQLite)");
  ps::app::add_serve_options(*serve, serve_cfg);
  add_config_flag(*serve, config_path);

  // --- distributed roles ---------------------------------------------------------------
  ps::app::ServeConfig gw_cfg;
  ps::app::DistConfig gw_dist;
  auto* gateway = app.add_subcommand("gateway", "HTTP API: auth, rate limits, idempotency; appends to tx.initiated");
  ps::app::add_http_options(*gateway, gw_cfg);
  ps::app::add_api_options(*gateway, gw_cfg);
  ps::app::add_webhook_target_options(*gateway, gw_cfg);
  ps::app::add_log_options(*gateway, gw_cfg);
  ps::app::add_kafka_options(*gateway, gw_dist);
  ps::app::add_postgres_options(*gateway, gw_dist);
  ps::app::add_redis_options(*gateway, gw_dist);
  add_config_flag(*gateway, config_path);

  ps::app::ServeConfig wk_cfg;
  ps::app::DistConfig wk_dist;
  auto* worker = app.add_subcommand("worker", "pipeline stages over Kafka: fraud, processor, ledger, notifier");
  ps::app::add_worker_options(*worker, wk_dist);
  ps::app::add_stage_options(*worker, wk_cfg);
  ps::app::add_webhook_target_options(*worker, wk_cfg);
  ps::app::add_log_options(*worker, wk_cfg);
  ps::app::add_kafka_options(*worker, wk_dist);
  ps::app::add_postgres_options(*worker, wk_dist);
  ps::app::add_redis_options(*worker, wk_dist);
  add_config_flag(*worker, config_path);

  ps::app::AcquirerSimServeConfig sim_cfg;
  auto* sim = app.add_subcommand("acquirer-sim", "the deterministic acquirer simulator over HTTP");
  sim->add_option("--listen", sim_cfg.listen, "HOST:PORT (port 0 picks a free port)")
      ->envname("PAYSTREAM_SIM_LISTEN")->capture_default_str();
  sim->add_option("--data-dir", sim_cfg.data_dir, "directory of the simulator's SQLite file")
      ->envname("PAYSTREAM_SIM_DATA_DIR")->capture_default_str();
  sim->add_option("--latency-ms", sim_cfg.latency_ms, "latency added to every answer")
      ->envname("PAYSTREAM_SIM_LATENCY_MS")->check(CLI::Range(int64_t(0), int64_t(600000)))->capture_default_str();
  sim->add_option("--failure-rate", sim_cfg.failure_rate, "share of calls failing transiently, 0..1")
      ->envname("PAYSTREAM_SIM_FAILURE_RATE")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sim->add_option("--seed", sim_cfg.seed, "random seed")->envname("PAYSTREAM_SIM_SEED")->capture_default_str();
  sim->add_option("--threads", sim_cfg.threads, "HTTP threads")->check(CLI::Range(1, 64))->capture_default_str();
  sim->add_option("--log-level", sim_cfg.log_level, "debug|info|warn|error")->capture_default_str();
  add_config_flag(*sim, config_path);

  ps::app::DistConfig mig_dist;
  auto* migrate = app.add_subcommand("migrate", "apply the PostgreSQL schema migrations (idempotent)");
  ps::app::add_postgres_options(*migrate, mig_dist);
  add_config_flag(*migrate, config_path);

  ps::app::DistConfig topics_dist;
  auto* topics = app.add_subcommand("topics", "Kafka topics of the pipeline");
  topics->require_subcommand(1);
  ps::app::TopicsCreateOptions topics_opts = ps::app::default_topics_create_options();
  auto* topics_create = topics->add_subcommand("create", "create tx.initiated, tx.validated, tx.settled, tx.failed, tx.dlq (idempotent)");
  topics_create->add_option("--partitions", topics_opts.partitions, "partitions per topic")
      ->envname("PAYSTREAM_TOPIC_PARTITIONS")->check(CLI::Range(1, 1000))->capture_default_str();
  topics_create->add_option("--replication-factor", topics_opts.replication_factor, "replicas per partition (3 in production)")
      ->envname("PAYSTREAM_TOPIC_REPLICATION_FACTOR")->check(CLI::Range(1, 16))->capture_default_str();
  topics_create->add_option("--min-insync-replicas", topics_opts.min_insync_replicas,
                            "min.insync.replicas of every topic (0: 2 with 3 or more replicas, else 1)")
      ->envname("PAYSTREAM_TOPIC_MIN_INSYNC_REPLICAS")->check(CLI::Range(0, 16))->capture_default_str();
  topics_create->add_option("--dlq-retention-ms", topics_opts.dlq_retention_ms,
                            "retention.ms of tx.dlq: how long a dead letter can be replayed (-1: for ever)")
      ->envname("PAYSTREAM_DLQ_RETENTION_MS")->capture_default_str();
  std::string raw_topic, raw_key, raw_value;
  std::vector<std::string> raw_headers;
  auto* topics_raw = topics->add_subcommand("produce-raw", "append raw bytes to a topic (testing bad input)");
  topics_raw->add_option("--topic", raw_topic, "topic name without prefix, e.g. tx.initiated")->required();
  topics_raw->add_option("--key", raw_key, "message key");
  topics_raw->add_option("--value", raw_value, "message value (bytes as given)");
  topics_raw->add_option("--header", raw_headers, "NAME=VALUE (repeatable)");
  for (auto* c : {topics_create, topics_raw}) {
    ps::app::add_kafka_options(*c, topics_dist);
    add_config_flag(*c, config_path);
  }

  // --- dead letters (both shapes) --------------------------------------------------------
  std::string dlq_dir = "./paystream-data";
  ps::app::DlqCommand dlq_cmd;
  ps::app::DistConfig dlq_dist;
  std::string dlq_shape;
  auto* dlq = app.add_subcommand("dlq", "inspect and replay dead letters");
  dlq->require_subcommand(1);
  auto* dlq_list = dlq->add_subcommand("list", "list dead letters, one JSON object per line");
  dlq_list->add_option("--limit", dlq_cmd.limit, "most letters to list")->check(CLI::Range(1, 100000));
  auto* dlq_show = dlq->add_subcommand("show", "show one dead letter with its original event");
  dlq_show->add_option("offset", dlq_cmd.offset, "position of the letter in tx.dlq")->required();
  auto* dlq_replay = dlq->add_subcommand("replay", "append the original event to its topic again");
  dlq_replay->add_option("offset", dlq_cmd.offset, "position of the letter in tx.dlq")->required();
  std::vector<CLI::Option*> dir_opts;
  for (auto* c : {dlq_list, dlq_show, dlq_replay}) {
    dir_opts.push_back(c->add_option("--data-dir", dlq_dir, "data directory of the embedded store")
                           ->envname("PAYSTREAM_DATA_DIR")->capture_default_str());
    c->add_option("--shape", dlq_shape,
                  "embedded or distributed (default: distributed when PAYSTREAM_KAFKA_BROKERS is set and no --data-dir)")
        ->check(CLI::IsMember({"embedded", "distributed"}));
    ps::app::add_kafka_options(*c, dlq_dist);
    ps::app::add_postgres_options(*c, dlq_dist);
    add_config_flag(*c, config_path);
  }

  auto* routes = app.add_subcommand("routes", "print the HTTP routes as JSON");

  ps::bench::BenchConfig bench_cfg;
  auto* bench = app.add_subcommand("bench", "open-loop load generator of the API, with reconciliation");
  ps::app::add_bench_options(*bench, bench_cfg);

  if (auto loaded = ps::app::load_config_file(argc, argv, app); !loaded) {
    std::cerr << "paystream: " << loaded.error().message << "\n";
    return 2;
  }
  CLI11_PARSE(app, argc, argv);

  if (serve->parsed()) return ps::app::run_serve(serve_cfg);
  if (gateway->parsed()) return ps::app::run_gateway(gw_cfg, gw_dist);
  if (worker->parsed()) return ps::app::run_worker(wk_cfg, wk_dist);
  if (sim->parsed()) return ps::app::run_acquirer_sim(sim_cfg);
  if (migrate->parsed()) return ps::app::run_migrate(mig_dist);
  if (topics_create->parsed()) return ps::app::run_topics_create(topics_dist, topics_opts);
  if (topics_raw->parsed())
    return ps::app::run_topics_produce_raw(topics_dist, raw_topic, raw_key, raw_value, raw_headers);
  for (auto* c : {dlq_list, dlq_show, dlq_replay}) {
    if (!c->parsed()) continue;
    dlq_cmd.action = c == dlq_list ? ps::app::DlqCommand::Action::list
                     : c == dlq_show ? ps::app::DlqCommand::Action::show
                                     : ps::app::DlqCommand::Action::replay;
    bool dir_given = false;
    for (auto* o : dir_opts) dir_given = dir_given || o->count() > 0;
    bool distributed = dlq_shape == "distributed" ||
                       (dlq_shape.empty() && !dir_given && !dlq_dist.kafka_brokers.empty());
    return ps::app::run_dlq(dlq_cmd, dlq_dir, distributed ? &dlq_dist : nullptr);
  }
  if (routes->parsed()) return ps::app::run_routes();
  if (bench->parsed()) return ps::bench::run_bench(bench_cfg);
  return 2;
}
