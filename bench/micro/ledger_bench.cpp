// Ledger posting: the fee, the settlement journal entry of a succeeded payment, the
// balance invariant (domain/ledger_rules.hpp: one check, run by the stage and both stores), and
// the whole LedgerStage::handle on a batch of payment.succeeded records.
#include <benchmark/benchmark.h>

#include <vector>

#include "common/log.hpp"
#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "domain/store_codec.hpp"
#include "fixtures.hpp"
#include "ports/clock.hpp"
#include "stages/ledger_stage.hpp"

namespace ps::bench {
namespace {

const FeeConfig kFees{290, 30};  // 2.9 % + 0.30

void BM_FeeFor(benchmark::State& state) {
  int64_t amount = 12500;
  for (auto _ : state) {
    benchmark::DoNotOptimize(amount);
    int64_t fee = fee_for(amount, kFees);
    benchmark::DoNotOptimize(fee);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FeeFor);

void BM_SettlementEntry(benchmark::State& state) {
  Payment p = typical_payment();
  p.status = PaymentStatus::succeeded;
  for (auto _ : state) {
    JournalEntry e = settlement_entry(p, kFees, p.updated_ms);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SettlementEntry);

// The balance invariant (domain/ledger_rules.hpp) the stage and both stores check.
void BM_EntryBalances(benchmark::State& state) {
  const JournalEntry e = settlement_entry(typical_payment(), kFees, 1'735'787'046'000);
  for (auto _ : state) {
    bool ok = entry_balances(e);
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EntryBalances);

// LedgerStage::handle on a batch of payment.succeeded records: decode_payload, settlement
// entry, balance check, payments_total counter. The per-payment info log line is
// suppressed (level warn) so the output stays readable; items = records.
void BM_LedgerStageHandle(benchmark::State& state) {
  log::set_level(log::Level::warn);
  ManualClock clock;
  LedgerStage stage(clock, kFees);
  std::vector<Record> batch;
  const auto n = size_t(state.range(0));
  for (size_t i = 0; i < n; ++i) {
    Payment p = typical_payment();
    p.id = payment_id_for(kMerchantId, "key-" + std::to_string(i));
    Record r;
    r.topic = std::string(topics::settled);
    r.partition = 0;
    r.offset = int64_t(i);
    r.event = make_payment_event(p, event_types::payment_succeeded, "/paystream/processor",
                                 p.updated_ms + 120, kTraceparent);
    batch.push_back(std::move(r));
  }
  for (auto _ : state) {
    auto effects = stage.handle(batch);
    benchmark::DoNotOptimize(effects);
    if (!effects || effects->payment_outcomes.size() != n) state.SkipWithError("ledger did not post the batch");
  }
  state.SetItemsProcessed(state.iterations() * int64_t(n));
  log::set_level(log::Level::info);
}
BENCHMARK(BM_LedgerStageHandle)->Arg(1)->Arg(256);

}  // namespace
}  // namespace ps::bench
