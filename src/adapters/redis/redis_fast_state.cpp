// The durable-target fast state in Redis: idempotency records, token buckets and velocity
// windows. Each operation is one Lua script, so it is atomic across every gateway and
// worker sharing the instance. Semantics mirror the in-memory adapters
// (src/adapters/memory) exactly; the caller's now_ms is the clock for every decision
// (expiry, refill, window), while Redis' own key TTL (real time) only reclaims memory of
// keys nobody asks about any more.
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "adapters/redis/redis.hpp"
#include "adapters/redis/redis_internal.hpp"
#include "domain/ids.hpp"

namespace ps {
namespace json = boost::json;
using redis_detail::exact;
using redis_detail::part;
using redis_detail::Script;
using Reply = RedisClient::Reply;

// ======================================================================================
// Idempotency
// ======================================================================================
// One hash per (merchant, key): s = "i" (in flight) | "d" (done), f = fingerprint,
// x = logical expiry (caller's ms), r = the record (JSON, done only).

namespace {

const Script& begin_script() {
  // KEYS[1]; ARGV: now_ms, fingerprint, in-flight expiry (ms), in-flight TTL (ms)
  static const Script s(R"lua(
local e = redis.call('HMGET', KEYS[1], 's', 'f', 'x', 'r')
local x = tonumber(e[3])
if e[1] and x and x > tonumber(ARGV[1]) then
  return {e[1], e[2] or '', e[4] or ''}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'i', 'f', ARGV[2], 'x', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'started'}
)lua");
  return s;
}

const Script& finish_script() {
  // KEYS[1]; ARGV: fingerprint, expiry (ms), record JSON, TTL (ms)
  static const Script s(R"lua(
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'd', 'f', ARGV[1], 'x', ARGV[2], 'r', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
)lua");
  return s;
}

const Script& abandon_script() {
  static const Script s(R"lua(
if redis.call('HGET', KEYS[1], 's') == 'i' then return redis.call('DEL', KEYS[1]) end
return 0
)lua");
  return s;
}

std::string idem_key(RedisClient& r, const std::string& merchant_id, const std::string& key) {
  return r.options().key_prefix + "idem:" + part(merchant_id) + key;
}

std::string encode_record(const IdempotencyRecord& rec) {
  json::object o;
  o["m"] = rec.merchant_id;
  o["k"] = rec.key;
  o["f"] = rec.fingerprint;
  o["s"] = rec.http_status;
  o["b"] = rec.response_body;
  o["r"] = rec.resource_id;
  o["c"] = rec.created_ms;
  return json::serialize(o);
}

std::optional<IdempotencyRecord> decode_record(const std::string& s) {
  json::error_code ec;
  json::value v = json::parse(s, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  auto str = [&](const char* k, std::string& out) {
    auto* f = o.if_contains(k);
    if (!f || !f->is_string()) return false;
    out = std::string(f->get_string());
    return true;
  };
  auto i64 = [&](const char* k, int64_t& out) {
    auto* f = o.if_contains(k);
    if (!f || !f->is_int64()) return false;
    out = f->get_int64();
    return true;
  };
  IdempotencyRecord rec;
  int64_t status = 0;
  if (!str("m", rec.merchant_id) || !str("k", rec.key) || !str("f", rec.fingerprint) || !i64("s", status) ||
      !str("b", rec.response_body) || !str("r", rec.resource_id) || !i64("c", rec.created_ms))
    return std::nullopt;
  rec.http_status = int(status);
  return rec;
}

std::atomic<int64_t> idem_warned{0};
constexpr int64_t kMaxInFlightMs = 5 * 60 * 1000;  // as InMemoryIdempotencyCache's default

}  // namespace

RedisIdempotencyCache::RedisIdempotencyCache(RedisClient& redis, std::chrono::seconds ttl,
                                             std::chrono::milliseconds in_flight_lease)
    : redis_(redis), ttl_(ttl), lease_(std::max(std::chrono::milliseconds(1), in_flight_lease)) {}

Result<IdempotencyCache::Begin> RedisIdempotencyCache::begin(const std::string& merchant_id,
                                                             const std::string& key,
                                                             const std::string& fingerprint, int64_t now_ms) {
  const int64_t ttl_ms = std::max<int64_t>(1, std::chrono::milliseconds(ttl_).count());
  // A request that never finishes nor abandons (crashed gateway) pins its key at most this long.
  const int64_t in_flight_ms = std::min({kMaxInFlightMs, ttl_ms, int64_t(lease_.count())});
  Begin started;
  started.state = State::started;
  started.fingerprint = fingerprint;

  auto r = begin_script().run(redis_, {idem_key(redis_, merchant_id, key)},
                              {std::to_string(now_ms), fingerprint, std::to_string(now_ms + in_flight_ms),
                               std::to_string(in_flight_ms)});
  if (!r) {
    // Fast state is not authoritative: the caller goes on and the durable store's unique
    // (merchant, key) constraint decides; a finished request is replayed from there.
    redis_detail::warn_throttled(idem_warned, "redis idempotency begin failed; the durable store decides",
                                 redis_.options().name, r.error());
    return started;
  }
  const auto& el = r->elements;
  if (r->type != Reply::Type::array || el.empty() || el[0].str == "started") return started;
  Begin b;
  b.fingerprint = el.size() > 1 ? el[1].str : std::string();
  if (el[0].str == "d") {
    b.state = State::done;
    b.record = el.size() > 2 ? decode_record(el[2].str) : std::nullopt;
    if (!b.record) return started;  // unreadable record: ask the durable store
  } else {
    b.state = State::in_flight;
  }
  return b;
}

void RedisIdempotencyCache::finish(const IdempotencyRecord& record, int64_t now_ms) {
  const int64_t ttl_ms = std::max<int64_t>(1, std::chrono::milliseconds(ttl_).count());
  auto r = finish_script().run(redis_, {idem_key(redis_, record.merchant_id, record.key)},
                               {record.fingerprint, std::to_string(now_ms + ttl_ms), encode_record(record),
                                std::to_string(ttl_ms)});
  if (!r)
    redis_detail::warn_throttled(idem_warned, "redis idempotency finish failed; retries replay from the durable store",
                                 redis_.options().name, r.error());
}

void RedisIdempotencyCache::abandon(const std::string& merchant_id, const std::string& key) {
  auto r = abandon_script().run(redis_, {idem_key(redis_, merchant_id, key)}, {});
  if (!r)
    redis_detail::warn_throttled(idem_warned, "redis idempotency abandon failed; the key frees itself after its TTL",
                                 redis_.options().name, r.error());
}

// ======================================================================================
// Rate limiter
// ======================================================================================
// One hash per bucket: t = tokens, l = last refill (caller's ms), r = rate, b = burst; all
// %.17g strings so the Lua doubles are exactly the C++ ones. The script performs the same
// arithmetic, in the same order, as InMemoryRateLimiter::take and returns (allowed,
// tokens left); the header fields are then derived here exactly as there.

namespace {

const Script& take_script() {
  // KEYS[1]; ARGV: now_ms, rate/s, burst, TTL slack (ms), max TTL (ms)
  static const Script s(R"lua(
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local eps = 1e-9
local h = redis.call('HMGET', KEYS[1], 't', 'l', 'r', 'b')
local tokens, last, orate, oburst = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
if not (tokens and last and orate and oburst) then
  tokens, last, orate, oburst = burst, now, rate, burst
end
-- refill with the bucket's previous configuration; the new one applies from now on
local elapsed = math.max(0, now - last)
tokens = math.min(oburst, tokens + elapsed * orate / 1000.0)
tokens = math.min(tokens, burst)
last = math.max(last, now)
local allowed = 0
if tokens + eps >= 1.0 then
  tokens = math.max(0.0, tokens - 1.0)
  allowed = 1
end
local ts = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 't', ts, 'l', string.format('%.17g', last), 'r', ARGV[2], 'b', ARGV[3])
-- an idle bucket is dropped once it would be full again (dropping a full bucket is loss-free)
local ttl = math.ceil((burst - tokens) / rate * 1000) + tonumber(ARGV[4])
local max = tonumber(ARGV[5])
if ttl ~= ttl or ttl > max then ttl = max end
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {allowed, ts}
)lua");
  return s;
}

// Same clamping as InMemoryRateLimiter (reported seconds in [0, 1e9]).
constexpr double kTokenEpsilon = 1e-9;
constexpr int64_t kMaxReportedS = 1'000'000'000;
int64_t clamp_to(double v, int64_t hi) {
  if (v != v || v >= double(hi)) return hi;
  if (!(v > 0)) return 0;
  return int64_t(v);
}
int64_t clamp_seconds(double s) { return clamp_to(s, kMaxReportedS); }

// Key TTL beyond "full again": absorbs clock skew between gateways and slow callers.
constexpr int64_t kBucketTtlSlackMs = 60'000;
// Buckets that need longer than this to refill (rates far below the API's minimum, or
// huge bursts at low rates) are forgotten after it when idle: bounded memory wins.
constexpr int64_t kBucketMaxTtlMs = int64_t(30) * 24 * 3600 * 1000;

std::atomic<int64_t> rl_warned{0};

}  // namespace

