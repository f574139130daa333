// Hashing and identifiers: HMAC-SHA256 and the Standard Webhooks signature (once per
// webhook attempt), the deterministic ids every payment gets (payment id, event ids,
// journal entry id) and random_token (merchant/endpoint creation only, not per payment).
#include <benchmark/benchmark.h>

#include "domain/ids.hpp"
#include "domain/json_codec.hpp"
#include "fixtures.hpp"
#include "stages/notifier_stage.hpp"

namespace ps::bench {
namespace {

// The webhook body of a payment.succeeded event, as the dispatcher sends it (~600 bytes).
std::string webhook_body() {
  Payment p = typical_payment();
  p.status = PaymentStatus::succeeded;
  p.metadata["shipping_address_id"] = "addr_5b1e9c0a7d3f";
  p.metadata["cart_id"] = "cart_0a9b8c7d6e5f4a3b";
  p.metadata["campaign"] = "spring-sale-2025-newsletter-segment-b";
  p.metadata["store_locale"] = "de-DE";
  MerchantEvent me;
  me.id = "evt_9e8d7c6b5a4f3e2d1c0b9a8f";
  me.merchant_id = p.merchant_id;
  me.type = "payment.succeeded";
  me.data_json = payment_json(p);
  me.created_ms = p.updated_ms;
  return merchant_event_json(me);
}

void BM_SignWebhook(benchmark::State& state) {
  const std::string body = webhook_body();
  for (auto _ : state) {
    std::string sig = sign_webhook(kWebhookSecret, "evt_9e8d7c6b5a4f3e2d1c0b9a8f", 1'735'787'046, body);
    benchmark::DoNotOptimize(sig);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * int64_t(body.size()));
  state.counters["body_bytes"] = double(body.size());
}
BENCHMARK(BM_SignWebhook);

void BM_HmacSha256(benchmark::State& state) {
  const std::string key = base64_decode(std::string_view(kWebhookSecret).substr(6));
  const std::string msg = webhook_body();
  for (auto _ : state) {
    std::string mac = hmac_sha256(key, msg);
    benchmark::DoNotOptimize(mac);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * int64_t(msg.size()));
  state.counters["msg_bytes"] = double(msg.size());
}
BENCHMARK(BM_HmacSha256);

// deterministic_id: payment_id_for at the gateway, make_event_id per produced event,
// the journal entry id and webhook delivery ids.
void BM_PaymentIdFor(benchmark::State& state) {
  for (auto _ : state) {
    std::string id = payment_id_for(kMerchantId, kIdempotencyKey);
    benchmark::DoNotOptimize(id);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PaymentIdFor);

void BM_RandomToken(benchmark::State& state) {
  for (auto _ : state) {
    std::string t = random_token("we_", 12);
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RandomToken);

}  // namespace
}  // namespace ps::bench
