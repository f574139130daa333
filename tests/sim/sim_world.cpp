#include "sim/sim_world.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "adapters/embedded/log_engine.hpp"
#include "adapters/memory/velocity_counter.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "log/fault_fs.hpp"
#include "sim/sim_externals.hpp"
#include "stages/fraud_stage.hpp"
#include "stages/ledger_stage.hpp"
#include "stages/notifier_stage.hpp"
#include "stages/processor_stage.hpp"
#include "stages/stage_runner.hpp"

namespace ps::sim {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Rows = std::vector<std::vector<std::string>>;

const std::vector<std::string> kMerchants{"mer_a", "mer_b"};
const std::vector<std::string> kCurrencies{"EUR", "USD"};
std::string url_of(const std::string& merchant) { return "https://" + merchant + ".example/hooks"; }

// A read connection to the store's database, for the invariants (SQL the store never runs).
class Db {
 public:
  explicit Db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) error_ = sqlite3_errmsg(db_);
  }
  ~Db() { sqlite3_close(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  Rows rows(const std::string& sql) {
    Rows out;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      error_ = std::string(sqlite3_errmsg(db_)) + " in " + sql;
      return out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        const unsigned char* t = sqlite3_column_text(st, i);
        row.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
      }
      out.push_back(std::move(row));
    }
    sqlite3_finalize(st);
    return out;
  }
  const std::string& error() const { return error_; }

 private:
  sqlite3* db_ = nullptr;
  std::string error_;
};

// The StageLog as the port contract allows it to behave: records of different keys in
// any order (per key in log order), and a commit refused before it changes anything
// (the records come again).
class ContractStageLog final : public StageLog {
 public:
  ContractStageLog(StageLog& inner, Rng& rng, const double& refuse_commit) : inner_(inner), rng_(rng), refuse_(refuse_commit) {}
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   milliseconds wait) override {
    auto r = inner_.poll(group, topics, max, wait);
    if (!r || r->size() < 2 || !rng_.chance(0.3)) return r;
    std::vector<size_t> order(r->size());
    std::iota(order.begin(), order.end(), 0);
    for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[size_t(rng_.between(0, int64_t(i)))]);
    std::map<std::string, std::deque<Record>> per_key;
    for (auto& rec : *r) per_key[rec.event.key].push_back(rec);
    std::vector<Record> out;
    for (size_t i : order) {
      auto& q = per_key[(*r)[i].event.key];
      out.push_back(std::move(q.front()));
      q.pop_front();
    }
    return out;
  }
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) override {
    if (rng_.chance(refuse_)) return Error::unavailable("sim_commit_refused", "simulated: the log refused the commit");
    return inner_.commit(group, consumed, std::move(effects));
  }

 private:
  StageLog& inner_;
  Rng& rng_;
  const double& refuse_;
};

struct SentPayment {
  std::string merchant, key, currency, source;
  int64_t amount = 0;
  std::string id() const { return payment_id_for(merchant, key); }
};
struct SentRefund {
  std::string merchant, key, payment_id;
  int64_t amount = 0;
  std::string id() const { return refund_id_for(merchant, key); }
};

// What a crash loses: the process.
struct Process {
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<LogEngine> engine;
  std::unique_ptr<EngineStageLog> engine_log;
  std::unique_ptr<ContractStageLog> log;
  std::unique_ptr<InMemoryVelocityCounter> velocity;
  std::unique_ptr<FraudStage> fraud;
  std::unique_ptr<ProcessorStage> processor;
  std::unique_ptr<LedgerStage> ledger;
  std::unique_ptr<NotifierStage> notifier;
  std::vector<std::unique_ptr<StageRunner>> runners;
  std::unique_ptr<WebhookDispatcher> dispatcher;
  std::unique_ptr<Db> db;
  ~Process() {
    db.reset();
    runners.clear();
    dispatcher.reset();
    fraud.reset();
    processor.reset();
    ledger.reset();
    notifier.reset();
    log.reset();
    engine_log.reset();
    engine.reset();
    store.reset();
  }
};

