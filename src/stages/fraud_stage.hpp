// FraudStage (group "fraud", consumes tx.initiated): payment.initiated -> payment.validated
// (tx.validated) or payment.failed with failure_code "fraud_declined" (tx.failed).
//
// Rules, in order: blocklist of sources; per-currency amount limit; velocity per source
// and per merchant within a sliding window (VelocityCounter port; if the counter errors
// the velocity rule is skipped — fast state is non-authoritative — and counted in
// paystream_fraud_velocity_errors_total); then the optional RiskProvider behind a timeout
// and the CircuitBreaker "risk". When the provider errors or the breaker is open, the
// fallback applies: approve iff amount < fallback_approve_below_minor.
// Undecodable records and unexpected event types become dead letters.
// Note: a redelivered batch counts velocity hits again (at-least-once).
// Thread-safety: handle() is called from one runner thread; the stage keeps no batch state.
#pragma once
#include <chrono>
#include <map>
#include <set>
#include <string>

#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/external.hpp"
#include "ports/fast_state.hpp"
#include "stages/resilience.hpp"
#include "stages/stage_runner.hpp"

namespace ps {

struct FraudConfig {
  std::map<std::string, int64_t> amount_limit_minor;   // currency -> max amount (inclusive)
  int64_t velocity_window_ms = 60'000;
  int64_t max_per_source = 1'000;                       // hits in the window, this one included
  int64_t max_per_merchant = 1'000'000;
  std::set<std::string> blocklist{"tok_fraud"};
  std::chrono::milliseconds risk_timeout{300};
  int64_t fallback_approve_below_minor = 100'000;       // used when the provider is unavailable
  BreakerOptions risk_breaker{};
};

class FraudStage final : public Stage {
 public:
  // `risk` may be nullptr (no external provider). References must outlive the stage.
  FraudStage(VelocityCounter& velocity, const Clock& clock, FraudConfig cfg = {},
             RiskProvider* risk = nullptr);
  std::string_view name() const override { return "fraud"; }
  Result<Effects> handle(const std::vector<Record>& batch) override;

  struct Decision {
    bool approve = true;
    std::string rule;   // "blocklist", "amount_limit", "velocity_source", "velocity_merchant",
                        // "risk", "risk_fallback", "" (approved by every rule)
  };
  Decision decide(const Payment& p);
  CircuitBreaker& risk_breaker() { return breaker_; }

 private:
  VelocityCounter& velocity_;
  const Clock& clock_;
  const FraudConfig cfg_;
  RiskProvider* risk_;
  CircuitBreaker breaker_;
};

}  // namespace ps
