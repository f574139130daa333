#include "domain/model.hpp"

#include <algorithm>

namespace ps {

std::string_view to_string(PaymentStatus s) {
  switch (s) {
    case PaymentStatus::processing: return "processing";
    case PaymentStatus::succeeded: return "succeeded";
    case PaymentStatus::failed: return "failed";
  }
  return "processing";
}
std::string_view to_string(RefundStatus s) {
  switch (s) {
    case RefundStatus::processing: return "processing";
    case RefundStatus::succeeded: return "succeeded";
    case RefundStatus::failed: return "failed";
  }
  return "processing";
}
std::optional<PaymentStatus> parse_payment_status(std::string_view s) {
  if (s == "processing") return PaymentStatus::processing;
  if (s == "succeeded") return PaymentStatus::succeeded;
  if (s == "failed") return PaymentStatus::failed;
  return std::nullopt;
}
std::optional<RefundStatus> parse_refund_status(std::string_view s) {
  if (s == "processing") return RefundStatus::processing;
  if (s == "succeeded") return RefundStatus::succeeded;
  if (s == "failed") return RefundStatus::failed;
  return std::nullopt;
}
std::string_view to_string(EntryKind k) { return k == EntryKind::settlement ? "settlement" : "refund"; }
std::string_view to_string(DeliveryStatus s) {
  switch (s) {
    case DeliveryStatus::pending: return "pending";
    case DeliveryStatus::succeeded: return "succeeded";
    case DeliveryStatus::failed: return "failed";
  }
  return "pending";
}

bool WebhookEndpoint::wants(std::string_view event_type) const {
  if (disabled) return false;
  if (enabled_events.empty()) return true;
  return std::any_of(enabled_events.begin(), enabled_events.end(),
                     [&](const std::string& e) { return e == "*" || e == event_type; });
}

std::vector<std::string_view> WebhookEndpoint::signing_secrets(int64_t now_ms) const {
  std::vector<std::string_view> out{secret};
  if (!previous_secret.empty() && now_ms < previous_secret_expires_ms) out.emplace_back(previous_secret);
  return out;
}

}  // namespace ps
