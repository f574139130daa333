#include <gtest/gtest.h>

#include <random>

#include "adapters/sim/acquirer_simulator.hpp"
#include "fakes.hpp"
#include "stages/processor_stage.hpp"

namespace ps {
namespace {
using namespace std::chrono_literals;
using testing::make_payment;
using testing::make_refund;
using testing::payment_of;
using testing::payment_record;
using testing::refund_of;
using testing::refund_record;

ProcessorConfig fast_config() {
  ProcessorConfig cfg;
  cfg.acquirer_timeout = 30ms;
  cfg.backoff = {50ms, 1000ms, 3};
  return cfg;
}

Record validated(const std::string& id, const std::string& source) {
  return payment_record(make_payment(id, source), event_types::payment_validated);
}

TEST(ProcessorStage, SimulatorOutcomesForEachTestSource) {
  ManualClock clock;
  AcquirerSimulator sim;
  ProcessorStage stage(sim, clock, fast_config());
  auto r = stage.handle({validated("p_ok", "tok_approve"), validated("p_dec", "tok_decline"),
                         validated("p_nsf", "tok_insufficient_funds"), validated("p_tr", "tok_transient"),
                         validated("p_other", "tok_whatever")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& ev = r->produce;
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0].type, "payment.succeeded");
  EXPECT_EQ(payment_of(ev[0]).status, PaymentStatus::succeeded);
  EXPECT_EQ(ev[0].source, "/paystream/processor");
  EXPECT_EQ(ev[1].type, "payment.failed");
  EXPECT_EQ(payment_of(ev[1]).failure_code, "card_declined");
  EXPECT_EQ(payment_of(ev[2]).failure_code, "insufficient_funds");
  EXPECT_EQ(ev[3].type, "payment.succeeded");   // transient: retried, then approved
  EXPECT_EQ(sim.calls_for("p_tr").value(), 1);   // the failed first call stored nothing
  EXPECT_EQ(ev[4].type, "payment.succeeded");
  EXPECT_EQ(sim.charge_count().value(), 5);
}

TEST(ProcessorStage, TimeoutExhaustsRetriesAndFailsWithAcquirerTimeout) {
  ManualClock clock;
  AcquirerSimulator sim;
  ProcessorStage stage(sim, clock, fast_config());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = stage.handle({validated("p_to", "tok_timeout")});
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->produce.size(), 1u);
  EXPECT_EQ(r->produce[0].type, "payment.failed");
  EXPECT_EQ(payment_of(r->produce[0]).failure_code, "acquirer_timeout");
  EXPECT_GE(took, 90ms);   // three attempts of 30 ms each
  EXPECT_EQ(sim.charge_count().value(), 0);
}

TEST(ProcessorStage, UnavailableExhaustsRetriesAsAcquirerUnavailable) {
  ManualClock clock;
  testing::FakeAcquirer acq;
  acq.on_charge = [](const ChargeRequest&, int) { return Result<AcquirerResult>(Error::unavailable("x", "503")); };
  ProcessorStage stage(acq, clock, fast_config());
  auto r = stage.handle({validated("p_u", "tok_approve")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(payment_of(r->produce.at(0)).failure_code, "acquirer_unavailable");
  EXPECT_EQ(acq.charge_calls["p_u"], 3);
}

TEST(ProcessorStage, OpenBreakerReturnsRetryableErrorAndFailsNothing) {
  ManualClock clock;
  testing::FakeAcquirer acq;
  bool down = true;
  acq.on_charge = [&](const ChargeRequest&, int) {
    if (down) return Result<AcquirerResult>(Error::unavailable("down", "acquirer down"));
    return Result<AcquirerResult>(AcquirerResult{true, "", "ref"});
  };
  auto cfg = fast_config();
  cfg.breaker = {2, 30s, 1};
  ProcessorStage stage(acq, clock, cfg);
  // Two failures open the breaker while the record still had an attempt left: deferred.
  auto r1 = stage.handle({validated("p1", "tok_approve")});
  ASSERT_FALSE(r1.ok());
  EXPECT_TRUE(r1.error().retryable);
  EXPECT_EQ(r1.error().code, "circuit_open");
  EXPECT_EQ(acq.charge_calls["p1"], 2);
  // Open at batch start: nothing is called, nothing failed.
  auto r2 = stage.handle({validated("p1", "tok_approve")});
  ASSERT_FALSE(r2.ok());
  EXPECT_TRUE(r2.error().retryable);
  EXPECT_EQ(acq.charge_calls["p1"], 2);
  // The acquirer recovers; after the open period the trial succeeds.
  down = false;
  clock.advance(30s);
  auto r3 = stage.handle({validated("p1", "tok_approve")});
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->produce.at(0).type, "payment.succeeded");
  EXPECT_EQ(stage.breaker().state(), CircuitBreaker::State::closed);
}

TEST(ProcessorStage, RecordThatAlwaysTimesOutStillReachesTerminalStatusDespiteBreaker) {
  ManualClock clock;
  testing::FakeAcquirer acq;
  acq.on_charge = [](const ChargeRequest&, int) { return Result<AcquirerResult>(Error::timeout("slow")); };
  auto cfg = fast_config();
  cfg.breaker = {1, 10s, 1};
  ProcessorStage stage(acq, clock, cfg);
  std::optional<Effects> done;
  for (int round = 0; round < 10 && !done; ++round) {
    auto r = stage.handle({validated("p_slow", "tok_approve")});
    if (r.ok()) done = r.value();
    else clock.advance(10s);
  }
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(payment_of(done->produce.at(0)).failure_code, "acquirer_timeout");
  EXPECT_EQ(acq.charge_calls["p_slow"], 3);   // attempts are remembered across deferrals
}

TEST(ProcessorStage, SameKeyStrictlyInOrderAndOutputInInputOrder) {
  ManualClock clock;
  testing::FakeAcquirer acq;
  std::mutex mu;
  std::mt19937 rng(1);
  acq.on_charge = [&](const ChargeRequest& req, int) {
    int ms;
    { std::lock_guard lk(mu); ms = int(rng() % 8); }
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return Result<AcquirerResult>(AcquirerResult{true, "", "ref_" + req.payment_id});
  };
  acq.on_refund = [&](const AcquirerRefundRequest&, int) {
    return Result<AcquirerResult>(AcquirerResult{true, "", "rf"});
  };
  auto cfg = fast_config();
  cfg.concurrency = 8;
  ProcessorStage stage(acq, clock, cfg);
  std::vector<Record> batch;
  for (int i = 0; i < 40; ++i) {
    const std::string id = "pay_" + std::to_string(i);
    batch.push_back(validated(id, "tok_approve"));
    if (i % 4 == 0) batch.push_back(refund_record(make_refund("re_" + std::to_string(i), id), event_types::refund_requested));
  }
  auto r = stage.handle(batch);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->produce.size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_EQ(r->produce[i].key, batch[i].event.key) << i;
    const bool refund = batch[i].event.type == "refund.requested";
    EXPECT_EQ(r->produce[i].type, refund ? "refund.succeeded" : "payment.succeeded") << i;
  }
  // Each refund was sent after its payment's charge.
  std::map<std::string, size_t> pos;
  for (size_t i = 0; i < acq.order.size(); ++i) pos[acq.order[i]] = i;
  for (int i = 0; i < 40; i += 4)
    EXPECT_LT(pos.at("pay_" + std::to_string(i)), pos.at("refund:re_" + std::to_string(i)));
}

TEST(ProcessorStage, RefundsThroughSimulator) {
  ManualClock clock;
  AcquirerSimulator sim;
  ProcessorStage stage(sim, clock, fast_config());
  auto r = stage.handle({validated("pay_r", "tok_approve"),
                         refund_record(make_refund("re_1", "pay_r", 600), event_types::refund_requested),
                         refund_record(make_refund("re_2", "pay_r", 600), event_types::refund_requested),
                         refund_record(make_refund("re_3", "pay_none", 10), event_types::refund_requested)});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->produce.size(), 4u);
  EXPECT_EQ(r->produce[1].type, "refund.succeeded");
  EXPECT_EQ(refund_of(r->produce[1]).status, RefundStatus::succeeded);
  EXPECT_EQ(r->produce[2].type, "refund.failed");   // 600 + 600 > 1000 charged
  EXPECT_EQ(refund_of(r->produce[2]).failure_code, "amount_exceeds_charge");
  EXPECT_EQ(refund_of(r->produce[3]).failure_code, "charge_not_found");
}

TEST(ProcessorStage, PoisonRecordsBecomeDeadLetters) {
  ManualClock clock;
  AcquirerSimulator sim;
  ProcessorStage stage(sim, clock, fast_config());
  auto bad = testing::garbage_record(5, "payment.validated");
  auto r = stage.handle({bad, validated("p_after", "tok_approve")});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->dead_letters.size(), 1u);
  EXPECT_EQ(r->dead_letters[0].original.offset, 5);
  ASSERT_EQ(r->produce.size(), 1u);
  EXPECT_EQ(r->produce[0].key, "p_after");
}

}  // namespace
}  // namespace ps
