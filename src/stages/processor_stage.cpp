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
Result<AcquirerResult> ProcessorStage::call_with_retries(const std::string& key, Call&& call,
                                                         bool* deferred) {
  *deferred = false;
  int attempts = 0;
  {
    std::lock_guard lk(attempts_mu_);
    if (auto it = spent_attempts_.find(key); it != spent_attempts_.end()) attempts = it->second;
  }
  const int max_attempts = std::max(1, cfg_.backoff.max_attempts);
  Error last = Error::unavailable("acquirer_unavailable", "acquirer not reached");
  while (attempts < max_attempts) {
    if (!breaker_.allow()) {
      *deferred = true;
      std::lock_guard lk(attempts_mu_);
      if (spent_attempts_.size() >= cfg_.max_remembered_attempts) spent_attempts_.clear();
      spent_attempts_[key] = attempts;
      return Error::unavailable("circuit_open", "acquirer circuit breaker is open");
    }
    ++attempts;
    auto r = call();
    if (r || !r.error().retryable) {
      breaker_.on_success();   // the acquirer answered (an approval, a decline or a refusal)
      acquirer_calls(r ? (r->approved ? "approved" : "declined") : "rejected").inc();
      std::lock_guard lk(attempts_mu_);
      spent_attempts_.erase(key);
      return r;
    }
    breaker_.on_failure();
    acquirer_calls(r.error().kind == ErrorKind::timeout ? "timeout" : "unavailable").inc();
    last = r.error();
    if (attempts < max_attempts) clock_.sleep_for(backoff_.delay(attempts));
  }
  std::lock_guard lk(attempts_mu_);
  spent_attempts_.erase(key);
  return last;   // retries exhausted
}

namespace {
std::string exhausted_code(const Error& e) {
  return e.kind == ErrorKind::timeout ? "acquirer_timeout" : "acquirer_unavailable";
}
}  // namespace

ProcessorStage::Outcome ProcessorStage::process(const Record& rec) {
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
  bool deferred = false;
  if (type == event_types::payment_validated) {
    if (!payload->payment) {
      out.kind = Outcome::Kind::dead_letter;
      out.letter = {rec, "event_schema_invalid: no payment in payment.validated", 1};
      return out;
    }
    Payment p = std::move(*payload->payment);
    ChargeRequest req{p.id, p.amount_minor, p.currency, p.source};
    auto r = call_with_retries(p.id, [&] { return acquirer_.charge(req, cfg_.acquirer_timeout); }, &deferred);
    if (deferred) { out.kind = Outcome::Kind::deferred; return out; }
    const int64_t now = clock_.now_ms();
    p.updated_ms = now;
    if (r && r->approved) {
      p.status = PaymentStatus::succeeded;
      p.failure_code.clear();
      out.event = make_payment_event(p, event_types::payment_succeeded, kSource, now, rec.event.traceparent);
    } else {
      p.status = PaymentStatus::failed;
      p.failure_code = r ? (r->decline_code.empty() ? std::string("card_declined") : r->decline_code)
                         : (r.error().retryable ? exhausted_code(r.error()) : std::string("acquirer_error"));
      log::info("payment failed at acquirer", {{"payment_id", p.id}, {"failure_code", p.failure_code},
                                               {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      out.event = make_payment_event(p, event_types::payment_failed, kSource, now, rec.event.traceparent);
    }
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
  auto r = call_with_retries(f.id, [&] { return acquirer_.refund(req, cfg_.acquirer_timeout); }, &deferred);
  if (deferred) { out.kind = Outcome::Kind::deferred; return out; }
  const int64_t now = clock_.now_ms();
  f.updated_ms = now;
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
  return out;
}

Result<Effects> ProcessorStage::handle(const std::vector<Record>& batch) {
  if (breaker_.state() == CircuitBreaker::State::open)
    return Error::unavailable("circuit_open", "acquirer circuit breaker is open");

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
        outcomes[i] = process(batch[i]);
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

  Effects effects;
  for (auto& o : outcomes) {
    if (o.kind == Outcome::Kind::deferred)
      return Error::unavailable("circuit_open", "acquirer circuit breaker opened during the batch");
  }
  for (auto& o : outcomes) {
    if (o.kind == Outcome::Kind::event) effects.produce.push_back(std::move(o.event));
    else effects.dead_letters.push_back(std::move(o.letter));
  }
  return effects;
}

}  // namespace ps
