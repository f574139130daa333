// Acquirer contract: decline codes of the test sources, idempotency by payment id (also
// across a reopen of the same durable state), refunds idempotent by refund id and bounded
// by the charge, and every call returning within its timeout plus slack.
// Instantiated for AcquirerSimulator (real SQLite file in a temp directory).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "adapters/sim/acquirer_simulator.hpp"
#include "ports/external.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;

struct AcquirerFactory {
  std::string name;
  // Opens (or reopens) an acquirer whose durable state lives under `dir`.
  std::function<std::unique_ptr<Acquirer>(const std::filesystem::path& dir)> open;
  // Number of distinct charges that moved money or were declined (stored results).
  std::function<int64_t(Acquirer&)> charge_count;
};
// Names the adapter in test listings (instead of a byte dump of the factory).
inline void PrintTo(const AcquirerFactory& f, std::ostream* os) { *os << f.name; }


class AcquirerContract : public ::testing::TestWithParam<AcquirerFactory> {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ps_acq_contract_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    acq_ = GetParam().open(dir_);
  }
  void TearDown() override {
    acq_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void reopen() {
    acq_.reset();
    acq_ = GetParam().open(dir_);
  }
  Result<AcquirerResult> charge(const std::string& id, const std::string& source, int64_t amount = 1000,
                                std::chrono::milliseconds timeout = 2s) {
    return acq_->charge(ChargeRequest{id, amount, "EUR", source}, timeout);
  }
  int64_t count() { return GetParam().charge_count(*acq_); }

  std::filesystem::path dir_;
  std::unique_ptr<Acquirer> acq_;
};

TEST_P(AcquirerContract, TestSourcesGiveDocumentedOutcomes) {
  auto ok = charge("pay_ok", "tok_approve");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->approved);
  EXPECT_TRUE(ok->decline_code.empty());
  EXPECT_FALSE(ok->acquirer_ref.empty());
  auto dec = charge("pay_dec", "tok_decline");
  ASSERT_TRUE(dec.ok());
  EXPECT_FALSE(dec->approved);
  EXPECT_EQ(dec->decline_code, "card_declined");
  auto nsf = charge("pay_nsf", "tok_insufficient_funds");
  ASSERT_TRUE(nsf.ok());
  EXPECT_FALSE(nsf->approved);
  EXPECT_EQ(nsf->decline_code, "insufficient_funds");
  auto other = charge("pay_other", "tok_unknown_card");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->approved);
  auto fraud = charge("pay_fraud", "tok_fraud");
  ASSERT_TRUE(fraud.ok());
  EXPECT_TRUE(fraud->approved);
}

TEST_P(AcquirerContract, TransientFailsRetryablyOnceThenApproves) {
  auto first = charge("pay_tr", "tok_transient");
  ASSERT_FALSE(first.ok());
  EXPECT_TRUE(first.error().retryable);
  EXPECT_EQ(count(), 0);
  auto second = charge("pay_tr", "tok_transient");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->approved);
  EXPECT_EQ(count(), 1);
}

TEST_P(AcquirerContract, RepeatedChargeReturnsFirstResultAndMovesMoneyOnce) {
  auto a = charge("pay_idem", "tok_approve", 1000);
  ASSERT_TRUE(a.ok());
  // Same payment id, even with a different source and amount: the first result stands.
  auto b = charge("pay_idem", "tok_decline", 9999);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->approved);
  EXPECT_EQ(b->acquirer_ref, a->acquirer_ref);
  auto d1 = charge("pay_idem_dec", "tok_decline");
  auto d2 = charge("pay_idem_dec", "tok_approve");
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_FALSE(d2->approved);
  EXPECT_EQ(d2->decline_code, "card_declined");
  EXPECT_EQ(count(), 2);
}

TEST_P(AcquirerContract, IdempotencySurvivesReopenOfTheSameState) {
  auto a = charge("pay_durable", "tok_insufficient_funds");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(acq_->refund({"re_none", "pay_durable", 10, "EUR"}, 2s).ok());
  ASSERT_TRUE(charge("pay_durable_ok", "tok_approve", 1000).ok());
  auto r1 = acq_->refund({"re_d1", "pay_durable_ok", 700, "EUR"}, 2s);
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(r1->approved);
  reopen();
  auto b = charge("pay_durable", "tok_approve");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->approved);
  EXPECT_EQ(b->decline_code, "insufficient_funds");
  EXPECT_EQ(count(), 2);
  // The refund replays as approved; a new one beyond what is left is declined.
  auto r1_again = acq_->refund({"re_d1", "pay_durable_ok", 700, "EUR"}, 2s);
  ASSERT_TRUE(r1_again.ok());
  EXPECT_TRUE(r1_again->approved);
  auto r2 = acq_->refund({"re_d2", "pay_durable_ok", 301, "EUR"}, 2s);
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(r2->approved);
  auto r3 = acq_->refund({"re_d3", "pay_durable_ok", 300, "EUR"}, 2s);
  ASSERT_TRUE(r3.ok());
  EXPECT_TRUE(r3->approved);
}

TEST_P(AcquirerContract, RefundOfUnknownPaymentIsDeclined) {
  auto r = acq_->refund({"re_x", "pay_never", 100, "EUR"}, 2s);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->approved);
  EXPECT_FALSE(r->decline_code.empty());
}

TEST_P(AcquirerContract, TimeoutIsHonouredWithinSlack) {
  const auto timeout = 150ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = charge("pay_to", "tok_timeout", 1000, timeout);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_LE(took, timeout + 250ms);
  EXPECT_EQ(count(), 0);   // a timed-out call moved no money
}

AcquirerFactory simulator_factory() {
  return {"sim",
          [](const std::filesystem::path& dir) -> std::unique_ptr<Acquirer> {
            AcquirerSimOptions o;
            o.db_path = (dir / "acquirer.db").string();
            return std::make_unique<AcquirerSimulator>(o);
          },
          [](Acquirer& a) -> int64_t {
            auto r = dynamic_cast<AcquirerSimulator&>(a).charge_count();
            return r ? r.value() : -1;
          }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, AcquirerContract, ::testing::Values(simulator_factory()),
                         [](const ::testing::TestParamInfo<AcquirerFactory>& i) { return i.param.name; });

// Simulator-specific: latency above the timeout answers timeout after the timeout.
TEST(AcquirerSimulatorOptions, LatencyAboveTimeoutTimesOut) {
  AcquirerSimulator sim({":memory:", 300ms, 0, 42});
  const auto t0 = std::chrono::steady_clock::now();
  auto r = sim.charge({"pay_lat", 100, "EUR", "tok_approve"}, 50ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_EQ(sim.charge_count().value(), 0);
}

TEST(AcquirerSimulatorOptions, FailureRateIsSeededAndRetryable) {
  auto run = [] {
    AcquirerSimulator sim({":memory:", 0ms, 0.5, 7});
    std::string pattern;
    for (int i = 0; i < 64; ++i) {
      auto r = sim.charge({"pay_fr" + std::to_string(i), 100, "EUR", "tok_approve"}, 1s);
      if (!r.ok()) {
        EXPECT_TRUE(r.error().retryable);
      }
      pattern += r.ok() ? 'o' : 'x';
    }
    return pattern;
  };
  const auto a = run();
  EXPECT_EQ(a, run());
  const auto fails = std::count(a.begin(), a.end(), 'x');
  EXPECT_GT(fails, 10);
  EXPECT_LT(fails, 54);
}

}  // namespace
}  // namespace ps::contract
