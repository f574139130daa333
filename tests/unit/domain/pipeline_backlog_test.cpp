// PipelineBacklog: what the settling stages have yet to consume, per (group, topic).
#include <gtest/gtest.h>

#include "domain/pipeline_backlog.hpp"

#include <atomic>
#include <thread>

namespace ps {
namespace {

PipelineBacklog three_stages() {
  return PipelineBacklog({{"fraud", {"tx.initiated"}}, {"processor", {"tx.validated"}},
                          {"ledger", {"tx.settled", "tx.failed"}}});
}

TEST(PipelineBacklog, CountsWhatEachSettlingStageHasNotConsumed) {
  auto b = three_stages();
  EXPECT_EQ(b.pipeline_backlog(1000).records, 0u);
  EXPECT_EQ(b.pipeline_backlog(1000).oldest_age_ms, 0);
  b.appended("tx.initiated", 1, 100);
  b.appended("tx.initiated", 2, 150);
  b.appended("tx.validated", 3, 200);
  b.appended("tx.dlq", 4, 210);        // untracked topic
  auto s = b.pipeline_backlog(1000);
  EXPECT_EQ(s.records, 3u);
  EXPECT_EQ(s.oldest_age_ms, 900);
  b.consumed("fraud", "tx.initiated", 1);
  s = b.pipeline_backlog(1000);
  EXPECT_EQ(s.records, 2u);
  EXPECT_EQ(s.oldest_age_ms, 850);
  b.consumed("notifier", "tx.initiated", 99);   // not a settling group: changes nothing
  EXPECT_EQ(b.pipeline_backlog(1000).records, 2u);
  b.consumed("fraud", "tx.initiated", 2);
  b.consumed("processor", "tx.validated", 3);
  EXPECT_EQ(b.pipeline_backlog(1000).records, 0u);
}

TEST(PipelineBacklog, ATopicConsumedByTwoGroupsCountsForEachTrackedOne) {
  PipelineBacklog b({{"ledger", {"tx.settled"}}, {"audit", {"tx.settled"}}});
  b.appended("tx.settled", 10, 0);
  EXPECT_EQ(b.pipeline_backlog(5).records, 2u);
  b.consumed("ledger", "tx.settled", 10);
  EXPECT_EQ(b.pipeline_backlog(5).records, 1u);
}

TEST(PipelineBacklog, ReAppendingAKnownOffsetIsIgnored) {
  auto b = three_stages();
  b.appended("tx.initiated", 5, 0);
  b.appended("tx.initiated", 5, 0);   // loaded at start-up and seen in a commit
  b.appended("tx.initiated", 4, 0);
  EXPECT_EQ(b.pipeline_backlog(0).records, 1u);
  EXPECT_EQ(b.tracked().size(), 4u);
}

TEST(PipelineBacklog, AChangeConsumesAndAppendsAtOnce) {
  auto b = three_stages();
  b.apply({{}, {{"tx.initiated", 1}, {"tx.initiated", 2}}}, 100);
  EXPECT_EQ(b.pipeline_backlog(100).records, 2u);
  // The fraud stage's commit: both initiated records consumed, two validated produced.
  b.apply({{{"fraud", "tx.initiated", 2}}, {{"tx.validated", 3}, {"tx.validated", 4}}}, 200);
  auto s = b.pipeline_backlog(300);
  EXPECT_EQ(s.records, 2u);
  EXPECT_EQ(s.oldest_age_ms, 100);   // the validated records wait from the commit on
  b.apply({{{"processor", "tx.validated", 3}}, {{"tx.settled", 5}}}, 300);
  EXPECT_EQ(b.pipeline_backlog(300).records, 2u);
  b.apply({}, 400);   // nothing changes
  b.apply({{{"processor", "tx.validated", 4}, {"ledger", "tx.settled", 5}}, {}}, 400);
  EXPECT_EQ(b.pipeline_backlog(400).records, 0u);
}

// Intake admission reads the backlog while stage commits move records from one stage to
// the next. A commit that moves N records must never show as a dip of N: admission would
// take it for room and admit past the bound (seen on a loaded machine, where the writer
// thread was preempted between the consumed and the appended half of one commit).
TEST(PipelineBacklog, AConcurrentReaderNeverSeesACommitHalfApplied) {
  auto b = three_stages();
  constexpr int kWaiting = 64;
  int64_t next = 1;
  for (int i = 0; i < kWaiting; ++i) b.appended("tx.initiated", next++, 0);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> lowest{kWaiting}, reads{0};
  std::thread reader([&] {
    while (!done.load()) {
      const uint64_t n = b.pipeline_backlog(0).records;
      if (n < lowest.load()) lowest.store(n);
      reads.fetch_add(1);
    }
  });
  // Each round moves the 64 records through the stages: fraud commits them as validated,
  // the processor as settled, and the ledger's commit (in one change with 64 new intake
  // records) settles them. Every change keeps the total at 64.
  int64_t initiated_last = next - 1;
  for (int round = 0; round < 2000 && (round < 20 || reads.load() < 2000); ++round) {
    PipelineBacklog::Change fraud;
    fraud.consumed.emplace_back("fraud", "tx.initiated", initiated_last);
    const int64_t first_validated = next;
    for (int i = 0; i < kWaiting; ++i) fraud.appended.emplace_back("tx.validated", next++);
    b.apply(fraud, 0);
    PipelineBacklog::Change processor;
    processor.consumed.emplace_back("processor", "tx.validated", first_validated + kWaiting - 1);
    const int64_t first_settled = next;
    for (int i = 0; i < kWaiting; ++i) processor.appended.emplace_back("tx.settled", next++);
    b.apply(processor, 0);
    PipelineBacklog::Change ledger_and_intake;
    ledger_and_intake.consumed.emplace_back("ledger", "tx.settled", first_settled + kWaiting - 1);
    for (int i = 0; i < kWaiting; ++i) ledger_and_intake.appended.emplace_back("tx.initiated", next++);
    initiated_last = next - 1;
    b.apply(ledger_and_intake, 0);
  }
  done.store(true);
  reader.join();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(lowest.load(), uint64_t(kWaiting));
  EXPECT_EQ(b.pipeline_backlog(0).records, uint64_t(kWaiting));
}

}  // namespace
}  // namespace ps
