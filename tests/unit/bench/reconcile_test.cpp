// reconcile(): the pure decision of the bench's reconciliation, and the page parsers.
#include "bench/reconcile.hpp"

#include <gtest/gtest.h>

namespace ps::bench {
namespace {

ListedPayment pay(std::string id, std::string status, std::string key, int64_t created = 1000, int64_t updated = 1010) {
  ListedPayment p;
  p.id = std::move(id);
  p.status = std::move(status);
  p.bench_key = std::move(key);
  p.currency = "EUR";
  p.amount_minor = 1000;
  p.created_ms = created;
  p.updated_ms = updated;
  return p;
}

SampledEntries settled(const std::string& id, int64_t amount, int64_t fee) {
  JournalEntryView e{"je_" + id, "settlement",
                     {{"clearing", "EUR", amount}, {"merchant:mer_1:available", "EUR", -(amount - fee)}}};
  if (fee) e.postings.push_back({"fees", "EUR", -fee});
  return {id, "succeeded", {e}};
}

ReconcileInput good() {
  ReconcileInput in;
  in.acknowledged = {{"k1", "p1"}, {"k2", "p2"}, {"k3", "p3"}, {"k3", "p3"}};
  in.listed = {pay("p1", "succeeded", "k1", 1000, 1020), pay("p2", "succeeded", "k2"), pay("p3", "failed", "k3")};
  in.samples = {settled("p1", 1000, 30), settled("p2", 1000, 30), {"p3", "failed", {}}};
  in.balance_before_minor = 500;
  in.balance_after_minor = 500 + 2 * 970;
  return in;
}

TEST(Reconcile, AllGood) {
  auto r = reconcile(good());
  EXPECT_TRUE(r.ok()) << (r.failures.empty() ? "" : r.failures[0]);
  EXPECT_EQ(r.accepted, 3u);
  EXPECT_EQ(r.terminal, 3u);
  EXPECT_EQ(r.succeeded, 2u);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.lost, 0u);
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_TRUE(r.ledger_balanced);
  EXPECT_EQ(r.credit_per_payment_minor, 970);
  EXPECT_EQ(r.expected_balance_delta_minor, 1940);
  EXPECT_EQ(r.e2e_us.count(), 3u);
  EXPECT_EQ(r.e2e_us.max(), 20'000u);
  EXPECT_EQ(r.e2e_succeeded_us.count(), 2u);
}

TEST(Reconcile, ProcessingAndLostPaymentsFail) {
  auto in = good();
  in.listed[1].status = "processing";
  in.listed.pop_back();  // p3 lost
  in.samples.pop_back();
  in.balance_after_minor = 500 + 970;
  in.settled = false;
  auto r = reconcile(in);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.terminal, 1u);
  EXPECT_EQ(r.processing, 1u);
  EXPECT_EQ(r.lost, 1u);
  EXPECT_TRUE(r.ledger_balanced);
}

TEST(Reconcile, DuplicatesAreCounted) {
  auto in = good();
  in.listed.push_back(pay("p4", "succeeded", "k1"));  // a second payment for key k1
  in.acknowledged.push_back({"k1", "p4"});
  in.balance_after_minor += 970;
  in.replay_mismatch = 1;
  in.pair_mismatch = 2;
  auto r = reconcile(in);
  EXPECT_EQ(r.duplicate_keys, 1u);
  EXPECT_EQ(r.duplicates, 4u);
  EXPECT_FALSE(r.ok());
}

TEST(Reconcile, LedgerProblemsAreUnbalanced) {
  {
    auto in = good();
    in.balance_after_minor += 1;  // balance moved more than the settlements explain
    auto r = reconcile(in);
    EXPECT_FALSE(r.ledger_balanced);
    EXPECT_FALSE(r.ok());
  }
  {
    auto in = good();
    in.samples[0].entries[0].postings[0].amount_minor += 1;  // entry does not sum to zero
    EXPECT_FALSE(reconcile(in).ledger_balanced);
  }
  {
    auto in = good();
    in.samples[1].entries.push_back(in.samples[1].entries[0]);  // two settlements
    EXPECT_FALSE(reconcile(in).ledger_balanced);
  }
  {
    auto in = good();
    in.samples[2].entries = in.samples[0].entries;  // a failed payment with an entry
    EXPECT_FALSE(reconcile(in).ledger_balanced);
  }
  {
    auto in = good();
    in.samples[1] = settled("p2", 1000, 31);  // credits differ
    EXPECT_FALSE(reconcile(in).ledger_balanced);
  }
}

TEST(Reconcile, ParsePaymentPageFiltersTheRun) {
  std::string body =
      R"({"object":"list","data":[)"
      R"({"id":"p2","object":"payment","amount":1000,"currency":"EUR","status":"succeeded","metadata":{"bench_run":"r1","bench_key":"k2"},"created":5,"updated":9},)"
      R"({"id":"p1","object":"payment","amount":1000,"currency":"EUR","status":"processing","metadata":{},"created":4,"updated":4})"
      R"(],"has_more":true})";
  auto page = parse_payment_page(body, "r1");
  ASSERT_TRUE(page) << page.error().message;
  EXPECT_TRUE(page->has_more);
  EXPECT_EQ(page->last_id, "p1");
  ASSERT_EQ(page->run_payments.size(), 1u);
  EXPECT_EQ(page->run_payments[0].bench_key, "k2");
  EXPECT_EQ(page->run_payments[0].updated_ms, 9);
  EXPECT_FALSE(parse_payment_page("{}", "r1"));
}

TEST(Reconcile, ParseEntriesAndBalance) {
  auto es = parse_entries(
      R"({"object":"list","data":[{"id":"je_1","kind":"settlement","postings":[{"account":"a","currency":"EUR","amount":5},{"account":"b","currency":"EUR","amount":-5}]}],"has_more":false})");
  ASSERT_TRUE(es);
  ASSERT_EQ(es->size(), 1u);
  EXPECT_EQ((*es)[0].postings[1].amount_minor, -5);
  auto b = parse_balance(R"({"object":"balance","available":[{"currency":"EUR","amount":42}]})", "EUR");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, 42);
  auto none = parse_balance(R"({"object":"balance","available":[]})", "USD");
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0);
}

}  // namespace
}  // namespace ps::bench
