#include <gtest/gtest.h>

#include "api/validation.hpp"
#include "unit/api/harness.hpp"

using namespace ps;
using namespace ps::api;
using namespace ps::testing;

namespace {
constexpr int64_t kMax = 99'999'999'999;

void expect_bad(std::string_view body, const std::string& code, const std::string& param) {
  auto r = parse_payment_request(body, kMax, 32);
  ASSERT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.error().code, code) << body;
  EXPECT_EQ(r.error().param, param) << body;
  EXPECT_EQ(status_for(r.error()), 400) << body;
}
std::string nested(int depth) {
  std::string s = R"({"amount":1,"currency":"EUR","source":"t","metadata":)";
  for (int i = 0; i < depth; ++i) s += "[";
  for (int i = 0; i < depth; ++i) s += "]";
  return s + "}";
}
}  // namespace

TEST(PaymentValidation, AcceptsAValidRequest) {
  auto r = parse_payment_request(
      R"({"amount":1999,"currency":"JPY","source":"tok_approve","description":"x","metadata":{"order":"42"}})", kMax, 32);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->amount_minor, 1999);
  EXPECT_EQ(r->currency, "JPY");
  EXPECT_EQ(r->metadata.at("order"), "42");
  EXPECT_TRUE(parse_payment_request(R"({"amount":99999999999,"currency":"EUR","source":"s"})", kMax, 32).ok());
}

TEST(PaymentValidation, RejectsBadAmounts) {
  expect_bad(R"({"currency":"EUR","source":"s"})", "parameter_missing", "amount");
  expect_bad(R"({"amount":null,"currency":"EUR","source":"s"})", "parameter_missing", "amount");
  // 1000.0 is JSON Schema's integer 1000 (what the OpenAPI file promises): accepted exactly.
  EXPECT_EQ(parse_payment_request(R"({"amount":1000.0,"currency":"EUR","source":"s"})", kMax, 32)->amount_minor, 1000);
  EXPECT_EQ(parse_merchant_request(R"({"name":"A","rate_limit":{"burst":5.0}})", 32)->burst, 5);
  EXPECT_EQ(*parse_rotation_request(R"({"expire_previous_after_s":60.0})", 32), 60);
  EXPECT_EQ(parse_rotation_request(R"({"expire_previous_after_s":60.5})", 32).error().code, "parameter_invalid");
  expect_bad(R"({"amount":1e300,"currency":"EUR","source":"s"})", "amount_too_large", "amount");
  expect_bad(R"({"amount":-0.0,"currency":"EUR","source":"s"})", "amount_invalid", "amount");
  expect_bad(R"({"amount":1.5,"currency":"EUR","source":"s"})", "amount_invalid", "amount");
  EXPECT_EQ(parse_payment_request(R"({"amount":1e2,"currency":"EUR","source":"s"})", kMax, 32)->amount_minor, 100);
  expect_bad(R"({"amount":"1","currency":"EUR","source":"s"})", "amount_invalid", "amount");
  expect_bad(R"({"amount":true,"currency":"EUR","source":"s"})", "amount_invalid", "amount");
  expect_bad(R"({"amount":-5,"currency":"EUR","source":"s"})", "amount_invalid", "amount");
  expect_bad(R"({"amount":0,"currency":"EUR","source":"s"})", "amount_invalid", "amount");
  expect_bad(R"({"amount":100000000000,"currency":"EUR","source":"s"})", "amount_too_large", "amount");
  expect_bad(R"({"amount":9223372036854775808,"currency":"EUR","source":"s"})", "amount_too_large", "amount");
  expect_bad(R"({"amount":99999999999999999999999,"currency":"EUR","source":"s"})", "amount_too_large", "amount");
}

