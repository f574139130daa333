// `paystream acquirer-sim`: wiring of AcquirerSimulator + AcquirerHttpService + HttpServer.
#include "app/acquirer_sim_server.hpp"

#include <atomic>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "adapters/http/http_server.hpp"
#include "adapters/sim/acquirer_simulator.hpp"
#include "adapters/sqlite/sqlite_db.hpp"
#include "app/wiring.hpp"
#include "common/log.hpp"

namespace ps::app {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

// Read side over the simulator's own file. One connection behind a mutex: these are
// operator/reconciliation reads, not a hot path.
class SimRecords final : public AcquirerRecords {
 public:
  explicit SimRecords(const std::string& path) : db_(sqlite::Db::open(path)) {
    if (auto r = db_->exec("PRAGMA busy_timeout=5000"); !r)
      throw std::runtime_error("acquirer-sim records: " + r.error().message);
  }

  Result<std::optional<AcquirerChargeRecord>> find_charge(const std::string& payment_id) override {
    std::lock_guard lk(mu_);
    auto q = db_->query(
        "SELECT c.payment_id, c.amount_minor, c.currency, c.source, c.approved, c.decline_code, c.calls,"
        " c.created_ms, (SELECT COALESCE(SUM(r.amount_minor), 0) FROM refunds r WHERE r.payment_id = c.payment_id)"
        " FROM charges c WHERE c.payment_id = ?");
    if (!q) return q.error();
    q->bind(1, payment_id);
    auto row = q->step();
    if (!row) return row.error();
    if (!*row) return std::optional<AcquirerChargeRecord>();
    AcquirerChargeRecord c;
    c.payment_id = q->text(0);
    c.amount_minor = q->i64(1);
    c.currency = q->text(2);
    c.source = q->text(3);
    c.approved = q->i64(4) != 0;
    c.decline_code = q->text(5);
    c.calls = q->i64(6);
    c.created_ms = q->i64(7);
    c.refunded_minor = q->i64(8);
    return std::optional<AcquirerChargeRecord>(std::move(c));
  }

  Result<AcquirerStats> stats() override {
    std::lock_guard lk(mu_);
    auto q = db_->query(
        "SELECT (SELECT COUNT(*) FROM charges), (SELECT COUNT(*) FROM refunds),"
        " (SELECT COALESCE(SUM(calls - 1), 0) FROM charges) + (SELECT COALESCE(SUM(calls - 1), 0) FROM refunds),"
        " (SELECT COUNT(*) FROM voids)");
    if (!q) return q.error();
    auto row = q->step();
    if (!row) return row.error();
    if (!*row) return Error::internal("acquirer-sim stats: no row");
    return AcquirerStats{q->i64(0), q->i64(1), q->i64(2), q->i64(3)};
  }

 private:
  std::mutex mu_;
  std::unique_ptr<sqlite::Db> db_;
};

Result<void> validate(const AcquirerSimServeConfig& c) {
  auto colon = c.listen.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return Error::invalid("listen", "--listen must be HOST:PORT", "listen");
  const std::string port = c.listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return Error::invalid("listen", "--listen port must be 0..65535", "listen");
  if (c.data_dir.empty()) return Error::invalid("data_dir", "--data-dir must not be empty", "data_dir");
  if (c.latency_ms < 0 || c.latency_ms > 600'000)
    return Error::invalid("latency_ms", "--latency-ms must be 0..600000", "latency_ms");
  if (!(c.failure_rate >= 0 && c.failure_rate <= 1))
    return Error::invalid("failure_rate", "--failure-rate must be 0..1", "failure_rate");
  if (c.threads < 1 || c.threads > 64) return Error::invalid("threads", "--threads must be 1..64", "threads");
  return ok();
}

constexpr int kDrainTimeoutMs = 15'000;

}  // namespace

std::unique_ptr<AcquirerRecords> open_acquirer_sim_records(const std::string& db_path) {
  return std::make_unique<SimRecords>(db_path);
}

int run_acquirer_sim(const AcquirerSimServeConfig& cfg) {
  apply_log_level(cfg.log_level);
  if (auto v = validate(cfg); !v) {
    std::cerr << "paystream acquirer-sim: " << v.error().message << "\n";
    return 2;
  }
  sigset_t signals = block_shutdown_signals();

  // Private at rest: the directory 0700, its files 0600.
  if (auto d = prepare_data_dir(cfg.data_dir, {"acquirer-sim.db", "acquirer-sim.db-wal", "acquirer-sim.db-shm"}); !d) {
    log::error("cannot create data dir", {{"path", cfg.data_dir}, {"error", d.error().message}});
    return 1;
  }
  AcquirerSimOptions sim_opts;
  sim_opts.db_path = (fs::path(cfg.data_dir) / "acquirer-sim.db").string();
  sim_opts.latency = milliseconds(cfg.latency_ms);
  sim_opts.failure_rate = cfg.failure_rate;
  sim_opts.seed = cfg.seed;
  std::unique_ptr<AcquirerSimulator> sim;
  std::unique_ptr<AcquirerRecords> records;
  try {
    sim = std::make_unique<AcquirerSimulator>(sim_opts);  // creates the tables
    records = open_acquirer_sim_records(sim_opts.db_path);
  } catch (const std::exception& e) {
    log::error("cannot open the simulator database", {{"path", sim_opts.db_path}, {"error", e.what()}});
    return 1;
  }

  std::atomic<bool> ready{false};
  AcquirerHttpOptions svc_opts;
  svc_opts.records = records.get();
  svc_opts.fallback = ops_handler(ready);
  auto service = std::make_unique<AcquirerHttpService>(*sim, std::move(svc_opts));

  HttpServerOptions http;
  http.host = cfg.listen.substr(0, cfg.listen.rfind(':'));
  http.port = uint16_t(std::stoul(cfg.listen.substr(cfg.listen.rfind(':') + 1)));
  http.threads = cfg.threads;
  HttpServer server(http, service->handler());
  auto port = server.start();
  if (!port) {
    log::error("cannot listen", {{"listen", cfg.listen}, {"error", port.error().message}});
    return 1;
  }
  ready = true;
  log::always("listening", {{"address", http.host + ":" + std::to_string(*port)},
                          {"data_dir", fs::absolute(cfg.data_dir).string()}});

  log::info("shutting down", {{"signal", wait_for_shutdown(signals)}});
  ready = false;
  server.stop_accepting();
  if (!server.drain(kDrainTimeoutMs)) log::warn("acquirer calls still running at shutdown timeout");
  server.stop();
  service->stop();  // joins the call workers (before the server object and the simulator go)
  records.reset();
  sim.reset();
  log::info("stopped");
  return 0;
}

}  // namespace ps::app
