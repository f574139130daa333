#include <gtest/gtest.h>

#include "common/metrics.hpp"
#include "fakes.hpp"
#include "stages/stage_runner.hpp"

namespace ps {
namespace {
using namespace std::chrono_literals;
using testing::make_payment;
using testing::payment_record;

// A stage that forwards decodable payments as payment.validated and dead-letters the rest;
// it can be told to fail (retryably or not) a number of times first.
class EchoStage : public Stage {
 public:
  int retryable_failures = 0;
  int permanent_failures_for_bad = 0;   // non-retryable error whenever a batch has "pay_bad"
  std::atomic<int> calls{0};
  std::string_view name() const override { return "echo_test"; }
  Result<Effects> handle(const std::vector<Record>& batch) override {
    ++calls;
    if (retryable_failures > 0) {
      --retryable_failures;
      return Error::unavailable("dep_down", "dependency down (scripted)");
    }
    Effects fx;
    for (const auto& r : batch) {
      if (permanent_failures_for_bad && r.event.key == "pay_bad") return Error::invalid("bad", "cannot handle");
      auto p = decode_payload(r.event.data);
      if (!p) {
        fx.dead_letters.push_back({r, p.error().code, 1});
        continue;
      }
      fx.produce.push_back(make_payment_event(*p->payment, event_types::payment_validated, "/t", 1, ""));
    }
    return fx;
  }
};

RunnerOptions fast_opts() {
  RunnerOptions o;
  o.poll_wait = 1ms;
  o.retry_backoff_max = 100ms;
  return o;
}

TEST(StageRunner, PoisonRecordBecomesDeadLetterAndNextRecordStillProcessed) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.pending.push_back({testing::garbage_record(0), payment_record(make_payment("pay_next"), "payment.initiated", 1)});
  EchoStage stage;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  auto& dl = metrics::registry().counter("paystream_dead_letters_total", "", {{"stage", "echo_test"}});
  const double before = dl.value();
  EXPECT_EQ(runner.run_once(), 2u);
  ASSERT_EQ(log.commits.size(), 1u);
  const auto& fx = log.commits[0].second;
  ASSERT_EQ(fx.dead_letters.size(), 1u);
  EXPECT_EQ(fx.dead_letters[0].original.offset, 0);
  ASSERT_EQ(fx.produce.size(), 1u);
  EXPECT_EQ(fx.produce[0].key, "pay_next");
  EXPECT_EQ(dl.value(), before + 1);
}

TEST(StageRunner, RetryableErrorDoesNotCommitUntilSuccess) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.pending.push_back({payment_record(make_payment("pay_r"), "payment.initiated", 0)});
  EchoStage stage;
  stage.retryable_failures = 3;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  const int64_t t0 = clock.now_ms();
  EXPECT_EQ(runner.run_once(), 1u);
  EXPECT_EQ(stage.calls.load(), 4);
  ASSERT_EQ(log.commits.size(), 1u);
  EXPECT_EQ(log.commits[0].second.produce.size(), 1u);
  EXPECT_TRUE(log.commits[0].second.dead_letters.empty());   // nothing failed or lost
  EXPECT_LE(clock.now_ms() - t0, 3 * 100);                    // backoff capped
}

TEST(StageRunner, PermanentBatchErrorIsolatesPoisonRecord) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.pending.push_back({payment_record(make_payment("pay_a"), "payment.initiated", 0),
                         payment_record(make_payment("pay_bad"), "payment.initiated", 1),
                         payment_record(make_payment("pay_c"), "payment.initiated", 2)});
  EchoStage stage;
  stage.permanent_failures_for_bad = 1;
  auto o = fast_opts();
  o.max_record_attempts = 3;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, o);
  EXPECT_EQ(runner.run_once(), 3u);
  ASSERT_EQ(log.commits.size(), 1u);
  const auto& fx = log.commits[0].second;
  ASSERT_EQ(fx.dead_letters.size(), 1u);
  EXPECT_EQ(fx.dead_letters[0].original.event.key, "pay_bad");
  EXPECT_EQ(fx.dead_letters[0].attempts, 3);
  ASSERT_EQ(fx.produce.size(), 2u);
  EXPECT_EQ(fx.produce[0].key, "pay_a");
  EXPECT_EQ(fx.produce[1].key, "pay_c");
}

TEST(StageRunner, CommitErrorRepollsAndCommitsLater) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.fail_commits = 1;
  log.pending.push_back({payment_record(make_payment("pay_c1"), "payment.initiated", 0)});
  EchoStage stage;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  EXPECT_EQ(runner.run_once(), 0u);
  EXPECT_EQ(log.commits.size(), 0u);
  EXPECT_EQ(runner.run_once(), 1u);   // the same record again (at-least-once)
  ASSERT_EQ(log.commits.size(), 1u);
  EXPECT_EQ(stage.calls.load(), 2);
}

