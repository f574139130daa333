// Request validation and small pure helpers of the HTTP API (docs/API.md "Requests",
// "Idempotency", "Errors"). Pure functions: no I/O, thread-safe, unit-tested directly.
// Every failure is an Error naming the code and, where a field is at fault, the param.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/http_types.hpp"
#include "common/result.hpp"
#include "domain/http_url.hpp"
#include "domain/model.hpp"
#include "ports/stores.hpp"

namespace ps::api {

inline constexpr size_t kMaxIdempotencyKeyChars = 255;
inline constexpr size_t kMaxSourceChars = 255;
inline constexpr size_t kMaxDescriptionChars = 1000;
inline constexpr size_t kMaxMetadataKeys = 50;
inline constexpr size_t kMaxMetadataKeyChars = 40;
inline constexpr size_t kMaxMetadataValueChars = 500;
inline constexpr size_t kMaxMerchantNameChars = 200;
inline constexpr size_t kMaxUrlChars = kMaxOutboundUrlChars;
inline constexpr size_t kMaxEnabledEvents = 16;
inline constexpr double kMinRatePerSecond = 0.001;   // merchant rate_limit.per_second range
inline constexpr double kMaxRatePerSecond = 1e6;
inline constexpr int64_t kMaxRateBurst = 10'000'000;  // merchant rate_limit.burst: 1 .. this
inline constexpr int kDefaultPageLimit = 10;
inline constexpr int kMaxPageLimit = 100;

struct PaymentInput {
  int64_t amount_minor = 0;
  std::string currency;
  std::string source;
  std::string description;
  Metadata metadata;
};
Result<PaymentInput> parse_payment_request(std::string_view body, int64_t max_amount_minor, int max_depth);

struct RefundInput {
  int64_t amount_minor = 0;  // 0 = everything refundable
};
// An empty body (or only whitespace) is the same as {}.
Result<RefundInput> parse_refund_request(std::string_view body, int64_t max_amount_minor, int max_depth);

struct MerchantInput {
  std::string name;
  double rate_per_s = 0;   // 0 = platform default
  int64_t burst = 0;       // 0 = platform default
};
Result<MerchantInput> parse_merchant_request(std::string_view body, int max_depth);

struct EndpointInput {
  std::string url;                          // as given (parse_http_url accepted it)
  HttpUrl target;                           // its parts
  std::vector<std::string> enabled_events;  // empty = all
};
Result<EndpointInput> parse_endpoint_request(std::string_view body, int max_depth);

// POST /v1/webhook_endpoints/{id}: at least one of the fields; url as on create.
struct EndpointUpdateInput {
  std::optional<std::string> url;
  HttpUrl target;                           // parts of url, when given
  std::optional<std::vector<std::string>> enabled_events;
  std::optional<bool> disabled;
};
Result<EndpointUpdateInput> parse_endpoint_update_request(std::string_view body, int max_depth);

// Rotation of an API key or a webhook secret: {"expire_previous_after_s": 0..30 days}
// (0 = the previous ones stop at once). An empty body is {}: the default grace period.
inline constexpr int64_t kDefaultRotationGraceSeconds = 86'400;
inline constexpr int64_t kMaxRotationGraceSeconds = 30 * 86'400;
Result<int64_t> parse_rotation_request(std::string_view body, int max_depth);  // seconds

// Idempotency-Key: 1..255 chars in 0x20..0x7E. Missing: idempotency_key_missing.
Result<std::string> validate_idempotency_key(std::optional<std::string_view> header);
// Hex SHA-256 of method + "\n" + path + "\n" + body.
std::string request_fingerprint(std::string_view method, std::string_view path, std::string_view body);

// Query parameters of list routes: only `allowed` names are accepted (parameter_unknown).
Result<void> check_query_params(const std::map<std::string, std::string>& query,
                                const std::vector<std::string_view>& allowed);
// limit (1..100, default 10) and starting_after.
Result<Page> parse_page(const std::map<std::string, std::string>& query);

// "Prefer: wait=<ms>" (other preferences ignored); nullopt when absent or malformed.
std::optional<int64_t> parse_prefer_wait(std::optional<std::string_view> header);
// A valid W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>", not all-zero ids.
bool valid_traceparent(std::string_view tp);
// "Bearer <token>" → token; nullopt otherwise.
std::optional<std::string> bearer_token(std::optional<std::string_view> authorization);
bool constant_time_equals(std::string_view a, std::string_view b);

// `s` with every byte that does not start a valid UTF-8 sequence (overlong forms and
// surrogates included) replaced by U+FFFD, so text quoted from a request is valid JSON.
std::string valid_utf8(std::string_view s);

// HTTP status and error body of an Error (docs/API.md "Errors"); message and param go
// through valid_utf8.
int status_for(const Error& e);
std::string error_type_for(const Error& e, int status);
std::string error_json(std::string_view type, std::string_view code, std::string_view message,
                       std::string_view param);
HttpResponse error_response(const Error& e);

}  // namespace ps::api
