#include "api/validation.hpp"

#include <boost/json.hpp>
#include <cmath>

#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "domain/money.hpp"

namespace ps::api {
namespace json = boost::json;

namespace {
Error bad(std::string code, std::string message, std::string param = {}) {
  return Error::invalid(std::move(code), std::move(message), std::move(param));
}

bool printable_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// Counts code points of valid UTF-8 (Boost.JSON already rejected invalid UTF-8).
size_t utf8_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

// U+0000 is valid JSON ("\u0000") but PostgreSQL text and jsonb cannot store it (libpq
// text parameters end at the first NUL), so every client-supplied string rejects it: the
// distributed shape would otherwise store a different value than it answered with.
bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }
Error nul_in(std::string_view what, std::string param) {
  return bad("parameter_invalid", std::string(what) + " must not contain U+0000", std::move(param));
}

bool only_whitespace(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

Result<json::object> parse_object(std::string_view body, int max_depth) {
  json::parse_options opt;
  opt.max_depth = std::size_t(std::max(1, max_depth));
  boost::system::error_code ec;
  json::value v = json::parse(body, ec, {}, opt);
  if (ec == json::error::too_deep) return bad("json_too_deep", "JSON nesting is deeper than " + std::to_string(max_depth));
  if (ec) return bad("json_invalid", "request body is not valid JSON: " + ec.message());
  if (!v.is_object()) return bad("body_not_object", "request body must be a JSON object");
  return std::move(v.get_object());
}

Result<void> only_fields(const json::object& o, std::initializer_list<std::string_view> allowed) {
  for (const auto& kv : o) {
    bool known = false;
    for (auto a : allowed) known = known || kv.key() == a;
    if (!known) return bad("parameter_unknown", "unknown parameter: " + std::string(kv.key()), std::string(kv.key()));
  }
  return ok();
}

// A JSON integer, also when written with a zero fraction ("1000.0": JSON Schema's
// "integer", which the OpenAPI file promises) as long as the double holds it exactly
// (|x| <= 2^53). nullopt: not an integer, or not exactly representable.
std::optional<int64_t> exact_integer(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return v.get_uint64() <= uint64_t(INT64_MAX) ? std::optional<int64_t>(int64_t(v.get_uint64()))
                                                                   : std::nullopt;
  if (v.is_double()) {
    const double d = v.get_double();
    constexpr double kExact = 9007199254740992.0;  // 2^53
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= kExact) return int64_t(d);
  }
  return std::nullopt;
}

Result<int64_t> parse_amount(const json::value& v, int64_t max_amount_minor) {
  const std::string p = "amount";
  if (auto exact = exact_integer(v)) {
    int64_t a = *exact;
    if (a <= 0) return bad("amount_invalid", "amount must be a positive integer", p);
    if (a > max_amount_minor)
      return bad("amount_too_large", "amount must be at most " + std::to_string(max_amount_minor), p);
    return a;
  }
  if (v.is_uint64()) return bad("amount_too_large", "amount must be at most " + std::to_string(max_amount_minor), p);
  if (v.is_double()) {
    double d = v.get_double();
    if (std::isfinite(d) && d == std::floor(d) && d > 0)  // integral, beyond what a double holds exactly
      return bad("amount_too_large", "amount must be at most " + std::to_string(max_amount_minor), p);
    return bad("amount_invalid", "amount must be an integer in minor units", p);
  }
  return bad("amount_invalid", "amount must be an integer in minor units", p);
}

std::string missing_msg(std::string_view f) { return "missing required parameter: " + std::string(f); }
}  // namespace