class World {
 public:
  explicit World(const SimOptions& o)
      : opts_(o), rng_(o.seed), clock_(1'700'000'000'000), acquirer_(rng_, clock_), receiver_(rng_, clock_) {}

  SimResult run() {
    fs::create_directories(opts_.dir);
    open_process(true);
    for (step_ = 1; step_ <= opts_.steps && result_.ok; ++step_) {
      do_step();
      if (result_.ok) check_invariants();
    }
    if (result_.ok) heal();
    if (result_.ok) check_invariants();
    if (result_.ok) check_end_state();
    result_.stats.payments_acked = int(acked_payments_.size());
    result_.stats.refunds_acked = int(acked_refunds_.size());
    result_.stats.acquirer_calls = int(acquirer_.calls());
    result_.stats.webhook_posts = int(receiver_.posts());
    result_.digest = digest_;
    proc_.reset();
    std::error_code ec;
    fs::remove_all(opts_.dir, ec);
    return result_;
  }

 private:
  // ---------- trace and failures ----------
  void trace(const std::string& line) {
    for (unsigned char c : line + "\n") digest_ = (digest_ ^ c) * 1099511628211ull;  // FNV-1a
    if (opts_.trace) std::cout << "  [" << step_ << "] " << line << "\n";
  }
  void fail(const std::string& what) {
    if (!result_.ok) return;
    result_.ok = false;
    result_.failure = "step " + std::to_string(step_) + ": " + what;
    trace("VIOLATION " + what);
  }

