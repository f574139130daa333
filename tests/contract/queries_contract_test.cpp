// PaymentQueries, EventQueries and MerchantStore contracts: balances, ledger entries,
// newest-first cursor pagination, merchant isolation.
#include <gtest/gtest.h>

#include <set>

#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {

class QueriesContract : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override { h = GetParam().make(); }
  std::unique_ptr<StoreHarness> h;
};

TEST_P(QueriesContract, BalancesArePerCurrencyAndPerMerchant) {
  settled_payment(*h, "mer_1", "a", 1000, "EUR");
  settled_payment(*h, "mer_1", "b", 250, "EUR");
  settled_payment(*h, "mer_1", "c", 77, "JPY");
  settled_payment(*h, "mer_2", "a", 5, "EUR");
  auto b = h->queries().balances("mer_1");
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 2u);
  std::map<std::string, int64_t> by;
  for (auto& x : *b) by[x.currency] = x.available_minor;
  EXPECT_EQ(by["EUR"], 1250);
  EXPECT_EQ(by["JPY"], 77);
  EXPECT_EQ(h->queries().balances("mer_2")->at(0).available_minor, 5);
  EXPECT_TRUE(h->queries().balances("mer_3")->empty());
}

TEST_P(QueriesContract, EntriesForPaymentCarryTheirPostings) {
  Payment p = settled_payment(*h, "mer_1", "a", 1000, "EUR", 30);
  auto e = h->queries().entries_for_payment("mer_1", p.id);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->size(), 1u);
  const auto& entry = (*e)[0];
  EXPECT_EQ(entry.id, settlement_for(p, 30).id);
  EXPECT_EQ(entry.payment_id, p.id);
  EXPECT_EQ(entry.merchant_id, "mer_1");
  EXPECT_TRUE(entry.refund_id.empty());
  ASSERT_EQ(entry.postings.size(), 3u);
  int64_t sum = 0;
  for (auto& x : entry.postings) sum += x.amount_minor;
  EXPECT_EQ(sum, 0);
  EXPECT_EQ(entry.postings[0].account, "acquirer:clearing");
  EXPECT_EQ(entry.postings[1].amount_minor, -970);
  EXPECT_TRUE(h->queries().entries_for_payment("mer_2", p.id)->empty());
}

TEST_P(QueriesContract, ListPaymentsPagesNewestFirstWithCursor) {
  // 7 payments; two share a created_ms so the id breaks the tie.
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    int64_t t = 1000 + (i == 4 ? 3 : i);  // i=3 and i=4 both at t=1003
    auto cmd = payment_cmd("mer_1", "k" + std::to_string(i), 100 + i, t);
    ids.push_back(cmd.payment.id);
    ASSERT_TRUE(accept_payment_sync(h->intake(), std::move(cmd)).ok());
  }
  ASSERT_TRUE(accept_payment_sync(h->intake(), payment_cmd("mer_2", "x", 5, 5000)).ok());
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto r = h->queries().list_payments("mer_1", std::nullopt, Page{3, cursor});
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (r->empty()) break;
    EXPECT_LE(r->size(), 3u);
    for (auto& p : *r) seen.push_back(p.id);
    cursor = r->back().id;
  }
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 7u);
  // Order: created_ms desc, id desc.
  auto all = h->queries().list_payments("mer_1", std::nullopt, Page{100, ""}).value();
  ASSERT_EQ(all.size(), 7u);
  for (size_t i = 1; i < all.size(); ++i) {
    bool ordered = all[i - 1].created_ms > all[i].created_ms ||
                   (all[i - 1].created_ms == all[i].created_ms && all[i - 1].id > all[i].id);
    EXPECT_TRUE(ordered) << i;
  }
  EXPECT_EQ(all[0].id, ids[6]);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(seen[i], all[i].id);
}

