// ProcessorStage (group "processor", consumes tx.validated):
//   payment.validated -> Acquirer::charge (payment id = the acquirer's idempotency key)
//     approved -> payment.succeeded; declined -> payment.failed with the decline code;
//     retries exhausted -> payment.failed "acquirer_timeout" (last error a timeout) or
//     "acquirer_unavailable"; a permanent acquirer error -> payment.failed "acquirer_error".
//   refund.requested -> Acquirer::refund (refund id = idempotency key):
//     approved -> refund.succeeded; a definite answer (decline, permanent error, or only
//     "unavailable" refusals, which happen before any effect) -> refund.failed, which
//     releases the amount reserved at intake. A refund where ANY attempt timed out and
//     none got an answer is AMBIGUOUS (the acquirer may have paid it out): it is NOT
//     failed but becomes a DeadLetter "refund outcome unknown after N attempts: acquirer
//     timeout" (attempts = N). The refund stays `processing` with its reservation held,
//     the dead-letter alert fires, and an operator replays it (`paystream dlq replay`)
//     once the acquirer answers; safe because the acquirer refund is idempotent by id.
// Every call has a per-attempt timeout; retryable errors are retried up to
// backoff.max_attempts with full-jitter backoff (slept via Clock::sleep_for), behind the
// CircuitBreaker "acquirer". Breaker accounting: one failure per failed ATTEMPT (not per
// payment), so a real outage opens it after failure_threshold calls instead of after
// threshold x max_attempts calls, and most in-flight records are deferred (stay
// processing) rather than failed; the processor cannot tell a per-card timeout from an
// outage. The price (a few per-card timeouts can open it) is bounded by the progress
// rule below.
// Deferral and progress: if the breaker denies a record's next attempt, the record is
// deferred and handle() returns a retryable error (code "circuit_open"); the runner waits
// and retries the same batch; nothing is failed. Across such retries:
//   * each record's spent attempts are remembered until its final outcome is memoized;
//   * each record's FINAL outcome (its event or dead letter) is memoized, keyed by the
//     record's identity (topic, offset, event id) -- not by payment id, so a DLQ replay
//     (new offset) calls the acquirer again and duplicates stay distinct -- and reused
//     when the batch comes back: finished work is never redone. Entries of a batch are
//     dropped when handle() returns it successfully; bound max_memo_entries, oldest
//     evicted (eviction only costs a repeated, idempotent acquirer call);
//   * a record admitted as the half-open TRIAL runs its remaining attempts to the end
//     without asking the breaker again, so every trial moves at least one record to a
//     final outcome: N always-timing-out payments finish within about
//     N x (open_duration + max_attempts x acquirer_timeout + backoff) and then the rest
//     of the batch proceeds.
// Latency bound (not reduced by batching): a batch's outcomes are committed together,
// after its slowest record chain, i.e. ceil(slow keys / concurrency) x (max_attempts x
// acquirer_timeout + sum of backoff ceilings), ~6.2 s with 3 x 2 s; see the test
// OneSlowRecordHoldsItsBatchOnlyForItsOwnRetryChain.
// Concurrency: records are processed by up to `concurrency` threads per batch; records
// with the same key strictly in order; effects are emitted in input order.
// Thread-safety: handle() is called from one runner thread (internal state is locked).
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
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
  size_t max_remembered_attempts = 100'000;                 // bound of the attempt memory
  size_t max_memo_entries = 65'536;                         // bound of the final-outcome memo
};

class ProcessorStage final : public Stage {
 public:
  ProcessorStage(Acquirer& acquirer, const Clock& clock, ProcessorConfig cfg = {});
  std::string_view name() const override { return "processor"; }
  Result<Effects> handle(const std::vector<Record>& batch) override;
  CircuitBreaker& breaker() { return breaker_; }

 private:
  struct Outcome {
    enum class Kind { pending, event, dead_letter, deferred } kind = Kind::pending;
    Event event;
    DeadLetter letter;
  };
  struct Progress {
    int attempts = 0;
    bool saw_timeout = false;   // some attempt timed out: the effect is unknown
  };
  struct CallResult {
    Result<AcquirerResult> result = Error::unavailable("acquirer_unavailable", "acquirer not reached");
    Progress progress;
    bool deferred = false;
  };
  struct MemoEntry {
    Outcome outcome;
    uint64_t seq = 0;
  };

  Outcome process(const Record& rec, const std::string& identity);
  // Calls `call` with retries (resuming the attempts remembered under `identity`).
  template <class Call>
  CallResult call_with_retries(const std::string& identity, Call&& call);
  // Memoizes the final outcome and forgets the attempt count, atomically.
  void finish(const std::string& identity, const Outcome& out);
  std::optional<Outcome> memoized(const std::string& identity);

  Acquirer& acquirer_;
  const Clock& clock_;
  const ProcessorConfig cfg_;
  Backoff backoff_;
  CircuitBreaker breaker_;
  std::mutex mu_;                                           // guards the three below
  std::unordered_map<std::string, Progress> progress_;      // key: record identity
  std::unordered_map<std::string, MemoEntry> memo_;         // key: record identity
  std::deque<std::pair<uint64_t, std::string>> memo_order_; // insertion order, for eviction
  uint64_t memo_seq_ = 0;
};

}  // namespace ps
