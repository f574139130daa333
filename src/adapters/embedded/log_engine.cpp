#include "adapters/embedded/log_engine.hpp"

#include <algorithm>
#include <future>

#include "adapters/embedded/engine_record.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_name.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/store_codec.hpp"

namespace ps {
namespace {

using Kind = ProjectedWrite::Kind;

std::string key_of(const std::string& a, const std::string& b) { return a + '\n' + b; }

metrics::Counter& logged_records(std::string_view kind) {
  static auto& payment = metrics::registry().counter("paystream_engine_log_records_total",
                                                     "Records made durable in the engine log", {{"kind", "payment"}});
  static auto& refund = metrics::registry().counter("paystream_engine_log_records_total",
                                                    "Records made durable in the engine log", {{"kind", "refund"}});
  static auto& stage = metrics::registry().counter("paystream_engine_log_records_total",
                                                   "Records made durable in the engine log", {{"kind", "stage_commit"}});
  static auto& other = metrics::registry().counter("paystream_engine_log_records_total",
                                                   "Records made durable in the engine log", {{"kind", "other"}});
  if (kind == "payment") return payment;
  if (kind == "refund") return refund;
  if (kind == "stage_commit") return stage;
  return other;
}
metrics::Counter& projected_records() {
  static auto& c = metrics::registry().counter("paystream_engine_projected_total", "Engine log records applied to the store");
  return c;
}
metrics::Counter& projection_errors() {
  static auto& c = metrics::registry().counter("paystream_engine_projection_errors_total",
                                               "Failed projection transactions (retried)");
  return c;
}
metrics::Gauge& unprojected_gauge() {
  static auto& g = metrics::registry().gauge("paystream_engine_unprojected_records",
                                             "Durable engine log records the store does not hold yet");
  return g;
}
metrics::Gauge& bus_gauge() {
  static auto& g = metrics::registry().gauge("paystream_engine_bus_records", "Records the stages have yet to consume, in memory");
  return g;
}

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::payment: return "payment";
    case Kind::refund: return "refund";
    case Kind::stage_commit: return "stage_commit";
    default: return "other";
  }
}

int64_t event_offset(uint64_t lsn, size_t index) { return int64_t(lsn << LogEngine::kOffsetShift) | int64_t(index); }

// A record's log position, and what follows from it: a replay's new offset on the bus.
void stamp(ProjectedWrite& w, uint64_t lsn) {
  w.lsn = lsn;
  if (w.kind == Kind::replay && !w.replay_topic.empty()) w.new_offset = event_offset(lsn, 0);
}

}  // namespace

LogEngine::LogEngine(LogEngineOptions opts, SqliteStore& store, const Clock& clock)
    : opts_(std::move(opts)), store_(store), clock_(clock), bus_(opts_.groups) {
  opts_.projection_batch = std::max<size_t>(1, opts_.projection_batch);
  opts_.log.stepped = opts_.stepped;
}

