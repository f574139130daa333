#include "api/api.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "api/failure_budget.hpp"
#include "api/validation.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/event.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/json_codec.hpp"

namespace ps {
using namespace ps::api;

namespace {

enum class RouteId {
  merchants_create, merchant_keys_rotate, payments_create, payments_list, payments_get, refunds_create, refunds_get,
  balance_get, ledger_entries, endpoints_create, endpoints_list, endpoints_get, endpoints_update,
  endpoints_delete, endpoints_rotate_secret,
  events_list, events_get, events_redeliver, healthz, readyz, metrics,
};
enum class AuthKind { none, admin, merchant };

struct RouteDef {
  const char* method;
  const char* path;
  RouteId id;
  AuthKind auth;
};

const std::vector<RouteDef>& route_table() {
  static const std::vector<RouteDef> t = {
      {"POST", "/v1/merchants", RouteId::merchants_create, AuthKind::admin},
      {"POST", "/v1/merchants/{id}/api_keys", RouteId::merchant_keys_rotate, AuthKind::admin},
      {"POST", "/v1/payments", RouteId::payments_create, AuthKind::merchant},
      {"GET", "/v1/payments", RouteId::payments_list, AuthKind::merchant},
      {"GET", "/v1/payments/{id}", RouteId::payments_get, AuthKind::merchant},
      {"POST", "/v1/payments/{id}/refunds", RouteId::refunds_create, AuthKind::merchant},
      {"GET", "/v1/refunds/{id}", RouteId::refunds_get, AuthKind::merchant},
      {"GET", "/v1/balance", RouteId::balance_get, AuthKind::merchant},
      {"GET", "/v1/ledger/entries", RouteId::ledger_entries, AuthKind::merchant},
      {"POST", "/v1/webhook_endpoints", RouteId::endpoints_create, AuthKind::merchant},
      {"GET", "/v1/webhook_endpoints", RouteId::endpoints_list, AuthKind::merchant},
      {"GET", "/v1/webhook_endpoints/{id}", RouteId::endpoints_get, AuthKind::merchant},
      {"POST", "/v1/webhook_endpoints/{id}", RouteId::endpoints_update, AuthKind::merchant},
      {"DELETE", "/v1/webhook_endpoints/{id}", RouteId::endpoints_delete, AuthKind::merchant},
      {"POST", "/v1/webhook_endpoints/{id}/rotate_secret", RouteId::endpoints_rotate_secret, AuthKind::merchant},
      {"GET", "/v1/events", RouteId::events_list, AuthKind::merchant},
      {"GET", "/v1/events/{id}", RouteId::events_get, AuthKind::merchant},
      {"POST", "/v1/events/{id}/redeliver", RouteId::events_redeliver, AuthKind::merchant},
      {"GET", "/healthz", RouteId::healthz, AuthKind::none},
      {"GET", "/readyz", RouteId::readyz, AuthKind::none},
      {"GET", "/metrics", RouteId::metrics, AuthKind::none},
  };
  return t;
}

std::vector<std::string_view> split_path(std::string_view p) {
  std::vector<std::string_view> out;
  if (p.empty() || p[0] != '/') return out;
  p.remove_prefix(1);
  while (true) {
    auto s = p.find('/');
    out.push_back(p.substr(0, s));
    if (s == std::string_view::npos) break;
    p.remove_prefix(s + 1);
    if (out.size() > 16) break;
  }
  return out;
}

// Matches `path` against a template; fills `param` with the {id} segment.
bool match(std::string_view tmpl, const std::vector<std::string_view>& segs, std::string& param) {
  auto t = split_path(tmpl);
  if (t.size() != segs.size()) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (!t[i].empty() && t[i].front() == '{') {
      // No id contains U+0000; a decoded NUL must not reach a store that would cut the
      // id there (PostgreSQL text), so such a path matches no route (404).
      if (segs[i].empty() || segs[i].find('\0') != std::string_view::npos) return false;
      param = std::string(segs[i]);
    } else if (t[i] != segs[i]) {
      return false;
    }
  }
  return true;
}

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

std::string list_json(const std::vector<std::string>& items, bool has_more) {
  std::string s = R"({"object":"list","data":[)";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) s += ',';
    s += items[i];
  }
  s += R"(],"has_more":)";
  s += has_more ? "true" : "false";
  s += '}';
  return s;
}

bool is_json_content_type(std::optional<std::string_view> ct) {
  if (!ct) return false;
  std::string_view v = *ct;
  auto semi = v.find(';');
  v = v.substr(0, semi);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return iequals(v, "application/json");
}

// The `method` label of the HTTP metrics: a fixed set, so made-up methods cannot create
// new series (the `route` label is a template or "unmatched").
const char* method_label(std::string_view m) {
  static constexpr const char* kKnown[] = {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"};
  for (const char* k : kKnown)
    if (m == k) return k;
  return "other";
}

// Query parameters each route accepts; anything else is 400 parameter_unknown.
std::vector<std::string_view> allowed_query(RouteId id) {
  switch (id) {
    case RouteId::payments_list: return {"status", "limit", "starting_after"};
    case RouteId::events_list: return {"limit", "starting_after"};
    case RouteId::ledger_entries: return {"payment_id"};
    default: return {};
  }
}

metrics::Counter& idem_counter(const char* outcome) {
  return metrics::registry().counter("paystream_idempotency_total", "Idempotency outcomes", {{"outcome", outcome}});
}

constexpr const char* kGatewaySource = "/paystream/gateway";
constexpr size_t kMaxAuthCache = 1'000'000;
constexpr size_t kMaxUnknownKeys = 10'000;
constexpr auto kUnknownKeyTtl = std::chrono::seconds(2);

}  // namespace