Result<PaymentInput> parse_payment_request(std::string_view body, int64_t max_amount_minor, int max_depth) {
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"amount", "currency", "source", "description", "metadata"}); !r) return r.error();
  PaymentInput in;

  auto* amount = o.if_contains("amount");
  if (!amount || amount->is_null()) return bad("parameter_missing", missing_msg("amount"), "amount");
  auto a = parse_amount(*amount, max_amount_minor);
  if (!a) return a.error();
  in.amount_minor = a.value();

  auto* cur = o.if_contains("currency");
  if (!cur || cur->is_null()) return bad("parameter_missing", missing_msg("currency"), "currency");
  if (!cur->is_string() || !find_currency(std::string_view(cur->get_string())))
    return bad("currency_invalid", "currency must be a supported ISO 4217 code in upper case", "currency");
  in.currency = std::string(cur->get_string());

  auto* src = o.if_contains("source");
  if (!src || src->is_null()) return bad("parameter_missing", missing_msg("source"), "source");
  if (!src->is_string()) return bad("parameter_invalid", "source must be a string", "source");
  std::string_view s = src->get_string();
  if (s.empty() || s.size() > kMaxSourceChars || !printable_ascii(s))
    return bad("parameter_invalid", "source must be 1-255 printable ASCII characters", "source");
  in.source = std::string(s);

  if (auto* d = o.if_contains("description"); d && !d->is_null()) {
    if (!d->is_string()) return bad("parameter_invalid", "description must be a string", "description");
    if (utf8_chars(d->get_string()) > kMaxDescriptionChars)
      return bad("parameter_invalid", "description must be at most 1000 characters", "description");
    if (has_nul(d->get_string())) return nul_in("description", "description");
    in.description = std::string(d->get_string());
  }

  if (auto* m = o.if_contains("metadata"); m && !m->is_null()) {
    if (!m->is_object()) return bad("parameter_invalid", "metadata must be an object of strings", "metadata");
    const auto& mo = m->get_object();
    if (mo.size() > kMaxMetadataKeys) return bad("parameter_invalid", "metadata has more than 50 keys", "metadata");
    for (const auto& kv : mo) {
      if (kv.key().empty() || utf8_chars(kv.key()) > kMaxMetadataKeyChars)
        return bad("parameter_invalid", "metadata keys must be 1-40 characters", "metadata");
      if (has_nul(kv.key())) return nul_in("metadata keys", "metadata");
      if (!kv.value().is_string())
        return bad("parameter_invalid", "metadata values must be strings", "metadata");
      if (utf8_chars(kv.value().get_string()) > kMaxMetadataValueChars)
        return bad("parameter_invalid", "metadata values must be at most 500 characters", "metadata");
      if (has_nul(kv.value().get_string())) return nul_in("metadata values", "metadata");
      in.metadata[std::string(kv.key())] = std::string(kv.value().get_string());
    }
  }
  return in;
}

Result<RefundInput> parse_refund_request(std::string_view body, int64_t max_amount_minor, int max_depth) {
  RefundInput in;
  if (only_whitespace(body)) return in;
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"amount"}); !r) return r.error();
  if (auto* a = o.if_contains("amount"); a && !a->is_null()) {
    auto v = parse_amount(*a, max_amount_minor);
    if (!v) return v.error();
    in.amount_minor = v.value();
  }
  return in;
}