  // ---------- the process ----------
  void open_process(bool first) {
    proc_ = std::make_unique<Process>();
    SqliteOptions so;
    so.path = (fs::path(opts_.dir) / "paystream.db").string();
    so.sync_full = false;   // a process crash loses no committed SQLite transaction
    auto s = SqliteStore::open(so, clock_);
    if (!s) return fail("the store does not open: " + s.error().message);
    proc_->store = std::move(s.value());
    if (first)
      for (const auto& m : kMerchants)
        if (auto e = proc_->store->create_endpoint({"we_" + m, m, url_of(m), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", {},
                                                    clock_.now_ms()});
            !e)
          return fail("endpoint: " + e.error().message);
    auto topic = [](std::string_view t) { return std::string(t); };
    LogEngineOptions eo;
    eo.stepped = true;
    eo.log.dir = "/sim/engine-log";
    eo.log.segment_bytes = 64u << 10;   // rolls and removals within a run
    eo.log.max_batch_bytes = size_t(rng_.between(1, 8)) << 10;
    eo.projection_batch = size_t(rng_.between(1, 16));
    eo.groups = {{"fraud", {topic(topics::initiated)}},
                 {"processor", {topic(topics::validated)}},
                 {"ledger", {topic(topics::settled), topic(topics::failed)}},
                 {"notifier", {topic(topics::settled), topic(topics::failed)}}};
    auto e = LogEngine::open(eo, fs_, *proc_->store, clock_);
    if (!e) return fail("the engine does not recover: " + e.error().message);
    Process& p = *proc_;
    p.engine = std::move(e.value());
    p.engine_log = std::make_unique<EngineStageLog>(*p.engine);
    p.log = std::make_unique<ContractStageLog>(*p.engine_log, rng_, refuse_commit_);
    p.velocity = std::make_unique<InMemoryVelocityCounter>();
    p.fraud = std::make_unique<FraudStage>(*p.velocity, clock_, FraudConfig{});
    ProcessorConfig pc;
    pc.concurrency = 1;
    pc.seed = rng_.next();
    p.processor = std::make_unique<ProcessorStage>(acquirer_, clock_, pc);
    p.ledger = std::make_unique<LedgerStage>(clock_, FeeConfig{290, 30});
    p.notifier = std::make_unique<NotifierStage>(*p.store, clock_);
    RunnerOptions ro;
    ro.batch_max = size_t(rng_.between(1, 8));
    ro.poll_wait = milliseconds(0);
    p.runners.push_back(std::make_unique<StageRunner>("fraud", std::vector{topic(topics::initiated)}, *p.log, *p.fraud, clock_, ro));
    p.runners.push_back(std::make_unique<StageRunner>("processor", std::vector{topic(topics::validated)}, *p.log, *p.processor, clock_, ro));
    p.runners.push_back(std::make_unique<StageRunner>("ledger", std::vector{topic(topics::settled), topic(topics::failed)}, *p.log, *p.ledger, clock_, ro));
    p.runners.push_back(std::make_unique<StageRunner>("notifier", std::vector{topic(topics::settled), topic(topics::failed)}, *p.log, *p.notifier, clock_, ro));
    DispatcherOptions d;
    d.concurrency = 1;
    d.batch_max = 16;
    d.attempt_timeout = milliseconds(5'000);
    d.retry_schedule = {milliseconds(1'000), milliseconds(10'000), milliseconds(60'000), milliseconds(300'000)};
    d.seed = rng_.next();
    p.dispatcher = std::make_unique<WebhookDispatcher>(*p.store, receiver_, clock_, d);
    p.db = std::make_unique<Db>(so.path);
  }

  void crash(bool during_commit) {
    ++result_.stats.crashes;
    if (during_commit) {
      // The group reaches the page cache, its fsync fails, the machine stops.
      fs_.fail_syncs(1);
      proc_->engine->step_log();
      fs_.fail_syncs(0);
    }
    fs_.crash(rng_.next());
    proc_->engine->crash();
    proc_.reset();
    fs_.revive();
    fs_.fail_writes(0, 0);   // an injected fault not yet hit ends with the process
    fs_.fail_syncs(0);
    trace(during_commit ? "crash during a group commit" : "crash");
    open_process(false);
  }

  // ---------- clients ----------
  void submit_payment(const SentPayment& s, int copies) {
    trace("pay " + s.merchant + "/" + s.key + " " + std::to_string(s.amount) + " " + s.currency + " " + s.source +
          " x" + std::to_string(copies));
    for (int i = 0; i < copies; ++i) {
      const int64_t now = clock_.now_ms();
      AcceptPayment c;
      Payment& p = c.payment;
      p.id = s.id();
      p.merchant_id = s.merchant;
      p.idempotency_key = s.key;
      p.amount_minor = s.amount;
      p.currency = s.currency;
      p.source = s.source;
      p.status = PaymentStatus::processing;
      p.created_ms = p.updated_ms = now;
      c.initiated = make_payment_event(p, event_types::payment_initiated, "/paystream/gateway", now, "");
      c.record = IdempotencyRecord{s.merchant, s.key, "fp-" + s.key, 202, "{\"id\":\"" + p.id + "\"}", p.id, now};
      proc_->engine->accept_payment(std::move(c), [this, s](Result<AcceptOutcome> r) {
        if (!r) return trace("payment " + s.key + " refused: " + r.error().code);
        if (r->record.resource_id != s.id()) fail("key " + s.key + " answered with " + r->record.resource_id);
        acked_payments_.emplace(s.id(), s);
        trace("payment " + s.key + (r->created ? " accepted" : " replayed"));
      });
    }
  }

  void submit_refund(const SentRefund& s, int copies) {
    trace("refund " + s.merchant + "/" + s.key + " of " + s.payment_id + " " + std::to_string(s.amount) + " x" +
          std::to_string(copies));
    for (int i = 0; i < copies; ++i) {
      const int64_t now = clock_.now_ms();
      AcceptRefund c;
      Refund& r = c.refund;
      r.id = s.id();
      r.payment_id = s.payment_id;
      r.merchant_id = s.merchant;
      r.idempotency_key = s.key;
      r.amount_minor = s.amount;
      r.created_ms = r.updated_ms = now;
      c.requested = make_refund_event(r, event_types::refund_requested, "/paystream/gateway", now, "");
      c.record = IdempotencyRecord{s.merchant, s.key, "fp-" + s.key, 202, "", r.id, now};
      c.render = [](const Refund& rf) { return "{\"id\":\"" + rf.id + "\",\"amount\":" + std::to_string(rf.amount_minor) + "}"; };
      proc_->engine->accept_refund(std::move(c), [this, s](Result<AcceptOutcome> r) {
        if (!r) return trace("refund " + s.key + " refused: " + r.error().code);
        if (r->record.resource_id != s.id()) fail("refund key " + s.key + " answered with " + r->record.resource_id);
        acked_refunds_.emplace(s.id(), s);
        trace("refund " + s.key + (r->created ? " accepted" : " replayed"));
      });
    }
  }

  SentPayment new_payment() {
    SentPayment s;
    s.merchant = rng_.pick(kMerchants);
    s.key = "k" + std::to_string(++keys_);
    s.currency = rng_.pick(kCurrencies);
    s.amount = rng_.between(1, 5) * 1000 + rng_.between(0, 999);
    const int64_t r = rng_.between(0, 99);
    s.source = r < 8 ? "tok_decline" : r < 11 ? "tok_fraud" : "tok_approve";
    return s;
  }

  // ---------- faults ----------
  void change_faults() {
    // 0 calm, 1 rough, 2 a storm, 3 the acquirer loses answers and cannot look them up.
    const int64_t level = rng_.between(0, 3);
    const double f = level == 0 ? 0 : level == 1 ? 1 : 2;
    if (level == 3) acquirer_.set_faults({0.05, 0.05, 0.4, 0.2, 0.1, 0.7});
    else acquirer_.set_faults({0.08 * f, 0.04 * f, 0.05 * f, 0.03 * f, 0.1 * f, 0.1 * f});
    receiver_.set_faults({0.08 * f, 0.04 * f, 0.08 * f, 0.05 * f});
    refuse_commit_ = 0.04 * f;
    trace("faults level " + std::to_string(level));
  }
  void calm() {
    acquirer_.set_faults({});
    receiver_.set_faults({});
    refuse_commit_ = 0;
  }

  // ---------- one step ----------
  void do_step() {
    Process& p = *proc_;
    const int64_t r = rng_.between(0, 999);
    if (r < 170) {
      SentPayment s = new_payment();
      submit_payment(s, rng_.chance(0.2) ? int(rng_.between(2, 3)) : 1);   // copies: one key at once
      sent_payments_.push_back(s);
    } else if (r < 220) {
      if (sent_payments_.empty()) return;
      submit_payment(rng_.pick(sent_payments_), 1);   // a client retry with the same key
    } else if (r < 320) {
      if (acked_payments_.empty()) return;
      auto it = acked_payments_.begin();
      std::advance(it, rng_.between(0, int64_t(acked_payments_.size()) - 1));
      SentRefund s{it->second.merchant, "r" + std::to_string(++keys_), it->first, rng_.between(1, it->second.amount)};
      if (rng_.chance(0.2) && !sent_refunds_.empty()) s = rng_.pick(sent_refunds_);   // a retry
      submit_refund(s, rng_.chance(0.2) ? int(rng_.between(2, 3)) : 1);
      sent_refunds_.push_back(s);
      if (rng_.chance(0.2)) {   // a second refund of the same payment, at the same time
        SentRefund t{s.merchant, "r" + std::to_string(++keys_), s.payment_id, rng_.between(1, it->second.amount)};
        submit_refund(t, 1);
        sent_refunds_.push_back(t);
      }
    } else if (r < 420) {
      trace("admit " + std::to_string(p.engine->step_admission()));
    } else if (r < 520) {
      if (rng_.chance(0.05)) {
        fs_.fail_writes(1, ENOSPC);
        trace("disk full for one write");
      }
      trace("log write " + std::to_string(p.engine->step_log()));
    } else if (r < 740) {
      const size_t i = size_t(rng_.between(0, int64_t(p.runners.size()) - 1));
      trace("stage " + std::to_string(i) + " committed " + std::to_string(p.runners[i]->run_once()));
    } else if (r < 800) {
      trace("dispatch " + std::to_string(p.dispatcher->run_once()));
    } else if (r < 860) {
      trace("project " + std::to_string(p.engine->step_projection()));
    } else if (r < 880) {
      p.engine->step_housekeeping();
      trace("housekeeping");
    } else if (r < 930) {
      const int64_t ms = rng_.chance(0.1) ? rng_.between(60'000, 900'000) : rng_.between(0, 5'000);
      clock_.advance(milliseconds(ms));
      trace("clock +" + std::to_string(ms));
    } else if (r < 950) {
      trace("acquirer delivers " + std::to_string(acquirer_.deliver_in_flight(false)) + " late requests");
    } else if (r < 975) {
      crash(rng_.chance(0.3));
    } else {
      change_faults();
    }
  }

  // ---------- the end: faults stop, an operator replays dead letters, it drains ----------
  void heal() {
    calm();
    trace("heal");
    acquirer_.deliver_in_flight(true);
    int idle = 0;
    for (int round = 0; round < 200 && idle < 3 && result_.ok; ++round) {
      Process& p = *proc_;
      size_t progress = p.engine->step_admission();
      progress += p.engine->step_log();
      for (auto& runner : p.runners)
        for (int i = 0; i < 1000; ++i) {
          const size_t n = runner->run_once();
          if (n == 0) break;
          progress += n;
        }
      progress += p.dispatcher->run_once();
      p.engine->step_projection();
      EngineDeadLetters letters(*p.engine);
      auto list = letters.list_dead_letters(100000);
      if (!list) return fail("dead letters unreadable: " + list.error().message);
      for (const auto& v : *list) {
        if (v.replayed) continue;
        const bool expected = is_webhook_dead_letter(v.letter) ||
                              v.letter.error.find("outcome unknown") != std::string::npos;
        if (!expected) return fail("a pipeline record was dead-lettered: " + v.letter.error);
        if (auto rp = p.engine->replay_dead_letter(v.offset); !rp)
          return fail("dead letter replay refused: " + rp.error().message);
        ++result_.stats.dead_letters_replayed;
        ++progress;
      }
      if (progress == 0) {
        ++idle;
        clock_.advance(milliseconds(3'600'000));   // every retry and breaker is due
      } else {
        idle = 0;
      }
    }
    trace("drained");
  }

  // ---------- invariants ----------
  struct StorePayment {
    std::string merchant, status, currency;
    int64_t amount = 0, refunded = 0;
  };
  struct StoreRefund {
    std::string payment_id, status;
    int64_t amount = 0;
  };

  // What the invariants read from the store, read again only when the store changed
  // (SQLite's data_version: another connection committed since the last read).
  struct StoreView {
    std::string version;
    std::map<std::string, StorePayment> payments;
    std::map<std::string, StoreRefund> refunds;
    std::map<std::string, int> settlements;
    Rows unbalanced, drift;
  };
  const StoreView& store_view() {
    Db& db = *proc_->db;
    auto v = db.rows("PRAGMA data_version");
    const std::string version = v.empty() ? "" : v[0][0];
    if (view_ && view_->version == version && view_epoch_ == result_.stats.crashes) return *view_;
    view_ = std::make_unique<StoreView>();
    view_epoch_ = result_.stats.crashes;
    StoreView& sv = *view_;
    sv.version = version;
    for (auto& r : db.rows("SELECT id, merchant_id, status, currency, amount_minor, amount_refunded_minor FROM payments"))
      sv.payments[r[0]] = StorePayment{r[1], r[2], r[3], std::stoll(r[4]), std::stoll(r[5])};
    for (auto& r : db.rows("SELECT id, payment_id, status, amount_minor FROM refunds"))
      sv.refunds[r[0]] = StoreRefund{r[1], r[2], std::stoll(r[3])};
    for (auto& r : db.rows("SELECT payment_id, COUNT(*) FROM journal_entries WHERE kind = 'settlement' GROUP BY payment_id"))
      sv.settlements[r[0]] = std::stoi(r[1]);
    sv.unbalanced = db.rows(
        "SELECT entry_id, currency, SUM(amount_minor) FROM postings GROUP BY entry_id, currency HAVING SUM(amount_minor) != 0");
    sv.drift = db.rows(
        "SELECT account, currency FROM (SELECT account, currency, SUM(amount_minor) s FROM postings GROUP BY 1, 2) p "
        "LEFT JOIN account_balances b USING(account, currency) WHERE b.amount_minor IS NULL OR b.amount_minor != p.s "
        "UNION ALL SELECT account, currency FROM account_balances b WHERE amount_minor != 0 AND NOT EXISTS "
        "(SELECT 1 FROM postings p WHERE p.account = b.account AND p.currency = b.currency)");
    return sv;
  }

  void check_invariants() {
    const StoreView& sv = store_view();
    if (!proc_->db->error().empty()) return fail("invariant query: " + proc_->db->error());
    const auto& payments = sv.payments;
    const auto& refunds = sv.refunds;
    const auto& settlements = sv.settlements;

    // No acknowledged payment or refund lost: in the store, or in the engine's overlay.
    for (const auto& [id, s] : acked_payments_)
      if (!payments.count(id) && !proc_->engine->unprojected_payment(s.merchant, id))
        return fail("acknowledged payment " + id + " (" + s.key + ") is lost");
    for (const auto& [id, s] : acked_refunds_)
      if (!refunds.count(id) && !proc_->engine->unprojected_refund(s.merchant, id))
        return fail("acknowledged refund " + id + " (" + s.key + ") is lost");

    const auto& charges = acquirer_.charges();
    std::map<std::string, int64_t> refunded_at_acquirer, admitted;
    for (const auto& [id, row] : acquirer_.refunds()) refunded_at_acquirer[row.payment_id] += row.amount_minor;
    for (const auto& [id, c] : charges) {
      // One charge per payment: money moved at most once for an id.
      if (c.captures > 1) return fail("payment " + id + " was captured " + std::to_string(c.captures) + " times");
      const int64_t captured = c.result.approved ? c.amount_minor : 0;
      if (refunded_at_acquirer[id] > captured)
        return fail("payment " + id + ": the acquirer refunded " + std::to_string(refunded_at_acquirer[id]) +
                    " of " + std::to_string(captured) + " captured");
    }
    for (const auto& [id, p] : payments) {
      auto c = charges.find(id);
      const bool charged = c != charges.end() && c->second.result.approved;
      const int n = settlements.count(id) ? settlements.at(id) : 0;
      if (p.status == "succeeded") {
        if (!charged) return fail("payment " + id + " succeeded without an approved charge");
        if (c->second.amount_minor != p.amount) return fail("payment " + id + " charged another amount");
        if (n != 1) return fail("payment " + id + " succeeded with " + std::to_string(n) + " settlements");
      } else {
        if (n != 0) return fail("payment " + id + " is " + p.status + " with a settlement");
        // An unknown acquirer outcome is never reported as failed.
        if (p.status == "failed" && charged) return fail("payment " + id + " failed, but the acquirer charged it");
      }
    }
    // Σ refunds ≤ captured, and the refunded amount is the succeeded refunds'.
    std::map<std::string, int64_t> succeeded_refunds;
    for (const auto& [id, r] : refunds) {
      auto p = payments.find(r.payment_id);
      if (p == payments.end()) return fail("refund " + id + " of an unknown payment");
      if (p->second.status != "succeeded") return fail("refund " + id + " of a payment that did not succeed");
      if (r.status != "failed") admitted[r.payment_id] += r.amount;
      if (r.status == "succeeded") {
        succeeded_refunds[r.payment_id] += r.amount;
        if (!acquirer_.refunds().count(id)) return fail("refund " + id + " succeeded, the acquirer never paid it");
      }
    }
    for (const auto& [id, amount] : admitted)
      if (amount > payments.at(id).amount)
        return fail("payment " + id + ": refunds of " + std::to_string(amount) + " admitted, " +
                    std::to_string(payments.at(id).amount) + " captured");
    for (const auto& [id, p] : payments)
      if (p.refunded != (succeeded_refunds.count(id) ? succeeded_refunds[id] : 0))
        return fail("payment " + id + ": amount_refunded " + std::to_string(p.refunded) + " is not its refunds'");

    // Every entry balanced; balances equal the sum of their postings.
    if (!sv.unbalanced.empty()) return fail("entry " + sv.unbalanced[0][0] + " is unbalanced by " + sv.unbalanced[0][2]);
    if (!sv.drift.empty())
      return fail("balance of " + sv.drift[0][0] + " " + sv.drift[0][1] + " is not the sum of its postings");
  }

  void check_end_state() {
    Db& db = *proc_->db;
    std::map<std::string, std::string> status;
    for (auto& r : db.rows("SELECT id, status FROM payments")) status[r[0]] = r[1];
    std::map<std::string, std::string> refund_status;
    for (auto& r : db.rows("SELECT id, status FROM refunds")) refund_status[r[0]] = r[1];
    for (const auto& [id, s] : acked_payments_) {
      if (!status.count(id)) return fail("acknowledged payment " + id + " is not in the store after draining");
      if (status[id] == "processing") return fail("acknowledged payment " + id + " is still processing after draining");
    }
    for (const auto& [id, s] : acked_refunds_) {
      if (!refund_status.count(id)) return fail("acknowledged refund " + id + " is not in the store after draining");
      if (refund_status[id] == "processing") return fail("acknowledged refund " + id + " is still processing");
    }
    // The acquirer's approved charges are exactly the succeeded payments.
    for (const auto& [id, c] : acquirer_.charges())
      if (c.result.approved && status[id] != "succeeded")
        return fail("the acquirer charged " + id + ", which is " + (status.count(id) ? status[id] : "unknown"));
    for (const auto& [id, st] : status) {
      if (st == "succeeded") ++result_.stats.succeeded;
      if (st == "failed") ++result_.stats.failed;
    }
    for (const auto& [id, row] : acquirer_.refunds())
      if (refund_status[id] != "succeeded") return fail("the acquirer paid refund " + id + ", which did not succeed");
    // A merchant event per terminal payment and refund, each delivered at least once.
    auto events = db.rows("SELECT id, merchant_id, type FROM merchant_events");
    size_t terminal = 0;
    for (const auto& [id, st] : status) terminal += st != "processing";
    for (const auto& [id, st] : refund_status) terminal += st != "processing";
    if (events.size() != terminal)
      return fail(std::to_string(events.size()) + " merchant events for " + std::to_string(terminal) +
                  " terminal payments and refunds");
    const auto& taken = receiver_.taken();
    for (const auto& e : events) {
      auto u = taken.find(url_of(e[1]));
      if (u == taken.end() || !u->second.count(e[0])) return fail("event " + e[0] + " (" + e[2] + ") never delivered");
    }
    auto pending = db.rows("SELECT id, status, attempts FROM webhook_deliveries WHERE status != 'succeeded'");
    if (!pending.empty()) return fail("delivery " + pending[0][0] + " is " + pending[0][1] + " after draining");
    if (!db.error().empty()) return fail("invariant query: " + db.error());
  }

  const SimOptions opts_;
  Rng rng_;
  ManualClock clock_;
  wal::testing::FaultFs fs_;
  SimAcquirer acquirer_;
  SimReceiver receiver_;
  double refuse_commit_ = 0;
  std::unique_ptr<Process> proc_;
  std::unique_ptr<StoreView> view_;
  int view_epoch_ = -1;
  int step_ = 0;
  uint64_t keys_ = 0;
  uint64_t digest_ = 14695981039346656037ull;
  std::vector<SentPayment> sent_payments_;
  std::vector<SentRefund> sent_refunds_;
  std::map<std::string, SentPayment> acked_payments_;
  std::map<std::string, SentRefund> acked_refunds_;
  SimResult result_;
};

}  // namespace

SimResult run_simulation(const SimOptions& opts) { return World(opts).run(); }

}  // namespace ps::sim
