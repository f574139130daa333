#include "stages/stage_runner.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_name.hpp"

namespace ps {
namespace {
metrics::Counter& processed(const std::string& stage, const char* outcome) {
  return metrics::registry().counter("paystream_stage_processed_total",
                                     "Records processed by a pipeline stage, by outcome",
                                     {{"stage", stage}, {"outcome", outcome}});
}
constexpr std::chrono::milliseconds kPauseSlice{100};
}  // namespace

StageRunner::StageRunner(std::string group, std::vector<std::string> topics, StageLog& log,
                         Stage& stage, const Clock& clock, RunnerOptions opts)
    : group_(std::move(group)),
      topics_(std::move(topics)),
      log_(log),
      stage_(stage),
      clock_(clock),
      opts_(opts),
      backoff_(BackoffOptions{std::chrono::milliseconds(50), opts.retry_backoff_max, 1 << 30}),
      stage_name_(stage.name()) {
  // Export the dead-letter series at 0 from the start, so "the first dead letter" is an
  // increase an alert rule can see.
  metrics::registry().counter("paystream_dead_letters_total", "Records sent to tx.dlq", {{"stage", stage_name_}});
}

StageRunner::~StageRunner() { stop(); }

void StageRunner::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    name_this_thread("ps-stage-" + stage_name_);
    loop();
  });
}

void StageRunner::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void StageRunner::pause(std::chrono::milliseconds d) {
  while (d.count() > 0 && !stopping_) {
    auto step = std::min(d, kPauseSlice);
    clock_.sleep_for(step);
    d -= step;
  }
}

void StageRunner::loop() {
  log::info("stage started", {{"stage", stage_name_}, {"group", group_}});
  while (!stopping_) run_once();
  log::info("stage stopped", {{"stage", stage_name_}, {"group", group_}});
}

bool StageRunner::handle_with_retries(const std::vector<Record>& batch, Effects* out) {
  auto& duration = metrics::registry().histogram("paystream_stage_duration_seconds",
                                                 "Time a stage spends handling one batch",
                                                 {{"stage", stage_name_}});
  for (int attempt = 1;; ++attempt) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = stage_.handle(batch);
    duration.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (r) {
      *out = std::move(r.value());
      return true;
    }
    if (!r.error().retryable && handle_records_singly(batch, r.error(), out)) return true;
    processed(stage_name_, "retried").inc(double(batch.size()));
    if (attempt == 1 || attempt % 20 == 0)
      log::warn("stage batch deferred: dependency unavailable",
                {{"stage", stage_name_}, {"code", r.error().code}, {"error", r.error().message},
                 {"attempt", std::to_string(attempt)}});
    if (stopping_) return false;
    pause(backoff_.delay(std::min(attempt, 30)));
    if (stopping_) return false;
  }
}

bool StageRunner::handle_records_singly(const std::vector<Record>& batch, const Error& batch_error,
                                        Effects* out) {
  // Isolate the poison: each record alone, up to max_record_attempts; a record that keeps
  // failing permanently becomes a dead letter. A retryable error defers the whole batch.
  Effects merged;
  for (const auto& rec : batch) {
    std::vector<Record> one{rec};
    Error last = batch_error;
    bool done = false;
    for (int attempt = 1; attempt <= std::max(1, opts_.max_record_attempts) && !done; ++attempt) {
      auto r = stage_.handle(one);
      if (r) {
        auto& e = r.value();
        for (auto& x : e.produce) merged.produce.push_back(std::move(x));
        for (auto& x : e.payment_outcomes) merged.payment_outcomes.push_back(std::move(x));
        for (auto& x : e.refund_outcomes) merged.refund_outcomes.push_back(std::move(x));
        for (auto& x : e.merchant_events) merged.merchant_events.push_back(std::move(x));
        for (auto& x : e.deliveries) merged.deliveries.push_back(std::move(x));
        for (auto& x : e.dead_letters) merged.dead_letters.push_back(std::move(x));
        done = true;
        break;
      }
      last = r.error();
      if (last.retryable) return false;  // dependency trouble, not poison: whole-batch retry
      if (attempt < opts_.max_record_attempts) pause(backoff_.delay(attempt));
    }
    if (!done) {
      log::error("record dead-lettered after permanent failures",
                 {{"stage", stage_name_}, {"payment_id", rec.event.key}, {"code", last.code},
                  {"error", last.message}});
      merged.dead_letters.push_back(
          DeadLetter{rec, last.code + ": " + last.message, std::max(1, opts_.max_record_attempts)});
    }
  }
  *out = std::move(merged);
  return true;
}

