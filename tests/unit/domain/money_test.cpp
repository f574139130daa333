#include <gtest/gtest.h>

#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "domain/money.hpp"

namespace ps {
namespace {

TEST(Money, KnowsMinorUnits) {
  ASSERT_TRUE(find_currency("EUR"));
  EXPECT_EQ(find_currency("EUR")->minor_units, 2);
  EXPECT_EQ(find_currency("JPY")->minor_units, 0);
  EXPECT_EQ(find_currency("BHD")->minor_units, 3);
  EXPECT_FALSE(find_currency("eur"));
  EXPECT_FALSE(find_currency("XXX"));
  EXPECT_FALSE(find_currency(""));
}

TEST(Money, TableIsSortedForBinarySearch) {
  const auto& all = all_currencies();
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].code, all[i].code);
  for (const auto& c : all) EXPECT_TRUE(find_currency(c.code)) << c.code;
}

TEST(Money, DetectsOverflow) {
  int64_t out = 0;
  EXPECT_FALSE(add_overflows(1, 2, &out));
  EXPECT_EQ(out, 3);
  EXPECT_TRUE(add_overflows(INT64_MAX, 1, &out));
}

TEST(Ids, PaymentIdIsDeterministicPerMerchantAndKey) {
  EXPECT_EQ(payment_id_for("mer_a", "k1"), payment_id_for("mer_a", "k1"));
  EXPECT_NE(payment_id_for("mer_a", "k1"), payment_id_for("mer_b", "k1"));
  EXPECT_NE(payment_id_for("mer_a", "k1"), payment_id_for("mer_a", "k2"));
  EXPECT_EQ(payment_id_for("mer_a", "k1").rfind("pay_", 0), 0u);
}

TEST(Ids, Base64RoundTrips) {
  for (std::string s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");
}

TEST(Ids, HmacMatchesRfc4231Case2) {
  auto mac = hmac_sha256("Jefe", "what do ya want for nothing?");
  std::string hex;
  for (unsigned char c : mac) { char b[3]; snprintf(b, 3, "%02x", c); hex += b; }
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Event, PayloadRoundTrips) {
  Payment p;
  p.id = "pay_1"; p.merchant_id = "mer_1"; p.idempotency_key = "k"; p.amount_minor = 1234;
  p.currency = "EUR"; p.source = "tok_approve"; p.metadata = {{"order", "42"}};
  p.created_ms = 5; p.updated_ms = 6;
  auto e = make_payment_event(p, event_types::payment_initiated, "/paystream/gateway", 7, "tp");
  EXPECT_EQ(e.key, "pay_1");
  EXPECT_EQ(e.id, make_event_id("pay_1", "payment.initiated"));
  auto d = decode_payload(e.data);
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_TRUE(d->payment);
  EXPECT_EQ(d->payment->amount_minor, 1234);
  EXPECT_EQ(d->payment->metadata.at("order"), "42");
  EXPECT_EQ(topic_for(e.type), topics::initiated);
}

// A refund's fee share travels in its events; events written before refunds returned fees
// lack the field (0); a share outside 0..amount is a schema error.
TEST(Event, RefundFeeShareRoundTripsAndIsChecked) {
  Refund r;
  r.id = "re_1"; r.payment_id = "pay_1"; r.merchant_id = "mer_1"; r.idempotency_key = "k";
  r.amount_minor = 500; r.currency = "EUR"; r.fee_refunded_minor = 14;
  auto e = make_refund_event(r, event_types::refund_requested, "/paystream/gateway", 7, "tp");
  auto d = decode_payload(e.data);
  ASSERT_TRUE(d.ok() && d->refund) << (d ? "" : d.error().message);
  EXPECT_EQ(d->refund->fee_refunded_minor, 14);
  r.fee_refunded_minor = 0;
  auto old = decode_payload(make_refund_event(r, event_types::refund_requested, "/g", 7, "tp").data);
  ASSERT_TRUE(old.ok() && old->refund);
  EXPECT_EQ(old->refund->fee_refunded_minor, 0);
  std::string bad = make_refund_event(r, event_types::refund_requested, "/g", 7, "tp").data;
  bad.replace(bad.find("\"amount\":500"), 12, "\"amount\":500,\"fee_refunded\":501");
  EXPECT_EQ(decode_payload(bad).error().code, "event_schema_invalid");
}

TEST(Event, RejectsUndecodableAndSchemaInvalid) {
  EXPECT_EQ(decode_payload("not json").error().code, "event_undecodable");
  EXPECT_EQ(decode_payload(R"({"schema_version":99})").error().code, "event_schema_invalid");
  EXPECT_EQ(decode_payload(R"({"schema_version":1,"payment":{"id":"x"}})").error().code, "event_schema_invalid");
  EXPECT_EQ(decode_payload(R"({"schema_version":1})").error().code, "event_schema_invalid");
}

}  // namespace
}  // namespace ps