RedisRateLimiter::RedisRateLimiter(RedisClient& redis) : redis_(redis) {}

Result<RateLimiter::Decision> RedisRateLimiter::take(const std::string& bucket_key, double rate_per_s,
                                                     int64_t burst, int64_t now_ms) {
  if (!(rate_per_s > 0) || !std::isfinite(rate_per_s) || burst < 1)
    return Error::invalid("rate_limit_invalid", "rate must be finite and > 0, and burst >= 1");
  Decision d;
  d.limit = burst;
  auto r = take_script().run(redis_, {redis_.options().key_prefix + "rl:" + bucket_key},
                             {std::to_string(now_ms), exact(rate_per_s), std::to_string(burst),
                              std::to_string(kBucketTtlSlackMs), std::to_string(kBucketMaxTtlMs)});
  double tokens = 0;
  bool parsed = false;
  if (r && r->type == Reply::Type::array && r->elements.size() == 2) {
    char* end = nullptr;
    const std::string& ts = r->elements[1].str;
    tokens = std::strtod(ts.c_str(), &end);
    parsed = !ts.empty() && end && *end == '\0';
    d.allowed = r->elements[0].integer == 1;
  }
  if (!parsed) {
    // Fail open: a Redis outage must not take the API down (counted by RedisClient in
    // paystream_redis_errors_total). Report as if one token of a full bucket was taken.
    redis_detail::warn_throttled(rl_warned, "redis rate limiter failed; allowing (fail open)",
                                 redis_.options().name,
                                 r ? Error::internal("unexpected rate-limit script reply") : r.error());
    d.allowed = true;
    tokens = double(burst) - 1.0;
  }
  if (!d.allowed)
    d.retry_after_s = std::max<int64_t>(1, clamp_seconds(std::ceil((1.0 - tokens) / rate_per_s)));
  d.remaining = clamp_to(std::floor(tokens + kTokenEpsilon), burst);
  d.reset_s = clamp_seconds(std::ceil(std::max(0.0, double(burst) - tokens - kTokenEpsilon) / rate_per_s));
  return d;
}

