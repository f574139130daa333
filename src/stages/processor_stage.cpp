#include "stages/processor_stage.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>
#include <type_traits>

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
metrics::Counter& lookups(const char* outcome) {
  return metrics::registry().counter("paystream_acquirer_lookups_total",
                                     "Lookups of unknown charge outcomes by outcome", {{"outcome", outcome}});
}
metrics::Counter& unknown_outcomes(const char* op) {
  return metrics::registry().counter(
      "paystream_acquirer_unknown_outcomes_total",
      "Acquirer calls whose outcome stayed unknown after bounded retries (dead-lettered, still processing)",
      {{"op", op}});
}
}  // namespace

ProcessorStage::ProcessorStage(Acquirer& acquirer, const Clock& clock, ProcessorConfig cfg)
    : acquirer_(acquirer), clock_(clock), cfg_(cfg), backoff_(cfg.backoff, cfg.seed),
      breaker_("acquirer", clock, cfg.breaker) {
  // Exported at 0 from the start, so the alert's increase() sees the first one.
  unknown_outcomes("charge");
  unknown_outcomes("refund");
  for (const char* o : {"charged", "not_charged", "timeout", "unavailable", "error"}) lookups(o);
}

ProcessorStage::Progress ProcessorStage::remembered(const std::string& identity) {
  std::lock_guard lk(mu_);
  if (auto it = progress_.find(identity); it != progress_.end()) return it->second;
  return {};
}

