#include "adapters/embedded/logged_intake.hpp"

#include <algorithm>

#include "adapters/embedded/intake_record.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/ledger_rules.hpp"

namespace ps {
namespace {

std::string key_of(const std::string& merchant_id, const std::string& key) { return merchant_id + '\n' + key; }

metrics::Counter& logged_records() {
  static auto& c = metrics::registry().counter("paystream_intake_log_records_total",
                                               "Payments acknowledged from the intake log (--intake-log)");
  return c;
}
metrics::Counter& projected_records() {
  static auto& c = metrics::registry().counter("paystream_intake_log_projected_total",
                                               "Intake log records applied to the store");
  return c;
}
metrics::Counter& projection_errors() {
  static auto& c = metrics::registry().counter("paystream_intake_log_projection_errors_total",
                                               "Failed projection transactions (retried)");
  return c;
}
metrics::Gauge& unprojected_gauge() {
  static auto& g = metrics::registry().gauge("paystream_intake_log_unprojected_records",
                                             "Acknowledged intake log records the store does not hold yet");
  return g;
}

}  // namespace

LoggedIntake::LoggedIntake(LoggedIntakeOptions opts, SqliteStore& store, const Clock& clock)
    : opts_(std::move(opts)), store_(store), clock_(clock) {
  opts_.projection_batch = std::max<size_t>(1, opts_.projection_batch);
}

Result<std::unique_ptr<LoggedIntake>> LoggedIntake::open(LoggedIntakeOptions opts, wal::LogFs& fs, SqliteStore& store,
                                                         const Clock& clock) {
  auto at = store.projection().projected_lsn();
  if (!at) return at.error();
  const auto t0 = std::chrono::steady_clock::now();
  const size_t batch_max = std::max<size_t>(1, opts.projection_batch);
  std::vector<ProjectedWrite> batch;
  uint64_t replayed = 0;
  auto flush = [&]() -> Result<void> {
    if (batch.empty()) return ok();
    auto r = store.projection().project(batch);
    replayed += batch.size();
    batch.clear();
    return r;
  };
  // The records the store does not hold, in order, in projection-sized transactions.
  auto log = wal::SegmentLog::open(opts.log, fs, *at + 1, [&](const wal::LogRecord& rec) -> Result<void> {
    auto w = intake_log::decode(rec.type, rec.payload);
    if (!w) return Error::internal("intake log record " + std::to_string(rec.lsn) + ": " + w.error().message);
    w->lsn = rec.lsn;
    batch.push_back(std::move(*w));
    if (batch.size() >= batch_max) return flush();
    return ok();
  });
  if (!log) return log.error();
  if (auto r = flush(); !r) return r.error();
  const uint64_t last = (*log)->next_lsn() - 1;
  if (last < *at)
    return Error::internal("intake_log_behind: the intake log in " + opts.log.dir + " ends at record " +
                           std::to_string(last) + " but the store holds records up to " + std::to_string(*at) +
                           "; it is not this database's log (restore both together)");
  log::info("intake log recovered", {{"dir", opts.log.dir},
                                     {"projected_lsn", std::to_string(*at)},
                                     {"replayed", std::to_string(replayed)},
                                     {"ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                               std::chrono::steady_clock::now() - t0)
                                                               .count())}});
  std::unique_ptr<LoggedIntake> self(new LoggedIntake(std::move(opts), store, clock));
  self->log_ = std::move(*log);
  self->durable_lsn_ = self->projected_lsn_ = self->released_at_ = std::max(*at, last);
  if (auto r = self->log_->release(self->projected_lsn_ + 1); !r)
    log::warn("cannot remove projected intake log segments", {{"error", r.error().message}});
  self->admitter_ = std::thread([p = self.get()] { p->admit_loop(); });
  self->projector_ = std::thread([p = self.get()] { p->project_loop(); });
  return self;
}

LoggedIntake::~LoggedIntake() {
  {
    std::lock_guard lk(admit_mu_);
    admit_stop_ = true;
  }
  admit_cv_.notify_all();
  if (admitter_.joinable()) admitter_.join();
  {
    // Refunds answer from the store's writer thread and then call back into us.
    std::unique_lock lk(mu_);
    projected_cv_.wait(lk, [&] { return refunds_in_flight_ == 0; });
  }
  log_.reset();  // writes what is queued; its callbacks queue the records for projection
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  project_cv_.notify_all();
  if (projector_.joinable()) projector_.join();
}

// ---------- IntakeStore ----------

void LoggedIntake::enqueue(Admission a) {
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

void LoggedIntake::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  enqueue(Admission{std::make_shared<AcceptPayment>(std::move(cmd)), nullptr, std::move(cb)});
}

void LoggedIntake::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  enqueue(Admission{nullptr, std::make_shared<AcceptRefund>(std::move(cmd)), std::move(cb)});
}

void LoggedIntake::answer_later(std::vector<Admission> waiters) {
  for (auto& w : waiters) enqueue(std::move(w));
}