// The effects of one record are refused for ever (as a store's CHECK constraint would):
// the batch is committed record by record, that record becomes a dead letter carrying the
// commit's error, the records around it are committed with their effects, and the stage
// goes on with the next batch instead of retrying the first one for ever.
TEST(StageRunner, PermanentlyRefusedCommitDeadLettersTheRecordAndTheStageGoesOn) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.pending.push_back({payment_record(make_payment("pay_a"), "payment.initiated", 0),
                         payment_record(make_payment("pay_refused"), "payment.initiated", 1),
                         payment_record(make_payment("pay_c"), "payment.initiated", 2)});
  log.pending.push_back({payment_record(make_payment("pay_next"), "payment.initiated", 3)});
  log.refuse = [](const std::vector<Record>&, const Effects& fx) -> std::optional<Error> {
    for (const auto& e : fx.produce)
      if (e.key == "pay_refused") return Error::conflict("check_violation", "amount_refunded exceeds amount");
    return std::nullopt;
  };
  EchoStage stage;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  auto& dl = metrics::registry().counter("paystream_dead_letters_total", "", {{"stage", "echo_test"}});
  const double before = dl.value();
  EXPECT_EQ(runner.run_once(), 3u);
  ASSERT_EQ(log.commits.size(), 3u);
  ASSERT_EQ(log.commits[0].first.size(), 1u);
  EXPECT_EQ(log.commits[0].first[0].offset, 0);
  ASSERT_EQ(log.commits[0].second.produce.size(), 1u);
  EXPECT_EQ(log.commits[0].second.produce[0].key, "pay_a");
  const auto& letter = log.commits[1];
  ASSERT_EQ(letter.first.size(), 1u);
  EXPECT_EQ(letter.first[0].offset, 1);
  EXPECT_TRUE(letter.second.produce.empty()) << "the refused effects are not committed";
  ASSERT_EQ(letter.second.dead_letters.size(), 1u);
  EXPECT_EQ(letter.second.dead_letters[0].original.event.key, "pay_refused");
  EXPECT_NE(letter.second.dead_letters[0].error.find("check_violation"), std::string::npos)
      << letter.second.dead_letters[0].error;
  ASSERT_EQ(log.commits[2].second.produce.size(), 1u);
  EXPECT_EQ(log.commits[2].second.produce[0].key, "pay_c");
  EXPECT_EQ(dl.value(), before + 1);
  // The stage goes on: the next batch commits whole.
  EXPECT_EQ(runner.run_once(), 1u);
  ASSERT_EQ(log.commits.size(), 4u);
  EXPECT_EQ(log.commits[3].second.produce.at(0).key, "pay_next");
}

// An outage: every commit fails with a retryable error, also after the runner turned to
// record-by-record commits. Nothing is dead-lettered; once the store is back, the batch
// commits with its effects.
TEST(StageRunner, CommitOutageIsNotPoisonNothingIsDeadLettered) {
  ManualClock clock;
  testing::FakeStageLog log;
  log.pending.push_back({payment_record(make_payment("pay_o1"), "payment.initiated", 0),
                         payment_record(make_payment("pay_o2"), "payment.initiated", 1)});
  bool down = true;
  log.refuse = [&](const std::vector<Record>&, const Effects&) -> std::optional<Error> {
    if (down) return Error::unavailable("db_unavailable", "connection refused (scripted)");
    return std::nullopt;
  };
  EchoStage stage;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(runner.run_once(), 0u);  // past max_commit_attempts
  EXPECT_TRUE(log.commits.empty());
  down = false;
  size_t committed = 0;
  for (int i = 0; i < 3 && committed < 2; ++i) committed += runner.run_once();
  EXPECT_EQ(committed, 2u);
  for (const auto& [recs, fx] : log.commits) EXPECT_TRUE(fx.dead_letters.empty());
  size_t produced = 0;
  for (const auto& [recs, fx] : log.commits) produced += fx.produce.size();
  EXPECT_EQ(produced, 2u);
}

TEST(StageRunner, ThreadProcessesAndStopCommitsBatchInHand) {
  ManualClock clock;
  testing::FakeStageLog log;
  for (int i = 0; i < 3; ++i)
    log.pending.push_back({payment_record(make_payment("pay_t" + std::to_string(i)), "payment.initiated", i)});
  EchoStage stage;
  StageRunner runner("g", {"tx.initiated"}, log, stage, clock, fast_opts());
  runner.start();
  for (int i = 0; i < 500 && log.commit_count() < 3; ++i) std::this_thread::sleep_for(2ms);
  runner.stop();
  EXPECT_EQ(log.commit_count(), 3u);
  // stop() with a batch whose handling is in progress: it still commits.
  class SlowStage : public EchoStage {
   public:
    std::atomic<bool> entered{false};
    Result<Effects> handle(const std::vector<Record>& b) override {
      entered = true;
      std::this_thread::sleep_for(50ms);
      return EchoStage::handle(b);
    }
  } slow;
  log.pending.push_back({payment_record(make_payment("pay_last"), "payment.initiated", 9)});
  StageRunner r2("g", {"tx.initiated"}, log, slow, clock, fast_opts());
  r2.start();
  while (!slow.entered) std::this_thread::sleep_for(1ms);
  r2.stop();
  EXPECT_EQ(log.commit_count(), 4u);
  EXPECT_EQ(log.commits.back().first.at(0).event.key, "pay_last");
}

}  // namespace
}  // namespace ps
