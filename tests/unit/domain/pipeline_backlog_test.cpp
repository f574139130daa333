// PipelineBacklog: what the settling stages have yet to consume, per (group, topic).
#include <gtest/gtest.h>

#include "domain/pipeline_backlog.hpp"

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

}  // namespace
}  // namespace ps
