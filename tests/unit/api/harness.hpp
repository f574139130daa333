// Test harness: a real Api over the in-test fakes, the in-memory cache and rate limiter
// and a manual clock. call() runs a request and waits for its answer.
#pragma once
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <future>
#include <map>
#include <memory>

#include "adapters/memory/idempotency_cache.hpp"
#include "adapters/memory/rate_limiter.hpp"
#include "api/api.hpp"
#include "unit/api/fakes.hpp"

namespace ps::testing {

using Headers = std::vector<std::pair<std::string, std::string>>;

inline ApiConfig test_config() {
  ApiConfig c;
  c.admin_key = "admin-secret";
  return c;
}

inline boost::json::value J(const std::string& s) { return boost::json::parse(s); }
inline std::string err_code(const HttpResponse& r) {
  return std::string(J(r.body).at("error").at("code").as_string());
}
inline std::string err_param(const HttpResponse& r) {
  auto v = J(r.body);
  auto& p = v.at("error").at("param");
  return p.is_null() ? std::string() : std::string(p.as_string());
}
inline std::optional<std::string> hdr(const HttpResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (iequals(k, name)) return v;
  return std::nullopt;
}

// Webhook endpoint host names: answers from a table (unknown names do not resolve).
struct TableResolver final : HostResolver {
  std::map<std::string, std::vector<IpAddress>> table = {
      {"example.com", {IpAddress::v4(93, 184, 216, 34)}},
      {"x", {IpAddress::v4(93, 184, 216, 34)}},
      {"x.test", {IpAddress::v4(93, 184, 216, 34)}},
  };
  std::vector<std::pair<std::string, int64_t>> calls;  // host, timeout ms
  Result<std::vector<IpAddress>> resolve(const std::string& host, std::chrono::milliseconds timeout) override {
    calls.emplace_back(host, timeout.count());
    auto it = table.find(host);
    if (it == table.end()) return Error::unavailable("resolve_failed", "cannot resolve " + host + ": Name or service not known");
    return it->second;
  }
};

struct Harness {
  TableResolver resolver;
  FakeStores s;
  InMemoryIdempotencyCache cache;
  InMemoryRateLimiter rl;
  ManualClock clock;
  std::unique_ptr<Api> api;

  explicit Harness(ApiConfig cfg = test_config(),
                   size_t cache_max_bytes = InMemoryIdempotencyCache::kDefaultMaxBytes)
      : cache(std::chrono::hours(24), 1'000'000, std::chrono::minutes(5), cache_max_bytes) {
    api = std::make_unique<Api>(ApiDeps{s, s, s, s, s, s, cache, rl, clock, nullptr, &resolver}, cfg);
    api->set_ready(true);
  }

  static HttpRequest make(const std::string& method, const std::string& target, const std::string& body,
                          const Headers& headers) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    parse_target(target, r.path, r.query);
    r.headers = headers;
    r.body = body;
    return r;
  }
  // `peer`: the client address the request comes from (HttpRequest::peer).
  std::future<HttpResponse> call_async(const std::string& method, const std::string& target,
                                       const std::string& body = "", const Headers& headers = {},
                                       const std::string& peer = "") {
    auto p = std::make_shared<std::promise<HttpResponse>>();
    auto f = p->get_future();
    HttpRequest r = make(method, target, body, headers);
    r.peer = peer;
    api->handle(std::move(r), [p](HttpResponse x) { p->set_value(std::move(x)); });
    return f;
  }
  HttpResponse call(const std::string& method, const std::string& target, const std::string& body = "",
                    const Headers& headers = {}, const std::string& peer = "") {
    auto f = call_async(method, target, body, headers, peer);
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ADD_FAILURE() << "no answer for " << method << " " << target;
      return HttpResponse{0, {}, "{}"};
    }
    return f.get();
  }

  // Creates a merchant through the admin route; returns its API key (and id via out).
  std::string merchant(const std::string& name = "Acme", std::string* id = nullptr,
                       const std::string& rate_limit = "") {
    std::string body = R"({"name":")" + name + "\"" + (rate_limit.empty() ? "" : ",\"rate_limit\":" + rate_limit) + "}";
    auto r = call("POST", "/v1/merchants", body,
                  {{"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/json"}});
    EXPECT_EQ(r.status, 201) << r.body;
    auto v = J(r.body);
    if (id) *id = std::string(v.at("id").as_string());
    return std::string(v.at("api_key").as_string());
  }
  static Headers auth(const std::string& key, Headers extra = {}) {
    extra.emplace_back("Authorization", "Bearer " + key);
    extra.emplace_back("Content-Type", "application/json");
    return extra;
  }
  HttpResponse pay(const std::string& key, const std::string& idem, const std::string& body, Headers extra = {}) {
    extra.emplace_back("Idempotency-Key", idem);
    return call("POST", "/v1/payments", body, auth(key, extra));
  }
};

inline const char* kPayBody = R"({"amount":1000,"currency":"EUR","source":"tok_approve"})";

}  // namespace ps::testing