struct Api::Impl {
  ApiDeps d;
  ApiConfig cfg;
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};

  // Auth cache: SHA-256(api key) -> merchant (with the key's expiry), re-read from the
  // store after cfg.auth_cache_ttl_ms so a rotation on another gateway is seen within it.
  struct CachedKey {
    Merchant merchant;
    int64_t read_ms = 0;  // d.clock
  };
  std::shared_mutex auth_mu;
  std::unordered_map<std::string, CachedKey> auth;
  // Unknown key hashes, remembered briefly so bogus keys do not each cost a store lookup.
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> unknown_keys;
  // Store lookups that found no merchant, budgeted per client address (failure_budget.hpp).
  FailureBudget auth_failures{cfg.auth_failure_rate_per_s, cfg.auth_failure_burst};
  FailureBudget admin_failures{cfg.admin_failure_rate_per_s, cfg.admin_failure_burst};

  // Serialises count-then-create of webhook endpoints (the per-merchant cap).
  std::mutex endpoint_mu;

  // Prefer: wait waiters, keyed by payment id.
  struct Waiter {
    std::string merchant_id, key, fingerprint;
    std::chrono::steady_clock::time_point deadline;
    Respond respond;  // already wrapped (metrics, headers)
    std::string body_202;
    size_t bytes = 0;  // accounted in waiter_bytes
  };
  mutable std::mutex wmu;
  std::condition_variable wcv;
  std::unordered_multimap<std::string, Waiter> waiters;
  size_t waiter_bytes = 0;  // with wmu; payload held by `waiters` (bounded by max_waiter_bytes)
  std::deque<std::string> ready_ids;
  bool wstop = false;
  std::thread wthread;

  metrics::Counter& accepted = metrics::registry().counter("paystream_payments_accepted_total",
                                                           "Payments durably accepted by the gateway");
  metrics::Counter& admin_refused = metrics::registry().counter(
      "paystream_admin_auth_failures_total", "Requests to admin routes with a wrong admin key", {{"outcome", "refused"}});
  metrics::Counter& admin_throttled = metrics::registry().counter(
      "paystream_admin_auth_failures_total", "Requests to admin routes with a wrong admin key", {{"outcome", "throttled"}});
  metrics::Counter& limited = metrics::registry().counter("paystream_rate_limited_total",
                                                          "Requests refused by the rate limiter");
  metrics::Counter& shed = metrics::registry().counter(
      "paystream_intake_shed_total", "New payments and refunds refused at the pipeline's backlog bound",
      {{"reason", "backlog"}});

  Impl(ApiDeps deps, ApiConfig c) : d(deps), cfg(std::move(c)) {
    wthread = std::thread([this] { wait_loop(); });
  }
  ~Impl() {
    {
      std::lock_guard lk(wmu);
      wstop = true;
    }
    wcv.notify_all();
    if (wthread.joinable()) wthread.join();
  }

  // ---- plumbing -----------------------------------------------------------------------
  struct Ctx {
    Merchant merchant;
    std::string param;  // the {id} path segment
  };

  Respond wrap(Respond raw, std::string route, std::string_view req_method,
               std::chrono::steady_clock::time_point start,
               std::shared_ptr<std::vector<std::pair<std::string, std::string>>> extra) {
    std::string method = method_label(req_method);
    return [raw = std::move(raw), route = std::move(route), method = std::move(method), start,
            extra = std::move(extra)](HttpResponse r) {
      if (extra)
        for (const auto& h : *extra) r.headers.push_back(h);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      auto& reg = metrics::registry();
      reg.counter("paystream_http_requests_total", "HTTP requests by route, method and status",
                  {{"route", route}, {"method", method}, {"status", std::to_string(r.status)}})
          .inc();
      reg.histogram("paystream_http_request_duration_seconds", "HTTP request latency by route",
                    {{"route", route}, {"method", method}})
          .observe(secs);
      raw(std::move(r));
    };
  }

  static void fail(const Respond& respond, const Error& e) { respond(error_response(e)); }

  void handle(HttpRequest req, Respond raw) {
    auto start = std::chrono::steady_clock::now();
    if (req.path.empty() && !req.target.empty()) parse_target(req.target, req.path, req.query);
    auto segs = split_path(req.path);
    const RouteDef* found = nullptr;
    std::string param;
    std::string allow;
    for (const auto& r : route_table()) {
      std::string p;
      if (!match(r.path, segs, p)) continue;
      if (req.method == r.method) {
        found = &r;
        param = std::move(p);
        break;
      }
      if (allow.find(r.method) == std::string::npos) allow += allow.empty() ? r.method : std::string(", ") + r.method;
    }
    if (!found) {
      if (!allow.empty()) {
        Respond respond = wrap(std::move(raw), "unmatched", req.method, start, nullptr);
        HttpResponse r = json_response(405, error_json("invalid_request_error", "method_not_allowed",
                                                        "method " + req.method + " not allowed here", ""));
        r.headers.emplace_back("Allow", allow);
        return respond(std::move(r));
      }
      Respond respond = wrap(std::move(raw), "unmatched", req.method, start, nullptr);
      return respond(json_response(404, error_json("invalid_request_error", "route_not_found",
                                                    "no such route: " + req.path, "")));
    }

    const RouteDef& route = *found;
    switch (route.id) {
      case RouteId::healthz:
        return wrap(std::move(raw), route.path, req.method, start, nullptr)(json_response(200, R"({"status":"ok"})"));
      case RouteId::readyz: {
        bool ok = ready.load() && !draining.load();
        return wrap(std::move(raw), route.path, req.method, start, nullptr)(
            json_response(ok ? 200 : 503, ok ? R"({"status":"ready"})" : R"({"status":"not_ready"})"));
      }
      case RouteId::metrics: {
        HttpResponse r = json_response(200, metrics::registry().render());
        r.content_type = "text/plain; version=0.0.4";
        return wrap(std::move(raw), route.path, req.method, start, nullptr)(std::move(r));
      }
      default:
        break;
    }

    auto extra = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
    Respond respond = wrap(std::move(raw), route.path, req.method, start, extra);
    if (draining.load())
      return fail(respond, Error::unavailable("draining", "the server is shutting down; retry on another instance"));

    auto token = bearer_token(req.header("Authorization"));
    if (!token) return fail(respond, {ErrorKind::unauthorized, "unauthorized", "missing or malformed API key", {}, false});

    Ctx ctx;
    ctx.param = std::move(param);
    if (route.auth == AuthKind::admin) {
      // Wrong admin keys are budgeted per client address: guessing is throttled (429,
      // without comparing) and counted; the right key from another address is not.
      if (!admin_failures.allows(req.peer, d.clock.now_ms())) {
        admin_throttled.inc();
        HttpResponse r = json_response(429, error_json("rate_limit_error", "rate_limited",
                                                       "too many wrong admin keys from this address; retry later", ""));
        r.headers.emplace_back("Retry-After", "1");
        return respond(std::move(r));
      }
      if (cfg.admin_key.empty() || !constant_time_equals(*token, cfg.admin_key)) {
        admin_failures.spend(req.peer, d.clock.now_ms());
        admin_refused.inc();
        log::warn("wrong admin key", {{"peer", req.peer}, {"route", route.path}});
        return fail(respond, {ErrorKind::unauthorized, "unauthorized", "admin key required", {}, false});
      }
    } else {
      std::string hash = sha256_hex(*token);
      auto m = authenticate(hash, req.peer);
      if (!m && m.error().kind == ErrorKind::rate_limited) {
        limited.inc();
        HttpResponse r = json_response(429, error_json("rate_limit_error", "rate_limited", m.error().message, ""));
        r.headers.emplace_back("Retry-After", "1");
        return respond(std::move(r));
      }
      if (!m) return fail(respond, m.error());
      if (!m.value()) return fail(respond, {ErrorKind::unauthorized, "unauthorized", "unknown API key", {}, false});
      ctx.merchant = std::move(*m.value());
      // Rate limit per API key.
      double rate = ctx.merchant.rate_limit_per_s > 0 ? ctx.merchant.rate_limit_per_s : cfg.default_rate_per_s;
      int64_t burst = ctx.merchant.rate_limit_burst > 0 ? ctx.merchant.rate_limit_burst : cfg.default_burst;
      auto dec = d.rate_limiter.take("key:" + hash, rate, burst, d.clock.now_ms());
      if (dec) {
        extra->emplace_back("RateLimit-Limit", std::to_string(dec->limit));
        extra->emplace_back("RateLimit-Remaining", std::to_string(dec->remaining));
        extra->emplace_back("RateLimit-Reset", std::to_string(dec->reset_s));
        if (!dec->allowed) {
          limited.inc();
          HttpResponse r = json_response(429, error_json("rate_limit_error", "rate_limited",
                                                          "too many requests; retry after the Retry-After delay", ""));
          r.headers.emplace_back("Retry-After", std::to_string(std::max<int64_t>(1, dec->retry_after_s)));
          return respond(std::move(r));
        }
      } else {
        log::warn("rate limiter failed; allowing request", {{"error", dec.error().message}});
      }
    }

    if (auto r = check_query_params(req.query, allowed_query(route.id)); !r) return fail(respond, r.error());

    if (req.method == "POST") {
      bool needs_body = route.id == RouteId::merchants_create || route.id == RouteId::payments_create ||
                        route.id == RouteId::endpoints_create || route.id == RouteId::endpoints_update;
      bool has_body = !req.body.empty();
      if ((needs_body || has_body) && !is_json_content_type(req.header("Content-Type")))
        return fail(respond, {ErrorKind::unsupported_media, "unsupported_media_type",
                              "Content-Type must be application/json", {}, false});
    }

    switch (route.id) {
      case RouteId::merchants_create: return create_merchant(req, respond);
      case RouteId::merchant_keys_rotate: return rotate_api_key(ctx, req, respond);
      case RouteId::payments_create: return create_payment(ctx, req, respond);
      case RouteId::payments_list: return list_payments(ctx, req, respond);
      case RouteId::payments_get: return get_payment(ctx, respond);
      case RouteId::refunds_create: return create_refund(ctx, req, respond);
      case RouteId::refunds_get: return get_refund(ctx, respond);
      case RouteId::balance_get: return balance(ctx, req, respond);
      case RouteId::ledger_entries: return ledger_entries(ctx, req, respond);
      case RouteId::endpoints_create: return create_endpoint(ctx, req, respond);
      case RouteId::endpoints_list: return list_endpoints(ctx, req, respond);
      case RouteId::endpoints_get: return get_endpoint(ctx, respond);
      case RouteId::endpoints_update: return update_endpoint(ctx, req, respond);
      case RouteId::endpoints_rotate_secret: return rotate_endpoint_secret(ctx, req, respond);
      case RouteId::endpoints_delete: return delete_endpoint(ctx, respond);
      case RouteId::events_list: return list_events(ctx, req, respond);
      case RouteId::events_get: return get_event(ctx, respond);
      case RouteId::events_redeliver: return redeliver(ctx, respond);
      default: return fail(respond, Error::not_found("no such route"));
    }
  }

  // ---- auth ---------------------------------------------------------------------------
  // `peer`: the client's address (HttpRequest::peer), whose failure budget a miss spends.
  Result<std::optional<Merchant>> authenticate(const std::string& hash, const std::string& peer) {
    auto now = std::chrono::steady_clock::now();
    const int64_t now_ms = d.clock.now_ms();
    std::optional<Merchant> stale;  // cached, due to be read again
    {
      std::shared_lock lk(auth_mu);
      auto it = auth.find(hash);
      if (it != auth.end() && now_ms - it->second.read_ms < cfg.auth_cache_ttl_ms) return valid_key(it->second.merchant, now_ms);
      if (it != auth.end()) stale = it->second.merchant;
      auto neg = unknown_keys.find(hash);
      if (it == auth.end() && neg != unknown_keys.end() && neg->second > now) return std::optional<Merchant>();
    }
    // A key in no cache costs a store read: refused while unknown keys are flooding in.
    if (!auth_failures.allows(peer, now_ms))
      return Error{ErrorKind::rate_limited, "rate_limited", "too many requests with unknown API keys; retry later", {}, true};
    auto m = d.merchants.find_merchant_by_key_hash(hash);
    // The store cannot say: a key read before keeps its last known expiry (a store outage
    // does not log every merchant out; a rotation is then seen once the store answers).
    if (!m) return stale ? valid_key(*stale, now_ms) : Result<std::optional<Merchant>>(m.error());
    if (m.value()) {
      remember(*m.value());
      return valid_key(*m.value(), now_ms);
    }
    auth_failures.spend(peer, now_ms);
    std::unique_lock lk(auth_mu);
    auth.erase(hash);
    if (unknown_keys.size() >= kMaxUnknownKeys) unknown_keys.clear();
    unknown_keys[hash] = now + kUnknownKeyTtl;
    return m;
  }
  // A key rotated out is refused once its grace period is over.
  static Result<std::optional<Merchant>> valid_key(const Merchant& m, int64_t now_ms) {
    if (!m.key_valid_at(now_ms))
      return Error{ErrorKind::unauthorized, "api_key_expired", "this API key was rotated out and has expired", {}, false};
    return std::optional<Merchant>(m);
  }
  void remember(const Merchant& m) {
    const int64_t now_ms = d.clock.now_ms();
    std::unique_lock lk(auth_mu);
    if (auth.size() >= kMaxAuthCache) auth.clear();  // bounded; refilled from the store on miss
    auth[m.api_key_hash] = CachedKey{m, now_ms};
    unknown_keys.erase(m.api_key_hash);
  }

  // ---- merchants ----------------------------------------------------------------------
  void create_merchant(const HttpRequest& req, const Respond& respond) {
    auto in = parse_merchant_request(req.body, cfg.json_max_depth);
    if (!in) return fail(respond, in.error());
    Merchant m;
    m.id = random_token("mer_", 12);
    m.name = in->name;
    std::string api_key = random_token("sk_", 24);
    m.api_key_hash = sha256_hex(api_key);
    m.rate_limit_per_s = in->rate_per_s;
    m.rate_limit_burst = in->burst;
    m.created_ms = d.clock.now_ms();
    if (auto r = d.merchants.create_merchant(m); !r) return fail(respond, r.error());
    remember(m);
    respond_merchant_created(m, api_key, respond);
  }
  static void respond_merchant_created(const Merchant& m, const std::string& api_key, const Respond& respond);

  // POST /v1/merchants/{id}/api_keys: a new key; the merchant's other keys keep working
  // for the grace period (expire_previous_after_s; 0 = refused at once), then are refused.
  void rotate_api_key(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto grace_s = parse_rotation_request(req.body, cfg.json_max_depth);
    if (!grace_s) return fail(respond, grace_s.error());
    const int64_t now_ms = d.clock.now_ms();
    const int64_t expire_ms = now_ms + *grace_s * 1000;
    std::string api_key = random_token("sk_", 24);
    auto others = d.merchants.rotate_api_key(ctx.param, sha256_hex(api_key), now_ms, expire_ms);
    if (!others) return fail(respond, others.error());
    if (!others->has_value()) return fail(respond, Error::not_found("no such merchant"));
    for (const auto& m : **others) remember(m);  // this gateway sees the new expiries at once
    log::info("API key rotated", {{"merchant_id", ctx.param}, {"previous_keys_expire_ms", std::to_string(expire_ms)}});
    respond(json_response(201, R"({"object":"api_key","merchant_id":")" + ctx.param + R"(","api_key":")" + api_key +
                                   R"(","created":)" + std::to_string(now_ms) +
                                   R"(,"previous_keys_expire":)" + std::to_string(expire_ms) + "}"));
  }

  // ---- payments -----------------------------------------------------------------------
  std::string traceparent_of(const HttpRequest& req) {
    auto tp = req.header("traceparent");
    if (tp && valid_traceparent(*tp)) return std::string(*tp);
    return log::new_traceparent();
  }

  static HttpResponse replay(const IdempotencyRecord& rec) {
    idem_counter("replayed").inc();
    HttpResponse r = json_response(rec.http_status, rec.response_body);
    r.headers.emplace_back("Idempotent-Replayed", "true");
    return r;
  }
  static HttpResponse mismatch() {
    idem_counter("mismatch").inc();
    return json_response(422, error_json("idempotency_error", "idempotency_key_mismatch",
                                         "this Idempotency-Key was used with a different request", ""));
  }
  static HttpResponse in_use() {
    idem_counter("in_use").inc();
    return json_response(409, error_json("idempotency_error", "idempotency_key_in_use",
                                         "a request with this Idempotency-Key is still in flight", ""));
  }

  // Ownership of an idempotency key taken with IdempotencyCache::begin: released with
  // abandon() or finish(); if neither happened when the last holder lets go (an exception,
  // a dropped store callback), the destructor abandons, so the key never answers 409 until
  // the in-flight TTL. Call abandon()/finish() before answering: a retry must not race a
  // late abandon that would free the retry's own claim.
  struct IdemGuard {
    IdempotencyCache& cache;
    std::string merchant_id, key;
    bool armed = true;
    IdemGuard(IdempotencyCache& c, std::string m, std::string k)
        : cache(c), merchant_id(std::move(m)), key(std::move(k)) {}
    IdemGuard(const IdemGuard&) = delete;
    IdemGuard& operator=(const IdemGuard&) = delete;
    ~IdemGuard() {
      if (!armed) return;
      try {
        cache.abandon(merchant_id, key);
      } catch (...) {  // the in-flight TTL still frees the key
      }
    }
    void abandon() {
      if (!armed) return;
      armed = false;
      cache.abandon(merchant_id, key);
    }
    void finish(const IdempotencyRecord& rec, int64_t now_ms) {
      armed = false;
      cache.finish(rec, now_ms);
    }
  };
  using IdemGuardPtr = std::shared_ptr<IdemGuard>;

  // Steps shared by payments and refunds: key check, fast cache, durable check.
  // Returns the key's guard when the caller owns the key and should go on; otherwise it
  // answered and returns null.
  IdemGuardPtr begin_idempotent(const std::string& merchant_id, const std::string& key, const std::string& fp,
                                const Respond& respond) {
    auto b = d.idempotency.begin(merchant_id, key, fp, d.clock.now_ms());
    if (b) {
      if (b->state == IdempotencyCache::State::in_flight) {
        respond(b->fingerprint == fp ? in_use() : mismatch());
        return nullptr;
      }
      if (b->state == IdempotencyCache::State::done) {
        if (b->fingerprint == fp && b->record) respond(replay(*b->record));
        else respond(mismatch());
        return nullptr;
      }
    } else if (b.error().code == "idempotency_cache_full") {
      // Too much in flight for the cache's memory budget: a retryable 503, not a bypass.
      fail(respond, b.error());
      return nullptr;
    } else {
      log::warn("idempotency cache failed; using the durable store", {{"error", b.error().message}});
    }
    // No durable lookup here: the store's accept transaction is where (merchant, key) is
    // unique, and it answers created=false with the first record for a key it already
    // holds (replay or mismatch then). So a new key costs no read on the HTTP thread.
    return std::make_shared<IdemGuard>(d.idempotency, merchant_id, key);
  }

  // The prologue of every idempotent create: validates the Idempotency-Key, fingerprints
  // the request and claims the key. nullopt: the request was already answered.
  struct IdempotentStart {
    IdemGuardPtr guard;
    std::string key;
    std::string fingerprint;
  };
  std::optional<IdempotentStart> start_idempotent(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto key = validate_idempotency_key(req.header("Idempotency-Key"));
    if (!key) {
      fail(respond, key.error());
      return std::nullopt;
    }
    std::string fp = request_fingerprint(req.method, req.path, req.body);
    IdemGuardPtr guard = begin_idempotent(ctx.merchant.id, *key, fp, respond);
    if (!guard) return std::nullopt;
    return IdempotentStart{std::move(guard), std::move(key.value()), std::move(fp)};
  }

  // Intake admission: refuses new work while the pipeline's backlog is past its bound, so
  // accepted -> terminal stays bounded at any offered rate (SPEC §2.6). Checked after the
  // key is known to be new: a retry of an accepted request still replays.
  std::optional<Error> over_backlog() {
    if (!d.backlog || (cfg.max_backlog_records == 0 && cfg.max_backlog_age_ms <= 0)) return std::nullopt;
    const Backlog b = d.backlog->pipeline_backlog(d.clock.now_ms());
    std::string why;
    if (cfg.max_backlog_records > 0 && b.records >= cfg.max_backlog_records)
      why = std::to_string(b.records) + " records wait for the settling stages (bound " +
            std::to_string(cfg.max_backlog_records) + ")";
    else if (cfg.max_backlog_age_ms > 0 && b.oldest_age_ms >= cfg.max_backlog_age_ms)
      why = "the oldest record has waited " + std::to_string(b.oldest_age_ms) + " ms for its stage (bound " +
            std::to_string(cfg.max_backlog_age_ms) + " ms)";
    if (why.empty()) return std::nullopt;
    shed.inc();
    return Error::unavailable("store_overloaded", "the pipeline is at its backlog bound: " + why +
                                                      "; retry after Retry-After with the same Idempotency-Key");
  }

  void create_payment(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto start = start_idempotent(ctx, req, respond);
    if (!start) return;
    if (auto over = over_backlog()) {
      start->guard->abandon();
      return fail(respond, *over);
    }
    const std::string& mid = ctx.merchant.id;
    const std::string& key = start->key;
    const std::string& fp = start->fingerprint;
    IdemGuardPtr& guard = start->guard;

    auto in = parse_payment_request(req.body, cfg.max_amount_minor, cfg.json_max_depth);
    if (!in) {
      guard->abandon();
      return fail(respond, in.error());
    }
    int64_t now = d.clock.now_ms();
    Payment p;
    p.id = payment_id_for(mid, key);
    p.merchant_id = mid;
    p.idempotency_key = key;
    p.amount_minor = in->amount_minor;
    p.currency = in->currency;
    p.source = in->source;
    p.description = in->description;
    p.metadata = in->metadata;
    p.status = PaymentStatus::processing;
    p.created_ms = now;
    p.updated_ms = now;
    std::string tp = traceparent_of(req);
    AcceptPayment cmd;
    cmd.initiated = make_payment_event(p, event_types::payment_initiated, kGatewaySource, now, tp);
    cmd.record = IdempotencyRecord{mid, key, fp, 202, payment_json(p), p.id, now};
    cmd.payment = p;
    std::string body_202 = cmd.record.response_body;

    std::optional<int64_t> wait_ms = parse_prefer_wait(req.header("Prefer"));
    int64_t wait = wait_ms ? std::min<int64_t>(*wait_ms, cfg.max_wait_ms) : 0;
    std::string k = key;
    d.intake.accept_payment(std::move(cmd), [this, respond, guard, mid, k, fp, pid = p.id, tp, wait,
                                             body_202](Result<AcceptOutcome> r) {
      if (!r) {
        guard->abandon();
        return fail(respond, r.error());
      }
      if (!r->created) {
        guard->finish(r->record, d.clock.now_ms());
        return respond(r->record.fingerprint == fp ? replay(r->record) : mismatch());
      }
      IdempotencyRecord rec = r->record;
      if (rec.response_body.empty()) rec = IdempotencyRecord{mid, k, fp, 202, body_202, pid, d.clock.now_ms()};
      guard->finish(rec, d.clock.now_ms());
      idem_counter("new").inc();
      accepted.inc();
      log::info("payment accepted", {{"payment_id", pid}, {"merchant_id", mid}, {"trace_id", log::trace_id_of(tp)}});
      if (wait > 0) return park(pid, mid, k, fp, wait, respond, rec.response_body);
      respond(json_response(202, rec.response_body));
    });
  }

  // ---- Prefer: wait -------------------------------------------------------------------
  void park(const std::string& pid, const std::string& mid, const std::string& key, const std::string& fp,
            int64_t wait_ms,
            const Respond& respond, const std::string& body_202) {
    {
      std::lock_guard lk(wmu);
      // Fixed overhead per waiter: the map node, the Respond closure and the deadline.
      size_t bytes = pid.size() + mid.size() + key.size() + fp.size() + body_202.size() + 512;
      if (waiters.size() >= cfg.max_waiters || waiter_bytes + bytes > cfg.max_waiter_bytes || wstop ||
          draining.load()) {
        respond(json_response(202, body_202));
        return;
      }
      waiters.emplace(pid, Waiter{mid, key, fp, std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms),
                                  respond, body_202, bytes});
      waiter_bytes += bytes;
      ready_ids.push_back(pid);  // first check: the payment may already be terminal
    }
    wcv.notify_all();
  }

  // Draining: every parked request gets its 202 now (the payment is durable), so a
  // graceful shutdown does not wait for Prefer: wait timeouts.
  void flush_waiters() {
    std::vector<Waiter> rest;
    {
      std::lock_guard lk(wmu);
      for (auto& [id, w] : waiters) rest.push_back(std::move(w));
      waiters.clear();
      waiter_bytes = 0;
    }
    for (auto& w : rest) w.respond(json_response(202, w.body_202));
  }

  void notify(const std::vector<std::string>& ids) {
    bool any = false;
    {
      std::lock_guard lk(wmu);
      for (const auto& id : ids)
        if (waiters.count(id)) {
          ready_ids.push_back(id);
          any = true;
        }
    }
    if (any) wcv.notify_all();
  }

  void wait_loop() {
    std::unique_lock lk(wmu);
    while (true) {
      if (wstop) break;
      if (ready_ids.empty()) {
        auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        for (const auto& [id, w] : waiters) next = std::min(next, w.deadline);
        wcv.wait_until(lk, next, [&] { return wstop || !ready_ids.empty(); });
        if (wstop) break;
      }
      std::deque<std::string> ids;
      ids.swap(ready_ids);
      std::vector<Waiter> expired;
      auto now = std::chrono::steady_clock::now();
      for (auto it = waiters.begin(); it != waiters.end();) {
        if (it->second.deadline <= now) {
          waiter_bytes -= it->second.bytes;
          expired.push_back(std::move(it->second));
          it = waiters.erase(it);
        } else {
          ++it;
        }
      }
      lk.unlock();
      for (auto& w : expired) w.respond(json_response(202, w.body_202));
      for (const auto& id : ids) check_terminal(id);
      lk.lock();
    }
    // Shutting down: everyone still waiting gets the 202 (the payment is durable).
    std::vector<Waiter> rest;
    for (auto& [id, w] : waiters) rest.push_back(std::move(w));
    waiters.clear();
    waiter_bytes = 0;
    lk.unlock();
    for (auto& w : rest) w.respond(json_response(202, w.body_202));
  }

  void check_terminal(const std::string& pid) {
    std::string mid;
    {
      std::lock_guard lk(wmu);
      auto it = waiters.find(pid);
      if (it == waiters.end()) return;
      mid = it->second.merchant_id;
    }
    auto p = d.payments.get_payment(mid, pid);
    if (!p || !p.value() || p.value()->status == PaymentStatus::processing) return;
    std::vector<Waiter> done;
    {
      std::lock_guard lk(wmu);
      auto [b, e] = waiters.equal_range(pid);
      for (auto it = b; it != e; ++it) {
        waiter_bytes -= it->second.bytes;
        done.push_back(std::move(it->second));
      }
      waiters.erase(b, e);
    }
    std::string body = payment_json(*p.value());
    for (auto& w : done) {
      auto cached = std::make_shared<Waiter>(std::move(w));
      d.intake.update_idempotent_response(
          cached->merchant_id, cached->key, 201, body, [this, cached, body, pid](Result<void> r) {
            if (r) {
              d.idempotency.finish(IdempotencyRecord{cached->merchant_id, cached->key, cached->fingerprint, 201,
                                                     body, pid, d.clock.now_ms()},
                                   d.clock.now_ms());
            } else {
              log::warn("could not store the 201 for replays", {{"payment_id", pid}, {"error", r.error().message}});
            }
            cached->respond(json_response(201, body));
          });
    }
  }

  // ---- refunds ------------------------------------------------------------------------
  void create_refund(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto start = start_idempotent(ctx, req, respond);
    if (!start) return;
    if (auto over = over_backlog()) {
      start->guard->abandon();
      return fail(respond, *over);
    }
    const std::string& mid = ctx.merchant.id;
    const std::string& key = start->key;
    const std::string& fp = start->fingerprint;
    IdemGuardPtr& guard = start->guard;
    auto in = parse_refund_request(req.body, cfg.max_amount_minor, cfg.json_max_depth);
    if (!in) {
      guard->abandon();
      return fail(respond, in.error());
    }
    auto pay = d.payments.get_payment(mid, ctx.param);
    if (!pay || !pay.value()) {
      guard->abandon();
      return fail(respond, pay ? Error::not_found("no such payment: " + ctx.param) : pay.error());
    }
    const Payment& p = *pay.value();
    // The early check with what the API sees; the store decides again, in its transaction,
    // with the refunds still processing and the merchant's balance (the same rule).
    RefundAdmission early;
    early.requested_minor = in->amount_minor;
    early.check_balance = false;
    if (auto admitted = admit_refund(p, early); !admitted) {
      guard->abandon();
      return fail(respond, admitted.error());
    }
    int64_t now = d.clock.now_ms();
    Refund rf;
    rf.id = refund_id_for(mid, key);
    rf.payment_id = p.id;
    rf.merchant_id = mid;
    rf.idempotency_key = key;
    rf.amount_minor = in->amount_minor;  // 0 = all refundable, resolved by the store
    rf.currency = p.currency;
    rf.status = RefundStatus::processing;
    rf.created_ms = now;
    rf.updated_ms = now;
    std::string tp = traceparent_of(req);
    AcceptRefund cmd;
    cmd.refund = rf;
    cmd.requested = make_refund_event(rf, event_types::refund_requested, kGatewaySource, now, tp);
    cmd.record = IdempotencyRecord{mid, key, fp, 202, refund_json(rf), rf.id, now};
    cmd.render = [](const Refund& r) { return refund_json(r); };
    std::string k = key;
    std::string fallback = cmd.record.response_body;
    d.intake.accept_refund(std::move(cmd), [this, respond, guard, mid, k, fp, fallback](Result<AcceptOutcome> r) {
      if (!r) {
        guard->abandon();
        return fail(respond, r.error());
      }
      if (!r->created) {
        guard->finish(r->record, d.clock.now_ms());
        return respond(r->record.fingerprint == fp ? replay(r->record) : mismatch());
      }
      IdempotencyRecord rec = r->record;
      if (rec.response_body.empty()) {
        rec.merchant_id = mid; rec.key = k; rec.fingerprint = fp; rec.http_status = 202; rec.response_body = fallback;
      }
      guard->finish(rec, d.clock.now_ms());
      idem_counter("new").inc();
      respond(json_response(202, rec.response_body));
    });
  }

  // ---- reads --------------------------------------------------------------------------
  void get_payment(const Ctx& ctx, const Respond& respond) {
    auto p = d.payments.get_payment(ctx.merchant.id, ctx.param);
    if (!p) return fail(respond, p.error());
    if (!p.value()) return fail(respond, Error::not_found("no such payment: " + ctx.param));
    respond(json_response(200, payment_json(*p.value())));
  }

  void list_payments(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    std::optional<PaymentStatus> status;
    if (auto it = req.query.find("status"); it != req.query.end()) {
      status = parse_payment_status(it->second);
      if (!status) return fail(respond, Error::invalid("parameter_invalid", "status must be processing, succeeded or failed", "status"));
    }
    auto page = parse_page(req.query);
    if (!page) return fail(respond, page.error());
    auto list = d.payments.list_payments(ctx.merchant.id, status, *page);
    if (!list) return fail(respond, list.error());
    std::vector<std::string> items;
    for (const auto& p : list.value()) items.push_back(payment_json(p));
    bool more = false;
    if (!list->empty() && int(list->size()) >= page->limit) {
      auto next = d.payments.list_payments(ctx.merchant.id, status, Page{1, list->back().id});
      more = next && !next->empty();
    }
    respond(json_response(200, list_json(items, more)));
  }

  void get_refund(const Ctx& ctx, const Respond& respond) {
    auto r = d.payments.get_refund(ctx.merchant.id, ctx.param);
    if (!r) return fail(respond, r.error());
    if (!r.value()) return fail(respond, Error::not_found("no such refund: " + ctx.param));
    respond(json_response(200, refund_json(*r.value())));
  }

  void balance(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto b = d.payments.balances(ctx.merchant.id);
    if (!b) return fail(respond, b.error());
    std::string s = R"({"object":"balance","available":[)";
    for (size_t i = 0; i < b->size(); ++i) {
      if (i) s += ',';
      s += R"({"currency":")" + (*b)[i].currency + R"(","amount":)" + std::to_string((*b)[i].available_minor) + "}";
    }
    s += "]}";
    respond(json_response(200, s));
  }

  void ledger_entries(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto it = req.query.find("payment_id");
    if (it == req.query.end() || it->second.empty())
      return fail(respond, Error::invalid("parameter_missing", "missing required parameter: payment_id", "payment_id"));
    auto p = d.payments.get_payment(ctx.merchant.id, it->second);
    if (!p) return fail(respond, p.error());
    if (!p.value()) return fail(respond, Error::not_found("no such payment: " + it->second));
    auto es = d.payments.entries_for_payment(ctx.merchant.id, it->second);
    if (!es) return fail(respond, es.error());
    std::vector<std::string> items;
    for (const auto& e : es.value()) items.push_back(journal_entry_json(e));
    respond(json_response(200, list_json(items, false)));
  }

  // ---- webhook endpoints --------------------------------------------------------------
  // SPEC §3: the URL must reach allowed (global) addresses only. A name is resolved here,
  // bounded, and every address checked; a name that does not resolve now is refused too
  // (nothing could be checked). The sender resolves and checks again at every attempt.
  Result<void> check_endpoint_target(const HttpUrl& t) {
    if (t.ip) return cfg.webhook_targets.check(*t.ip);
    auto unresolvable = [&](const std::string& why) {
      return Error::invalid("url_unresolvable", "url host " + t.host + " could not be resolved: " + why, "url");
    };
    if (!d.resolver) return unresolvable("no resolver is configured");
    auto addrs = d.resolver->resolve(t.host, std::chrono::milliseconds(std::max<int64_t>(1, cfg.webhook_resolve_timeout_ms)));
    if (!addrs) return unresolvable(addrs.error().message);
    if (addrs->empty()) return unresolvable("no addresses");
    for (const auto& a : *addrs) {
      if (auto c = cfg.webhook_targets.check(a); !c) {
        Error e = c.error();
        e.message = "url host " + t.host + " resolves to " + a.to_string() + "; " + e.message;
        return e;
      }
    }
    return ok();
  }

  void create_endpoint(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto in = parse_endpoint_request(req.body, cfg.json_max_depth);
    if (!in) return fail(respond, in.error());
    if (auto t = check_endpoint_target(in->target); !t) return fail(respond, t.error());
    WebhookEndpoint e;
    e.id = random_token("we_", 12);
    e.merchant_id = ctx.merchant.id;
    e.url = in->url;
    e.secret = "whsec_" + base64_encode(random_bytes(32));
    e.enabled_events = in->enabled_events;
    e.created_ms = d.clock.now_ms();
    {
      std::lock_guard lk(endpoint_mu);
      auto existing = d.endpoints.list_endpoints(ctx.merchant.id);
      if (!existing) return fail(respond, existing.error());
      if (existing->size() >= cfg.max_endpoints_per_merchant)
        return fail(respond, Error::unprocessable("endpoint_limit_reached",
                                                  "at most " + std::to_string(cfg.max_endpoints_per_merchant) +
                                                      " webhook endpoints per merchant; delete one first"));
      if (auto r = d.endpoints.create_endpoint(e); !r) return fail(respond, r.error());
    }
    respond(json_response(201, endpoint_json(e, true)));
  }
  void list_endpoints(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto l = d.endpoints.list_endpoints(ctx.merchant.id);
    if (!l) return fail(respond, l.error());
    std::vector<std::string> items;
    for (const auto& e : l.value()) items.push_back(endpoint_json(e, false));
    respond(json_response(200, list_json(items, false)));
  }
  void get_endpoint(const Ctx& ctx, const Respond& respond) {
    auto e = d.endpoints.get_endpoint(ctx.merchant.id, ctx.param);
    if (!e) return fail(respond, e.error());
    if (!e.value()) return fail(respond, Error::not_found("no such webhook endpoint: " + ctx.param));
    respond(json_response(200, endpoint_json(*e.value(), false)));
  }
  // POST /v1/webhook_endpoints/{id}: url (checked as on create), enabled_events, disabled.
  void update_endpoint(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto in = parse_endpoint_update_request(req.body, cfg.json_max_depth);
    if (!in) return fail(respond, in.error());
    if (in->url)
      if (auto t = check_endpoint_target(in->target); !t) return fail(respond, t.error());
    EndpointUpdate u;
    u.url = in->url;
    u.enabled_events = in->enabled_events;
    u.disabled = in->disabled;
    auto e = d.endpoints.update_endpoint(ctx.merchant.id, ctx.param, u);
    if (!e) return fail(respond, e.error());
    if (!e.value()) return fail(respond, Error::not_found("no such webhook endpoint: " + ctx.param));
    respond(json_response(200, endpoint_json(*e.value(), false)));
  }
  // POST /v1/webhook_endpoints/{id}/rotate_secret: a new secret (shown once); the old one
  // keeps signing beside it until the overlap ends (expire_previous_after_s).
  void rotate_endpoint_secret(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto grace_s = parse_rotation_request(req.body, cfg.json_max_depth);
    if (!grace_s) return fail(respond, grace_s.error());
    EndpointUpdate u;
    u.new_secret = "whsec_" + base64_encode(random_bytes(32));
    u.previous_secret_expires_ms = d.clock.now_ms() + *grace_s * 1000;
    auto e = d.endpoints.update_endpoint(ctx.merchant.id, ctx.param, u);
    if (!e) return fail(respond, e.error());
    if (!e.value()) return fail(respond, Error::not_found("no such webhook endpoint: " + ctx.param));
    log::info("webhook secret rotated", {{"merchant_id", ctx.merchant.id}, {"endpoint_id", ctx.param}});
    respond(json_response(200, endpoint_json(*e.value(), true)));
  }
  void delete_endpoint(const Ctx& ctx, const Respond& respond) {
    auto r = d.endpoints.delete_endpoint(ctx.merchant.id, ctx.param);
    if (!r) return fail(respond, r.error());
    if (!r.value()) return fail(respond, Error::not_found("no such webhook endpoint: " + ctx.param));
    respond(json_response(200, R"({"id":")" + ctx.param + R"(","object":"webhook_endpoint","deleted":true})"));
  }

  // ---- events -------------------------------------------------------------------------
  void list_events(const Ctx& ctx, const HttpRequest& req, const Respond& respond) {
    auto page = parse_page(req.query);
    if (!page) return fail(respond, page.error());
    auto l = d.events.list_events(ctx.merchant.id, *page);
    if (!l) return fail(respond, l.error());
    std::vector<std::string> items;
    for (const auto& e : l.value()) items.push_back(merchant_event_json(e));
    bool more = false;
    if (!l->empty() && int(l->size()) >= page->limit) {
      auto next = d.events.list_events(ctx.merchant.id, Page{1, l->back().id});
      more = next && !next->empty();
    }
    respond(json_response(200, list_json(items, more)));
  }
  void get_event(const Ctx& ctx, const Respond& respond) {
    auto e = d.events.get_event(ctx.merchant.id, ctx.param);
    if (!e) return fail(respond, e.error());
    if (!e.value()) return fail(respond, Error::not_found("no such event: " + ctx.param));
    respond(json_response(200, merchant_event_json(*e.value())));
  }
  void redeliver(const Ctx& ctx, const Respond& respond) {
    auto r = d.deliveries.redeliver(ctx.merchant.id, ctx.param, d.clock.now_ms());
    if (!r) return fail(respond, r.error());
    if (!r.value()) return fail(respond, Error::not_found("no such event: " + ctx.param));
    respond(json_response(202, R"({"id":")" + ctx.param + R"(","object":"event","redelivery":"scheduled"})"));
  }
};

