#include <gtest/gtest.h>

#include <thread>

#include "common/metrics.hpp"
#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "domain/json_codec.hpp"
#include "unit/api/harness.hpp"

using namespace ps;
using namespace ps::testing;
using namespace std::chrono_literals;

namespace {
double metric_value(const std::string& line_prefix) {
  std::string text = metrics::registry().render();
  auto pos = text.find("\n" + line_prefix + " ");
  if (pos == std::string::npos) return 0;
  return std::stod(text.substr(pos + line_prefix.size() + 2));
}
}  // namespace

TEST(ApiRouting, NotFoundMethodNotAllowedAndProbes) {
  Harness h;
  auto r = h.call("GET", "/v2/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(err_code(r), "route_not_found");
  r = h.call("PUT", "/v1/payments");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(err_code(r), "method_not_allowed");
  EXPECT_EQ(hdr(r, "Allow"), "POST, GET");
  r = h.call("PATCH", "/v1/webhook_endpoints/we_1");
  EXPECT_EQ(hdr(r, "Allow"), "GET, POST, DELETE");
  r = h.call("GET", "/v1/payments/");
  EXPECT_EQ(r.status, 404);
  // A percent-encoded NUL in an id segment matches no route (a store must never see it).
  r = h.call("GET", "/v1/payments/pay_x%00y");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(err_code(r), "route_not_found");

  EXPECT_EQ(h.call("GET", "/healthz").body, R"({"status":"ok"})");
  EXPECT_EQ(h.call("GET", "/readyz").status, 200);
  h.api->set_ready(false);
  r = h.call("GET", "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, R"({"status":"not_ready"})");
  h.api->set_ready(true);
  h.api->set_draining(true);
  EXPECT_EQ(h.call("GET", "/readyz").status, 503);
  EXPECT_EQ(h.call("GET", "/healthz").status, 200);
  r = h.call("GET", "/v1/balance", "", Harness::auth("sk_whatever"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(err_code(r), "draining");
  h.api->set_draining(false);

  r = h.call("GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  EXPECT_NE(r.body.find("paystream_http_requests_total"), std::string::npos);
}

TEST(ApiAuth, KeysAdminAndMerchantCreate) {
  Harness h;
  auto r = h.call("GET", "/v1/balance");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(err_code(r), "unauthorized");
  EXPECT_EQ(std::string(J(r.body).at("error").at("type").as_string()), "authentication_error");
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_unknown")).status, 401);

  // Admin route: wrong key, and a merchant key, are refused.
  EXPECT_EQ(h.call("POST", "/v1/merchants", R"({"name":"x"})", Harness::auth("nope")).status, 401);
  std::string id;
  std::string key = h.merchant("Acme", &id);
  int lookups = h.s.key_hash_lookups;
  EXPECT_EQ(h.call("POST", "/v1/merchants", R"({"name":"x"})", Harness::auth(key)).status, 401);
  EXPECT_EQ(key.size(), 3u + 48u);
  EXPECT_EQ(key.rfind("sk_", 0), 0u);
  EXPECT_EQ(id.rfind("mer_", 0), 0u);
  // Only the hash is stored.
  ASSERT_EQ(h.s.merchants_by_hash.count(sha256_hex(key)), 1u);
  EXPECT_EQ(h.s.merchants_by_hash[sha256_hex(key)].id, id);
  // Write-through: no store lookup needed for the new key.
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth(key)).status, 200);
  EXPECT_EQ(h.s.key_hash_lookups, lookups);
}

TEST(ApiAuth, NoAdminKeyConfiguredRefusesAdmin) {
  ApiConfig c = test_config();
  c.admin_key.clear();
  Harness h(c);
  EXPECT_EQ(h.call("POST", "/v1/merchants", R"({"name":"x"})", Harness::auth("")).status, 401);
}

TEST(ApiAuth, WarmAndStoreFallback) {
  Harness h;
  Merchant m{"mer_warm", "Warm", sha256_hex("sk_warm"), 0, 0, 1};
  Merchant late{"mer_late", "Late", sha256_hex("sk_late"), 0, 0, 1};
  ASSERT_TRUE(h.s.create_merchant(m).ok());
  ASSERT_TRUE(h.api->warm().ok());
  ASSERT_TRUE(h.s.create_merchant(late).ok());
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_warm")).status, 200);
  EXPECT_EQ(h.s.key_hash_lookups, 0);
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_late")).status, 200);
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_late")).status, 200);
  EXPECT_EQ(h.s.key_hash_lookups, 1);  // miss once, then cached
  // Unknown keys are remembered briefly: a burst of bogus keys costs one lookup each.
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus")).status, 401);
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus")).status, 401);
  EXPECT_EQ(h.s.key_hash_lookups, 2);
}

TEST(ApiPayments, CreateAnswers202AndStoresPaymentEventRecord) {
  Harness h;
  std::string mid;
  std::string key = h.merchant("Acme", &mid);
  double before = metric_value("paystream_payments_accepted_total");
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto r = h.pay(key, "order-1", R"({"amount":1000,"currency":"EUR","source":"tok_approve","metadata":{"o":"1"}})",
                 {{"traceparent", tp}});
  ASSERT_EQ(r.status, 202) << r.body;
  auto v = J(r.body);
  EXPECT_EQ(v.at("id").as_string(), payment_id_for(mid, "order-1"));
  EXPECT_EQ(v.at("object").as_string(), "payment");
  EXPECT_EQ(v.at("status").as_string(), "processing");
  EXPECT_EQ(v.at("amount").as_int64(), 1000);
  EXPECT_TRUE(v.at("failure_code").is_null());
  EXPECT_EQ(v.at("created").as_int64(), h.clock.now_ms());
  EXPECT_TRUE(hdr(r, "RateLimit-Limit").has_value());
  ASSERT_EQ(h.s.events_out.size(), 1u);
  const Event& e = h.s.events_out[0];
  EXPECT_EQ(e.type, event_types::payment_initiated);
  EXPECT_EQ(e.source, "/paystream/gateway");
  EXPECT_EQ(e.traceparent, tp);
  EXPECT_EQ(e.key, v.at("id").as_string());
  auto rec = h.s.idem.at({mid, "order-1"});
  EXPECT_EQ(rec.http_status, 202);
  EXPECT_EQ(rec.response_body, r.body);
  EXPECT_EQ(metric_value("paystream_payments_accepted_total"), before + 1);

  // Without a traceparent one is generated.
  ASSERT_EQ(h.pay(key, "order-2", kPayBody).status, 202);
  EXPECT_EQ(h.s.events_out.back().traceparent.size(), 55u);
}

TEST(ApiPayments, UnsupportedMediaTypeAndMissingKey) {
  Harness h;
  std::string key = h.merchant();
  auto r = h.call("POST", "/v1/payments", kPayBody, {{"Authorization", "Bearer " + key}, {"Idempotency-Key", "k"}});
  EXPECT_EQ(r.status, 415);
  EXPECT_EQ(err_code(r), "unsupported_media_type");
  r = h.call("POST", "/v1/payments", kPayBody, Harness::auth(key));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(err_code(r), "idempotency_key_missing");
  r = h.pay(key, std::string(256, 'x'), kPayBody);
  EXPECT_EQ(err_code(r), "idempotency_key_invalid");
  // application/json with a charset is fine.
  r = h.call("POST", "/v1/payments", kPayBody,
             {{"Authorization", "Bearer " + key}, {"Idempotency-Key", "k"}, {"content-type", "application/json; charset=utf-8"}});
  EXPECT_EQ(r.status, 202);
}

TEST(ApiIdempotency, ReplayMismatchAndMetrics) {
  Harness h;
  std::string key = h.merchant();
  double replayed = metric_value(R"(paystream_idempotency_total{outcome="replayed"})");
  double mismatch = metric_value(R"(paystream_idempotency_total{outcome="mismatch"})");
  auto first = h.pay(key, "k1", kPayBody);
  ASSERT_EQ(first.status, 202);
  h.clock.advance(5s);
  auto again = h.pay(key, "k1", kPayBody);
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(again.body, first.body);  // byte for byte, despite the clock moving
  EXPECT_EQ(hdr(again, "Idempotent-Replayed"), "true");
  EXPECT_FALSE(hdr(first, "Idempotent-Replayed").has_value());
  EXPECT_EQ(h.s.events_out.size(), 1u);

  auto other = h.pay(key, "k1", R"({"amount":1001,"currency":"EUR","source":"tok_approve"})");
  EXPECT_EQ(other.status, 422);
  EXPECT_EQ(err_code(other), "idempotency_key_mismatch");
  EXPECT_EQ(std::string(J(other.body).at("error").at("type").as_string()), "idempotency_error");
  EXPECT_EQ(metric_value(R"(paystream_idempotency_total{outcome="replayed"})"), replayed + 1);
  EXPECT_EQ(metric_value(R"(paystream_idempotency_total{outcome="mismatch"})"), mismatch + 1);
}

TEST(ApiIdempotency, SameKeyIsPerMerchant) {
  Harness h;
  std::string a_id, b_id;
  std::string a = h.merchant("A", &a_id), b = h.merchant("B", &b_id);
  auto ra = h.pay(a, "shared", kPayBody), rb = h.pay(b, "shared", kPayBody);
  ASSERT_EQ(ra.status, 202);
  ASSERT_EQ(rb.status, 202);
  EXPECT_FALSE(hdr(rb, "Idempotent-Replayed").has_value());
  EXPECT_NE(J(ra.body).at("id"), J(rb.body).at("id"));
}

TEST(ApiIdempotency, InFlightAnswers409) {
  Harness h;
  std::string key = h.merchant();
  h.s.defer_accepts = true;
  auto first = h.call_async("POST", "/v1/payments", kPayBody, Harness::auth(key, {{"Idempotency-Key", "k"}}));
  auto second = h.pay(key, "k", kPayBody);
  EXPECT_EQ(second.status, 409);
  EXPECT_EQ(err_code(second), "idempotency_key_in_use");
  auto third = h.pay(key, "k", R"({"amount":5,"currency":"EUR","source":"x"})");
  EXPECT_EQ(third.status, 422);
  h.s.release_deferred();
  ASSERT_EQ(first.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(first.get().status, 202);
  h.s.defer_accepts = false;
  EXPECT_EQ(hdr(h.pay(key, "k", kPayBody), "Idempotent-Replayed"), "true");
}

TEST(ApiIdempotency, BadBodyLeavesKeyUnused) {
  Harness h;
  std::string key = h.merchant();
  auto bad = h.pay(key, "fixme", R"({"amount":1.5,"currency":"EUR","source":"s"})");
  EXPECT_EQ(bad.status, 400);
  auto good = h.pay(key, "fixme", kPayBody);
  EXPECT_EQ(good.status, 202);
  EXPECT_FALSE(hdr(good, "Idempotent-Replayed").has_value());
}

TEST(ApiIdempotency, StoreFailureIs503AndAbandonsKey) {
  Harness h;
  std::string key = h.merchant();
  h.s.fail_accept = true;
  auto r = h.pay(key, "k", kPayBody);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(err_code(r), "unavailable");
  h.s.fail_accept = false;
  EXPECT_EQ(h.pay(key, "k", kPayBody).status, 202);
}

// The request path reads nothing from the durable store for idempotency: a new key goes
// straight to the accept transaction, which alone decides uniqueness.
TEST(ApiIdempotency, NoDurableLookupOnTheRequestPath) {
  Harness h;
  std::string key = h.merchant();
  h.s.fail_find = true;   // a lookup would turn these into 503s
  EXPECT_EQ(h.pay(key, "k-new", kPayBody).status, 202);
  auto again = h.pay(key, "k-new", kPayBody);
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(hdr(again, "Idempotent-Replayed"), "true");
  std::lock_guard lk(h.s.mu);
  EXPECT_EQ(h.s.find_calls, 0);
}

TEST(ApiIdempotency, LostCacheFallsBackToDurableRecord) {
  Harness h;
  std::string key = h.merchant();
  auto first = h.pay(key, "k", kPayBody);
  ASSERT_EQ(first.status, 202);
  // A second API instance (fresh cache, e.g. after a restart) over the same store.
  InMemoryIdempotencyCache fresh;
  Api api2(ApiDeps{h.s, h.s, h.s, h.s, h.s, h.s, fresh, h.rl, h.clock}, test_config());
  auto p = std::make_shared<std::promise<HttpResponse>>();
  api2.handle(Harness::make("POST", "/v1/payments", kPayBody, Harness::auth(key, {{"Idempotency-Key", "k"}})),
              [p](HttpResponse r) { p->set_value(std::move(r)); });
  auto r = p->get_future().get();
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.body, first.body);
  EXPECT_EQ(hdr(r, "Idempotent-Replayed"), "true");
  EXPECT_EQ(h.s.events_out.size(), 1u);
  // A different body with the old key after the cache loss is still a mismatch.
  InMemoryIdempotencyCache fresh2;
  Api api3(ApiDeps{h.s, h.s, h.s, h.s, h.s, h.s, fresh2, h.rl, h.clock}, test_config());
  auto p3 = std::make_shared<std::promise<HttpResponse>>();
  api3.handle(Harness::make("POST", "/v1/payments", R"({"amount":2,"currency":"EUR","source":"s"})",
                            Harness::auth(key, {{"Idempotency-Key", "k"}})),
              [p3](HttpResponse r) { p3->set_value(std::move(r)); });
  EXPECT_EQ(p3->get_future().get().status, 422);
}

TEST(ApiIdempotency, StoreSaysAlreadyCreatedRace) {
  Harness h;
  std::string key = h.merchant();
  auto first = h.pay(key, "k", kPayBody);
  InMemoryIdempotencyCache fresh;
  Api api2(ApiDeps{h.s, h.s, h.s, h.s, h.s, h.s, fresh, h.rl, h.clock}, test_config());
  h.s.hide_from_find = true;  // the lookup misses; the unique constraint catches it
  auto p = std::make_shared<std::promise<HttpResponse>>();
  api2.handle(Harness::make("POST", "/v1/payments", kPayBody, Harness::auth(key, {{"Idempotency-Key", "k"}})),
              [p](HttpResponse r) { p->set_value(std::move(r)); });
  auto r = p->get_future().get();
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.body, first.body);
  EXPECT_EQ(hdr(r, "Idempotent-Replayed"), "true");
  EXPECT_EQ(h.s.events_out.size(), 1u);
}

TEST(ApiTenancy, OtherMerchantsObjectsAre404) {
  Harness h;
  std::string a_id, b_id;
  std::string a = h.merchant("A", &a_id), b = h.merchant("B", &b_id);
  auto pay = h.pay(a, "k", kPayBody);
  std::string pid(J(pay.body).at("id").as_string());
  EXPECT_EQ(h.call("GET", "/v1/payments/" + pid, "", Harness::auth(a)).status, 200);
  auto r = h.call("GET", "/v1/payments/" + pid, "", Harness::auth(b));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(err_code(r), "resource_missing");
  EXPECT_EQ(h.call("GET", "/v1/payments/pay_nope", "", Harness::auth(a)).status, 404);
  EXPECT_EQ(h.call("GET", "/v1/ledger/entries?payment_id=" + pid, "", Harness::auth(b)).status, 404);
  EXPECT_EQ(h.call("POST", "/v1/payments/" + pid + "/refunds", "", Harness::auth(b, {{"Idempotency-Key", "r"}})).status, 404);
  auto list = J(h.call("GET", "/v1/payments", "", Harness::auth(b)).body);
  EXPECT_TRUE(list.at("data").as_array().empty());

  auto ep = h.call("POST", "/v1/webhook_endpoints", R"({"url":"http://93.184.216.34:9/h"})", Harness::auth(a));
  ASSERT_EQ(ep.status, 201);
  std::string eid(J(ep.body).at("id").as_string());
  EXPECT_EQ(h.call("GET", "/v1/webhook_endpoints/" + eid, "", Harness::auth(b)).status, 404);
  EXPECT_EQ(h.call("DELETE", "/v1/webhook_endpoints/" + eid, "", Harness::auth(b)).status, 404);
  EXPECT_EQ(h.call("GET", "/v1/webhook_endpoints/" + eid, "", Harness::auth(a)).status, 200);

  h.s.merchant_events.push_back(MerchantEvent{"evt_a", a_id, "payment.succeeded", pay.body, 5});
  EXPECT_EQ(h.call("GET", "/v1/events/evt_a", "", Harness::auth(b)).status, 404);
  EXPECT_EQ(h.call("POST", "/v1/events/evt_a/redeliver", "", Harness::auth(b)).status, 404);
  EXPECT_TRUE(h.s.redelivered.empty());
  EXPECT_EQ(h.call("GET", "/v1/events/evt_a", "", Harness::auth(a)).status, 200);
}

TEST(ApiRefunds, FullPartialAndRefusals) {
  Harness h;
  h.s.settle_on_accept = true;
  std::string mid;
  std::string key = h.merchant("A", &mid);
  std::string pid(J(h.pay(key, "p", kPayBody).body).at("id").as_string());
  std::string path = "/v1/payments/" + pid + "/refunds";

  auto r = h.call("POST", path, R"({"amount":300})", Harness::auth(key, {{"Idempotency-Key", "r1"}}));
  ASSERT_EQ(r.status, 202) << r.body;
  auto v = J(r.body);
  EXPECT_EQ(v.at("id").as_string(), refund_id_for(mid, "r1"));
  EXPECT_EQ(v.at("amount").as_int64(), 300);
  EXPECT_EQ(v.at("currency").as_string(), "EUR");
  EXPECT_EQ(v.at("status").as_string(), "processing");
  EXPECT_EQ(h.s.events_out.back().type, event_types::refund_requested);
  // Replay.
  auto again = h.call("POST", path, R"({"amount":300})", Harness::auth(key, {{"Idempotency-Key", "r1"}}));
  EXPECT_EQ(again.body, r.body);
  EXPECT_EQ(hdr(again, "Idempotent-Replayed"), "true");
  // Too much.
  r = h.call("POST", path, R"({"amount":701})", Harness::auth(key, {{"Idempotency-Key", "r2"}}));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(err_code(r), "amount_exceeds_refundable");
  EXPECT_EQ(err_param(r), "amount");
  // Empty body = the rest (resolved by the store, rendered by the API's callback).
  r = h.call("POST", path, "", {{"Authorization", "Bearer " + key}, {"Idempotency-Key", "r3"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(J(r.body).at("amount").as_int64(), 700);
  std::string rid(J(r.body).at("id").as_string());
  auto got = h.call("GET", "/v1/refunds/" + rid, "", Harness::auth(key));
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(J(got.body).at("amount").as_int64(), 700);
  // Not succeeded.
  h.s.settle_on_accept = false;
  std::string pid2(J(h.pay(key, "p2", kPayBody).body).at("id").as_string());
  r = h.call("POST", "/v1/payments/" + pid2 + "/refunds", "{}", Harness::auth(key, {{"Idempotency-Key", "r4"}}));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(err_code(r), "payment_not_succeeded");
  // Bad body and missing key.
  r = h.call("POST", path, R"({"amount":"5"})", Harness::auth(key, {{"Idempotency-Key", "r5"}}));
  EXPECT_EQ(err_code(r), "amount_invalid");
  r = h.call("POST", path, "{}", Harness::auth(key));
  EXPECT_EQ(err_code(r), "idempotency_key_missing");
}

TEST(ApiLists, PaginationFiltersAndQueryValidation) {
  Harness h;
  std::string key = h.merchant();
  for (int i = 0; i < 5; ++i) {
    h.clock.advance(1ms);
    ASSERT_EQ(h.pay(key, "k" + std::to_string(i), kPayBody).status, 202);
  }
  auto page1 = J(h.call("GET", "/v1/payments?limit=2", "", Harness::auth(key)).body);
  ASSERT_EQ(page1.at("data").as_array().size(), 2u);
  EXPECT_TRUE(page1.at("has_more").as_bool());
  EXPECT_EQ(page1.at("object").as_string(), "list");
  std::string last(page1.at("data").as_array()[1].at("id").as_string());
  auto page2 = J(h.call("GET", "/v1/payments?limit=3&starting_after=" + last, "", Harness::auth(key)).body);
  EXPECT_EQ(page2.at("data").as_array().size(), 3u);
  EXPECT_FALSE(page2.at("has_more").as_bool());
  auto r = h.call("GET", "/v1/payments?limit=0", "", Harness::auth(key));
  EXPECT_EQ(err_param(r), "limit");
  r = h.call("GET", "/v1/payments?status=done", "", Harness::auth(key));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(err_param(r), "status");
  r = h.call("GET", "/v1/payments?colour=red", "", Harness::auth(key));
  EXPECT_EQ(err_code(r), "parameter_unknown");
  r = h.call("GET", "/v1/payments?starting_after=pay_unknown", "", Harness::auth(key));
  EXPECT_EQ(err_code(r), "cursor_invalid");
  auto filtered = J(h.call("GET", "/v1/payments?status=succeeded", "", Harness::auth(key)).body);
  EXPECT_TRUE(filtered.at("data").as_array().empty());
}

TEST(ApiReads, BalanceLedgerEndpointsEvents) {
  Harness h;
  std::string mid;
  std::string key = h.merchant("A", &mid);
  h.s.balances_by_merchant[mid] = {{"EUR", 970}, {"USD", 5}};
  auto bal = h.call("GET", "/v1/balance", "", Harness::auth(key));
  EXPECT_EQ(bal.body, R"({"object":"balance","available":[{"currency":"EUR","amount":970},{"currency":"USD","amount":5}]})");

  auto r = h.call("GET", "/v1/ledger/entries", "", Harness::auth(key));
  EXPECT_EQ(err_code(r), "parameter_missing");
  EXPECT_EQ(err_param(r), "payment_id");
  std::string pid(J(h.pay(key, "k", kPayBody).body).at("id").as_string());
  JournalEntry je{"je_1", EntryKind::settlement, mid, pid, "", {{"acquirer:clearing", "EUR", 1000},
                                                               {"merchant:" + mid + ":available", "EUR", -1000}}, 7};
  h.s.entries.push_back(je);
  auto led = J(h.call("GET", "/v1/ledger/entries?payment_id=" + pid, "", Harness::auth(key)).body);
  ASSERT_EQ(led.at("data").as_array().size(), 1u);
  EXPECT_EQ(led.at("data").as_array()[0].at("postings").as_array().size(), 2u);

  auto ep = h.call("POST", "/v1/webhook_endpoints", R"({"url":"https://example.com/h","enabled_events":["payment.failed"]})",
                   Harness::auth(key));
  ASSERT_EQ(ep.status, 201) << ep.body;
  auto epv = J(ep.body);
  std::string secret(epv.at("secret").as_string());
  ASSERT_EQ(secret.rfind("whsec_", 0), 0u);
  EXPECT_EQ(base64_decode(secret.substr(6)).size(), 32u);
  std::string eid(epv.at("id").as_string());
  EXPECT_EQ(eid.rfind("we_", 0), 0u);
  auto list = J(h.call("GET", "/v1/webhook_endpoints", "", Harness::auth(key)).body);
  ASSERT_EQ(list.at("data").as_array().size(), 1u);
  EXPECT_FALSE(list.at("data").as_array()[0].as_object().contains("secret"));
  EXPECT_FALSE(J(h.call("GET", "/v1/webhook_endpoints/" + eid, "", Harness::auth(key)).body).as_object().contains("secret"));
  auto del = h.call("DELETE", "/v1/webhook_endpoints/" + eid, "", Harness::auth(key));
  EXPECT_EQ(del.body, R"({"id":")" + eid + R"(","object":"webhook_endpoint","deleted":true})");
  EXPECT_EQ(h.call("DELETE", "/v1/webhook_endpoints/" + eid, "", Harness::auth(key)).status, 404);
  r = h.call("POST", "/v1/webhook_endpoints", R"({"url":"gopher://x"})", Harness::auth(key));
  EXPECT_EQ(err_code(r), "url_invalid");

  for (int i = 0; i < 3; ++i)
    h.s.merchant_events.push_back(MerchantEvent{"evt_" + std::to_string(i), mid, "payment.succeeded", R"({"id":"pay_x"})", i});
  auto ev = J(h.call("GET", "/v1/events?limit=2", "", Harness::auth(key)).body);
  ASSERT_EQ(ev.at("data").as_array().size(), 2u);
  EXPECT_EQ(ev.at("data").as_array()[0].at("id").as_string(), "evt_2");
  EXPECT_TRUE(ev.at("has_more").as_bool());
  auto one = J(h.call("GET", "/v1/events/evt_1", "", Harness::auth(key)).body);
  EXPECT_EQ(one.at("data").at("id").as_string(), "pay_x");
  auto red = h.call("POST", "/v1/events/evt_1/redeliver", "", Harness::auth(key));
  EXPECT_EQ(red.status, 202);
  EXPECT_EQ(red.body, R"({"id":"evt_1","object":"event","redelivery":"scheduled"})");
  ASSERT_EQ(h.s.redelivered.size(), 1u);
}

TEST(ApiRateLimit, BucketPerKeyWithHeaders) {
  Harness h;
  std::string key = h.merchant("Slow", nullptr, R"({"per_second":1,"burst":2})");
  auto r1 = h.call("GET", "/v1/balance", "", Harness::auth(key));
  EXPECT_EQ(r1.status, 200);
  EXPECT_EQ(hdr(r1, "RateLimit-Limit"), "2");
  EXPECT_EQ(hdr(r1, "RateLimit-Remaining"), "1");
  auto r2 = h.call("GET", "/v1/payments/pay_missing", "", Harness::auth(key));
  EXPECT_EQ(r2.status, 404);
  EXPECT_EQ(hdr(r2, "RateLimit-Remaining"), "0");  // on error answers too
  double limited = metric_value("paystream_rate_limited_total");
  auto r3 = h.call("GET", "/v1/balance", "", Harness::auth(key));
  EXPECT_EQ(r3.status, 429);
  EXPECT_EQ(err_code(r3), "rate_limited");
  EXPECT_EQ(hdr(r3, "Retry-After"), "1");
  EXPECT_EQ(hdr(r3, "RateLimit-Reset"), "2");
  EXPECT_EQ(metric_value("paystream_rate_limited_total"), limited + 1);
  // Another merchant is not affected.
  std::string other = h.merchant("Other");
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth(other)).status, 200);
  h.clock.advance(1s);
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth(key)).status, 200);
}

TEST(ApiPreferWait, TerminalInTimeGives201AndReplays201) {
  Harness h;
  std::string key = h.merchant();
  auto fut = h.call_async("POST", "/v1/payments", kPayBody,
                          Harness::auth(key, {{"Idempotency-Key", "w1"}, {"Prefer", "wait=5000"}}));
  EXPECT_EQ(fut.wait_for(100ms), std::future_status::timeout);  // parked, not answered
  EXPECT_EQ(h.api->waiting(), 1u);
  std::string pid;
  {
    std::lock_guard lk(h.s.mu);
    auto& p = h.s.payments.begin()->second;
    p.status = PaymentStatus::failed;
    p.failure_code = "card_declined";
    pid = p.id;
  }
  h.api->notify_terminal({"pay_other", pid});
  ASSERT_EQ(fut.wait_for(5s), std::future_status::ready);
  auto r = fut.get();
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(J(r.body).at("status").as_string(), "failed");
  EXPECT_EQ(J(r.body).at("failure_code").as_string(), "card_declined");
  EXPECT_EQ(h.api->waiting(), 0u);
  auto replay = h.pay(key, "w1", kPayBody);
  EXPECT_EQ(replay.status, 201);
  EXPECT_EQ(replay.body, r.body);
  EXPECT_EQ(h.s.idem.begin()->second.http_status, 201);
}

TEST(ApiPreferWait, AlreadyTerminalAndTimeoutAndCap) {
  ApiConfig c = test_config();
  c.max_wait_ms = 300;
  Harness h(c);
  std::string key = h.merchant();
  h.s.settle_on_accept = true;  // terminal before the waiter is parked: no lost wake-up
  auto r = h.pay(key, "a", kPayBody, {{"Prefer", "wait=5000"}});
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(J(r.body).at("status").as_string(), "succeeded");
  h.s.settle_on_accept = false;
  auto t0 = std::chrono::steady_clock::now();
  r = h.pay(key, "b", kPayBody, {{"Prefer", "wait=100000"}});  // capped at 300 ms
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(J(r.body).at("status").as_string(), "processing");
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
}

TEST(ApiPreferWait, DestructionAnswersWaitersWith202) {
  auto h = std::make_unique<Harness>();
  std::string key = h->merchant();
  auto fut = h->call_async("POST", "/v1/payments", kPayBody,
                           Harness::auth(key, {{"Idempotency-Key", "w"}, {"Prefer", "wait=30000"}}));
  EXPECT_EQ(fut.wait_for(50ms), std::future_status::timeout);
  h->api.reset();
  ASSERT_EQ(fut.wait_for(1s), std::future_status::ready);
  EXPECT_EQ(fut.get().status, 202);
}

TEST(ApiPreferWait, DrainingAnswersWaitersWith202AtOnce) {
  Harness h;
  std::string key = h.merchant();
  auto fut = h.call_async("POST", "/v1/payments", kPayBody,
                          Harness::auth(key, {{"Idempotency-Key", "w"}, {"Prefer", "wait=30000"}}));
  EXPECT_EQ(fut.wait_for(50ms), std::future_status::timeout);
  h.api->set_draining(true);
  ASSERT_EQ(fut.wait_for(1s), std::future_status::ready);
  auto r = fut.get();
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(J(r.body).at("status").as_string(), "processing");
  EXPECT_EQ(h.api->waiting(), 0u);
}

TEST(ApiMetrics, RouteLabelIsTheTemplate) {
  Harness h;
  std::string key = h.merchant();
  h.call("GET", "/v1/payments/pay_secret_id_123", "", Harness::auth(key));
  std::string text = metrics::registry().render();
  EXPECT_NE(text.find(R"(route="/v1/payments/{id}",method="GET",status="404")"), std::string::npos);
  EXPECT_EQ(text.find("pay_secret_id_123"), std::string::npos);
  EXPECT_NE(text.find("paystream_http_request_duration_seconds_bucket{route=\"/v1/payments/{id}\""), std::string::npos);
}

TEST(ApiConcurrency, ManyThreadsSameKeyOnePayment) {
  Harness h;
  std::string key = h.merchant();
  std::vector<std::thread> ts;
  std::atomic<int> accepted{0}, replays{0}, in_use{0}, other{0};
  for (int i = 0; i < 8; ++i)
    ts.emplace_back([&] {
      for (int j = 0; j < 20; ++j) {
        auto r = h.pay(key, "same", kPayBody);
        if (r.status == 202 && !hdr(r, "Idempotent-Replayed")) ++accepted;
        else if (r.status == 202) ++replays;
        else if (r.status == 409) ++in_use;
        else ++other;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(accepted.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(h.s.events_out.size(), 1u);
}

// ---- review fixes -------------------------------------------------------------------

TEST(ApiMetrics, MethodLabelIsAFixedSetAndRouteIsTemplateOrUnmatched) {
  Harness h;
  std::string key = h.merchant();
  EXPECT_EQ(h.call("FOOBAR1", "/v1/payments").status, 405);             // known path, made-up method
  EXPECT_EQ(h.call("BREW", "/no/such/route").status, 404);               // unknown path, short method
  EXPECT_EQ(h.call("PROPFINDXYZ", "/healthz").status, 405);
  EXPECT_EQ(h.call("PUT", "/v1/payments/pay_label_probe_1").status, 405);
  std::string text = metrics::registry().render();
  for (const char* bad : {"FOOBAR1", "BREW", "PROPFINDXYZ", "pay_label_probe_1", "/no/such/route"})
    EXPECT_EQ(text.find(bad), std::string::npos) << bad;
  EXPECT_NE(text.find(R"(route="unmatched",method="other",status="405")"), std::string::npos);
  EXPECT_NE(text.find(R"(route="unmatched",method="other",status="404")"), std::string::npos);
  EXPECT_NE(text.find(R"(route="unmatched",method="PUT",status="405")"), std::string::npos);

  // 300 more made-up methods on both kinds of unmatched route add no series.
  auto series = [](const std::string& t) {
    size_t n = 0;
    for (size_t pos = 0; (pos = t.find("\npaystream_http_", pos)) != std::string::npos; ++pos) ++n;
    return n;
  };
  for (int i = 0; i < 150; ++i) {
    h.call("M" + std::to_string(i), "/v1/payments");
    h.call("X" + std::to_string(i), "/nowhere/" + std::to_string(i));
  }
  std::string after = metrics::registry().render();
  EXPECT_EQ(series(after), series(text));
  EXPECT_EQ(after.find("M149"), std::string::npos);
  EXPECT_EQ(after.find("X149"), std::string::npos);
}

TEST(ApiMerchants, RateLimitBoundsAreValidated) {
  Harness h;
  auto create = [&](const std::string& rl) {
    return h.call("POST", "/v1/merchants", R"({"name":"R","rate_limit":)" + rl + "}",
                  {{"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/json"}});
  };
  for (const char* bad : {R"({"per_second":1e-300})", R"({"per_second":0.0009})", R"({"per_second":1000000.5})",
                          R"({"per_second":1e300})", R"({"per_second":"5"})"}) {
    auto r = create(bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(err_code(r), "parameter_invalid") << bad;
    EXPECT_EQ(err_param(r), "rate_limit.per_second") << bad;
  }
  for (const char* bad : {R"({"burst":0})", R"({"burst":10000001})", R"({"burst":1.5})"}) {
    auto r = create(bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(err_param(r), "rate_limit.burst") << bad;
  }
  EXPECT_EQ(create(R"({"per_second":0.001,"burst":1})").status, 201);
  EXPECT_EQ(create(R"({"per_second":1000000,"burst":10000000})").status, 201);
  // The slowest allowed bucket reports sane headers.
  std::string key = h.merchant("Slowest", nullptr, R"({"per_second":0.001,"burst":1})");
  auto r = h.call("GET", "/v1/balance", "", Harness::auth(key));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(hdr(r, "RateLimit-Reset"), "1000");
  r = h.call("GET", "/v1/balance", "", Harness::auth(key));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(hdr(r, "Retry-After"), "1000");
}

TEST(ApiIdempotency, CacheBudgetFullAnswers503AndCreatesNothing) {
  Harness h(test_config(), 32);  // 1 byte per shard: no in-flight entry ever fits
  std::string key = h.merchant();
  auto r = h.pay(key, "full", kPayBody);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(err_code(r), "unavailable");
  EXPECT_EQ(hdr(r, "Retry-After"), "1");
  EXPECT_TRUE(h.s.payments.empty());
  EXPECT_TRUE(h.s.events_out.empty());
  EXPECT_EQ(h.cache.bytes(), 0u);
}

TEST(ApiIdempotency, EvictedByBudgetReplaysFromTheDurableStore) {
  // 200 bytes per shard: an in-flight entry (~100 B) fits, a finished one (~600 B) does not,
  // so every finished entry is evicted at once and replays come from the durable record.
  Harness h(test_config(), 32 * 200);
  std::string key = h.merchant();
  auto first = h.pay(key, "evicted", kPayBody);
  ASSERT_EQ(first.status, 202) << first.body;
  EXPECT_EQ(h.cache.size(), 0u);
  EXPECT_LE(h.cache.bytes(), 32u * 200u);
  auto again = h.pay(key, "evicted", kPayBody);
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(hdr(again, "Idempotent-Replayed"), "true");
  EXPECT_EQ(again.body, first.body);
  auto other = h.pay(key, "evicted", R"({"amount":1,"currency":"EUR","source":"tok_approve"})");
  EXPECT_EQ(other.status, 422);
  EXPECT_EQ(h.s.events_out.size(), 1u);
}

TEST(ApiIdempotency, ExceptionAfterBeginReleasesTheKey) {
  Harness h;
  std::string key = h.merchant();
  h.s.throw_on_accept = true;
  auto r = h.pay(key, "boom", kPayBody);
  EXPECT_EQ(r.status, 500);
  h.s.throw_on_accept = false;
  r = h.pay(key, "boom", kPayBody);
  EXPECT_EQ(r.status, 202) << r.body;  // not 409 idempotency_key_in_use for 5 minutes
  EXPECT_FALSE(hdr(r, "Idempotent-Replayed"));

  // The same for refunds.
  h.s.settle_on_accept = true;
  auto pay = h.pay(key, "to_refund", kPayBody);
  ASSERT_EQ(pay.status, 202);
  std::string pid(J(pay.body).at("id").as_string());
  h.s.throw_on_accept = true;
  auto refund = [&] {
    return h.call("POST", "/v1/payments/" + pid + "/refunds", "{}", Harness::auth(key, {{"Idempotency-Key", "rf"}}));
  };
  EXPECT_EQ(refund().status, 500);
  h.s.throw_on_accept = false;
  r = refund();
  EXPECT_EQ(r.status, 202) << r.body;
}

TEST(ApiEndpoints, AtMostSixteenPerMerchant) {
  Harness h;
  std::string key = h.merchant("A");
  std::string other = h.merchant("B");
  auto create = [&](const std::string& k) {
    return h.call("POST", "/v1/webhook_endpoints", R"({"url":"http://93.184.216.34:9/hook"})", Harness::auth(k));
  };
  std::string first_id;
  for (int i = 0; i < 16; ++i) {
    auto r = create(key);
    ASSERT_EQ(r.status, 201) << i << r.body;
    if (i == 0) first_id = std::string(J(r.body).at("id").as_string());
  }
  auto r = create(key);
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(err_code(r), "endpoint_limit_reached");
  EXPECT_EQ(h.s.endpoints.size(), 16u);
  EXPECT_EQ(create(other).status, 201);  // per merchant
  EXPECT_EQ(h.call("DELETE", "/v1/webhook_endpoints/" + first_id, "", Harness::auth(key)).status, 200);
  EXPECT_EQ(create(key).status, 201);
  ApiConfig c = test_config();
  c.max_endpoints_per_merchant = 1;
  Harness h2(c);
  std::string k2 = h2.merchant();
  EXPECT_EQ(h2.call("POST", "/v1/webhook_endpoints", R"({"url":"http://x/h"})", Harness::auth(k2)).status, 201);
  EXPECT_EQ(h2.call("POST", "/v1/webhook_endpoints", R"({"url":"http://x/h"})", Harness::auth(k2)).status, 422);
}

TEST(ApiQuery, UnknownQueryParametersRejectedOnEveryRoute) {
  Harness h;
  std::string key = h.merchant();
  auto expect_unknown = [](const HttpResponse& r, const std::string& what) {
    EXPECT_EQ(r.status, 400) << what << " " << r.body;
    if (r.status == 400) {
      EXPECT_EQ(err_code(r), "parameter_unknown") << what;
      EXPECT_EQ(err_param(r), "x") << what;
    }
  };
  expect_unknown(h.call("POST", "/v1/payments?x=1", kPayBody, Harness::auth(key, {{"Idempotency-Key", "q"}})),
                 "create payment");
  // The key was not consumed by the refused request.
  auto ok = h.pay(key, "q", kPayBody);
  EXPECT_EQ(ok.status, 202);
  EXPECT_FALSE(hdr(ok, "Idempotent-Replayed"));
  std::string pid(J(ok.body).at("id").as_string());
  expect_unknown(h.call("POST", "/v1/merchants?x=1", R"({"name":"n"})",
                        {{"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/json"}}),
                 "create merchant");
  expect_unknown(h.call("POST", "/v1/payments/" + pid + "/refunds?x=1", "{}",
                        Harness::auth(key, {{"Idempotency-Key", "rq"}})),
                 "create refund");
  expect_unknown(h.call("POST", "/v1/webhook_endpoints?x=", R"({"url":"http://x/h"})", Harness::auth(key)),
                 "create endpoint");
  expect_unknown(h.call("DELETE", "/v1/webhook_endpoints/we_1?x=1", "", Harness::auth(key)), "delete endpoint");
  expect_unknown(h.call("POST", "/v1/events/evt_1/redeliver?x=1", "", Harness::auth(key)), "redeliver");
  expect_unknown(h.call("GET", "/v1/payments/" + pid + "?x=1", "", Harness::auth(key)), "get payment");
  expect_unknown(h.call("GET", "/v1/payments?x=1", "", Harness::auth(key)), "list payments");
  EXPECT_EQ(h.s.endpoints.size(), 0u);
  EXPECT_EQ(h.call("GET", "/v1/payments?limit=1", "", Harness::auth(key)).status, 200);
}

TEST(ApiAuth, UnknownKeyFloodIs429WithoutStoreLookups) {
  ApiConfig c = test_config();
  c.auth_failure_rate_per_s = 1;
  c.auth_failure_burst = 3;
  Harness h(c);
  std::string key = h.merchant();
  int lookups = h.s.key_hash_lookups;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus_" + std::to_string(i))).status, 401);
  EXPECT_EQ(h.s.key_hash_lookups, lookups + 3);
  for (int i = 3; i < 50; ++i) {
    auto r = h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus_" + std::to_string(i)));
    ASSERT_EQ(r.status, 429) << i;
    EXPECT_EQ(err_code(r), "rate_limited");
    EXPECT_EQ(hdr(r, "Retry-After"), "1");
  }
  EXPECT_EQ(h.s.key_hash_lookups, lookups + 3);  // the flood never reached the store
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth(key)).status, 200);  // cached keys unaffected
  h.clock.advance(1s);  // one token back
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus_new")).status, 401);
  EXPECT_EQ(h.s.key_hash_lookups, lookups + 4);
  EXPECT_EQ(h.call("GET", "/v1/balance", "", Harness::auth("sk_bogus_newer")).status, 429);
}

// The budget of unknown-key lookups is per client address: a client flooding bogus keys
// gets 429, while another client's valid key that is in no cache is still looked up.
TEST(ApiAuth, UnknownKeyBudgetIsPerClientAddress) {
  ApiConfig c = test_config();
  c.auth_failure_rate_per_s = 1;
  c.auth_failure_burst = 3;
  Harness h(c);
  // A merchant the store knows but this gateway's auth cache does not (created elsewhere).
  Merchant other;
  other.id = "mer_elsewhere";
  other.name = "Elsewhere";
  other.api_key_hash = sha256_hex("sk_elsewhere");
  other.created_ms = 1;
  ASSERT_TRUE(h.s.create_merchant(other).ok());
  auto from = [&](const std::string& peer, const std::string& key) {
    return h.call("GET", "/v1/balance", "", Harness::auth(key), peer);
  };
  for (int i = 0; i < 3; ++i) EXPECT_EQ(from("10.0.0.1", "sk_bogus_" + std::to_string(i)).status, 401);
  for (int i = 3; i < 20; ++i) EXPECT_EQ(from("10.0.0.1", "sk_bogus_" + std::to_string(i)).status, 429) << i;
  const int lookups = h.s.key_hash_lookups;
  EXPECT_EQ(from("10.0.0.2", "sk_elsewhere").status, 200) << "another client's cache miss is looked up";
  EXPECT_EQ(h.s.key_hash_lookups, lookups + 1);
  EXPECT_EQ(from("10.0.0.2", "sk_bogus_b").status, 401) << "and it has a budget of its own";
  EXPECT_EQ(from("10.0.0.1", "sk_bogus_more").status, 429) << "the flooding client's is still empty";
}

// Wrong admin keys are throttled per client address: past the burst that address gets 429
// (even with the right key, which is then not compared); another address is not affected;
// the budget comes back over time. Each outcome is counted.
TEST(ApiAuth, WrongAdminKeysAreThrottledPerClientAddress) {
  ApiConfig c = test_config();
  c.admin_failure_rate_per_s = 1;
  c.admin_failure_burst = 3;
  Harness h(c);
  auto& refused = metrics::registry().counter("paystream_admin_auth_failures_total", "", {{"outcome", "refused"}});
  auto& throttled = metrics::registry().counter("paystream_admin_auth_failures_total", "", {{"outcome", "throttled"}});
  const double refused0 = refused.value(), throttled0 = throttled.value();
  auto admin = [&](const std::string& peer, const std::string& key) {
    return h.call("POST", "/v1/merchants", R"({"name":"n"})",
                  {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}}, peer);
  };
  for (int i = 0; i < 3; ++i) EXPECT_EQ(admin("10.0.0.9", "guess-" + std::to_string(i)).status, 401);
  auto r = admin("10.0.0.9", "guess-3");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(hdr(r, "Retry-After"), "1");
  EXPECT_EQ(admin("10.0.0.9", "admin-secret").status, 429) << "not compared while throttled";
  EXPECT_EQ(admin("10.0.0.10", "admin-secret").status, 201) << "another address is not affected";
  EXPECT_EQ(refused.value(), refused0 + 3);
  EXPECT_EQ(throttled.value(), throttled0 + 2);
  h.clock.advance(1s);  // one attempt back
  EXPECT_EQ(admin("10.0.0.9", "admin-secret").status, 201);
}

// API key rotation (admin): the new key works at once; the old one until the grace period
// ends, then 401 api_key_expired; expire_previous_after_s 0 revokes at once. Bad bodies and
// unknown merchants are clear errors that change nothing.
TEST(ApiAuth, RotatedKeysWorkForTheGracePeriodThenAreRefused) {
  Harness h;
  std::string id;
  const std::string k1 = h.merchant("Acme", &id);
  auto rotate = [&](const std::string& mid, const std::string& body) {
    return h.call("POST", "/v1/merchants/" + mid + "/api_keys", body,
                  {{"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/json"}});
  };
  auto balance = [&](const std::string& key) { return h.call("GET", "/v1/balance", "", Harness::auth(key)).status; };

  auto r = rotate(id, R"({"expire_previous_after_s":60})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto v = J(r.body);
  const std::string k2(v.at("api_key").as_string());
  EXPECT_TRUE(k2.starts_with("sk_"));
  EXPECT_EQ(v.at("merchant_id").as_string(), id);
  EXPECT_EQ(v.at("previous_keys_expire").as_int64(), h.clock.now_ms() + 60'000);
  EXPECT_EQ(balance(k2), 200);
  EXPECT_EQ(balance(k1), 200) << "in the grace period";
  h.clock.advance(59s);
  EXPECT_EQ(balance(k1), 200);
  h.clock.advance(1s);
  auto expired = h.call("GET", "/v1/balance", "", Harness::auth(k1));
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(J(expired.body).at("error").at("code").as_string(), "api_key_expired");
  EXPECT_EQ(balance(k2), 200);

  // Revocation: 0 = the previous keys stop at once.
  auto r3 = rotate(id, R"({"expire_previous_after_s":0})");
  ASSERT_EQ(r3.status, 201) << r3.body;
  const std::string k3(J(r3.body).at("api_key").as_string());
  EXPECT_EQ(balance(k2), 401);
  EXPECT_EQ(balance(k3), 200);

  // An empty body takes the default grace period (24 hours).
  auto r4 = rotate(id, "");
  ASSERT_EQ(r4.status, 201) << r4.body;
  EXPECT_EQ(J(r4.body).at("previous_keys_expire").as_int64(), h.clock.now_ms() + 86'400'000);

  auto bad = rotate(id, R"({"expire_previous_after_s":-1})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(J(bad.body).at("error").at("param").as_string(), "expire_previous_after_s");
  EXPECT_EQ(rotate(id, R"({"expire_previous_after_s":2592001})").status, 400);
  EXPECT_EQ(rotate(id, R"({"grace":1})").status, 400);
  EXPECT_EQ(rotate("mer_unknown", "").status, 404);
  EXPECT_EQ(h.call("POST", "/v1/merchants/" + id + "/api_keys", "", Harness::auth(k3)).status, 401)
      << "admin only";
  EXPECT_EQ(balance(k3), 200) << "failed rotations changed nothing";
}

// The auth cache is re-read after auth_cache_ttl_ms: a key rotated out through another
// gateway (here: straight in the store) is refused here once its expiry is read.
TEST(ApiAuth, CachedKeysAreReReadAfterTheTtl) {
  ApiConfig c = test_config();
  c.auth_cache_ttl_ms = 5000;
  Harness h(c);
  std::string id;
  const std::string k1 = h.merchant("Acme", &id);
  auto balance = [&](const std::string& key) { return h.call("GET", "/v1/balance", "", Harness::auth(key)).status; };
  EXPECT_EQ(balance(k1), 200);
  const int lookups = h.s.key_hash_lookups;
  // Another gateway revokes k1 (it writes the store; this gateway's cache does not know).
  ASSERT_TRUE(h.s.rotate_api_key(id, "other-gateways-new-key", h.clock.now_ms(), h.clock.now_ms()).ok());
  EXPECT_EQ(balance(k1), 200) << "still cached";
  EXPECT_EQ(h.s.key_hash_lookups, lookups);
  h.clock.advance(5s);
  EXPECT_EQ(balance(k1), 401);
  EXPECT_EQ(h.s.key_hash_lookups, lookups + 1);
}

// A cached key due to be read again, while the store cannot answer: its last known state
// holds (a store outage does not log merchants out); an uncached key is refused with 503.
TEST(ApiAuth, AStaleCachedKeyHoldsWhileTheStoreCannotAnswer) {
  Harness h;
  const std::string k1 = h.merchant("Acme");
  auto balance = [&](const std::string& key) { return h.call("GET", "/v1/balance", "", Harness::auth(key)).status; };
  EXPECT_EQ(balance(k1), 200);
  h.clock.advance(10s);
  h.s.fail_key_lookup = true;
  EXPECT_EQ(balance(k1), 200);
  EXPECT_EQ(balance("sk_never_seen"), 503);
  h.s.fail_key_lookup = false;
  EXPECT_EQ(balance(k1), 200);
}

// Endpoint update: url (with the same address rules as create), enabled_events, disabled;
// secret rotation: a new secret shown once, the previous one signs until the overlap ends.
TEST(ApiEndpoints, UpdateAndSecretRotation) {
  Harness h;
  const std::string key = h.merchant(), other = h.merchant("Other");
  auto ep = h.call("POST", "/v1/webhook_endpoints", R"({"url":"https://example.com/h"})", Harness::auth(key));
  ASSERT_EQ(ep.status, 201) << ep.body;
  const std::string eid(J(ep.body).at("id").as_string());
  const std::string secret1(J(ep.body).at("secret").as_string());
  auto update = [&](const std::string& body, const std::string& k) {
    return h.call("POST", "/v1/webhook_endpoints/" + eid, body, Harness::auth(k));
  };

  auto r = update(R"({"url":"https://example.com/moved","enabled_events":["refund.failed"],"disabled":true})", key);
  ASSERT_EQ(r.status, 200) << r.body;
  auto v = J(r.body);
  EXPECT_EQ(v.at("url").as_string(), "https://example.com/moved");
  EXPECT_EQ(v.at("enabled_events").as_array().size(), 1u);
  EXPECT_TRUE(v.at("disabled").as_bool());
  EXPECT_FALSE(v.as_object().contains("secret"));
  EXPECT_TRUE(h.s.endpoints.at(eid).disabled);
  EXPECT_EQ(h.s.endpoints.at(eid).secret, secret1) << "an update keeps the secret";
  EXPECT_FALSE(J(update(R"({"disabled":false})", key).body).at("disabled").as_bool());

  // Bad updates are clear errors and change nothing.
  EXPECT_EQ(err_code(update(R"({"url":"http://10.0.0.1/x"})", key)), "url_not_allowed");
  EXPECT_EQ(err_code(update(R"({"url":"http://a@b/x"})", key)), "url_invalid");
  EXPECT_EQ(err_code(update(R"({"disabled":"yes"})", key)), "parameter_invalid");
  EXPECT_EQ(err_code(update(R"({"secret":"whsec_x"})", key)), "parameter_unknown");
  EXPECT_EQ(err_code(update("{}", key)), "parameter_missing");
  EXPECT_EQ(update(R"({"disabled":true})", other).status, 404) << "another merchant's endpoint";
  EXPECT_EQ(h.s.endpoints.at(eid).url, "https://example.com/moved");
  EXPECT_FALSE(h.s.endpoints.at(eid).disabled);

  auto rot = h.call("POST", "/v1/webhook_endpoints/" + eid + "/rotate_secret", R"({"expire_previous_after_s":600})",
                    Harness::auth(key));
  ASSERT_EQ(rot.status, 200) << rot.body;
  auto rv = J(rot.body);
  const std::string secret2(rv.at("secret").as_string());
  EXPECT_TRUE(secret2.starts_with("whsec_"));
  EXPECT_NE(secret2, secret1);
  EXPECT_EQ(rv.at("previous_secret_expires").as_int64(), h.clock.now_ms() + 600'000);
  EXPECT_EQ(h.s.endpoints.at(eid).previous_secret, secret1);
  EXPECT_EQ(h.s.endpoints.at(eid).signing_secrets(h.clock.now_ms()).size(), 2u);
  EXPECT_EQ(h.s.endpoints.at(eid).signing_secrets(h.clock.now_ms() + 600'000).size(), 1u);
  auto got = J(h.call("GET", "/v1/webhook_endpoints/" + eid, "", Harness::auth(key)).body);
  EXPECT_FALSE(got.as_object().contains("secret"));
  EXPECT_EQ(got.at("previous_secret_expires").as_int64(), h.clock.now_ms() + 600'000);
  EXPECT_EQ(h.call("POST", "/v1/webhook_endpoints/" + eid + "/rotate_secret", "", Harness::auth(other)).status, 404);
  EXPECT_EQ(h.call("POST", "/v1/webhook_endpoints/we_none/rotate_secret", "", Harness::auth(key)).status, 404);
}

TEST(ApiPreferWait, ParkedBytesAreBounded) {
  ApiConfig c = test_config();
  c.max_waiter_bytes = 1500;  // one parked payment (~900 B accounted) fits, two do not
  Harness h(c);
  std::string key = h.merchant();
  auto fut = h.call_async("POST", "/v1/payments", kPayBody,
                          Harness::auth(key, {{"Idempotency-Key", "p1"}, {"Prefer", "wait=30000"}}));
  EXPECT_EQ(fut.wait_for(100ms), std::future_status::timeout);
  EXPECT_EQ(h.api->waiting(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  auto r = h.pay(key, "p2", kPayBody, {{"Prefer", "wait=30000"}});
  EXPECT_EQ(r.status, 202);  // answered at once: no room to park
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(h.api->waiting(), 1u);
  h.api->set_draining(true);  // releases the first waiter and its bytes
  ASSERT_EQ(fut.wait_for(2s), std::future_status::ready);
  h.api->set_draining(false);
  auto fut3 = h.call_async("POST", "/v1/payments", kPayBody,
                           Harness::auth(key, {{"Idempotency-Key", "p3"}, {"Prefer", "wait=30000"}}));
  EXPECT_EQ(fut3.wait_for(100ms), std::future_status::timeout);
  EXPECT_EQ(h.api->waiting(), 1u);
}

// Intake admission (SPEC §2.6): past the pipeline's backlog bound, new payments get 503
// store_overloaded with Retry-After and nothing is stored; a retry of an accepted key
// still replays; below the bound intake goes on.
struct FixedBacklog final : BacklogProbe {
  Backlog value;
  Backlog pipeline_backlog(int64_t) const override { return value; }
};

TEST(ApiAdmission, BacklogBoundShedsNewPaymentsOnly) {
  ApiConfig cfg = test_config();
  cfg.max_backlog_records = 100;
  cfg.max_backlog_age_ms = 5000;
  Harness h(cfg);
  FixedBacklog probe;
  h.api = std::make_unique<Api>(ApiDeps{h.s, h.s, h.s, h.s, h.s, h.s, h.cache, h.rl, h.clock, &probe}, cfg);
  h.api->set_ready(true);
  std::string key = h.merchant();
  probe.value = {99, 10};
  ASSERT_EQ(h.pay(key, "before", kPayBody).status, 202);
  const size_t stored = h.s.payments.size();

  probe.value = {100, 10};
  auto r = h.pay(key, "over-count", kPayBody);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(err_code(r), "store_overloaded");
  EXPECT_EQ(hdr(r, "Retry-After"), "1");
  EXPECT_EQ(h.s.payments.size(), stored) << "a shed payment must not be stored";
  auto replay = h.pay(key, "before", kPayBody);
  EXPECT_EQ(replay.status, 202);
  EXPECT_EQ(hdr(replay, "Idempotent-Replayed"), "true");

  probe.value = {1, 5000};
  EXPECT_EQ(err_code(h.pay(key, "over-age", kPayBody)), "store_overloaded");

  probe.value = {0, 0};
  EXPECT_EQ(h.pay(key, "over-count", kPayBody).status, 202) << "the shed key was left unused";
}

TEST(ApiAdmission, NoBoundConfiguredAdmitsEverything) {
  Harness h;
  FixedBacklog probe;
  probe.value = {1'000'000, 1'000'000};
  h.api = std::make_unique<Api>(ApiDeps{h.s, h.s, h.s, h.s, h.s, h.s, h.cache, h.rl, h.clock, &probe}, test_config());
  h.api->set_ready(true);
  EXPECT_EQ(h.pay(h.merchant(), "k", kPayBody).status, 202);
}

// SPEC §3: webhook URLs must reach global addresses unless an operator allow-lists a range.
TEST(ApiWebhookEndpoints, RefusesUrlsThatReachNonGlobalAddresses) {
  Harness h;
  h.resolver.table["rebind.test"] = {IpAddress::v4(93, 184, 216, 34), IpAddress::v4(10, 0, 0, 1)};
  h.resolver.table["meta.test"] = {IpAddress::v4(169, 254, 169, 254)};
  std::string key = h.merchant("Acme");
  auto create = [&](const std::string& url) {
    return h.call("POST", "/v1/webhook_endpoints", R"({"url":")" + url + R"("})", Harness::auth(key));
  };
  struct Case { std::string url, code; };
  for (const Case& c : std::vector<Case>{
           {"http://169.254.169.254/latest/meta-data/", "url_not_allowed"},
           {"http://127.0.0.1:8080/h", "url_not_allowed"},
           {"http://2130706433/h", "url_invalid"},
           {"http://[::1]/h", "url_not_allowed"},
           {"http://10.0.0.1/h", "url_not_allowed"},
           {"http://[::ffff:10.0.0.1]/h", "url_not_allowed"},
           {"http://[fe80::1]/h", "url_not_allowed"},
           {"http://[fd00::1]/h", "url_not_allowed"},
           {"http://100.64.0.1/h", "url_not_allowed"},
           {"http://0.0.0.0/h", "url_not_allowed"},
           {"http://192.168.1.10/h", "url_not_allowed"},
           {"http://172.16.0.1/h", "url_not_allowed"},
           {"http://0177.0.0.1/h", "url_invalid"},
           {"http://0x7f000001/h", "url_invalid"},
           {"http://127.1/h", "url_invalid"},
           {"http://user@example.com/h", "url_invalid"},
           {"http://example.com@127.0.0.1/h", "url_invalid"},
           {"http://example.com/h#frag", "url_invalid"},
           {"http://example.com:65536/h", "url_invalid"},
           {"http://example.com:0/h", "url_invalid"},
           {"http://rebind.test/h", "url_not_allowed"},     // one of its addresses is private
           {"http://meta.test/h", "url_not_allowed"},
           {"http://unknown.test/h", "url_unresolvable"},   // nothing to check: refused
       }) {
    auto r = create(c.url);
    EXPECT_EQ(r.status, 400) << c.url << " " << r.body;
    EXPECT_EQ(err_code(r), c.code) << c.url << " " << r.body;
    EXPECT_EQ(err_param(r), "url") << c.url;
  }
  auto r = create("http://rebind.test/h");
  EXPECT_NE(r.body.find("10.0.0.1 is private"), std::string::npos) << r.body;
  EXPECT_EQ(J(h.call("GET", "/v1/webhook_endpoints", "", Harness::auth(key)).body).at("data").as_array().size(), 0u);
  // The lookup is bounded by the configured timeout.
  ASSERT_FALSE(h.resolver.calls.empty());
  EXPECT_EQ(h.resolver.calls.back().second, test_config().webhook_resolve_timeout_ms);
  // Global targets are fine, by literal and by name.
  EXPECT_EQ(create("https://example.com:65535/h").status, 201);
  EXPECT_EQ(create("http://93.184.216.34/h").status, 201);
  EXPECT_EQ(create("http://[2606:4700::1]/h").status, 201);
}

TEST(ApiWebhookEndpoints, AllowListedRangesAreAccepted) {
  ApiConfig cfg = test_config();
  cfg.webhook_targets = AddressPolicy(*parse_cidr_list({"127.0.0.0/8", "::1/128"}));
  Harness h(cfg);
  h.resolver.table["localhost"] = {IpAddress::v4(127, 0, 0, 1), *parse_ip("::1")};
  std::string key = h.merchant("Acme");
  auto create = [&](const std::string& url) {
    return h.call("POST", "/v1/webhook_endpoints", R"({"url":")" + url + R"("})", Harness::auth(key));
  };
  EXPECT_EQ(create("http://127.0.0.1:8080/h").status, 201);
  EXPECT_EQ(create("http://[::1]:8080/h").status, 201);
  EXPECT_EQ(create("http://localhost:8080/h").status, 201);
  // Outside the allow-list nothing changed.
  EXPECT_EQ(err_code(create("http://10.0.0.1/h")), "url_not_allowed");
  EXPECT_EQ(err_code(create("http://169.254.169.254/h")), "url_not_allowed");
}