Result<MerchantInput> parse_merchant_request(std::string_view body, int max_depth) {
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"name", "rate_limit"}); !r) return r.error();
  MerchantInput in;
  auto* name = o.if_contains("name");
  if (!name || name->is_null()) return bad("parameter_missing", missing_msg("name"), "name");
  if (!name->is_string()) return bad("parameter_invalid", "name must be a string", "name");
  size_t n = utf8_chars(name->get_string());
  if (n < 1 || n > kMaxMerchantNameChars) return bad("parameter_invalid", "name must be 1-200 characters", "name");
  if (has_nul(name->get_string())) return nul_in("name", "name");
  in.name = std::string(name->get_string());
  if (auto* rl = o.if_contains("rate_limit"); rl && !rl->is_null()) {
    if (!rl->is_object()) return bad("parameter_invalid", "rate_limit must be an object", "rate_limit");
    const auto& ro = rl->get_object();
    for (const auto& kv : ro)
      if (kv.key() != "per_second" && kv.key() != "burst")
        return bad("parameter_unknown", "unknown parameter: rate_limit." + std::string(kv.key()),
                   "rate_limit." + std::string(kv.key()));
    if (auto* ps = ro.if_contains("per_second")) {
      double v = ps->is_int64() ? double(ps->get_int64()) : ps->is_uint64() ? double(ps->get_uint64())
                 : ps->is_double() ? ps->get_double() : -1;
      if (!(v >= kMinRatePerSecond) || !(v <= kMaxRatePerSecond))  // NaN fails both
        return bad("parameter_invalid", "rate_limit.per_second must be a number from 0.001 to 1000000",
                   "rate_limit.per_second");
      in.rate_per_s = v;
    }
    if (auto* b = ro.if_contains("burst")) {
      const auto n = exact_integer(*b);
      if (!n || *n < 1 || *n > kMaxRateBurst)
        return bad("parameter_invalid", "rate_limit.burst must be an integer from 1 to 10000000", "rate_limit.burst");
      in.burst = *n;
    }
  }
  return in;
}

namespace {
Result<void> parse_endpoint_url(const json::value& url, std::string& out, HttpUrl& target) {
  if (!url.is_string()) return bad("url_invalid", "url must be a string", "url");
  std::string_view u = url.get_string();
  // The sender's own parser: whatever is accepted here can be sent to.
  auto t = parse_http_url(u);
  if (!t) return t.error();
  out = std::string(u);
  target = std::move(t.value());
  return {};
}
Result<std::vector<std::string>> parse_enabled_events(const json::value& ev) {
  std::vector<std::string> out;
  if (!ev.is_array()) return bad("parameter_invalid", "enabled_events must be an array", "enabled_events");
  const auto& arr = ev.get_array();
  if (arr.size() > kMaxEnabledEvents) return bad("parameter_invalid", "too many enabled_events", "enabled_events");
  for (const auto& e : arr) {
    if (!e.is_string()) return bad("parameter_invalid", "enabled_events must be strings", "enabled_events");
    std::string_view t = e.get_string();
    if (t != "*" && t != event_types::payment_succeeded && t != event_types::payment_failed &&
        t != event_types::refund_succeeded && t != event_types::refund_failed)
      return bad("parameter_invalid", "unknown event type: " + std::string(t), "enabled_events");
    out.emplace_back(t);
  }
  return out;
}
}  // namespace

Result<EndpointInput> parse_endpoint_request(std::string_view body, int max_depth) {
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"url", "enabled_events"}); !r) return r.error();
  EndpointInput in;
  auto* url = o.if_contains("url");
  if (!url || url->is_null()) return bad("parameter_missing", missing_msg("url"), "url");
  if (auto r = parse_endpoint_url(*url, in.url, in.target); !r) return r.error();
  if (auto* ev = o.if_contains("enabled_events"); ev && !ev->is_null()) {
    auto events = parse_enabled_events(*ev);
    if (!events) return events.error();
    in.enabled_events = std::move(events.value());
  }
  return in;
}

Result<EndpointUpdateInput> parse_endpoint_update_request(std::string_view body, int max_depth) {
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"url", "enabled_events", "disabled"}); !r) return r.error();
  EndpointUpdateInput in;
  if (auto* url = o.if_contains("url"); url && !url->is_null()) {
    in.url.emplace();
    if (auto r = parse_endpoint_url(*url, *in.url, in.target); !r) return r.error();
  }
  if (auto* ev = o.if_contains("enabled_events"); ev && !ev->is_null()) {
    auto events = parse_enabled_events(*ev);
    if (!events) return events.error();
    in.enabled_events = std::move(events.value());
  }
  if (auto* d = o.if_contains("disabled"); d && !d->is_null()) {
    if (!d->is_bool()) return bad("parameter_invalid", "disabled must be true or false", "disabled");
    in.disabled = d->get_bool();
  }
  if (!in.url && !in.enabled_events && !in.disabled)
    return bad("parameter_missing", "nothing to update: give url, enabled_events or disabled", "");
  return in;
}