void Api::Impl::respond_merchant_created(const Merchant& m, const std::string& api_key, const Respond& respond) {
  // Built by hand from validated strings: id/api_key are hex, the name is JSON-escaped.
  std::string name;
  for (unsigned char c : m.name) {
    if (c == '"' || c == '\\') { name += '\\'; name += char(c); }
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); name += buf; }
    else name += char(c);
  }
  respond(json_response(201, R"({"id":")" + m.id + R"(","object":"merchant","name":")" + name +
                                 R"(","api_key":")" + api_key + R"(","created":)" + std::to_string(m.created_ms) + "}"));
}

Api::Api(ApiDeps deps, ApiConfig config) : impl_(std::make_unique<Impl>(deps, std::move(config))) {}
Api::~Api() = default;

Result<std::vector<Merchant>> Api::warm() {
  auto all = impl_->d.merchants.all_merchants();
  if (!all) return all.error();
  const int64_t now_ms = impl_->d.clock.now_ms();
  for (const auto& m : all.value())
    if (m.key_valid_at(now_ms)) impl_->remember(m);
  return all;
}

void Api::handle(HttpRequest req, Respond respond) {
  // The Respond is shared so an exception after it was handed on can still answer once.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto shared = std::make_shared<Respond>(std::move(respond));
  Respond guarded = [once, shared](HttpResponse r) {
    if (!once->exchange(true)) (*shared)(std::move(r));
  };
  try {
    impl_->handle(std::move(req), guarded);
  } catch (const std::exception& e) {
    log::error("api handler threw", {{"error", e.what()}});
    guarded(json_response(500, error_json("api_error", "internal_error", "internal error", "")));
  } catch (...) {
    guarded(json_response(500, error_json("api_error", "internal_error", "internal error", "")));
  }
}

void Api::set_ready(bool r) { impl_->ready = r; }
void Api::set_draining(bool d) {
  impl_->draining = d;
  if (d) impl_->flush_waiters();
}
void Api::notify_terminal(const std::vector<std::string>& ids) { impl_->notify(ids); }
size_t Api::waiting() const {
  std::lock_guard lk(impl_->wmu);
  return impl_->waiters.size();
}

const std::vector<RouteSpec>& Api::routes() {
  static const std::vector<RouteSpec> r = [] {
    std::vector<RouteSpec> out;
    for (const auto& d : route_table()) out.push_back({d.method, d.path});
    return out;
  }();
  return r;
}

}  // namespace ps
