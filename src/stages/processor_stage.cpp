#include "stages/processor_stage.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/ids.hpp"

namespace ps {
namespace {
constexpr std::string_view kSource = "/paystream/processor";

metrics::Counter& acquirer_calls(const char* outcome) {
  return metrics::registry().counter("paystream_acquirer_calls_total", "Acquirer calls by outcome",
                                     {{"outcome", outcome}});
}
}  // namespace

ProcessorStage::ProcessorStage(Acquirer& acquirer, const Clock& clock, ProcessorConfig cfg)
    : acquirer_(acquirer), clock_(clock), cfg_(cfg), backoff_(cfg.backoff, cfg.seed),
      breaker_("acquirer", clock, cfg.breaker) {}

template <class Call>
ProcessorStage::CallResult ProcessorStage::call_with_retries(const std::string& identity, Call&& call) {
  CallResult out;
  {
    std::lock_guard lk(mu_);
    if (auto it = progress_.find(identity); it != progress_.end()) out.progress = it->second;
  }
  const int max_attempts = std::max(1, cfg_.backoff.max_attempts);
  bool trial_owner = false;   // admitted as the half-open trial: finish this record's attempts
  while (out.progress.attempts < max_attempts) {
    if (!trial_owner) {
      const auto admission = breaker_.admit();
      if (admission == CircuitBreaker::Admission::denied) {
        out.deferred = true;
        out.result = Error::unavailable("circuit_open", "acquirer circuit breaker is open");
        std::lock_guard lk(mu_);
        if (progress_.size() >= cfg_.max_remembered_attempts && !progress_.count(identity))
          progress_.clear();   // safety bound only: at most one batch of records is ever deferred
        progress_[identity] = out.progress;
        return out;
      }
      trial_owner = admission == CircuitBreaker::Admission::trial;
    }
    ++out.progress.attempts;
    auto r = call();
    if (r || !r.error().retryable) {
      breaker_.on_success();   // the acquirer answered (an approval, a decline or a refusal)
      acquirer_calls(r ? (r->approved ? "approved" : "declined") : "rejected").inc();
      out.result = std::move(r);
      return out;
    }
    // A failed attempt counts once toward the breaker (per attempt, see the header). A
    // trial owner's later reports land on an open breaker (ignored) or close it.
    breaker_.on_failure();
    const bool timed_out = r.error().kind == ErrorKind::timeout;
    acquirer_calls(timed_out ? "timeout" : "unavailable").inc();
    out.progress.saw_timeout = out.progress.saw_timeout || timed_out;
    out.result = std::move(r);
    if (out.progress.attempts < max_attempts) clock_.sleep_for(backoff_.delay(out.progress.attempts));
  }
  return out;   // retries exhausted: out.result is the last error
}

void ProcessorStage::finish(const std::string& identity, const Outcome& out) {
  std::lock_guard lk(mu_);
  progress_.erase(identity);
  const size_t bound = std::max<size_t>(1, cfg_.max_memo_entries);
  while (memo_.size() >= bound && !memo_order_.empty()) {
    auto [seq, key] = std::move(memo_order_.front());
    memo_order_.pop_front();
    if (auto it = memo_.find(key); it != memo_.end() && it->second.seq == seq) memo_.erase(it);
  }
  const uint64_t seq = ++memo_seq_;
  memo_[identity] = MemoEntry{out, seq};
  memo_order_.emplace_back(seq, identity);
  // The order queue also holds stale pairs of entries dropped on success; keep it bounded.
  while (memo_order_.size() > 2 * bound) {
    auto [old_seq, key] = std::move(memo_order_.front());
    memo_order_.pop_front();
    if (auto it = memo_.find(key); it != memo_.end() && it->second.seq == old_seq) memo_.erase(it);
  }
}

std::optional<ProcessorStage::Outcome> ProcessorStage::memoized(const std::string& identity) {
  std::lock_guard lk(mu_);
  if (auto it = memo_.find(identity); it != memo_.end()) return it->second.outcome;
  return std::nullopt;
}

namespace {
std::string exhausted_code(const Error& e) {
  return e.kind == ErrorKind::timeout ? "acquirer_timeout" : "acquirer_unavailable";
}
std::string identity_of(const Record& rec) {
  return rec.topic + "@" + std::to_string(rec.offset) + "/" + rec.event.id;
}
}  // namespace

ProcessorStage::Outcome ProcessorStage::process(const Record& rec, const std::string& identity) {
  if (auto memo = memoized(identity)) return std::move(*memo);   // finished in an earlier pass
  Outcome out;
  const auto& type = rec.event.type;
  if (type != event_types::payment_validated && type != event_types::refund_requested) {
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec, "unexpected event type for processor: " + type, 1};
    return out;
  }
  auto payload = decode_payload(rec.event.data);
  if (!payload) {
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec, payload.error().code + ": " + payload.error().message, 1};
    return out;
  }
  if (type == event_types::payment_validated) {
    if (!payload->payment) {
      out.kind = Outcome::Kind::dead_letter;
      out.letter = {rec, "event_schema_invalid: no payment in payment.validated", 1};
      return out;
    }
    Payment p = std::move(*payload->payment);
    ChargeRequest req{p.id, p.amount_minor, p.currency, p.source};
    auto c = call_with_retries(identity, [&] { return acquirer_.charge(req, cfg_.acquirer_timeout); });
    if (c.deferred) { out.kind = Outcome::Kind::deferred; return out; }
    const auto& r = c.result;
    const int64_t now = clock_.now_ms();
    p.updated_ms = now;
    out.kind = Outcome::Kind::event;
    if (r && r->approved) {
      p.status = PaymentStatus::succeeded;
      p.failure_code.clear();
      out.event = make_payment_event(p, event_types::payment_succeeded, kSource, now, rec.event.traceparent);
    } else {
      p.status = PaymentStatus::failed;
      p.failure_code = r ? (r->decline_code.empty() ? std::string("card_declined") : r->decline_code)
                         : (r.error().retryable ? exhausted_code(r.error()) : std::string("acquirer_error"));
      log::info("payment failed at acquirer", {{"payment_id", p.id}, {"failure_code", p.failure_code},
                                               {"attempts", std::to_string(c.progress.attempts)},
                                               {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      out.event = make_payment_event(p, event_types::payment_failed, kSource, now, rec.event.traceparent);
    }
    finish(identity, out);
    return out;
  }
  // refund.requested
  if (!payload->refund) {
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec, "event_schema_invalid: no refund in refund.requested", 1};
    return out;
  }
  Refund f = std::move(*payload->refund);
  AcquirerRefundRequest req{f.id, f.payment_id, f.amount_minor, f.currency};
  auto c = call_with_retries(identity, [&] { return acquirer_.refund(req, cfg_.acquirer_timeout); });
  if (c.deferred) { out.kind = Outcome::Kind::deferred; return out; }
  const auto& r = c.result;
  if (!r && r.error().retryable && c.progress.saw_timeout) {
    // Ambiguous: the acquirer may have executed the refund. Failing it would release the
    // reservation and allow a second payout; hold it and hand it to an operator.
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec,
                  "refund outcome unknown after " + std::to_string(c.progress.attempts) +
                      " attempts: acquirer timeout",
                  c.progress.attempts};
    log::error("refund outcome unknown; dead-lettered, reservation held",
               {{"refund_id", f.id}, {"payment_id", f.payment_id},
                {"attempts", std::to_string(c.progress.attempts)},
                {"trace_id", log::trace_id_of(rec.event.traceparent)}});
    finish(identity, out);
    return out;
  }
  const int64_t now = clock_.now_ms();
  f.updated_ms = now;
  out.kind = Outcome::Kind::event;
  if (r && r->approved) {
    f.status = RefundStatus::succeeded;
    f.failure_code.clear();
    out.event = make_refund_event(f, event_types::refund_succeeded, kSource, now, rec.event.traceparent);
  } else {
    f.status = RefundStatus::failed;
    f.failure_code = r ? (r->decline_code.empty() ? std::string("refund_declined") : r->decline_code)
                       : (r.error().retryable ? exhausted_code(r.error()) : std::string("acquirer_error"));
    out.event = make_refund_event(f, event_types::refund_failed, kSource, now, rec.event.traceparent);
  }
  finish(identity, out);
  return out;
}

