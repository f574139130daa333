// HTTP request parsing through the API: the input is the bytes a client sends on one
// keep-alive connection. They go through Boost.Beast's request parser with the server's
// default limits (http_server.cpp, --header-limit-bytes / --body-limit-bytes), and every
// request that parses becomes an HttpRequest exactly as the server builds one and is
// handled by a real Api over in-memory fakes (tests/unit/api/fakes.hpp): one merchant with
// the API key "sk_fuzz_merchant_key", admin key "fuzz-admin-key-0123456789abcdef".
// Asserts: the Api answers every request exactly once (and before it returns, as the
// fakes answer inline); the status is 1xx..5xx and never 500 (a 500 is a bug); a JSON
// answer is valid JSON (every route but /metrics answers JSON).
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "adapters/memory/idempotency_cache.hpp"
#include "adapters/memory/rate_limiter.hpp"
#include "api/api.hpp"
#include "common/log.hpp"
#include "domain/ids.hpp"
#include "unit/api/fakes.hpp"

namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr size_t kHeaderLimit = 16 * 1024;  // config.hpp defaults
constexpr size_t kBodyLimit = 64 * 1024;
constexpr int kMaxRequests = 8;             // per input

void fail(const char* what, const ps::HttpRequest* req = nullptr, const ps::HttpResponse* res = nullptr) {
  std::fprintf(stderr, "fuzz_http_api: invariant broken: %s\n", what);
  if (req) std::fprintf(stderr, "  request: %s %s (body %zu bytes)\n", req->method.c_str(), req->target.c_str(), req->body.size());
  if (res) std::fprintf(stderr, "  answer: %d %s\n", res->status, res->body.substr(0, 2000).c_str());
  std::abort();
}

// Webhook URL host names: one resolves to a global address, one to loopback, the rest fail.
struct FixedResolver final : ps::HostResolver {
  ps::Result<std::vector<ps::IpAddress>> resolve(const std::string& host, std::chrono::milliseconds) override {
    if (host == "example.com") return std::vector<ps::IpAddress>{ps::IpAddress::v4(93, 184, 216, 34)};
    if (host == "localhost") return std::vector<ps::IpAddress>{ps::IpAddress::v4(127, 0, 0, 1)};
    return ps::Error::unavailable("resolve_failed", "cannot resolve " + host);
  }
};

struct World {
  FixedResolver resolver;
  ps::testing::FakeStores s;
  ps::InMemoryIdempotencyCache cache;
  ps::InMemoryRateLimiter rl;
  ps::ManualClock clock;
  std::unique_ptr<ps::Api> api;

  World() {
    ps::ApiConfig cfg;
    cfg.admin_key = "fuzz-admin-key-0123456789abcdef";
    cfg.max_wait_ms = 0;  // Prefer: wait would park the answer on the waiter thread
    ps::Merchant m;
    m.id = "mer_fuzz";
    m.name = "Fuzz";
    m.api_key_hash = ps::sha256_hex("sk_fuzz_merchant_key");
    m.created_ms = clock.now_ms();
    (void)s.create_merchant(m);
    api = std::make_unique<ps::Api>(ps::ApiDeps{s, s, s, s, s, s, cache, rl, clock, nullptr, &resolver}, cfg);
    api->set_ready(true);
  }
};

void check_answer(const ps::HttpRequest& req, const ps::HttpResponse& res) {
  if (res.status < 100 || res.status > 599) fail("status out of range", &req, &res);
  if (res.status == 500) fail("500 answer", &req, &res);
  if (res.content_type.rfind("application/json", 0) == 0) {
    if (res.body.empty()) {
      if (res.status != 204 && res.status != 304) fail("empty JSON body", &req, &res);
      return;
    }
    boost::system::error_code ec;
    (void)boost::json::parse(res.body, ec);
    if (ec) fail("answer is not valid JSON", &req, &res);
  } else if (req.path != "/metrics") {
    fail("non-JSON answer outside /metrics", &req, &res);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ps::log::set_level(ps::log::Level::error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World w;  // fresh per input: the run of one input does not depend on earlier ones
  std::vector<std::shared_ptr<std::atomic<int>>> all_answers;
  size_t off = 0;
  for (int n = 0; n < kMaxRequests && off < size; ++n) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(std::uint32_t(kHeaderLimit));
    parser.body_limit(kBodyLimit);
    parser.eager(true);
    beast::error_code ec;
    while (!parser.is_done() && off < size) {
      size_t used = parser.put(boost::asio::buffer(data + off, size - off), ec);
      off += used;
      if (ec == http::error::need_more) {
        if (off >= size) break;
        ec = {};
        if (used == 0) break;
        continue;
      }
      if (ec) break;
    }
    if (!parser.is_done() && !ec && off >= size) {
      parser.put_eof(ec);
    }
    if (ec || !parser.is_done()) return 0;  // the server answers 400/413/431 or closes itself
    auto cl = parser.content_length();
    if (cl && *cl > kBodyLimit) return 0;

    auto msg = parser.release();
    bool keep_alive = msg.keep_alive();
    ps::HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    ps::parse_target(req.target, req.path, req.query);
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(msg.body());
    req.peer = "203.0.113.7";

    auto answers = std::make_shared<std::atomic<int>>(0);
    auto got = std::make_shared<ps::HttpResponse>();
    ps::HttpRequest copy = req;
    w.api->handle(std::move(copy), [answers, got](ps::HttpResponse r) {
      if (answers->fetch_add(1) == 0) *got = std::move(r);
    });
    all_answers.push_back(answers);
    if (answers->load() == 0) fail("no answer when handle() returned", &req);
    if (answers->load() > 1) fail("more than one answer", &req);
    check_answer(req, *got);
    if (!keep_alive) break;
  }
  w.api.reset();  // nothing answers late, or twice
  for (const auto& a : all_answers)
    if (a->load() != 1) fail("a request was not answered exactly once");
  return 0;
}