TEST_P(QueriesContract, ListPaymentsFiltersByStatus) {
  Payment a = settled_payment(*h, "mer_1", "a", 100);
  h->clock.advance(std::chrono::milliseconds(1));
  ASSERT_TRUE(accept_payment_sync(h->intake(), payment_cmd("mer_1", "b", 100, h->clock.now_ms())).ok());
  auto ok = h->queries().list_payments("mer_1", PaymentStatus::succeeded, Page{10, ""});
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].id, a.id);
  EXPECT_EQ(h->queries().list_payments("mer_1", PaymentStatus::processing, Page{10, ""})->size(), 1u);
  EXPECT_TRUE(h->queries().list_payments("mer_1", PaymentStatus::failed, Page{10, ""})->empty());
}

TEST_P(QueriesContract, UnknownOrForeignCursorIsInvalid) {
  Payment mine = settled_payment(*h, "mer_1", "a", 100);
  Payment theirs = settled_payment(*h, "mer_2", "a", 100);
  auto r = h->queries().list_payments("mer_1", std::nullopt, Page{10, "pay_doesnotexist"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_request);
  EXPECT_EQ(r.error().code, "cursor_invalid");
  EXPECT_EQ(r.error().param, "starting_after");
  auto f = h->queries().list_payments("mer_1", std::nullopt, Page{10, theirs.id});
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().code, "cursor_invalid");
  auto after_last = h->queries().list_payments("mer_1", std::nullopt, Page{10, mine.id});
  ASSERT_TRUE(after_last.ok());
  EXPECT_TRUE(after_last->empty());
}

TEST_P(QueriesContract, MerchantEventsListNewestFirstWithCursorAndDedup) {
  Effects fx;
  for (int i = 0; i < 5; ++i)
    fx.merchant_events.push_back({"evt_" + std::to_string(i), "mer_1", "payment.succeeded",
                                  "{\"n\":" + std::to_string(i) + "}", 100 + i});
  fx.merchant_events.push_back({"evt_other", "mer_2", "payment.failed", "{}", 200});
  ASSERT_TRUE(h->log().commit("notifier", {}, fx).ok());
  ASSERT_TRUE(h->log().commit("notifier", {}, fx).ok());  // redelivered: deduplicated
  auto first = h->events().list_events("mer_1", Page{2, ""});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].id, "evt_4");
  EXPECT_EQ((*first)[1].id, "evt_3");
  auto second = h->events().list_events("mer_1", Page{10, "evt_3"});
  ASSERT_EQ(second->size(), 3u);
  EXPECT_EQ((*second)[2].id, "evt_0");
  EXPECT_EQ((*second)[2].data_json, "{\"n\":0}");
  auto bad = h->events().list_events("mer_1", Page{10, "evt_other"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "cursor_invalid");
  EXPECT_TRUE(h->events().get_event("mer_1", "evt_2")->has_value());
  EXPECT_FALSE(h->events().get_event("mer_1", "evt_other")->has_value());
}

TEST_P(QueriesContract, MerchantsAreFoundByKeyHashAndUnique) {
  Merchant m{"mer_1", "Shop", "hash1", 50.0, 100, 1000};
  ASSERT_TRUE(h->merchants().create_merchant(m).ok());
  ASSERT_TRUE(h->merchants().create_merchant(Merchant{"mer_2", "Other", "hash2", 0, 0, 1001}).ok());
  auto f = h->merchants().find_merchant_by_key_hash("hash1");
  ASSERT_TRUE(f.ok() && f->has_value());
  EXPECT_EQ((*f)->id, "mer_1");
  EXPECT_EQ((*f)->name, "Shop");
  EXPECT_DOUBLE_EQ((*f)->rate_limit_per_s, 50.0);
  EXPECT_EQ((*f)->rate_limit_burst, 100);
  EXPECT_FALSE(h->merchants().find_merchant_by_key_hash("nope")->has_value());
  auto dup = h->merchants().create_merchant(Merchant{"mer_3", "Dup", "hash1", 0, 0, 1});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().kind, ErrorKind::conflict);
  h->reopen();
  EXPECT_EQ(h->merchants().all_merchants()->size(), 2u);
}