// ======================================================================================
// Velocity counter
// ======================================================================================
// One sorted set per key: member = a unique hit id, score = the hit's now_ms.

namespace {

const Script& hit_script() {
  // KEYS[1]; ARGV: now_ms, member, cutoff (now - window), max hits kept, TTL (ms)
  static const Script s(R"lua(
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[4])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
)lua");
  return s;
}

// As InMemoryVelocityCounter's default: counts saturate here.
constexpr int64_t kMaxHitsPerKey = 100'000;
// The key outlives its newest hit's window by this much (clock skew between processes).
constexpr int64_t kWindowTtlSlackMs = 1'000;

// Hit ids unique across processes: a random process nonce plus a counter.
std::string next_member(int64_t now_ms) {
  static const std::string nonce = [] {
    std::string raw = random_bytes(8);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char c : raw) {
      out += hex[c >> 4];
      out += hex[c & 15];
    }
    return out;
  }();
  static std::atomic<uint64_t> seq{0};
  return std::to_string(now_ms) + "-" + nonce + "-" + std::to_string(seq.fetch_add(1));
}

}  // namespace

RedisVelocityCounter::RedisVelocityCounter(RedisClient& redis) : redis_(redis) {}

Result<int64_t> RedisVelocityCounter::hit(const std::string& key, int64_t now_ms, int64_t window_ms) {
  if (window_ms <= 0) return Error::invalid("window_invalid", "velocity window must be positive", "window_ms");
  auto r = hit_script().run(redis_, {redis_.options().key_prefix + "vel:" + key},
                            {std::to_string(now_ms), next_member(now_ms), std::to_string(now_ms - window_ms),
                             std::to_string(kMaxHitsPerKey), std::to_string(window_ms + kWindowTtlSlackMs)});
  if (!r) return r.error();  // the fraud stage's own fallback applies
  if (r->type != Reply::Type::integer) return Error::internal("unexpected velocity script reply");
  return r->integer;
}

}  // namespace ps