Result<std::unique_ptr<LogEngine>> LogEngine::open(LogEngineOptions opts, wal::LogFs& fs, SqliteStore& store,
                                                   const Clock& clock) {
  auto at = store.projection().projected_lsn();
  if (!at) return at.error();
  auto positions = store.projection().positions();
  if (!positions) return positions.error();
  std::unique_ptr<LogEngine> self(new LogEngine(opts, store, clock));
  // The stages' positions as the store holds them; the log's commits past it move them on.
  std::map<std::string, std::map<std::string, int64_t>> by_group;
  for (const auto& [gt, pos] : *positions) by_group[gt.first][gt.second] = pos;
  for (const auto& [g, ps] : by_group) self->bus_.commit(g, ps);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ProjectedWrite> batch;
  uint64_t replayed = 0, read = 0;
  auto flush = [&]() -> Result<void> {
    if (batch.empty()) return ok();
    auto r = store.projection().project(batch);
    replayed += batch.size();
    batch.clear();
    return r;
  };
  // The retained log, once: its events refill the bus (the bus keeps what a group has not
  // consumed) and the records the store does not hold are projected.
  auto log = wal::SegmentLog::open(self->opts_.log, fs, 1, [&](const wal::LogRecord& rec) -> Result<void> {
    auto w = engine_record::decode(rec.type, rec.payload);
    if (!w) return Error::internal("engine log record " + std::to_string(rec.lsn) + ": " + w.error().message);
    stamp(*w, rec.lsn);
    ++read;
    self->feed_bus(*w);
    if (rec.lsn <= *at) return ok();
    batch.push_back(std::move(*w));
    if (batch.size() >= self->opts_.projection_batch) return flush();
    return ok();
  });
  if (!log) return log.error();
  if (auto r = flush(); !r) return r.error();
  const uint64_t last = (*log)->next_lsn() - 1;
  if (last == 0 && !opts.groups.empty()) {
    // A new log over a store the SQLite engine ran: its stages' unconsumed records would
    // never be read by this engine's stages.
    std::vector<std::pair<std::string, std::vector<std::string>>> subs;
    for (const auto& g : opts.groups) subs.emplace_back(g.group, g.topics);
    auto waiting = store.projection().unconsumed_store_events(subs);
    if (!waiting) return waiting.error();
    if (*waiting > 0)
      return Error::conflict("engine_switch_undrained",
                             "this data dir holds " + std::to_string(*waiting) +
                                 " pipeline records the SQLite engine has not settled; start it with --engine sqlite "
                                 "until paystream_pipeline_backlog_records is 0, then switch to --engine log");
  }
  if (last < *at)
    return Error::internal("engine_log_behind: the engine log in " + opts.log.dir + " ends at record " +
                           std::to_string(last) + " but the store holds records up to " + std::to_string(*at) +
                           "; it is not this database's log (restore both together)");
  log::info("engine log recovered",
            {{"dir", opts.log.dir},
             {"projected_lsn", std::to_string(*at)},
             {"records_read", std::to_string(read)},
             {"replayed", std::to_string(replayed)},
             {"bus_records", std::to_string(self->bus_.kept())},
             {"ms", std::to_string(
                        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
                            .count())}});
  if (self->opts_.backlog)  // what the groups had consumed before the records read back
    for (const auto& [group, topic] : self->opts_.backlog->tracked())
      self->opts_.backlog->consumed(group, topic, self->bus_.position(group, topic));
  self->log_ = std::move(*log);
  self->durable_lsn_ = self->projected_lsn_ = std::max(*at, last);
  self->release_log();
  if (self->opts_.stepped) return self;
  self->admitter_ = std::thread([p = self.get()] {
    name_this_thread("ps-admission");
    p->admit_loop();
  });
  self->projector_ = std::thread([p = self.get()] {
    name_this_thread("ps-projection");
    p->project_loop();
  });
  self->housekeeper_ = std::thread([p = self.get()] {
    name_this_thread("ps-housekeeping");
    p->housekeeping_loop();
  });
  return self;
}

LogEngine::~LogEngine() {
  {
    std::lock_guard lk(hk_mu_);
    hk_stop_ = true;
  }
  hk_cv_.notify_all();
  if (housekeeper_.joinable()) housekeeper_.join();
  {
    std::lock_guard lk(admit_mu_);
    admit_stop_ = true;
  }
  admit_cv_.notify_all();
  if (admitter_.joinable()) admitter_.join();
  if (opts_.stepped && !crashed_) step_admission();
  log_.reset();  // writes what is queued; its callbacks queue the records for projection
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  project_cv_.notify_all();
  if (projector_.joinable()) projector_.join();
  if (opts_.stepped && !crashed_) step_projection();
}

// ---------- stepped mode ----------

size_t LogEngine::step_admission() {
  size_t n = 0;
  for (;;) {
    std::deque<Admission> batch;
    {
      std::lock_guard lk(admit_mu_);
      batch.swap(admit_q_);
    }
    if (batch.empty()) return n;
    for (auto& a : batch) admit(a);
    n += batch.size();
  }
}

size_t LogEngine::step_log() { return log_ ? log_->write_queued() : 0; }

size_t LogEngine::step_projection() {
  size_t n = 0;
  while (project_batch(false)) ++n;
  return n;
}

