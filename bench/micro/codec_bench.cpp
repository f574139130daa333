// Event and API encodings: the pipeline event of a payment (CloudEvents attributes plus
// the schema-versioned JSON payload), its decode in every consuming stage, and
// payment_json, the body of every payment API response and webhook.
#include <benchmark/benchmark.h>

#include "domain/event.hpp"
#include "domain/json_codec.hpp"
#include "fixtures.hpp"

namespace ps::bench {
namespace {

// What the gateway does per accepted payment: event id + payload JSON + attributes.
void BM_MakePaymentEvent(benchmark::State& state) {
  const Payment p = typical_payment();
  for (auto _ : state) {
    Event e = make_payment_event(p, event_types::payment_initiated, "/paystream/gateway", p.created_ms,
                                 kTraceparent);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MakePaymentEvent);

void BM_EncodePayload(benchmark::State& state) {
  const EventPayload payload{typical_payment(), std::nullopt};
  size_t bytes = 0;
  for (auto _ : state) {
    std::string data = encode_payload(payload);
    bytes = data.size();
    benchmark::DoNotOptimize(data);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["data_bytes"] = double(bytes);
}
BENCHMARK(BM_EncodePayload);

// What fraud, processor, ledger and notifier each do first with a consumed record.
void BM_DecodePayload(benchmark::State& state) {
  const Event e = make_payment_event(typical_payment(), event_types::payment_initiated, "/paystream/gateway",
                                     1'735'787'045'678, kTraceparent);
  for (auto _ : state) {
    auto payload = decode_payload(e.data);
    benchmark::DoNotOptimize(payload);
    if (!payload || !payload->payment) state.SkipWithError("payload did not decode");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * int64_t(e.data.size()));
}
BENCHMARK(BM_DecodePayload);

void BM_PaymentJson(benchmark::State& state) {
  const Payment p = typical_payment();
  size_t bytes = 0;
  for (auto _ : state) {
    std::string body = payment_json(p);
    bytes = body.size();
    benchmark::DoNotOptimize(body);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["body_bytes"] = double(bytes);
}
BENCHMARK(BM_PaymentJson);

}  // namespace
}  // namespace ps::bench
