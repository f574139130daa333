// Schedule (arrival times, counts, steps) and option validation of `paystream bench`.
#include <gtest/gtest.h>

#include "bench/bench_config.hpp"
#include "bench/load_worker.hpp"
#include "bench/schedule.hpp"

namespace ps::bench {
namespace {

TEST(Schedule, ConstantRateIsEvenlySpaced) {
  Schedule s({{200, 3}}, 1.0);
  EXPECT_EQ(s.total(), 600u);
  EXPECT_DOUBLE_EQ(s.length_s(), 3.0);
  for (uint64_t i = 0; i < s.total(); ++i) EXPECT_EQ(s.due_ns(i), int64_t(i) * 5'000'000) << i;
}

TEST(Schedule, WorkerShareDividesTheRate) {
  Schedule s({{200, 3}}, 0.5);
  EXPECT_EQ(s.total(), 300u);
  EXPECT_EQ(s.due_ns(1), 10'000'000);
  EXPECT_LT(s.due_ns(299), 3'000'000'000);
}

TEST(Schedule, FractionalCountsRoundUp) {
  Schedule s({{3, 1.5}}, 1.0);  // 4.5 arrivals: 0, 1/3, 2/3, 1, 4/3
  EXPECT_EQ(s.total(), 5u);
  EXPECT_EQ(s.due_ns(4), 1'333'333'333);
}

TEST(Schedule, StepsArePiecewiseAndMonotonic) {
  Schedule s({{10, 1}, {100, 1}, {1, 2}}, 1.0);
  EXPECT_EQ(s.total(), 10u + 100u + 2u);
  EXPECT_EQ(s.due_ns(9), 900'000'000);
  EXPECT_EQ(s.due_ns(10), 1'000'000'000);
  EXPECT_EQ(s.due_ns(11), 1'010'000'000);
  EXPECT_EQ(s.due_ns(110), 2'000'000'000);
  EXPECT_EQ(s.due_ns(111), 3'000'000'000);
  int64_t prev = -1;
  for (uint64_t i = 0; i < s.total(); ++i) {
    int64_t t = s.due_ns(i);
    EXPECT_GT(t, prev);
    EXPECT_LT(t, 4'000'000'000);
    prev = t;
  }
  EXPECT_EQ(s.due_ns(5), 500'000'000);  // going back works too
}

TEST(Schedule, ParseSteps) {
  auto s = parse_steps("100:2,2000.5:0.5");
  ASSERT_TRUE(s);
  ASSERT_EQ(s->size(), 2u);
  EXPECT_DOUBLE_EQ((*s)[1].rate_per_s, 2000.5);
  EXPECT_DOUBLE_EQ((*s)[1].seconds, 0.5);
  for (const char* bad : {"", "100", "100:", ":5", "0:5", "5:0", "-1:2", "1:2,", "x:1", "1:2:3"})
    EXPECT_FALSE(parse_steps(bad)) << bad;
}

BenchConfig base() {
  BenchConfig c;
  c.url = "http://127.0.0.1:8080";
  c.api_key = "sk_x";
  c.rate_per_s = 100;
  c.duration_s = 2;
  c.connections = 10;
  c.seed = 1;
  return c;
}

TEST(BenchConfig, DefaultsAndSourceAddresses) {
  auto v = validate_config(base());
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->processes, 1);
  EXPECT_EQ(v->target.port, 8080);
  EXPECT_EQ(v->source_addresses, std::vector<std::string>{""});  // one process, few connections: no bind

  auto c = base();
  c.connections = 25000;
  v = validate_config(c);
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->processes, 3);
  EXPECT_EQ(v->source_addresses, (std::vector<std::string>{"127.0.0.2", "127.0.0.3", "127.0.0.4"}));

  c.source_addresses = {"10.0.0.1"};
  v = validate_config(c);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->source_addresses, (std::vector<std::string>{"10.0.0.1", "10.0.0.1", "10.0.0.1"}));
  EXPECT_EQ(connections_of_worker(25000, 3, 0), 8334);
  EXPECT_EQ(connections_of_worker(25000, 3, 2), 8333);
}

TEST(BenchConfig, RejectsBadOptions) {
  auto expect_bad = [](BenchConfig c, const char* what) { EXPECT_FALSE(validate_config(c)) << what; };
  auto c = base(); c.url = ""; expect_bad(c, "no url");
  c = base(); c.url = "https://x:1"; expect_bad(c, "https");
  c = base(); c.url = "http://x:99999"; expect_bad(c, "port");
  c = base(); c.admin_key = "adm"; expect_bad(c, "both keys");
  c = base(); c.api_key = ""; expect_bad(c, "no key");
  c = base(); c.rate_per_s = 0; expect_bad(c, "rate");
  c = base(); c.steps = "10:1"; expect_bad(c, "steps with rate");
  c = base(); c.connections = 60001; expect_bad(c, "too many connections");
  c = base(); c.connections = 30000; c.processes = 1; expect_bad(c, "too many per process");
  c = base(); c.processes = 11; expect_bad(c, "more processes than connections");
  c = base(); c.retry_share = 0.7; c.duplicate_share = 0.4; expect_bad(c, "shares");
  c = base(); c.decline_share = 1.5; expect_bad(c, "decline share");
  c = base(); c.currency = "EURO"; expect_bad(c, "currency");
  c = base(); c.verify_entries = 0; expect_bad(c, "verify entries");
  c = base(); c.rate_per_s = 0; c.duration_s = 0; c.steps = "10:1,20:2";
  auto v = validate_config(c);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->steps.size(), 2u);
}

TEST(LoadWorker, FirstIdMember) {
  EXPECT_EQ(first_id_member(R"({"id":"pay_1","object":"payment","metadata":{"id":"x"}})"), "pay_1");
  EXPECT_EQ(first_id_member(R"({"id": "pay_2", "status": "processing"})"), "pay_2");
  EXPECT_EQ(first_id_member(R"({"error":{"type":"x","code":"idempotency_key_in_use"}})"), "");
  EXPECT_EQ(first_id_member(R"({"idem":"a","id":7})"), "");
  EXPECT_EQ(first_id_member(R"({"bench_id":"a","id":"b"})"), "b");
}

}  // namespace
}  // namespace ps::bench