// Also the housekeeping thread's pass.
void LogEngine::step_housekeeping() {
  release_log();
  // `paystream dlq replay` runs in another process: it leaves the request in the store.
  auto requests = store_.projection().replay_requests();
  if (!requests) return;
  for (int64_t offset : *requests) {
    if (auto r = replay_dead_letter(offset); !r) {
      log::warn("dead letter replay request refused", {{"dlq_offset", std::to_string(offset)},
                                                       {"error", r.error().message}});
      (void)store_.projection().drop_replay_request(offset);
    }
  }
}

void LogEngine::crash() {
  crashed_ = true;
  std::lock_guard lk(admit_mu_);
  admit_q_.clear();
  admit_stop_ = true;
}

// ---------- the log ----------

void LogEngine::log_write(std::shared_ptr<ProjectedWrite> w, Done overlay, Done answer) {
  std::string payload = w->kind == Kind::payment ? engine_record::encode_payment(w->now_ms, *w->payment)
                                                 : engine_record::encode(*w);
  const uint8_t type = engine_record::record_type(*w);
  log_->append(type, std::move(payload),
               [this, w = std::move(w), overlay = std::move(overlay), answer = std::move(answer)](Result<uint64_t> r) {
                 // The overlay first: once the record is queued for the projection, the
                 // projection may drop the overlay's entries for it at any moment.
                 if (overlay) overlay(r);
                 if (r) on_durable(*w, *r);
                 if (answer) answer(r);
               });
}

// On the log's writer thread, in log order.
void LogEngine::on_durable(ProjectedWrite& w, uint64_t lsn) {
  stamp(w, lsn);
  feed_bus(w);
  logged_records(kind_name(w.kind)).inc();
  {
    std::lock_guard lk(mu_);
    durable_lsn_ = lsn;
    to_project_.push_back(std::move(w));
    unprojected_gauge().set(double(to_project_.size() + projecting_));
  }
  project_cv_.notify_one();
}

// The record's events to the bus, and a stage commit's positions (now, or read back at
// recovery: the backlog counts them from now either way). The backlog takes the whole
// record's change at once and before the bus: a stage never consumes a record the backlog
// has not counted, and admission never sees a commit's consumed records gone before the
// records they became are counted.
void LogEngine::feed_bus(const ProjectedWrite& w) {
  std::vector<Record> out;
  PipelineBacklog::Change change;
  auto put = [&](std::string topic, int64_t offset, const Event& e) {
    change.appended.emplace_back(topic, offset);
    out.push_back(Record{std::move(topic), 0, offset, e});
  };
  switch (w.kind) {
    case Kind::payment:
      put(std::string(topic_for(w.payment->initiated.type)), event_offset(w.lsn, 0), w.payment->initiated);
      break;
    case Kind::refund:
      put(std::string(topic_for(w.refund_event.type)), event_offset(w.lsn, 0), w.refund_event);
      break;
    case Kind::stage_commit:
      for (const auto& [topic, pos] : w.positions) change.consumed.emplace_back(w.group, topic, pos);
      for (size_t i = 0; i < w.effects.produce.size(); ++i)
        put(std::string(topic_for(w.effects.produce[i].type)), event_offset(w.lsn, i), w.effects.produce[i]);
      break;
    case Kind::replay:
      if (!w.replay_topic.empty()) put(w.replay_topic, w.new_offset, w.replay_event);
      break;
    case Kind::response:
      break;
  }
  if (opts_.backlog) opts_.backlog->apply(change, clock_.now_ms());
  if (w.kind == Kind::stage_commit) bus_.commit(w.group, w.positions);
  for (auto& r : out) bus_.append(std::move(r));
  bus_gauge().set(double(bus_.kept()));
}

// ---------- intake ----------

void LogEngine::enqueue(Admission a) {
  {
    std::lock_guard lk(admit_mu_);
    if (!admit_stop_) {
      admit_q_.push_back(std::move(a));
      admit_cv_.notify_one();
      return;
    }
  }
  a.cb(Error::unavailable("store_stopping", "the store is shutting down; retry with the same Idempotency-Key"));
}

void LogEngine::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  enqueue(Admission{std::make_shared<AcceptPayment>(std::move(cmd)), nullptr, std::move(cb)});
}

void LogEngine::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  enqueue(Admission{nullptr, std::make_shared<AcceptRefund>(std::move(cmd)), std::move(cb)});
}