template <class T, class Call>
ProcessorStage::CallResult<T> ProcessorStage::call_with_retries(const std::string& identity, Progress& progress,
                                                                int& spent, int max_attempts, bool& trial_owner,
                                                                Call&& call) {
  CallResult<T> out;
  max_attempts = std::max(1, max_attempts);
  constexpr bool lookup = std::is_same_v<T, std::optional<AcquirerResult>>;   // else a charge or refund
  while (spent < max_attempts) {
    if (!trial_owner) {
      const auto admission = breaker_.admit();
      if (admission == CircuitBreaker::Admission::denied) {
        out.deferred = true;
        out.result = Error::unavailable("circuit_open", "acquirer circuit breaker is open");
        std::lock_guard lk(mu_);
        if (progress_.size() >= cfg_.max_remembered_attempts && !progress_.count(identity))
          progress_.clear();   // safety bound only: at most one batch of records is ever deferred
        progress_[identity] = progress;
        return out;
      }
      trial_owner = admission == CircuitBreaker::Admission::trial;
    }
    ++spent;
    auto r = call();
    if (r || !r.error().retryable) {
      breaker_.on_success();   // the acquirer answered (a result or a refusal)
      if constexpr (lookup) lookups(r ? (r->has_value() ? "charged" : "not_charged") : "error").inc();
      else acquirer_calls(r ? (r->approved ? "approved" : "declined") : "rejected").inc();
      out.result = std::move(r);
      return out;
    }
    // A failed attempt counts once toward the breaker (per attempt, see the header). A
    // trial owner's later reports land on an open breaker (ignored) or close it.
    breaker_.on_failure();
    const bool timed_out = r.error().kind == ErrorKind::timeout;
    (lookup ? lookups(timed_out ? "timeout" : "unavailable") : acquirer_calls(timed_out ? "timeout" : "unavailable"))
        .inc();
    if (!lookup) progress.saw_timeout = progress.saw_timeout || timed_out;
    out.result = std::move(r);
    if (spent < max_attempts) clock_.sleep_for(backoff_.delay(spent));
  }
  return out;   // retries exhausted: out.result is the last error (or "not reached" if resumed exhausted)
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

ProcessorStage::Outcome ProcessorStage::charge(const Record& rec, const std::string& identity, Payment p) {
  Outcome out;
  Progress progress = remembered(identity);
  bool trial_owner = false;
  const ChargeRequest req{p.id, p.amount_minor, p.currency, p.source};
  auto c = call_with_retries<AcquirerResult>(identity, progress, progress.attempts, cfg_.backoff.max_attempts,
                                             trial_owner,
                                             [&] { return acquirer_.charge(req, cfg_.acquirer_timeout); });
  if (c.deferred) { out.kind = Outcome::Kind::deferred; return out; }
  std::optional<AcquirerResult> result;   // the acquirer's answer, if known
  bool not_charged = false;               // definitively: a lookup voided the id
  if (c.result) {
    result = std::move(*c.result);
  } else {
    // Unknown outcome: the charge may have been captured (answer lost) or be in flight.
    if (progress.unresolved_code.empty()) {
      const Error& e = c.result.error();
      progress.unresolved_code = e.retryable ? exhausted_code(e) : std::string("acquirer_error");
    }
    auto l = call_with_retries<std::optional<AcquirerResult>>(
        identity, progress, progress.lookups, cfg_.lookup_max_attempts, trial_owner,
        [&] { return acquirer_.lookup_charge(p.id, cfg_.acquirer_timeout); });
    if (l.deferred) { out.kind = Outcome::Kind::deferred; return out; }
    if (!l.result) {
      out.kind = Outcome::Kind::dead_letter;
      out.letter = {rec,
                    "charge outcome unknown after " + std::to_string(progress.attempts) + " attempts and " +
                        std::to_string(progress.lookups) + " lookups: " + l.result.error().message,
                    progress.attempts};
      unknown_outcomes("charge").inc();
      log::error("charge outcome unknown; dead-lettered, payment stays processing",
                 {{"payment_id", p.id}, {"attempts", std::to_string(progress.attempts)},
                  {"lookups", std::to_string(progress.lookups)}, {"error", l.result.error().message},
                  {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      finish(identity, out);
      return out;
    }
    if (l.result->has_value()) result = std::move(**l.result);
    else not_charged = true;
  }
  const int64_t now = clock_.now_ms();
  p.updated_ms = now;
  out.kind = Outcome::Kind::event;
  if (result && result->approved) {
    p.status = PaymentStatus::succeeded;
    p.failure_code.clear();
    out.event = make_payment_event(p, event_types::payment_succeeded, kSource, now, rec.event.traceparent);
  } else {
    p.status = PaymentStatus::failed;
    if (not_charged) p.failure_code = progress.unresolved_code;
    else if (result->decline_code == kChargeVoidedCode) p.failure_code = "acquirer_timeout";   // voided earlier
    else p.failure_code = result->decline_code.empty() ? std::string("card_declined") : result->decline_code;
    log::info("payment failed at acquirer", {{"payment_id", p.id}, {"failure_code", p.failure_code},
                                             {"attempts", std::to_string(progress.attempts)},
                                             {"lookups", std::to_string(progress.lookups)},
                                             {"trace_id", log::trace_id_of(rec.event.traceparent)}});
    out.event = make_payment_event(p, event_types::payment_failed, kSource, now, rec.event.traceparent);
  }
  finish(identity, out);
  return out;
}

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
    return charge(rec, identity, std::move(*payload->payment));
  }
  // refund.requested
  if (!payload->refund) {
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec, "event_schema_invalid: no refund in refund.requested", 1};
    return out;
  }
  Refund f = std::move(*payload->refund);
  AcquirerRefundRequest req{f.id, f.payment_id, f.amount_minor, f.currency};
  Progress progress = remembered(identity);
  bool trial_owner = false;
  auto c = call_with_retries<AcquirerResult>(identity, progress, progress.attempts, cfg_.backoff.max_attempts,
                                             trial_owner,
                                             [&] { return acquirer_.refund(req, cfg_.acquirer_timeout); });
  if (c.deferred) { out.kind = Outcome::Kind::deferred; return out; }
  const auto& r = c.result;
  if (!r && r.error().retryable && progress.saw_timeout) {
    // Ambiguous: the acquirer may have executed the refund. Failing it would release the
    // reservation and allow a second payout; hold it and hand it to an operator.
    out.kind = Outcome::Kind::dead_letter;
    out.letter = {rec,
                  "refund outcome unknown after " + std::to_string(progress.attempts) +
                      " attempts: acquirer timeout",
                  progress.attempts};
    unknown_outcomes("refund").inc();
    log::error("refund outcome unknown; dead-lettered, reservation held",
               {{"refund_id", f.id}, {"payment_id", f.payment_id},
                {"attempts", std::to_string(progress.attempts)},
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