void LoggedIntake::admit_loop() {
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

void LoggedIntake::admit(Admission& a) {
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
        it->second.waiters.push_back(std::move(a));  // admitted again once the key resolves
      }
      return;
    }
  }
  // Not in the overlay, so either the store holds the key or nobody does: only this
  // thread adds keys, and an entry leaves the overlay after the store committed it.
  auto found = store_.find_idempotency(rec.merchant_id, rec.key);
  if (!found) return a.cb(found.error());
  if (*found) return a.cb(AcceptOutcome{false, std::move(**found)});

  if (a.refund) {
    const Refund& r = a.refund->refund;
    {
      std::unique_lock lk(mu_);
      auto pit = payments_.find(r.payment_id);
      if (pit != payments_.end()) {
        // Not projected yet, so still processing: refused by the shared rule.
        Payment p = keys_.at(pit->second).payment;
        if (p.merchant_id == r.merchant_id) {
          lk.unlock();
          auto adm = admit_refund(p, RefundAdmission{r.amount_minor, 0, 0, 0, true});
          if (!adm) return a.cb(adm.error());
          lk.lock();
        }
      }
      Entry e;
      e.state = Entry::State::refund;
      keys_.emplace(mk, std::move(e));
      ++refunds_in_flight_;
    }
    store_.accept_refund(std::move(*a.refund), [this, mk, cb = std::move(a.cb)](Result<AcceptOutcome> out) {
      on_refund_done(mk);
      cb(std::move(out));
    });
    return;
  }

  const int64_t now = clock_.now_ms();
  std::shared_ptr<AcceptPayment> cmd = a.payment;
  {
    std::lock_guard lk(mu_);
    Entry e;
    e.record = cmd->record;
    e.payment = cmd->payment;
    payments_[cmd->payment.id] = mk;
    keys_.emplace(mk, std::move(e));
  }
  std::string payload = intake_log::encode_payment(now, *cmd);
  log_->append(intake_log::kPaymentAccepted, std::move(payload),
               [this, mk, cmd, now, cb = std::move(a.cb)](Result<uint64_t> r) { on_logged(mk, cmd, now, r, cb); });
}

void LoggedIntake::on_logged(const std::string& mk, std::shared_ptr<AcceptPayment> cmd, int64_t now_ms,
                             Result<uint64_t> r, const AcceptCallback& cb) {
  std::vector<Admission> waiters;
  if (!r) {
    {
      std::lock_guard lk(mu_);
      auto it = keys_.find(mk);
      if (it != keys_.end()) {
        waiters.swap(it->second.waiters);
        payments_.erase(it->second.payment.id);
        keys_.erase(it);
      }
    }
    cb(r.error());
    answer_later(std::move(waiters));
    return;
  }
  IdempotencyRecord rec;
  {
    std::lock_guard lk(mu_);
    Entry& e = keys_.at(mk);
    e.state = Entry::State::durable;
    e.lsn = *r;
    waiters.swap(e.waiters);
    rec = e.record;
    ProjectedWrite w;
    w.lsn = *r;
    w.now_ms = now_ms;
    w.payment = std::move(*cmd);
    to_project_.push_back(std::move(w));
    durable_lsn_ = *r;
    unprojected_gauge().set(double(to_project_.size() + projecting_));
  }
  project_cv_.notify_one();
  logged_records().inc();
  cb(AcceptOutcome{true, std::move(rec)});
  answer_later(std::move(waiters));
}

void LoggedIntake::on_refund_done(const std::string& mk) {
  std::vector<Admission> waiters;
  {
    std::lock_guard lk(mu_);
    auto it = keys_.find(mk);
    if (it != keys_.end()) {
      waiters.swap(it->second.waiters);
      keys_.erase(it);
    }
    --refunds_in_flight_;
  }
  projected_cv_.notify_all();
  answer_later(std::move(waiters));
}

void LoggedIntake::update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                              std::string body, std::function<void(Result<void>)> cb) {
  const std::string mk = key_of(merchant_id, key);
  bool logged = false;
  {
    std::lock_guard lk(mu_);
    auto it = keys_.find(mk);
    logged = it != keys_.end() && it->second.state == Entry::State::durable;
  }
  if (!logged) return store_.update_idempotent_response(merchant_id, key, http_status, std::move(body), std::move(cb));
  // The payment's rows may not be in the store yet: the replacement follows it in the log.
  auto w = std::make_shared<ProjectedWrite>();
  w->now_ms = clock_.now_ms();
  w->merchant_id = merchant_id;
  w->key = key;
  w->http_status = http_status;
  w->body = std::move(body);
  std::string payload = intake_log::encode(*w);
  log_->append(intake_log::kResponseReplaced, std::move(payload), [this, mk, w, cb = std::move(cb)](Result<uint64_t> r) {
    if (!r) return cb(r.error());
    {
      std::lock_guard lk(mu_);
      auto it = keys_.find(mk);
      if (it != keys_.end()) {
        it->second.record.http_status = w->http_status;
        it->second.record.response_body = w->body;
        it->second.lsn = *r;
      }
      w->lsn = *r;
      to_project_.push_back(std::move(*w));
      durable_lsn_ = *r;
    }
    project_cv_.notify_one();
    cb(ok());
  });
}