void LogEngine::admit_loop() {
  for (;;) {
    std::deque<Admission> batch;
    {
      std::unique_lock lk(admit_mu_);
      admit_cv_.wait(lk, [&] { return admit_stop_ || !admit_q_.empty(); });
      if (admit_q_.empty()) return;  // stopping, and everything queued was admitted
      batch.swap(admit_q_);
    }
    for (auto& a : batch) admit(a);
  }
}

void LogEngine::forget_key(const std::string& mk, std::vector<Admission>& waiters) {
  auto it = keys_.find(mk);
  if (it == keys_.end()) return;
  waiters.swap(it->second.waiters);
  if (!it->second.payment_id.empty()) payments_.erase(it->second.payment_id);
  if (!it->second.refund_id.empty()) refunds_.erase(it->second.refund_id);
  keys_.erase(it);
}

void LogEngine::admit(Admission& a) {
  const IdempotencyRecord& rec = a.payment ? a.payment->record : a.refund->record;
  const std::string mk = key_of(rec.merchant_id, rec.key);
  {
    std::unique_lock lk(mu_);
    auto it = keys_.find(mk);
    if (it != keys_.end()) {
      if (it->second.state == Entry::State::durable) {
        AcceptOutcome out{false, it->second.record};
        lk.unlock();
        a.cb(std::move(out));
      } else {
        it->second.waiters.push_back(std::move(a));  // admitted again once the first is durable
      }
      return;
    }
  }
  // Not in the overlay, so either the store holds the key or nobody does: only this
  // thread adds keys, and an entry leaves the overlay after the store committed it.
  auto found = store_.find_idempotency(rec.merchant_id, rec.key);
  if (!found) return a.cb(found.error());
  if (*found) return a.cb(AcceptOutcome{false, std::move(**found)});
  if (a.refund) return admit_refund_cmd(a, mk);

  auto w = std::make_shared<ProjectedWrite>();
  w->kind = Kind::payment;
  w->now_ms = clock_.now_ms();
  w->payment = std::move(*a.payment);
  const AcceptPayment& cmd = *w->payment;
  {
    std::lock_guard lk(mu_);
    Entry e;
    e.record = cmd.record;
    e.payment_id = cmd.payment.id;
    keys_.emplace(mk, std::move(e));
  }
  IdempotencyRecord out = cmd.record;
  Payment p = cmd.payment;
  auto waiters = std::make_shared<std::vector<Admission>>();
  log_write(
      w,
      [this, mk, p = std::move(p), waiters](Result<uint64_t> r) mutable {
        std::lock_guard lk(mu_);
        if (!r) {
          forget_key(mk, *waiters);
          return;
        }
        Entry& e = keys_.at(mk);
        e.state = Entry::State::durable;
        e.lsn = *r;
        waiters->swap(e.waiters);
        payments_[p.id] = std::move(p);
      },
      [this, out = std::move(out), waiters, cb = std::move(a.cb)](Result<uint64_t> r) mutable {
        if (r) cb(AcceptOutcome{true, std::move(out)});
        else cb(r.error());
        for (auto& w2 : *waiters) enqueue(std::move(w2));
      });
}