TEST(PaymentValidation, RejectsBadCurrencySourceDescription) {
  expect_bad(R"({"amount":1,"source":"s"})", "parameter_missing", "currency");
  expect_bad(R"({"amount":1,"currency":"eur","source":"s"})", "currency_invalid", "currency");
  expect_bad(R"({"amount":1,"currency":"XXX","source":"s"})", "currency_invalid", "currency");
  expect_bad(R"({"amount":1,"currency":978,"source":"s"})", "currency_invalid", "currency");
  expect_bad(R"({"amount":1,"currency":"EUR"})", "parameter_missing", "source");
  expect_bad(R"({"amount":1,"currency":"EUR","source":""})", "parameter_invalid", "source");
  expect_bad(R"({"amount":1,"currency":"EUR","source":5})", "parameter_invalid", "source");
  expect_bad(R"({"amount":1,"currency":"EUR","source":"a\nb"})", "parameter_invalid", "source");
  expect_bad(R"({"amount":1,"currency":"EUR","source":")" + std::string(256, 'a') + "\"}", "parameter_invalid", "source");
  expect_bad(R"({"amount":1,"currency":"EUR","source":"s","description":5})", "parameter_invalid", "description");
  expect_bad(R"({"amount":1,"currency":"EUR","source":"s","description":")" + std::string(1001, 'd') + "\"}",
             "parameter_invalid", "description");
}

TEST(PaymentValidation, RejectsBadMetadata) {
  const std::string base = R"({"amount":1,"currency":"EUR","source":"s","metadata":)";
  expect_bad(base + "[]}", "parameter_invalid", "metadata");
  expect_bad(base + R"({"a":1}})", "parameter_invalid", "metadata");
  expect_bad(base + R"({"a":{"b":"c"}}})", "parameter_invalid", "metadata");
  expect_bad(base + R"({")" + std::string(41, 'k') + R"(":"v"}})", "parameter_invalid", "metadata");
  expect_bad(base + R"({"":"v"}})", "parameter_invalid", "metadata");
  expect_bad(base + R"({"k":")" + std::string(501, 'v') + R"("}})", "parameter_invalid", "metadata");
  std::string many = "{";
  for (int i = 0; i < 51; ++i) many += (i ? "," : "") + std::string("\"k") + std::to_string(i) + "\":\"v\"";
  expect_bad(base + many + "}}", "parameter_invalid", "metadata");
  many = "{";
  for (int i = 0; i < 50; ++i) many += (i ? "," : "") + std::string("\"k") + std::to_string(i) + "\":\"v\"";
  EXPECT_TRUE(parse_payment_request(base + many + "}}", kMax, 32).ok());
}

TEST(PaymentValidation, RejectsMalformedShapes) {
  expect_bad("", "json_invalid", "");
  expect_bad("{", "json_invalid", "");
  expect_bad(R"({"amount":1,})", "json_invalid", "");
  expect_bad("[1,2]", "body_not_object", "");
  expect_bad("42", "body_not_object", "");
  expect_bad(R"({"amount":1,"currency":"EUR","source":"s","extra":1})", "parameter_unknown", "extra");
  expect_bad(nested(40), "json_too_deep", "");
  // Depth 32 exactly is fine as JSON but metadata must be an object.
  expect_bad(nested(30), "parameter_invalid", "metadata");
  // Invalid UTF-8 is malformed JSON.
  expect_bad("{\"amount\":1,\"currency\":\"EUR\",\"source\":\"s\",\"description\":\"\xff\"}", "json_invalid", "");
}

TEST(RefundValidation, Rules) {
  EXPECT_EQ(parse_refund_request("", kMax, 32)->amount_minor, 0);
  EXPECT_EQ(parse_refund_request("  ", kMax, 32)->amount_minor, 0);
  EXPECT_EQ(parse_refund_request("{}", kMax, 32)->amount_minor, 0);
  EXPECT_EQ(parse_refund_request(R"({"amount":5})", kMax, 32)->amount_minor, 5);
  EXPECT_EQ(parse_refund_request(R"({"amount":0})", kMax, 32).error().code, "amount_invalid");
  EXPECT_EQ(parse_refund_request(R"({"amount":2.5})", kMax, 32).error().code, "amount_invalid");
  EXPECT_EQ(parse_refund_request(R"({"reason":"x"})", kMax, 32).error().code, "parameter_unknown");
  EXPECT_EQ(parse_refund_request("[]", kMax, 32).error().code, "body_not_object");
}

