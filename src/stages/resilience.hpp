// Resilience helpers for calls to dependencies: a circuit breaker and capped exponential
// backoff with full jitter.
//
// CircuitBreaker: closed -> open after `failure_threshold` consecutive failures; open ->
// half-open once `open_duration` has passed on the injected Clock; half-open admits at
// most `half_open_max_trials` calls at a time; a trial success closes it, a trial failure
// re-opens it. Every call admitted by allow()/admit() must be reported exactly once with
// on_success() or on_failure(). admit() is allow() that also tells a half-open trial slot
// apart from a normal (closed) admission, so a caller may let the trial's owner finish
// its own bounded retries (the processor does, to guarantee progress while open). State is exported as gauge
// paystream_circuit_state{dependency} (0 closed, 1 open, 2 half-open) — unless the breaker
// is built with a StateObserver, which then gets every state change instead (for breakers
// whose dependency name must not become a metric label, e.g. one per webhook endpoint).
// Backoff: delay(n) is uniform in [0, min(cap, base * 2^(n-1))] (full jitter), from a
// seeded std::mt19937_64, so tests are reproducible; bounded by max_attempts.
// Thread-safety: both classes are thread-safe.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <string>

#include "common/metrics.hpp"
#include "ports/clock.hpp"

namespace ps {

struct BreakerOptions {
  int failure_threshold = 5;                    // consecutive failures that open it
  std::chrono::milliseconds open_duration{30'000};
  int half_open_max_trials = 1;                 // concurrent trial calls while half-open
};

class CircuitBreaker {
 public:
  enum class State { closed = 0, open = 1, half_open = 2 };
  enum class Admission { denied, call, trial };

  // Called on every state change (under the breaker's lock: it must not call back).
  using StateObserver = std::function<void(State from, State to)>;

  CircuitBreaker(std::string dependency, const Clock& clock, BreakerOptions opts = {});
  CircuitBreaker(std::string dependency, const Clock& clock, BreakerOptions opts, StateObserver observer);
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // True if a call may go ahead now (closed, or a half-open trial slot). The caller then
  // reports the outcome with on_success()/on_failure().
  bool allow() { return admit() != Admission::denied; }
  // As allow(); `trial` when the call took a half-open trial slot.
  Admission admit();
  void on_success();
  void on_failure();
  // Current state (open turns half-open here once open_duration has passed).
  State state();
  // Epoch ms from which a call may be tried again: now when closed or half-open, the end
  // of the open period when open.
  int64_t retry_at_ms();
  const std::string& dependency() const { return dependency_; }

 private:
  void refresh_locked(int64_t now_ms);
  void set_state_locked(State s);

  const std::string dependency_;
  const Clock& clock_;
  const BreakerOptions opts_;
  metrics::Gauge* gauge_ = nullptr;   // null with an observer
  StateObserver observer_;
  std::mutex mu_;
  State state_ = State::closed;
  int consecutive_failures_ = 0;
  int trials_in_flight_ = 0;
  int64_t opened_at_ms_ = 0;
};

struct BackoffOptions {
  std::chrono::milliseconds base{50};
  std::chrono::milliseconds cap{2'000};
  int max_attempts = 4;   // total attempts, the first included
};

class Backoff {
 public:
  explicit Backoff(BackoffOptions opts = {}, uint64_t seed = 42);
  // Wait before the attempt after the `failed_attempts`-th failure (1-based).
  std::chrono::milliseconds delay(int failed_attempts);
  // Upper bound of delay(failed_attempts) (before jitter).
  std::chrono::milliseconds ceiling(int failed_attempts) const;
  bool exhausted(int attempts_made) const { return attempts_made >= opts_.max_attempts; }
  int max_attempts() const { return opts_.max_attempts; }

 private:
  const BackoffOptions opts_;
  std::mutex mu_;
  std::mt19937_64 rng_;
};

}  // namespace ps