void LogEngine::admit_refund_cmd(Admission& a, const std::string& mk) {
  AcceptRefund& c = *a.refund;
  Refund refund = c.refund;
  {
    std::unique_lock lk(mu_);
    auto pit = payments_.find(refund.payment_id);
    if (pit != payments_.end() && pit->second.merchant_id == refund.merchant_id) {
      // Not projected yet, so still processing: refused by the shared rule.
      Payment p = pit->second;
      lk.unlock();
      auto adm = admit_refund(p, RefundAdmission{refund.amount_minor, 0, 0, 0, true});
      return a.cb(adm ? Error::unprocessable("payment_not_succeeded", "the payment has not succeeded")
                      : adm.error());
    }
  }
  // The store's rows (one snapshot, with the log position it holds), then the refunds
  // admitted that the snapshot does not hold, under the lock the projection takes to drop
  // a projected one: each admitted refund is counted exactly once.
  RefundBasis b;
  {
    std::unique_lock lk(mu_);
    auto basis = store_.projection().refund_basis(refund.merchant_id, refund.payment_id);
    if (!basis) {
      lk.unlock();
      return a.cb(basis.error());
    }
    if (!*basis) {
      lk.unlock();
      return a.cb(Error::not_found("no payment " + refund.payment_id));
    }
    b = std::move(**basis);
    for (const auto& [id, res] : reservations_) {
      if (res.lsn != 0 && res.lsn <= b.projected_lsn) continue;  // in the snapshot already
      if (res.payment_id == refund.payment_id) b.processing_for_payment += res.amount_minor;
      if (res.merchant_id == refund.merchant_id && res.currency == b.payment.currency)
        b.processing_for_merchant += res.amount_minor;
    }
    auto admitted = admit_refund(b.payment, RefundAdmission{refund.amount_minor, b.processing_for_payment, b.available,
                                                            b.processing_for_merchant, true, b.payment_fee});
    if (!admitted) {
      lk.unlock();
      return a.cb(admitted.error());
    }
    refund.amount_minor = admitted->amount_minor;
    refund.fee_refunded_minor = admitted->fee_share_minor;
    refund.currency = b.payment.currency;
    reservations_[refund.id] = Reservation{refund.payment_id, refund.merchant_id, refund.currency,
                                           refund.amount_minor, 0};
    Entry e;
    e.refund_id = refund.id;
    keys_.emplace(mk, std::move(e));
  }
  auto w = std::make_shared<ProjectedWrite>();
  w->kind = Kind::refund;
  w->now_ms = clock_.now_ms();
  w->refund = refund;
  w->refund_event = admitted_refund_event(c.requested, refund, w->now_ms);
  w->refund_record = c.record;
  if (c.render) w->refund_record.response_body = c.render(refund);
  if (w->refund_record.resource_id.empty()) w->refund_record.resource_id = refund.id;
  IdempotencyRecord out = w->refund_record;
  auto waiters = std::make_shared<std::vector<Admission>>();
  log_write(
      w,
      [this, mk, refund, out, waiters](Result<uint64_t> r) {
        std::lock_guard lk(mu_);
        if (!r) {
          reservations_.erase(refund.id);
          forget_key(mk, *waiters);
          return;
        }
        Entry& e = keys_.at(mk);
        e.state = Entry::State::durable;
        e.lsn = *r;
        e.record = out;
        waiters->swap(e.waiters);
        refunds_[refund.id] = refund;
        if (auto res = reservations_.find(refund.id); res != reservations_.end()) res->second.lsn = *r;
      },
      [this, out, waiters, cb = std::move(a.cb)](Result<uint64_t> r) {
        if (r) cb(AcceptOutcome{true, out});
        else cb(r.error());
        for (auto& w2 : *waiters) enqueue(std::move(w2));
      });
}

void LogEngine::update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                           std::string body, std::function<void(Result<void>)> cb) {
  const std::string mk = key_of(merchant_id, key);
  bool logged = false;
  {
    std::lock_guard lk(mu_);
    auto it = keys_.find(mk);
    logged = it != keys_.end() && it->second.state == Entry::State::durable;
    if (logged) ++it->second.replacing;  // the projection keeps the entry until this is durable
  }
  if (!logged) return store_.update_idempotent_response(merchant_id, key, http_status, std::move(body), std::move(cb));
  // The rows may not be in the store yet: the replacement follows them in the log.
  auto w = std::make_shared<ProjectedWrite>();
  w->kind = Kind::response;
  w->now_ms = clock_.now_ms();
  w->merchant_id = merchant_id;
  w->key = key;
  w->http_status = http_status;
  w->body = body;
  log_write(
      w,
      [this, mk, http_status, body = std::move(body)](Result<uint64_t> r) {
        std::lock_guard lk(mu_);
        auto it = keys_.find(mk);
        if (it == keys_.end()) return;
        --it->second.replacing;
        if (!r) return;
        it->second.record.http_status = http_status;
        it->second.record.response_body = body;
        it->second.lsn = *r;
      },
      [cb = std::move(cb)](Result<uint64_t> r) {
        if (!r) return cb(r.error());
        cb(ok());
      });
}