TEST(MerchantValidation, Rules) {
  EXPECT_TRUE(parse_merchant_request(R"({"name":"A","rate_limit":{"per_second":2.5,"burst":5}})", 32).ok());
  EXPECT_EQ(parse_merchant_request(R"({})", 32).error().code, "parameter_missing");
  EXPECT_EQ(parse_merchant_request(R"({"name":""})", 32).error().code, "parameter_invalid");
  EXPECT_EQ(parse_merchant_request(R"({"name":")" + std::string(201, 'n') + "\"}", 32).error().code, "parameter_invalid");
  EXPECT_EQ(parse_merchant_request(R"({"name":"A","rate_limit":{"per_second":0}})", 32).error().param, "rate_limit.per_second");
  EXPECT_EQ(parse_merchant_request(R"({"name":"A","rate_limit":{"burst":0}})", 32).error().param, "rate_limit.burst");
  EXPECT_EQ(parse_merchant_request(R"({"name":"A","rate_limit":{"x":1}})", 32).error().code, "parameter_unknown");
}

TEST(EndpointValidation, Rules) {
  auto ok1 = parse_endpoint_request(R"({"url":"https://example.com/hook","enabled_events":["payment.succeeded"]})", 32);
  ASSERT_TRUE(ok1.ok());
  EXPECT_EQ(ok1->enabled_events.size(), 1u);
  EXPECT_EQ(parse_endpoint_request(R"({})", 32).error().code, "parameter_missing");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"ftp://x"})", 32).error().code, "url_invalid");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"http://"})", 32).error().code, "url_invalid");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"http://a b"})", 32).error().code, "url_invalid");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"http://x/)" + std::string(2048, 'p') + "\"}", 32).error().code, "url_invalid");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"http://x","enabled_events":["payment.exploded"]})", 32).error().param,
            "enabled_events");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"http://x","enabled_events":"*"})", 32).error().code, "parameter_invalid");
}

TEST(IdempotencyKey, Rules) {
  EXPECT_EQ(validate_idempotency_key(std::nullopt).error().code, "idempotency_key_missing");
  EXPECT_EQ(validate_idempotency_key(std::string_view("")).error().code, "idempotency_key_invalid");
  EXPECT_EQ(validate_idempotency_key(std::string_view("a\tb")).error().code, "idempotency_key_invalid");
  std::string k255(255, 'k'), k256(256, 'k');
  EXPECT_TRUE(validate_idempotency_key(std::string_view(k255)).ok());
  EXPECT_EQ(validate_idempotency_key(std::string_view(k256)).error().code, "idempotency_key_invalid");
  EXPECT_TRUE(validate_idempotency_key(std::string_view(" ~ok key~ ")).ok());
}

