#include "stages/resilience.hpp"

#include <algorithm>

#include "common/log.hpp"

namespace ps {

CircuitBreaker::CircuitBreaker(std::string dependency, const Clock& clock, BreakerOptions opts)
    : dependency_(std::move(dependency)),
      clock_(clock),
      opts_(opts),
      gauge_(&metrics::registry().gauge("paystream_circuit_state",
                                        "Circuit breaker state per dependency (0 closed, 1 open, 2 half-open)",
                                        {{"dependency", dependency_}})) {
  gauge_->set(0);
}

CircuitBreaker::CircuitBreaker(std::string dependency, const Clock& clock, BreakerOptions opts,
                               StateObserver observer)
    : dependency_(std::move(dependency)), clock_(clock), opts_(opts), observer_(std::move(observer)) {}

void CircuitBreaker::set_state_locked(State s) {
  if (s == state_) return;
  const State from = state_;
  state_ = s;
  if (gauge_) gauge_->set(static_cast<double>(static_cast<int>(s)));
  if (observer_) observer_(from, s);
  static constexpr const char* kNames[] = {"closed", "open", "half_open"};
  log::info("circuit breaker state change", {{"dependency", dependency_}, {"state", kNames[int(s)]}});
}

void CircuitBreaker::refresh_locked(int64_t now_ms) {
  if (state_ == State::open && now_ms >= opened_at_ms_ + opts_.open_duration.count()) {
    trials_in_flight_ = 0;
    set_state_locked(State::half_open);
  }
}

CircuitBreaker::Admission CircuitBreaker::admit() {
  std::lock_guard lk(mu_);
  refresh_locked(clock_.now_ms());
  switch (state_) {
    case State::closed: return Admission::call;
    case State::open: return Admission::denied;
    case State::half_open:
      if (trials_in_flight_ >= std::max(1, opts_.half_open_max_trials)) return Admission::denied;
      ++trials_in_flight_;
      return Admission::trial;
  }
  return Admission::denied;
}

void CircuitBreaker::on_success() {
  std::lock_guard lk(mu_);
  consecutive_failures_ = 0;
  trials_in_flight_ = 0;
  set_state_locked(State::closed);
}

void CircuitBreaker::on_failure() {
  std::lock_guard lk(mu_);
  const int64_t now = clock_.now_ms();
  if (state_ == State::half_open) {
    trials_in_flight_ = 0;
    opened_at_ms_ = now;
    set_state_locked(State::open);
    return;
  }
  if (state_ == State::open) return;  // a late report from a call admitted before opening
  if (++consecutive_failures_ >= std::max(1, opts_.failure_threshold)) {
    opened_at_ms_ = now;
    set_state_locked(State::open);
  }
}

CircuitBreaker::State CircuitBreaker::state() {
  std::lock_guard lk(mu_);
  refresh_locked(clock_.now_ms());
  return state_;
}

int64_t CircuitBreaker::retry_at_ms() {
  std::lock_guard lk(mu_);
  const int64_t now = clock_.now_ms();
  refresh_locked(now);
  if (state_ == State::open) return opened_at_ms_ + opts_.open_duration.count();
  return now;
}

Backoff::Backoff(BackoffOptions opts, uint64_t seed) : opts_(opts), rng_(seed) {}

std::chrono::milliseconds Backoff::ceiling(int failed_attempts) const {
  const int64_t base = std::max<int64_t>(0, opts_.base.count());
  const int64_t cap = std::max<int64_t>(0, opts_.cap.count());
  const int shift = std::clamp(failed_attempts - 1, 0, 40);
  int64_t c = base;
  for (int i = 0; i < shift && c < cap; ++i) c *= 2;
  return std::chrono::milliseconds(std::min(c, cap));
}

std::chrono::milliseconds Backoff::delay(int failed_attempts) {
  const int64_t hi = ceiling(failed_attempts).count();
  std::lock_guard lk(mu_);
  std::uniform_int_distribution<int64_t> dist(0, hi);
  return std::chrono::milliseconds(dist(rng_));
}

}  // namespace ps
