// Realistic inputs shared by the micro-benchmarks: one typical card payment as the API
// receives it and as the pipeline carries it. Values mirror what `paystream bench` sends
// (a UUID idempotency key, three metadata entries, a short description).
#pragma once
#include <string>

#include "domain/model.hpp"

namespace ps::bench {

inline constexpr int64_t kMaxAmountMinor = 99'999'999'999;  // ApiConfig default
inline constexpr int kJsonMaxDepth = 32;                     // ApiConfig default
inline constexpr const char* kMerchantId = "mer_3f9a1c0d5e7b2a4c6d8e0f12";
inline constexpr const char* kIdempotencyKey = "7b1e4c2a-9d3f-4e8b-a6c5-1f2e3d4c5b6a";
inline constexpr const char* kTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
// "whsec_" + base64 of 32 bytes, the shape WebhookEndpoint::secret has.
inline constexpr const char* kWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw5QvtTgn0RtY=";

// POST /v1/payments body with description and metadata (212 bytes).
inline std::string typical_payment_body() {
  return R"({"amount":12500,"currency":"EUR","source":"tok_visa_4242424242424242",)"
         R"("description":"Order #104233 - 2 items, express shipping",)"
         R"("metadata":{"order_id":"ord_8f3a2c91","customer_id":"cus_19d7b0e4","channel":"web"}})";
}

// The same body with an amount the validator refuses (amount_invalid).
inline std::string bad_amount_payment_body() {
  return R"({"amount":-5,"currency":"EUR","source":"tok_visa_4242424242424242",)"
         R"("description":"Order #104233 - 2 items, express shipping",)"
         R"("metadata":{"order_id":"ord_8f3a2c91","customer_id":"cus_19d7b0e4","channel":"web"}})";
}

// The payment the gateway builds from typical_payment_body() (ids as payment_id_for makes them).
inline Payment typical_payment() {
  Payment p;
  p.id = "pay_5c0e2b7f9a1d3e4c6b8a0f21";
  p.merchant_id = kMerchantId;
  p.idempotency_key = kIdempotencyKey;
  p.amount_minor = 12500;
  p.currency = "EUR";
  p.source = "tok_visa_4242424242424242";
  p.description = "Order #104233 - 2 items, express shipping";
  p.metadata = {{"order_id", "ord_8f3a2c91"}, {"customer_id", "cus_19d7b0e4"}, {"channel", "web"}};
  p.status = PaymentStatus::processing;
  p.created_ms = 1'735'787'045'678;
  p.updated_ms = 1'735'787'045'678;
  return p;
}

}  // namespace ps::bench