Result<std::optional<IdempotencyRecord>> LogEngine::find_idempotency(const std::string& merchant_id,
                                                                     const std::string& key) {
  {
    std::lock_guard lk(mu_);
    auto it = keys_.find(key_of(merchant_id, key));
    if (it != keys_.end() && it->second.state == Entry::State::durable)
      return std::optional<IdempotencyRecord>(it->second.record);
  }
  return store_.find_idempotency(merchant_id, key);
}

// ---------- the stages ----------

Result<std::vector<Record>> LogEngine::poll(const std::string& group, const std::vector<std::string>& topics,
                                            size_t max, std::chrono::milliseconds wait) {
  // Dead letters are rows of the store (tx.dlq there, with its own offsets): a reader of
  // tx.dlq reads the store once it holds what is durable.
  if (std::find(topics.begin(), topics.end(), std::string(topics::dlq)) != topics.end()) {
    if (topics.size() != 1)
      return Error::invalid("topics_mixed", "tx.dlq is polled on its own with --engine log");
    if (auto w = await_projection(); !w) return w.error();
    return store_.poll(group, topics, max, wait);
  }
  return bus_.poll(group, topics, std::min<size_t>(max, 10000), wait);
}

Result<void> LogEngine::commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) {
  // Refused before anything is logged: a record recovery could not apply would stop every
  // restart. (An unbalanced entry stops the process here, as in the stores.)
  for (const auto& po : effects.payment_outcomes)
    if (auto c = check_outcome(po); !c) return c;
  for (const auto& ro : effects.refund_outcomes)
    if (auto c = check_outcome(ro); !c) return c;
  if (effects.produce.size() >= kMaxEventsPerRecord)
    return Error::invalid("too_many_events", "a commit produces at most " + std::to_string(kMaxEventsPerRecord - 1) +
                                                 " events");
  auto w = std::make_shared<ProjectedWrite>();
  w->kind = Kind::stage_commit;
  w->now_ms = clock_.now_ms();
  w->group = group;
  for (const auto& r : consumed) {
    auto& p = w->positions[r.topic];
    p = std::max(p, r.offset);
  }
  w->effects = std::move(effects);
  std::promise<Result<uint64_t>> done;
  auto f = done.get_future();
  log_write(w, nullptr, [&done](Result<uint64_t> r) { done.set_value(std::move(r)); });
  if (opts_.stepped) log_->write_queued();
  auto r = f.get();
  if (!r) return r.error();
  return ok();
}

Result<void> LogEngine::replay_dead_letter(int64_t dlq_offset) {
  if (auto w = await_projection(); !w) return w;
  auto v = store_.get_dead_letter(dlq_offset);
  if (!v) return v.error();
  if (!*v) return Error::not_found("no dead letter at offset " + std::to_string(dlq_offset));
  const DeadLetter& letter = (*v)->letter;
  const Record& orig = letter.original;
  if (orig.topic.empty() || orig.topic == topics::dlq || orig.event.id.empty())
    return Error::unprocessable("dead_letter_not_replayable",
                                "dead letter " + std::to_string(dlq_offset) + " has no original topic or event");
  std::optional<std::string> merchant;
  if (is_webhook_dead_letter(letter)) {
    // The letter carries the webhook body, not the pipeline event: the effect wanted is
    // the delivery, so the event is redelivered in the store (as POST /v1/events/{id}/redeliver).
    auto m = store_.projection().merchant_of_event(orig.event.id);
    if (!m) return m.error();
    if (!*m)
      return Error::unprocessable("dead_letter_not_replayable", "dead letter " + std::to_string(dlq_offset) +
                                                                    " is for event " + orig.event.id +
                                                                    ", which is not stored");
    merchant = std::move(**m);
  }
  {
    std::lock_guard lk(mu_);
    if ((*v)->replayed || replays_.count(dlq_offset))
      return Error::conflict("already_replayed", "dead letter " + std::to_string(dlq_offset) + " was already replayed");
    replays_.insert(dlq_offset);
  }
  auto w = std::make_shared<ProjectedWrite>();
  w->kind = Kind::replay;
  w->now_ms = clock_.now_ms();
  w->dlq_offset = dlq_offset;
  if (!merchant) {
    w->replay_topic = orig.topic;
    w->replay_event = orig.event;
  }
  std::promise<Result<uint64_t>> done;
  auto f = done.get_future();
  log_write(w, nullptr, [&done](Result<uint64_t> r) { done.set_value(std::move(r)); });
  if (opts_.stepped) log_->write_queued();
  auto r = f.get();
  if (!r) {
    std::lock_guard lk(mu_);
    replays_.erase(dlq_offset);
    return r.error();
  }
  log::info("dead letter replayed", {{"dlq_offset", std::to_string(dlq_offset)},
                                    {"topic", orig.topic},
                                    {"payment_id", orig.event.key}});
  if (merchant) {
    auto rd = store_.redeliver(*merchant, orig.event.id, clock_.now_ms());
    if (!rd) return rd.error();
  }
  return ok();
}