Result<int64_t> parse_rotation_request(std::string_view body, int max_depth) {
  int64_t grace_s = kDefaultRotationGraceSeconds;
  if (only_whitespace(body)) return grace_s;
  auto parsed = parse_object(body, max_depth);
  if (!parsed) return parsed.error();
  const json::object& o = parsed.value();
  if (auto r = only_fields(o, {"expire_previous_after_s"}); !r) return r.error();
  if (auto* g = o.if_contains("expire_previous_after_s"); g && !g->is_null()) {
    const std::optional<int64_t> v = exact_integer(*g);
    if (!v || *v < 0 || *v > kMaxRotationGraceSeconds)
      return bad("parameter_invalid",
                 "expire_previous_after_s must be an integer from 0 (at once) to " +
                     std::to_string(kMaxRotationGraceSeconds) + " (30 days)",
                 "expire_previous_after_s");
    grace_s = *v;
  }
  return grace_s;
}

Result<std::string> validate_idempotency_key(std::optional<std::string_view> header) {
  if (!header) return bad("idempotency_key_missing", "the Idempotency-Key header is required", "Idempotency-Key");
  if (header->empty() || header->size() > kMaxIdempotencyKeyChars || !printable_ascii(*header))
    return bad("idempotency_key_invalid", "Idempotency-Key must be 1-255 printable ASCII characters", "Idempotency-Key");
  return std::string(*header);
}

std::string request_fingerprint(std::string_view method, std::string_view path, std::string_view body) {
  std::string in;
  in.reserve(method.size() + path.size() + body.size() + 2);
  in += method;
  in += '\n';
  in += path;
  in += '\n';
  in += body;
  return sha256_hex(in);
}

Result<void> check_query_params(const std::map<std::string, std::string>& query,
                                const std::vector<std::string_view>& allowed) {
  for (const auto& [k, v] : query) {
    bool known = false;
    for (auto a : allowed) known = known || k == a;
    if (!known) return bad("parameter_unknown", "unknown query parameter: " + k, k);
    if (has_nul(v)) return nul_in(k, k);  // e.g. payment_id=pay_x%00y would match pay_x
  }
  return ok();
}

Result<Page> parse_page(const std::map<std::string, std::string>& query) {
  Page p;
  p.limit = kDefaultPageLimit;
  if (auto it = query.find("limit"); it != query.end()) {
    const std::string& s = it->second;
    bool digits = !s.empty() && s.size() <= 3;
    for (char c : s) digits = digits && c >= '0' && c <= '9';
    int v = digits ? std::stoi(s) : 0;
    if (!digits || v < 1 || v > kMaxPageLimit) return bad("parameter_invalid", "limit must be an integer 1-100", "limit");
    p.limit = v;
  }
  if (auto it = query.find("starting_after"); it != query.end()) {
    if (it->second.empty() || it->second.size() > 64 || !printable_ascii(it->second))
      return bad("cursor_invalid", "starting_after must be the id of an object of the previous page", "starting_after");
    p.starting_after = it->second;
  }
  return p;
}