size_t StageRunner::run_once() {
  auto polled = log_.poll(group_, topics_, std::max<size_t>(1, opts_.batch_max), opts_.poll_wait);
  if (!polled) {
    log::warn("stage poll failed", {{"stage", stage_name_}, {"error", polled.error().message}});
    pause(backoff_.delay(3));
    return 0;
  }
  const auto& batch = polled.value();
  if (batch.empty()) return 0;

  Effects effects;
  if (!handle_with_retries(batch, &effects)) return 0;  // stopping with a deferred batch
  const size_t dead = effects.dead_letters.size();

  auto c = log_.commit(group_, batch, std::move(effects));
  if (!c) {
    ++commit_failures_;
    if (!c.error().retryable || commit_failures_ >= std::max(1, opts_.max_commit_attempts)) {
      log::warn("stage commit failed; committing record by record",
                {{"stage", stage_name_}, {"code", c.error().code}, {"error", c.error().message},
                 {"failures", std::to_string(commit_failures_)}});
      const size_t n = commit_records_singly(batch, c.error());
      if (n > 0) commit_failures_ = 0;
      return n;
    }
    // At-least-once: the records come back on the next poll and are handled again.
    log::warn("stage commit failed; will re-poll", {{"stage", stage_name_}, {"error", c.error().message}});
    pause(backoff_.delay(3));
    return 0;
  }
  commit_failures_ = 0;
  count_committed(batch.size(), dead);
  return batch.size();
}

size_t StageRunner::commit_records_singly(const std::vector<Record>& batch, const Error& batch_error) {
  // In batch order, so each commit only moves a position forward (the log takes a commit of
  // a prefix of what it handed out). Handling again is safe: stages are idempotent per
  // record (the processor's acquirer calls carry the payment id as their idempotency key).
  size_t committed = 0;
  for (const auto& rec : batch) {
    const std::vector<Record> one{rec};
    Error last = batch_error;
    bool done = false;
    for (int attempt = 1; attempt <= std::max(1, opts_.max_record_attempts) && !done; ++attempt) {
      Effects fx;
      if (!handle_with_retries(one, &fx)) return committed;  // stopping
      const size_t dead = fx.dead_letters.size();
      auto c = log_.commit(group_, one, std::move(fx));
      if (c) {
        count_committed(1, dead);
        done = true;
        break;
      }
      last = c.error();
      if (stopping_) return committed;
      pause(backoff_.delay(attempt));
    }
    if (done) {
      ++committed;
      continue;
    }
    // The record's own effects keep failing. If the log takes a dead letter for it, the
    // store is up and refuses this record: poison. If that fails too, it is an outage:
    // nothing is dead-lettered, and the rest of the batch is polled again later.
    Effects letter;
    letter.dead_letters.push_back(
        DeadLetter{rec, "commit_failed: " + last.code + ": " + last.message, std::max(1, opts_.max_record_attempts)});
    auto c = log_.commit(group_, one, std::move(letter));
    if (!c) {
      log::warn("dead letter commit failed too (an outage); will re-poll",
                {{"stage", stage_name_}, {"error", c.error().message}});
      pause(backoff_.delay(3));
      return committed;
    }
    log::error("record dead-lettered: its commit keeps failing",
               {{"stage", stage_name_}, {"payment_id", rec.event.key}, {"code", last.code},
                {"error", last.message}});
    count_committed(1, 1);
    ++committed;
  }
  return committed;
}

void StageRunner::count_committed(size_t records, size_t dead) {
  auto& reg = metrics::registry();
  reg.counter("paystream_stage_batches_total", "Batches committed by a stage", {{"stage", stage_name_}}).inc();
  processed(stage_name_, "ok").inc(double(records >= dead ? records - dead : 0));
  if (dead > 0) {
    processed(stage_name_, "dead_lettered").inc(double(dead));
    reg.counter("paystream_dead_letters_total", "Records sent to tx.dlq", {{"stage", stage_name_}})
        .inc(double(dead));
  }
}

}  // namespace ps