// ---------- projection ----------

void LogEngine::project_loop() {
  while (project_batch(true)) {
  }
}

bool LogEngine::project_batch(bool wait) {
  std::vector<ProjectedWrite> batch;
  {
    std::unique_lock lk(mu_);
    if (wait) project_cv_.wait(lk, [&] { return stopping_ || !to_project_.empty(); });
    if (to_project_.empty()) return false;  // stopping, and everything durable is projected
    const size_t n = std::min(opts_.projection_batch, to_project_.size());
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(to_project_.front()));
      to_project_.pop_front();
    }
    projecting_ = n;
    projecting_oldest_ms_ = batch.front().now_ms;
  }
  const uint64_t last = batch.back().lsn;
  auto backoff = std::chrono::milliseconds(10);
  for (int attempt = 1;; ++attempt) {
    auto r = store_.projection().project(batch);
    if (r) break;
    projection_errors().inc();
    log::error("engine log projection failed; retrying",
               {{"error", r.error().message}, {"first_lsn", std::to_string(batch.front().lsn)},
                {"last_lsn", std::to_string(last)}});
    bool stopping = false;
    {
      std::lock_guard lk(mu_);
      stopping = stopping_;
      if (opts_.stepped) {  // left for the next step, in order
        for (auto it = batch.rbegin(); it != batch.rend(); ++it) to_project_.push_front(std::move(*it));
        projecting_ = 0;
        return false;
      }
    }
    if (stopping && attempt >= 3) {
      log::warn("engine log records left for recovery at the next start",
                {{"from_lsn", std::to_string(batch.front().lsn)}});
      return false;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  {
    std::lock_guard lk(mu_);
    projected_lsn_ = last;
    projecting_ = 0;
    for (const auto& w : batch) {
      std::string mk;
      if (w.kind == Kind::payment) mk = key_of(w.payment->record.merchant_id, w.payment->record.key);
      else if (w.kind == Kind::refund) mk = key_of(w.refund_record.merchant_id, w.refund_record.key);
      else if (w.kind == Kind::response) mk = key_of(w.merchant_id, w.key);
      if (w.kind == Kind::refund) reservations_.erase(w.refund.id);
      if (w.kind == Kind::replay) replays_.erase(w.dlq_offset);
      if (mk.empty()) continue;
      auto it = keys_.find(mk);
      if (it == keys_.end() || it->second.state != Entry::State::durable || it->second.lsn > last ||
          it->second.replacing > 0)
        continue;
      std::vector<Admission> none;
      forget_key(mk, none);
    }
    unprojected_gauge().set(double(to_project_.size()));
  }
  projected_cv_.notify_all();
  projected_records().inc(double(batch.size()));
  return true;
}

Result<void> LogEngine::await_projection() {
  if (opts_.stepped) step_projection();
  std::unique_lock lk(mu_);
  const uint64_t target = durable_lsn_;
  if (projected_cv_.wait_for(lk, opts_.projection_wait, [&] { return projected_lsn_ >= target; })) return ok();
  return Error::unavailable("store_overloaded", "the store is " + std::to_string(target - projected_lsn_) +
                                                    " log records behind; retry later");
}

uint64_t LogEngine::projected_lsn() const {
  std::lock_guard lk(mu_);
  return projected_lsn_;
}

// ---------- housekeeping ----------

void LogEngine::release_log() {
  // Below both the projection and the oldest record a registered stage still needs; a
  // log without registered stages (tests) is kept whole, since any group may read it.
  if (!bus_.has_registered_groups() || !log_) return;
  uint64_t keep = projected_lsn() + 1;
  const int64_t oldest = bus_.oldest_unconsumed();
  if (oldest != EventBus::kNone) keep = std::min<uint64_t>(keep, uint64_t(oldest) >> kOffsetShift);
  if (auto r = log_->release(keep); !r)
    log::warn("cannot remove engine log segments", {{"error", r.error().message}});
}

void LogEngine::housekeeping_loop() {
  for (;;) {
    {
      std::unique_lock lk(hk_mu_);
      if (hk_cv_.wait_for(lk, opts_.housekeeping, [&] { return hk_stop_; })) return;
    }
    step_housekeeping();
  }
}

// ---------- reads ----------

Backlog LogEngine::pipeline_backlog(int64_t now_ms) const {
  Backlog b = opts_.backlog ? opts_.backlog->pipeline_backlog(now_ms) : Backlog{};
  std::lock_guard lk(mu_);
  const size_t unprojected = to_project_.size() + projecting_;
  b.records += unprojected;
  if (unprojected > 0) {
    const int64_t oldest = projecting_ ? projecting_oldest_ms_ : to_project_.front().now_ms;
    b.oldest_age_ms = std::max(b.oldest_age_ms, now_ms - oldest);
  }
  return b;
}

std::optional<Payment> LogEngine::unprojected_payment(const std::string& merchant_id,
                                                      const std::string& payment_id) const {
  std::lock_guard lk(mu_);
  auto it = payments_.find(payment_id);
  if (it == payments_.end() || it->second.merchant_id != merchant_id) return std::nullopt;
  return it->second;
}

std::optional<Refund> LogEngine::unprojected_refund(const std::string& merchant_id, const std::string& refund_id) const {
  std::lock_guard lk(mu_);
  auto it = refunds_.find(refund_id);
  if (it == refunds_.end() || it->second.merchant_id != merchant_id) return std::nullopt;
  return it->second;
}

Result<std::vector<DeadLetterView>> EngineDeadLetters::list_dead_letters(size_t limit) {
  if (auto w = e_.await_projection(); !w) return w.error();
  return e_.store().list_dead_letters(limit);
}

Result<std::optional<DeadLetterView>> EngineDeadLetters::get_dead_letter(int64_t offset) {
  if (auto w = e_.await_projection(); !w) return w.error();
  return e_.store().get_dead_letter(offset);
}

// The store's row once it has one (it is never older than the overlay's copy, which is
// the payment as accepted); the overlay before.
Result<std::optional<Payment>> EngineQueries::get_payment(const std::string& merchant_id,
                                                          const std::string& payment_id) {
  auto p = e_.store().get_payment(merchant_id, payment_id);
  if (!p || *p) return p;
  if (auto u = e_.unprojected_payment(merchant_id, payment_id)) return std::optional<Payment>(std::move(*u));
  // Neither: the projection committed it in between (it drops the overlay's copy only
  // after its commit), so the store has it now, or nobody does.
  return e_.store().get_payment(merchant_id, payment_id);
}

Result<std::optional<Refund>> EngineQueries::get_refund(const std::string& merchant_id, const std::string& refund_id) {
  auto r = e_.store().get_refund(merchant_id, refund_id);
  if (!r || *r) return r;
  if (auto u = e_.unprojected_refund(merchant_id, refund_id)) return std::optional<Refund>(std::move(*u));
  return e_.store().get_refund(merchant_id, refund_id);  // projected in between (see get_payment)
}

Result<std::vector<Payment>> EngineQueries::list_payments(const std::string& merchant_id,
                                                          std::optional<PaymentStatus> status, const Page& page) {
  if (auto w = e_.await_projection(); !w) return w.error();
  return e_.store().list_payments(merchant_id, status, page);
}

Result<std::vector<Balance>> EngineQueries::balances(const std::string& merchant_id) {
  if (auto w = e_.await_projection(); !w) return w.error();
  return e_.store().balances(merchant_id);
}

Result<std::vector<JournalEntry>> EngineQueries::entries_for_payment(const std::string& merchant_id,
                                                                     const std::string& payment_id) {
  if (auto w = e_.await_projection(); !w) return w.error();
  return e_.store().entries_for_payment(merchant_id, payment_id);
}

}  // namespace ps