std::optional<int64_t> parse_prefer_wait(std::optional<std::string_view> header) {
  if (!header) return std::nullopt;
  std::string_view h = *header;
  size_t pos = 0;
  while (pos <= h.size()) {
    size_t end = h.find_first_of(",;", pos);
    std::string_view tok = h.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
    while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
    if (tok.size() > 5 && iequals(tok.substr(0, 5), "wait=")) {
      std::string_view num = tok.substr(5);
      if (num.size() > 9) return std::nullopt;
      int64_t v = 0;
      for (char c : num) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + (c - '0');
      }
      return v;
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return std::nullopt;
}

bool valid_traceparent(std::string_view tp) {
  if (tp.size() != 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return false;
  auto hex = [](std::string_view s) {
    for (char c : s)
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
  };
  auto zero = [](std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; };
  std::string_view ver = tp.substr(0, 2), trace = tp.substr(3, 32), span = tp.substr(36, 16), flags = tp.substr(53, 2);
  return hex(ver) && ver != "ff" && hex(trace) && hex(span) && hex(flags) && !zero(trace) && !zero(span);
}

std::optional<std::string> bearer_token(std::optional<std::string_view> authorization) {
  if (!authorization) return std::nullopt;
  std::string_view a = *authorization;
  if (a.size() < 8 || !iequals(a.substr(0, 7), "bearer ")) return std::nullopt;
  a.remove_prefix(7);
  while (!a.empty() && a.front() == ' ') a.remove_prefix(1);
  while (!a.empty() && a.back() == ' ') a.remove_suffix(1);
  if (a.empty() || a.size() > 512) return std::nullopt;
  return std::string(a);
}

bool constant_time_equals(std::string_view a, std::string_view b) {
  // Compare digests so the running time depends on neither length nor content.
  std::string da = sha256_hex(a), db = sha256_hex(b);
  unsigned char diff = 0;
  for (size_t i = 0; i < da.size(); ++i) diff |= static_cast<unsigned char>(da[i] ^ db[i]);
  return diff == 0 && a.size() == b.size();
}

int status_for(const Error& e) {
  switch (e.kind) {
    case ErrorKind::invalid_request: return 400;
    case ErrorKind::unauthorized: return 401;
    case ErrorKind::not_found: return 404;
    case ErrorKind::conflict: return 409;
    case ErrorKind::payload_too_large: return 413;
    case ErrorKind::unsupported_media: return 415;
    case ErrorKind::unprocessable: return 422;
    case ErrorKind::rate_limited: return 429;
    case ErrorKind::unavailable:
    case ErrorKind::timeout:
    case ErrorKind::internal: return 503;
  }
  return 503;
}

std::string error_type_for(const Error& e, int status) {
  if (e.code.rfind("idempotency_key_", 0) == 0 && (status == 409 || status == 422)) return "idempotency_error";
  switch (status) {
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    unsigned char c = b(0);
    size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (b(k) & 0xC0) == 0x80;
    // No overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
    if (ok && n == 3) ok = !(c == 0xE0 && b(1) < 0xA0) && !(c == 0xED && b(1) > 0x9F);
    if (ok && n == 4) ok = !(c == 0xF0 && b(1) < 0x90) && !(c == 0xF4 && b(1) > 0x8F);
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    }
  }
  return out;
}

std::string error_json(std::string_view type, std::string_view code, std::string_view message, std::string_view param) {
  json::object e;
  e["type"] = type;
  e["code"] = code;
  // Messages and params may quote what the client sent (a path, a header): JSON is UTF-8.
  e["message"] = valid_utf8(message);
  if (param.empty()) e["param"] = nullptr; else e["param"] = valid_utf8(param);
  json::object o;
  o["error"] = std::move(e);
  return json::serialize(o);
}

HttpResponse error_response(const Error& e) {
  int status = status_for(e);
  Error shown = e;
  // Store/internal failures are shown as the retryable 503 "unavailable" (never a 500).
  if (status == 503 && e.code != "draining" && e.code != "unavailable" && e.code != "store_overloaded") {
    shown.code = "unavailable";
    shown.message = "service temporarily unavailable; retry with the same Idempotency-Key";
    shown.param.clear();
  }
  HttpResponse r;
  r.status = status;
  r.body = error_json(error_type_for(shown, status), shown.code, shown.message, shown.param);
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

}  // namespace ps::api
