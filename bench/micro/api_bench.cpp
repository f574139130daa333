// Gateway request path: body parse + validation (POST /v1/payments) and the idempotency
// fingerprint, both run once per accepted payment before anything is stored.
#include <benchmark/benchmark.h>

#include "api/validation.hpp"
#include "fixtures.hpp"

namespace ps::bench {
namespace {

void BM_ParsePaymentRequest(benchmark::State& state) {
  const std::string body = typical_payment_body();
  for (auto _ : state) {
    auto in = api::parse_payment_request(body, kMaxAmountMinor, kJsonMaxDepth);
    benchmark::DoNotOptimize(in);
    if (!in) state.SkipWithError("typical body refused");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * int64_t(body.size()));
}
BENCHMARK(BM_ParsePaymentRequest);

// Failure path: a negative amount, refused after the whole body is parsed.
void BM_ParsePaymentRequest_BadAmount(benchmark::State& state) {
  const std::string body = bad_amount_payment_body();
  for (auto _ : state) {
    auto in = api::parse_payment_request(body, kMaxAmountMinor, kJsonMaxDepth);
    benchmark::DoNotOptimize(in);
    if (in || in.error().code != "amount_invalid") state.SkipWithError("bad amount not refused");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParsePaymentRequest_BadAmount);

void BM_RequestFingerprint(benchmark::State& state) {
  const std::string body = typical_payment_body();
  for (auto _ : state) {
    std::string fp = api::request_fingerprint("POST", "/v1/payments", body);
    benchmark::DoNotOptimize(fp);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * int64_t(body.size()));
}
BENCHMARK(BM_RequestFingerprint);

}  // namespace
}  // namespace ps::bench
