// ProcessorStage (group "processor", consumes tx.validated):
//   payment.validated -> Acquirer::charge (payment id = the acquirer's idempotency key)
//     approved -> payment.succeeded; declined -> payment.failed with the decline code;
//     retries exhausted -> payment.failed "acquirer_timeout" (last error a timeout) or
//     "acquirer_unavailable"; a permanent acquirer error -> payment.failed "acquirer_error".
//   refund.requested -> Acquirer::refund -> refund.succeeded / refund.failed (same codes).
// Every call has a per-attempt timeout; retryable errors are retried up to
// backoff.max_attempts with full-jitter backoff (slept via Clock::sleep_for), behind the
// CircuitBreaker "acquirer". If the breaker is open when a batch starts, or opens while
// records still had attempts left, handle() returns a retryable error (code
// "circuit_open"): the runner waits and retries the batch; nothing is failed. Attempts
// already spent on a deferred record are remembered (bounded map), so a record that keeps
// timing out still reaches a terminal status. Re-charging after a deferral is safe: the
// acquirer is idempotent by payment id.
// Concurrency: records are processed by up to `concurrency` threads per batch; records
// with the same key strictly in order; effects are emitted in input order.
// Thread-safety: handle() is called from one runner thread.
#pragma once
#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/external.hpp"
#include "stages/resilience.hpp"
#include "stages/stage_runner.hpp"

namespace ps {

struct ProcessorConfig {
  std::chrono::milliseconds acquirer_timeout{2'000};        // per attempt
  BackoffOptions backoff{std::chrono::milliseconds(50), std::chrono::milliseconds(2'000), 4};
  BreakerOptions breaker{};
  size_t concurrency = 32;                                  // threads per batch
  uint64_t seed = 42;                                       // backoff jitter
  size_t max_remembered_attempts = 100'000;                 // bound of the deferral memory
};

class ProcessorStage final : public Stage {
 public:
  ProcessorStage(Acquirer& acquirer, const Clock& clock, ProcessorConfig cfg = {});
  std::string_view name() const override { return "processor"; }
  Result<Effects> handle(const std::vector<Record>& batch) override;
  CircuitBreaker& breaker() { return breaker_; }

 private:
  struct Outcome {
    enum class Kind { event, dead_letter, deferred } kind = Kind::event;
    Event event;
    DeadLetter letter;
  };
  Outcome process(const Record& rec);
  // Calls `call` with retries; nullopt-like: returns the result, or sets *deferred.
  template <class Call>
  Result<AcquirerResult> call_with_retries(const std::string& key, Call&& call, bool* deferred);

  Acquirer& acquirer_;
  const Clock& clock_;
  const ProcessorConfig cfg_;
  Backoff backoff_;
  CircuitBreaker breaker_;
  std::mutex attempts_mu_;
  std::unordered_map<std::string, int> spent_attempts_;   // key: payment or refund id
};

}  // namespace ps
