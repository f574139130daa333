// JSON body validation of every route and the header/query helpers of the API
// (api/validation.hpp), on arbitrary bytes.
// Asserts: no crash/UB/exception; every parse_* either fails with an invalid_request or
// unprocessable error (never internal: a 4xx, with a code) or returns values inside the
// documented limits; accepted webhook URLs are ones parse_http_url accepts; the header
// helpers' results satisfy their contracts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "api/validation.hpp"

namespace api = ps::api;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_validation: invariant broken: %s\n", what);
    std::abort();
  }
}

constexpr int64_t kMaxAmount = 99'999'999'999;
constexpr int kDepth = 32;

template <class T>
void check_error(const ps::Result<T>& r) {
  if (r) return;
  const ps::Error& e = r.error();
  check(!e.code.empty(), "an error has a code");
  int status = api::status_for(e);
  check(status >= 400 && status < 500, "a validation error is a 4xx");
  check(!api::error_response(e).body.empty(), "an error has a body");
}

void check_events(const std::vector<std::string>& ev) {
  check(ev.size() <= api::kMaxEnabledEvents, "enabled_events limit");
  for (const auto& s : ev) check(!s.empty(), "enabled_events entries are not empty");
}

void check_url(const std::string& url, const ps::HttpUrl& target) {
  check(url.size() <= api::kMaxUrlChars, "url length");
  auto again = ps::parse_http_url(url);
  check(again && again->host == target.host && again->port == target.port && again->target == target.target,
        "an accepted url is the parse_http_url of its text");
}

bool printable(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);

  auto pay = api::parse_payment_request(body, kMaxAmount, kDepth);
  check_error(pay);
  if (pay) {
    check(pay->amount_minor > 0 && pay->amount_minor <= kMaxAmount, "payment amount range");
    check(!pay->currency.empty(), "payment currency");
    check(!pay->source.empty() && pay->source.size() <= api::kMaxSourceChars, "payment source");
    check(pay->description.size() <= api::kMaxDescriptionChars * 4, "payment description (UTF-8 bytes)");
    check(pay->metadata.size() <= api::kMaxMetadataKeys, "metadata keys");
  }

  auto refund = api::parse_refund_request(body, kMaxAmount, kDepth);
  check_error(refund);
  if (refund) check(refund->amount_minor >= 0 && refund->amount_minor <= kMaxAmount, "refund amount range");

  auto merchant = api::parse_merchant_request(body, kDepth);
  check_error(merchant);
  if (merchant) {
    check(!merchant->name.empty(), "merchant name");
    check(merchant->rate_per_s == 0 ||
              (merchant->rate_per_s >= api::kMinRatePerSecond && merchant->rate_per_s <= api::kMaxRatePerSecond),
          "merchant rate range");
    check(merchant->burst >= 0 && merchant->burst <= api::kMaxRateBurst, "merchant burst range");
  }

  auto endpoint = api::parse_endpoint_request(body, kDepth);
  check_error(endpoint);
  if (endpoint) {
    check_url(endpoint->url, endpoint->target);
    check_events(endpoint->enabled_events);
  }

  auto update = api::parse_endpoint_update_request(body, kDepth);
  check_error(update);
  if (update) {
    check(update->url || update->enabled_events || update->disabled, "an update changes something");
    if (update->url) check_url(*update->url, update->target);
    if (update->enabled_events) check_events(*update->enabled_events);
  }

  auto rotation = api::parse_rotation_request(body, kDepth);
  check_error(rotation);
  if (rotation) check(*rotation >= 0 && *rotation <= api::kMaxRotationGraceSeconds, "rotation grace range");

  // The same bytes as header values and query parameters.
  auto key = api::validate_idempotency_key(body);
  check_error(key);
  if (key) check(!key->empty() && key->size() <= api::kMaxIdempotencyKeyChars && printable(*key), "idempotency key");
  check_error(api::validate_idempotency_key(std::nullopt));

  if (auto w = api::parse_prefer_wait(body)) check(*w >= 0, "Prefer: wait is not negative");
  if (auto t = api::bearer_token(body)) check(t->size() < body.size(), "bearer token is inside the header");
  if (api::valid_traceparent(body)) check(body.size() == 55, "traceparent length");
  (void)api::constant_time_equals(body, "admin-secret");

  std::string path;
  std::map<std::string, std::string> query;
  ps::parse_target(body, path, query);
  check_error(api::check_query_params(query, {"limit", "starting_after"}));
  auto page = api::parse_page(query);
  check_error(page);
  if (page) check(page->limit >= 1 && page->limit <= api::kMaxPageLimit, "page limit range");
  (void)api::request_fingerprint("POST", path, body);
  return 0;
}