// Rotation: a new key that never expires; the merchant's other keys get the grace expiry
// (never extended), keys already expired are deleted; all of it survives a restart.
TEST_P(QueriesContract, ApiKeyRotationAddsAKeyAndExpiresTheOthers) {
  ASSERT_TRUE(h->merchants().create_merchant(Merchant{"mer_1", "Shop", "k1", 0, 0, 1000}).ok());
  ASSERT_TRUE(h->merchants().create_merchant(Merchant{"mer_2", "Other", "o1", 0, 0, 1000}).ok());
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k1")->value().key_expires_ms, 0);

  // k1 -> k2 with a grace period until 5000.
  auto r1 = h->merchants().rotate_api_key("mer_1", "k2", 2000, 5000);
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  ASSERT_TRUE(r1->has_value());
  ASSERT_EQ((*r1)->size(), 1u);
  EXPECT_EQ((*r1)->at(0).api_key_hash, "k1");
  EXPECT_EQ((*r1)->at(0).key_expires_ms, 5000);
  EXPECT_EQ((*r1)->at(0).id, "mer_1");
  auto k1 = h->merchants().find_merchant_by_key_hash("k1");
  ASSERT_TRUE(k1.ok() && k1->has_value());
  EXPECT_EQ((*k1)->key_expires_ms, 5000);
  EXPECT_TRUE((*k1)->key_valid_at(4999));
  EXPECT_FALSE((*k1)->key_valid_at(5000));
  auto k2 = h->merchants().find_merchant_by_key_hash("k2");
  ASSERT_TRUE(k2.ok() && k2->has_value());
  EXPECT_EQ((*k2)->id, "mer_1");
  EXPECT_EQ((*k2)->api_key_hash, "k2");
  EXPECT_EQ((*k2)->key_expires_ms, 0);

  // k2 -> k3 with a longer grace: k2 gets it, k1's earlier expiry is not extended.
  auto r2 = h->merchants().rotate_api_key("mer_1", "k3", 3000, 8000);
  ASSERT_TRUE(r2.ok() && r2->has_value());
  EXPECT_EQ((*r2)->size(), 2u);
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k1")->value().key_expires_ms, 5000);
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k2")->value().key_expires_ms, 8000);

  // k3 -> k4 revoking at once: every other key stops now.
  auto r3 = h->merchants().rotate_api_key("mer_1", "k4", 4000, 4000);
  ASSERT_TRUE(r3.ok() && r3->has_value());
  EXPECT_EQ((*r3)->size(), 3u);
  for (const char* k : {"k1", "k2", "k3"})
    EXPECT_EQ(h->merchants().find_merchant_by_key_hash(k)->value().key_expires_ms, 4000) << k;

  // A rotation after they expired deletes them.
  auto r4 = h->merchants().rotate_api_key("mer_1", "k5", 6000, 9000);
  ASSERT_TRUE(r4.ok() && r4->has_value());
  ASSERT_EQ((*r4)->size(), 1u);
  EXPECT_EQ((*r4)->at(0).api_key_hash, "k4");
  for (const char* k : {"k1", "k2", "k3"}) EXPECT_FALSE(h->merchants().find_merchant_by_key_hash(k)->has_value()) << k;

  // Other merchants are untouched; an unknown merchant or a taken key changes nothing.
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("o1")->value().key_expires_ms, 0);
  auto none = h->merchants().rotate_api_key("mer_none", "k6", 6000, 6000);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(h->merchants().find_merchant_by_key_hash("k6")->has_value());
  auto taken = h->merchants().rotate_api_key("mer_1", "o1", 6000, 6000);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.error().kind, ErrorKind::conflict);
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k5")->value().key_expires_ms, 0);
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("o1")->value().id, "mer_2");

  h->reopen();
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k4")->value().key_expires_ms, 9000);
  EXPECT_EQ(h->merchants().find_merchant_by_key_hash("k5")->value().key_expires_ms, 0);
  auto all = h->merchants().all_merchants();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);  // k4, k5, o1
}

INSTANTIATE_TEST_SUITE_P(Adapters, QueriesContract, ::testing::ValuesIn(store_factories()), factory_name);

}  // namespace
}  // namespace ps::contract
