#include <gtest/gtest.h>

#include "common/metrics.hpp"
#include "stages/resilience.hpp"

namespace ps {
namespace {
using namespace std::chrono_literals;
using S = CircuitBreaker::State;

double gauge_value(const std::string& dep) {
  return metrics::registry().gauge("paystream_circuit_state", "", {{"dependency", dep}}).value();
}

TEST(CircuitBreaker, OpensAfterThresholdConsecutiveFailures) {
  ManualClock clock;
  CircuitBreaker b("dep_a", clock, {3, 10s, 1});
  EXPECT_TRUE(b.allow()); b.on_failure();
  EXPECT_TRUE(b.allow()); b.on_failure();
  EXPECT_TRUE(b.allow()); b.on_success();   // resets the consecutive count
  for (int i = 0; i < 2; ++i) { ASSERT_TRUE(b.allow()); b.on_failure(); }
  EXPECT_EQ(b.state(), S::closed);
  ASSERT_TRUE(b.allow()); b.on_failure();
  EXPECT_EQ(b.state(), S::open);
  EXPECT_FALSE(b.allow());
  EXPECT_EQ(gauge_value("dep_a"), 1.0);
  EXPECT_EQ(b.retry_at_ms(), clock.now_ms() + 10'000);
}

TEST(CircuitBreaker, HalfOpenAdmitsOneTrialThenClosesOnSuccess) {
  ManualClock clock;
  CircuitBreaker b("dep_b", clock, {1, 5s, 1});
  ASSERT_TRUE(b.allow()); b.on_failure();
  EXPECT_EQ(b.state(), S::open);
  clock.advance(4999ms);
  EXPECT_FALSE(b.allow());
  clock.advance(1ms);
  EXPECT_EQ(b.state(), S::half_open);
  EXPECT_EQ(gauge_value("dep_b"), 2.0);
  EXPECT_EQ(b.retry_at_ms(), clock.now_ms());
  EXPECT_TRUE(b.allow());    // the trial
  EXPECT_FALSE(b.allow());   // only one at a time
  b.on_success();
  EXPECT_EQ(b.state(), S::closed);
  EXPECT_EQ(gauge_value("dep_b"), 0.0);
  EXPECT_TRUE(b.allow());
}

TEST(CircuitBreaker, HalfOpenTrialFailureReopensForAnotherFullPeriod) {
  ManualClock clock;
  CircuitBreaker b("dep_c", clock, {2, 1s, 1});
  for (int i = 0; i < 2; ++i) { ASSERT_TRUE(b.allow()); b.on_failure(); }
  clock.advance(1s);
  ASSERT_TRUE(b.allow());
  b.on_failure();
  EXPECT_EQ(b.state(), S::open);
  EXPECT_EQ(b.retry_at_ms(), clock.now_ms() + 1000);
  clock.advance(999ms);
  EXPECT_FALSE(b.allow());
}

TEST(CircuitBreaker, AdmitTellsHalfOpenTrialFromNormalCall) {
  using A = CircuitBreaker::Admission;
  ManualClock clock;
  CircuitBreaker b("dep_d", clock, {1, 1s, 1});
  EXPECT_EQ(b.admit(), A::call);
  b.on_failure();
  EXPECT_EQ(b.admit(), A::denied);
  clock.advance(1s);
  EXPECT_EQ(b.admit(), A::trial);
  EXPECT_EQ(b.admit(), A::denied);   // the single trial slot is taken
  b.on_success();
  EXPECT_EQ(b.admit(), A::call);
}

TEST(Backoff, DelaysStayWithinExponentialCeilingAndCap) {
  Backoff b({100ms, 1000ms, 5}, 7);
  EXPECT_EQ(b.ceiling(1), 100ms);
  EXPECT_EQ(b.ceiling(2), 200ms);
  EXPECT_EQ(b.ceiling(4), 800ms);
  EXPECT_EQ(b.ceiling(5), 1000ms);
  EXPECT_EQ(b.ceiling(60), 1000ms);
  bool saw_nonzero = false;
  for (int attempt = 1; attempt <= 8; ++attempt)
    for (int i = 0; i < 200; ++i) {
      auto d = b.delay(attempt);
      ASSERT_GE(d.count(), 0);
      ASSERT_LE(d, b.ceiling(attempt));
      saw_nonzero |= d.count() > 0;
    }
  EXPECT_TRUE(saw_nonzero);
  EXPECT_FALSE(b.exhausted(4));
  EXPECT_TRUE(b.exhausted(5));
}

TEST(Backoff, SameSeedSameSequence) {
  Backoff a({50ms, 2000ms, 5}, 99), b({50ms, 2000ms, 5}, 99);
  for (int i = 1; i < 20; ++i) EXPECT_EQ(a.delay(i), b.delay(i));
}

}  // namespace
}  // namespace ps