TEST(Helpers, FingerprintPreferTraceBearerPage) {
  EXPECT_EQ(request_fingerprint("POST", "/v1/payments", "{}"), request_fingerprint("POST", "/v1/payments", "{}"));
  EXPECT_NE(request_fingerprint("POST", "/v1/payments", "{}"), request_fingerprint("POST", "/v1/payments", "{ }"));
  EXPECT_NE(request_fingerprint("POST", "/v1/payments/a", "{}"), request_fingerprint("POST", "/v1/payments/b", "{}"));

  EXPECT_EQ(parse_prefer_wait(std::string_view("wait=5000")), 5000);
  EXPECT_EQ(parse_prefer_wait(std::string_view("respond-async, wait=10")), 10);
  EXPECT_EQ(parse_prefer_wait(std::string_view("handling=lenient; WAIT=7")), 7);
  EXPECT_EQ(parse_prefer_wait(std::string_view("wait=abc")), std::nullopt);
  EXPECT_EQ(parse_prefer_wait(std::nullopt), std::nullopt);

  EXPECT_TRUE(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  EXPECT_FALSE(valid_traceparent("garbage"));

  EXPECT_EQ(bearer_token(std::string_view("Bearer sk_1")), "sk_1");
  EXPECT_EQ(bearer_token(std::string_view("bearer  sk_1 ")), "sk_1");
  EXPECT_EQ(bearer_token(std::string_view("Basic abc")), std::nullopt);
  EXPECT_EQ(bearer_token(std::string_view("Bearer ")), std::nullopt);
  EXPECT_TRUE(constant_time_equals("abc", "abc"));
  EXPECT_FALSE(constant_time_equals("abc", "abd"));
  EXPECT_FALSE(constant_time_equals("abc", "abcd"));

  std::map<std::string, std::string> q;
  EXPECT_EQ(parse_page(q)->limit, 10);
  q["limit"] = "100";
  EXPECT_EQ(parse_page(q)->limit, 100);
  for (const char* bad : {"0", "101", "abc", "", "-1", "1000"}) {
    q["limit"] = bad;
    EXPECT_EQ(parse_page(q).error().param, "limit") << bad;
  }
}

TEST(Helpers, ErrorMapping) {
  auto r = error_response(Error::internal("disk on fire"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(err_code(r), "unavailable");
  EXPECT_EQ(std::string(J(r.body).at("error").at("type").as_string()), "api_error");
  r = error_response(Error::invalid("amount_invalid", "bad", "amount"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(err_param(r), "amount");
  EXPECT_EQ(std::string(J(r.body).at("error").at("type").as_string()), "invalid_request_error");
  r = error_response(Error::unprocessable("idempotency_key_mismatch", "x"));
  EXPECT_EQ(std::string(J(r.body).at("error").at("type").as_string()), "idempotency_error");
  EXPECT_TRUE(J(r.body).at("error").at("param").is_null());
}

// Through the API: every bad payment body answers 4xx (never 5xx) with the error shape.
TEST(ApiValidation, BadBodiesNever5xx) {
  Harness h;
  std::string key = h.merchant();
  std::vector<std::string> bodies = {
      "", "null", "[]", "\"x\"", "{", "}", "{\"amount\":", nested(100), nested(5000),
      R"({"amount":{"$gt":1},"currency":"EUR","source":"s"})", R"({"amount":1,"currency":null,"source":"s"})",
      R"({"amount":-9223372036854775808,"currency":"EUR","source":"s"})", std::string("{\"a\":\"\0\"}", 9),
      R"({"amount":1,"currency":"EUR","source":"s","metadata":null,"description":null,"x":[]})"};
  int i = 0;
  for (const auto& b : bodies) {
    auto r = h.pay(key, "bad-" + std::to_string(i++), b);
    EXPECT_GE(r.status, 400) << b;
    EXPECT_LT(r.status, 500) << b;
    EXPECT_FALSE(err_code(r).empty());
  }
  auto deep = h.pay(key, "deep", nested(33));
  EXPECT_EQ(err_code(deep), "json_too_deep");
  auto unknown = h.pay(key, "unknown", R"({"amount":1,"currency":"EUR","source":"s","captur":true})");
  EXPECT_EQ(err_param(unknown), "captur");
}

// U+0000 is valid JSON but PostgreSQL text/jsonb cannot store it (libpq would truncate at
// the NUL), so every client-supplied string rejects it with 400 parameter_invalid.
TEST(NulCharacter, RejectedInEveryClientString) {
  const std::string p = R"({"amount":1,"currency":"EUR","source":)";
  expect_bad(p + R"("s\u0000x"})", "parameter_invalid", "source");
  expect_bad(p + R"("s","description":"a\u0000b"})", "parameter_invalid", "description");
  expect_bad(p + R"("s","description":"\u0000"})", "parameter_invalid", "description");
  expect_bad(p + R"("s","metadata":{"k":"v\u0000"}})", "parameter_invalid", "metadata");
  expect_bad(p + R"("s","metadata":{"k\u0000":"v"}})", "parameter_invalid", "metadata");
  // A raw NUL byte inside a JSON string is not valid JSON at all.
  expect_bad(p + std::string("\"s\",\"description\":\"a\0b\"}", 24), "json_invalid", "");
  auto msg = parse_payment_request(p + R"("s","description":"a\u0000b"})", kMax, 32).error().message;
  EXPECT_NE(msg.find("U+0000"), std::string::npos) << msg;
  // Other control characters stay allowed where they were (description is free text).
  EXPECT_TRUE(parse_payment_request(p + R"("s","description":"a\u0001\nb","metadata":{"k":"\t"}})", kMax, 32).ok());

  auto m = parse_merchant_request(R"({"name":"Ac\u0000me"})", 32);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, "parameter_invalid");
  EXPECT_EQ(m.error().param, "name");
  EXPECT_EQ(status_for(m.error()), 400);

  auto e = parse_endpoint_request(R"({"url":"https://x.test/h\u0000ook"})", 32);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().param, "url");
  EXPECT_EQ(parse_endpoint_request(R"({"url":"https://x.test","enabled_events":["*\u0000"]})", 32).error().param,
            "enabled_events");
  EXPECT_EQ(validate_idempotency_key(std::string_view("k\0y", 3)).error().code, "idempotency_key_invalid");

  std::map<std::string, std::string> q{{"payment_id", std::string("pay_x\0y", 7)}};
  auto qr = check_query_params(q, {"payment_id"});
  ASSERT_FALSE(qr.ok());
  EXPECT_EQ(qr.error().code, "parameter_invalid");
  EXPECT_EQ(qr.error().param, "payment_id");
  EXPECT_TRUE(check_query_params({{"payment_id", "pay_x"}}, {"payment_id"}).ok());
  std::map<std::string, std::string> cursor{{"starting_after", std::string("pay_x\0", 6)}};
  EXPECT_FALSE(check_query_params(cursor, {"starting_after"}).ok());
  EXPECT_FALSE(parse_page(cursor).ok());
}

// Through the API: a NUL in a body string or a query value answers 400 with the param.
TEST(NulCharacter, ApiAnswers400WithParam) {
  Harness h;
  std::string key = h.merchant();
  auto r = h.pay(key, "nul-1", R"({"amount":1,"currency":"EUR","source":"s","metadata":{"order":"4\u00002"}})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(err_code(r), "parameter_invalid");
  EXPECT_EQ(err_param(r), "metadata");
  auto m = h.call("POST", "/v1/merchants", R"({"name":"x\u0000"})",
                  {{"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/json"}});
  EXPECT_EQ(m.status, 400) << m.body;
  EXPECT_EQ(err_param(m), "name");
  auto l = h.call("GET", "/v1/ledger/entries?payment_id=pay_x%00y", "", Harness::auth(key));
  EXPECT_EQ(l.status, 400) << l.body;
  EXPECT_EQ(err_code(l), "parameter_invalid");
  EXPECT_EQ(err_param(l), "payment_id");
}

TEST(Validation, ValidUtf8ReplacesWhatIsNotUtf8) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(valid_utf8("plain /v1/payments"), "plain /v1/payments");
  EXPECT_EQ(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(valid_utf8("a\xFF" "b"), "a" + fffd + "b");                 // never a lead byte
  EXPECT_EQ(valid_utf8("\xC3"), fffd);                                    // truncated
  EXPECT_EQ(valid_utf8("\xC0\xAF"), fffd + fffd);                         // overlong '/'
  EXPECT_EQ(valid_utf8("\xE0\x80\xAF"), fffd + fffd + fffd);              // overlong
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), fffd + fffd + fffd);              // surrogate U+D800
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);   // above U+10FFFF
}

// An error quoting the request (here the path of no route, found by fuzz_http_api) is
// valid JSON even when the path's bytes are not UTF-8.
TEST(Validation, ErrorBodiesAreValidJsonForAnyQuotedBytes) {
  Harness h;
  auto r = h.call("GET", "/v1/payments%ED%FF%FF%FFit=2");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(err_code(r), "route_not_found");  // parses
  EXPECT_NE(r.body.find("\xEF\xBF\xBD"), std::string::npos) << r.body;
  boost::system::error_code ec;
  boost::json::parse(error_json("invalid_request_error", "x", "\xC3(", "p\x80"), ec);
  EXPECT_FALSE(ec);
}
