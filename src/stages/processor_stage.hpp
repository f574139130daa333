// ProcessorStage (group "processor", consumes tx.validated):
//   payment.validated -> Acquirer::charge (payment id = the acquirer's idempotency key)
//     approved -> payment.succeeded; declined -> payment.failed with the decline code (a
//     charge the acquirer declines with kChargeVoidedCode, i.e. voided by an earlier
//     lookup, fails "acquirer_timeout": known not charged).
//   UNKNOWN OUTCOME (SPEC 2.2): a charge whose attempts end without the acquirer's result
//     (retries exhausted on timeouts or unavailable errors, or a permanent error) may have
//     been captured with its answer lost, or may still be in flight. It is NEVER failed on
//     that basis. It is resolved by Acquirer::lookup_charge (port contract: a negative
//     answer voids the id at the acquirer, so it is definitive), with up to
//     lookup_max_attempts attempts (same timeout, backoff and breaker as charges):
//       charged -> its recorded result, as above (approved -> payment.succeeded, settled);
//       not charged (voided) -> payment.failed with "acquirer_timeout" (the last charge
//         attempt timed out), "acquirer_unavailable" or "acquirer_error" (it was refused):
//         now truthful, the acquirer will never charge that id;
//       no answer within the bounded lookups (or a permanent lookup error) -> a DeadLetter
//         "charge outcome unknown after N attempts and M lookups: <last error>"
//         (attempts = N): the payment stays `processing`, the dead-letter alert fires,
//         paystream_acquirer_unknown_outcomes_total{op="charge"} counts it (alert
//         PaystreamAcquirerOutcomeUnknown). `paystream dlq replay` re-delivers the
//         payment.validated event; the processor charges again with the same payment id,
//         which is safe: the acquirer answers the recorded result if it charged, the void
//         decline if a lookup voided it (answer lost), or charges it now if it never saw
//         it -- never twice.
//   refund.requested -> Acquirer::refund (refund id = idempotency key):
//     approved -> refund.succeeded; a definite answer (decline, permanent error, or only
//     "unavailable" refusals, which happen before any effect) -> refund.failed, which
//     releases the amount reserved at intake. A refund where ANY attempt timed out and
//     none got an answer is AMBIGUOUS (the acquirer may have paid it out): it is NOT
//     failed but becomes a DeadLetter "refund outcome unknown after N attempts: acquirer
//     timeout" (attempts = N), counted in paystream_acquirer_unknown_outcomes_total
//     {op="refund"}. The refund stays `processing` with its reservation held,
//     the dead-letter alert fires, and an operator replays it (`paystream dlq replay`)
//     once the acquirer answers; safe because the acquirer refund is idempotent by id.
// Every call has a per-attempt timeout; retryable errors are retried up to
// backoff.max_attempts with full-jitter backoff (slept via Clock::sleep_for), behind the
// CircuitBreaker "acquirer". Breaker accounting: one failure per failed ATTEMPT (not per
// payment), so a real outage opens it after failure_threshold calls instead of after
// threshold x max_attempts calls, and most in-flight records are deferred (stay
// processing) rather than failed; the processor cannot tell a per-card timeout from an
// outage. The price (a few per-card timeouts can open it) is bounded by the progress
// rule below. Lookups count like charges: an answered lookup closes the breaker (the
// acquirer is reachable), a failed one counts one failure.
// Deferral and progress: if the breaker denies a record's next attempt (charge or
// lookup), the record is deferred and handle() returns a retryable error (code
// "circuit_open"); the runner waits and retries the same batch; nothing is failed.
// Across such retries:
//   * each record's spent attempts (charge attempts, then lookups) are remembered until
//     its final outcome is memoized: a record deferred during its lookups resumes them,
//     it is not charged again;
//   * each record's FINAL outcome (its event or dead letter) is memoized, keyed by the
//     record's identity (topic, offset, event id) -- not by payment id, so a DLQ replay
//     (new offset) calls the acquirer again and duplicates stay distinct -- and reused
//     when the batch comes back: finished work is never redone. Entries of a batch are
//     dropped when handle() returns it successfully; bound max_memo_entries, oldest
//     evicted (eviction only costs a repeated, idempotent acquirer call);
//   * a record admitted as the half-open TRIAL runs its remaining attempts (charges and
//     lookups) to the end without asking the breaker again, so every trial moves at least
//     one record to a final outcome: N always-timing-out payments finish within about
//     N x (open_duration + (max_attempts + lookup_max_attempts) x acquirer_timeout +
//     backoff) and then the rest of the batch proceeds.
// Latency bound (not reduced by batching): a batch's outcomes are committed together,
// after its slowest record chain, i.e. ceil(slow keys / concurrency) x ((max_attempts +
// lookups) x acquirer_timeout + sum of backoff ceilings): ~6.2 s with 3 x 2 s when the
// acquirer answers the lookup at once (tok_timeout), ~12.5 s when lookups time out too;
// see the test OneSlowRecordHoldsItsBatchOnlyForItsOwnRetryChain.
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
  int lookup_max_attempts = 3;                              // lookups of an unknown charge outcome
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
    int attempts = 0;           // charge (refund) attempts spent
    bool saw_timeout = false;   // some attempt timed out: the effect is unknown
    std::string unresolved_code;  // failure code if a lookup finds it not charged
    int lookups = 0;            // lookup attempts spent on an unknown charge outcome
  };
  template <class T>
  struct CallResult {
    Result<T> result = Error::unavailable("acquirer_unavailable", "acquirer not reached");
    bool deferred = false;
  };
  struct MemoEntry {
    Outcome outcome;
    uint64_t seq = 0;
  };

  Outcome process(const Record& rec, const std::string& identity);
  Outcome charge(const Record& rec, const std::string& identity, Payment p);
  // Calls `call` until it answers, up to `max_attempts` counted in `spent` (a field of
  // `progress`, which holds what earlier passes spent). On a denied admission remembers
  // `progress` under `identity` and returns deferred. `trial_owner`: see the header.
  // T = AcquirerResult (charge, refund) or std::optional<AcquirerResult> (lookup).
  template <class T, class Call>
  CallResult<T> call_with_retries(const std::string& identity, Progress& progress, int& spent, int max_attempts,
                                  bool& trial_owner, Call&& call);
  Progress remembered(const std::string& identity);
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