Result<Effects> ProcessorStage::handle(const std::vector<Record>& batch) {
  // No early return on an open breaker: records finished in an earlier pass (memoized)
  // and poison records still resolve; records that need a call are deferred.
  std::vector<std::string> ids(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) ids[i] = identity_of(batch[i]);

  // Group indices by key, groups in order of first appearance.
  std::vector<std::vector<size_t>> groups;
  {
    std::map<std::string, size_t> by_key;
    for (size_t i = 0; i < batch.size(); ++i) {
      auto [it, fresh] = by_key.try_emplace(batch[i].event.key, groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(i);
    }
  }
  std::vector<Outcome> outcomes(batch.size());
  std::atomic<size_t> next_group{0};
  auto worker = [&] {
    for (size_t g; (g = next_group.fetch_add(1)) < groups.size();) {
      for (size_t i : groups[g]) {
        outcomes[i] = process(batch[i], ids[i]);
        if (outcomes[i].kind == Outcome::Kind::deferred) break;  // later records of this key wait
      }
    }
  };
  const size_t threads = std::min(std::max<size_t>(1, cfg_.concurrency), groups.size());
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }

  size_t deferred = 0, finished = 0;
  for (auto& o : outcomes) {
    if (o.kind == Outcome::Kind::deferred || o.kind == Outcome::Kind::pending) ++deferred;
    else ++finished;
  }
  if (deferred > 0) {
    // Finished outcomes stay memoized (and attempts of deferred ones remembered), so the
    // retried batch only redoes what is still open. The runner logs the deferral.
    return Error::unavailable("circuit_open", "acquirer circuit breaker is open (" + std::to_string(deferred) +
                                                  " records deferred, " + std::to_string(finished) + " finished)");
  }
  Effects effects;
  for (auto& o : outcomes) {
    if (o.kind == Outcome::Kind::event) effects.produce.push_back(std::move(o.event));
    else effects.dead_letters.push_back(std::move(o.letter));
  }
  {
    // The batch goes to commit: its memo entries are no longer needed (a re-poll after a
    // failed commit repeats idempotent acquirer calls, which is safe).
    std::lock_guard lk(mu_);
    for (const auto& id : ids) memo_.erase(id);
  }
  return effects;
}

}  // namespace ps
