#include "stages/fraud_stage.hpp"

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps {
namespace {
constexpr std::string_view kSource = "/paystream/fraud";

void count_decision(bool approve, const std::string& rule) {
  metrics::registry()
      .counter("paystream_fraud_decisions_total", "Fraud decisions by outcome and deciding rule",
               {{"decision", approve ? "approved" : "declined"}, {"rule", rule.empty() ? "none" : rule}})
      .inc();
}
}  // namespace

FraudStage::FraudStage(VelocityCounter& velocity, const Clock& clock, FraudConfig cfg, RiskProvider* risk)
    : velocity_(velocity), clock_(clock), cfg_(std::move(cfg)), risk_(risk),
      breaker_("risk", clock, cfg_.risk_breaker) {}

FraudStage::Decision FraudStage::decide(const Payment& p) {
  if (cfg_.blocklist.count(p.source)) return {false, "blocklist"};
  if (auto it = cfg_.amount_limit_minor.find(p.currency);
      it != cfg_.amount_limit_minor.end() && p.amount_minor > it->second)
    return {false, "amount_limit"};

  const int64_t now = clock_.now_ms();
  auto check = [&](const std::string& key, int64_t max) -> bool {
    auto n = velocity_.hit(key, now, cfg_.velocity_window_ms);
    if (!n) {
      metrics::registry()
          .counter("paystream_fraud_velocity_errors_total", "Velocity counter errors (rule skipped)")
          .inc();
      log::warn("velocity counter failed; rule skipped", {{"payment_id", p.id}, {"error", n.error().message}});
      return true;
    }
    return n.value() <= max;
  };
  if (!check("vel:src:" + p.source, cfg_.max_per_source)) return {false, "velocity_source"};
  if (!check("vel:mer:" + p.merchant_id, cfg_.max_per_merchant)) return {false, "velocity_merchant"};

  if (risk_ == nullptr) return {true, ""};
  auto fallback = [&]() -> Decision {
    return {p.amount_minor < cfg_.fallback_approve_below_minor, "risk_fallback"};
  };
  if (!breaker_.allow()) return fallback();
  RiskRequest req{p.id, p.merchant_id, p.amount_minor, p.currency, p.source};
  auto v = risk_->assess(req, cfg_.risk_timeout);
  if (!v) {
    breaker_.on_failure();
    log::warn("risk provider unavailable; fallback applied",
              {{"payment_id", p.id}, {"code", v.error().code}, {"error", v.error().message}});
    return fallback();
  }
  breaker_.on_success();
  return {v->approve, v->approve ? "" : "risk"};
}

Result<Effects> FraudStage::handle(const std::vector<Record>& batch) {
  Effects out;
  for (const auto& rec : batch) {
    if (rec.event.type != event_types::payment_initiated) {
      out.dead_letters.push_back({rec, "unexpected event type for fraud: " + rec.event.type, 1});
      continue;
    }
    auto payload = decode_payload(rec.event.data);
    if (!payload || !payload->payment) {
      out.dead_letters.push_back(
          {rec, payload ? std::string("event_schema_invalid: no payment in payload")
                        : payload.error().code + ": " + payload.error().message, 1});
      continue;
    }
    Payment p = std::move(*payload->payment);
    const Decision d = decide(p);
    count_decision(d.approve, d.rule);
    const int64_t now = clock_.now_ms();
    p.updated_ms = now;
    if (d.approve) {
      p.status = PaymentStatus::processing;
      out.produce.push_back(make_payment_event(p, event_types::payment_validated, kSource, now,
                                               rec.event.traceparent));
    } else {
      p.status = PaymentStatus::failed;
      p.failure_code = "fraud_declined";
      log::info("payment declined by fraud rules",
                {{"payment_id", p.id}, {"rule", d.rule}, {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      out.produce.push_back(make_payment_event(p, event_types::payment_failed, kSource, now,
                                               rec.event.traceparent));
    }
  }
  return out;
}

}  // namespace ps