Result<std::optional<IdempotencyRecord>> LoggedIntake::find_idempotency(const std::string& merchant_id,
                                                                        const std::string& key) {
  {
    std::lock_guard lk(mu_);
    auto it = keys_.find(key_of(merchant_id, key));
    if (it != keys_.end() && it->second.state == Entry::State::durable)
      return std::optional<IdempotencyRecord>(it->second.record);
  }
  return store_.find_idempotency(merchant_id, key);
}

// ---------- projection ----------

void LoggedIntake::project_loop() {
  for (;;) {
    std::vector<ProjectedWrite> batch;
    {
      std::unique_lock lk(mu_);
      project_cv_.wait(lk, [&] { return stopping_ || !to_project_.empty(); });
      if (to_project_.empty()) return;  // stopping, and everything durable is projected
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
    std::vector<std::string> keys;
    keys.reserve(batch.size());
    for (const auto& w : batch)
      keys.push_back(w.payment ? key_of(w.payment->record.merchant_id, w.payment->record.key)
                               : key_of(w.merchant_id, w.key));
    auto backoff = std::chrono::milliseconds(10);
    for (int attempt = 1;; ++attempt) {
      auto r = store_.projection().project(batch);
      if (r) break;
      projection_errors().inc();
      log::error("intake log projection failed; retrying",
                 {{"error", r.error().message}, {"first_lsn", std::to_string(batch.front().lsn)},
                  {"last_lsn", std::to_string(last)}});
      bool stopping = false;
      {
        std::lock_guard lk(mu_);
        stopping = stopping_;
      }
      if (stopping && attempt >= 3) {
        log::warn("intake log records left for recovery at the next start", {{"from_lsn", std::to_string(batch.front().lsn)}});
        return;
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
    {
      std::lock_guard lk(mu_);
      projected_lsn_ = last;
      projecting_ = 0;
      for (const auto& mk : keys) {
        auto it = keys_.find(mk);
        if (it == keys_.end() || it->second.state != Entry::State::durable || it->second.lsn > last) continue;
        payments_.erase(it->second.payment.id);
        keys_.erase(it);
      }
      unprojected_gauge().set(double(to_project_.size()));
    }
    projected_cv_.notify_all();
    projected_records().inc(double(batch.size()));
    if (last - released_at_ >= opts_.release_every) {
      if (auto r = log_->release(last + 1); !r)
        log::warn("cannot remove projected intake log segments", {{"error", r.error().message}});
      released_at_ = last;
    }
  }
}

Result<void> LoggedIntake::await_projection() {
  std::unique_lock lk(mu_);
  const uint64_t target = durable_lsn_;
  if (projected_cv_.wait_for(lk, opts_.projection_wait, [&] { return projected_lsn_ >= target; })) return ok();
  return Error::unavailable("store_overloaded", "the store is " + std::to_string(target - projected_lsn_) +
                                                    " intake records behind; retry later");
}

uint64_t LoggedIntake::projected_lsn() const {
  std::lock_guard lk(mu_);
  return projected_lsn_;
}

std::optional<Payment> LoggedIntake::unprojected_payment(const std::string& merchant_id,
                                                         const std::string& payment_id) const {
  std::lock_guard lk(mu_);
  auto it = payments_.find(payment_id);
  if (it == payments_.end()) return std::nullopt;
  const Entry& e = keys_.at(it->second);
  if (e.state != Entry::State::durable || e.payment.merchant_id != merchant_id) return std::nullopt;
  return e.payment;
}

Backlog LoggedIntake::pipeline_backlog(int64_t now_ms) const {
  Backlog b = inner_backlog_ ? inner_backlog_->pipeline_backlog(now_ms) : Backlog{};
  std::lock_guard lk(mu_);
  const size_t unprojected = to_project_.size() + projecting_;
  b.records += unprojected;
  if (unprojected > 0) {
    const int64_t oldest = projecting_ ? projecting_oldest_ms_ : to_project_.front().now_ms;
    b.oldest_age_ms = std::max(b.oldest_age_ms, now_ms - oldest);
  }
  return b;
}

// ---------- LoggedQueries ----------

Result<std::optional<Payment>> LoggedQueries::get_payment(const std::string& merchant_id,
                                                          const std::string& payment_id) {
  if (auto p = intake_.unprojected_payment(merchant_id, payment_id)) return std::optional<Payment>(std::move(*p));
  return store_.get_payment(merchant_id, payment_id);
}

Result<std::vector<Payment>> LoggedQueries::list_payments(const std::string& merchant_id,
                                                          std::optional<PaymentStatus> status, const Page& page) {
  if (auto r = intake_.await_projection(); !r) return r.error();
  return store_.list_payments(merchant_id, status, page);
}

}  // namespace ps
