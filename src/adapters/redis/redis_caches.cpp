// Read-through caches on the LRU Redis target: API-key sessions and payment status.
// A cache failure never fails a request: it is counted (RedisClient) and the wrapped
// durable store answers. Hit/miss: paystream_cache_requests_total{namespace,result}.
#include <algorithm>
#include <boost/json.hpp>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "adapters/redis/redis.hpp"
#include "common/log.hpp"
#include "adapters/redis/redis_internal.hpp"
#include "common/metrics.hpp"
#include "domain/event.hpp"

namespace ps {
namespace json = boost::json;
using redis_detail::exact;
using redis_detail::part;
using redis_detail::Script;
using Reply = RedisClient::Reply;

namespace {

metrics::Counter& cache_counter(const char* ns, const char* result) {
  return metrics::registry().counter("paystream_cache_requests_total", "Cache lookups by namespace and result",
                                     {{"namespace", ns}, {"result", result}});
}

int64_t ms(std::chrono::seconds s) { return std::max<int64_t>(1, std::chrono::milliseconds(s).count()); }

// --- Merchant codec (compact JSON; the rate is a %.17g string so it round-trips exactly) --

std::string encode_merchant(const Merchant& m) {
  json::object o;
  o["id"] = m.id;
  o["name"] = m.name;
  o["h"] = m.api_key_hash;
  o["rate"] = exact(m.rate_limit_per_s);
  o["burst"] = m.rate_limit_burst;
  o["created"] = m.created_ms;
  o["exp"] = m.key_expires_ms;
  return json::serialize(o);
}

std::optional<Merchant> decode_merchant(const std::string& s) {
  json::error_code ec;
  json::value v = json::parse(s, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  auto* id = o.if_contains("id");
  auto* name = o.if_contains("name");
  auto* h = o.if_contains("h");
  auto* rate = o.if_contains("rate");
  auto* burst = o.if_contains("burst");
  auto* created = o.if_contains("created");
  auto* exp = o.if_contains("exp");  // absent in sessions cached before keys could rotate: a miss
  if (!exp || !exp->is_int64()) return std::nullopt;
  if (!id || !id->is_string() || !name || !name->is_string() || !h || !h->is_string() || !rate ||
      !rate->is_string() || !burst || !burst->is_int64() || !created || !created->is_int64())
    return std::nullopt;
  Merchant m;
  m.id = std::string(id->get_string());
  m.name = std::string(name->get_string());
  m.api_key_hash = std::string(h->get_string());
  std::string r(rate->get_string());
  char* end = nullptr;
  m.rate_limit_per_s = std::strtod(r.c_str(), &end);
  if (r.empty() || *end != '\0') return std::nullopt;
  m.rate_limit_burst = burst->get_int64();
  m.created_ms = created->get_int64();
  m.key_expires_ms = exp->get_int64();
  return m;
}

// SET with a TTL for many keys in one round trip. KEYS: the keys; ARGV[1] TTL (ms), then
// the values in key order.
const Script& mset_px_script() {
  static const Script s(R"lua(
for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1]) end
return #KEYS
)lua");
  return s;
}
// The same, but only for keys that do not exist (SET NX).
const Script& msetnx_px_script() {
  static const Script s(R"lua(
for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1], 'NX') end
return #KEYS
)lua");
  return s;
}
constexpr size_t kWarmBatch = 100;

std::atomic<int64_t> cache_warned{0};

}  // namespace

// ======================================================================================
// Sessions: key hash -> merchant
// ======================================================================================

RedisCachedMerchants::RedisCachedMerchants(MerchantStore& inner, RedisClient& cache, std::chrono::seconds session_ttl)
    : inner_(inner), cache_(cache), ttl_(session_ttl) {}

namespace {
std::string session_key(RedisClient& c, const std::string& key_hash) {
  return c.options().key_prefix + "session:" + key_hash;
}
}  // namespace

Result<void> RedisCachedMerchants::create_merchant(const Merchant& m) {
  auto r = inner_.create_merchant(m);
  if (!r) return r;
  auto set = cache_.command({"SET", session_key(cache_, m.api_key_hash), encode_merchant(m), "PX",
                             std::to_string(ms(ttl_))});
  if (!set) redis_detail::warn_throttled(cache_warned, "session cache write failed", cache_.options().name, set.error());
  return r;
}

Result<std::optional<Merchant>> RedisCachedMerchants::find_merchant_by_key_hash(const std::string& key_hash) {
  static auto& hit = cache_counter("session", "hit");
  static auto& miss = cache_counter("session", "miss");
  const std::string key = session_key(cache_, key_hash);
  auto got = cache_.command({"GET", key});
  if (got && got->type == Reply::Type::string) {
    if (auto m = decode_merchant(got->str); m && m->api_key_hash == key_hash) {
      hit.inc();
      return std::optional<Merchant>(std::move(*m));
    }
  } else if (!got) {
    redis_detail::warn_throttled(cache_warned, "session cache read failed; reading through", cache_.options().name,
                                 got.error());
  }
  miss.inc();
  auto found = inner_.find_merchant_by_key_hash(key_hash);
  // Unknown keys are not cached: a merchant created later must authenticate at once.
  if (found && found->has_value() && got.ok()) {
    // NX: a rotation's write (which carries the new expiry) is never overwritten with what
    // this lookup read before it; an entry that did not decode (older format) is replaced.
    std::vector<std::string> set{"SET", key, encode_merchant(**found), "PX", std::to_string(ms(ttl_))};
    if (got->type != Reply::Type::string) set.push_back("NX");
    auto done = cache_.command(set);
    (void)done;  // failures are counted by the client; the answer is already known
  }
  return found;
}

Result<std::optional<std::vector<Merchant>>> RedisCachedMerchants::rotate_api_key(const std::string& merchant_id,
                                                                                const std::string& new_key_hash,
                                                                                int64_t now_ms,
                                                                                int64_t old_keys_expire_ms) {
  auto r = inner_.rotate_api_key(merchant_id, new_key_hash, now_ms, old_keys_expire_ms);
  if (!r || !r->has_value() || (*r)->empty()) return r;
  // The other keys' sessions carry their old expiry: overwrite them (plain SET) with the
  // new one. Read-throughs and warm-ups only SET NX, so one that read the store before the
  // rotation committed cannot put the old expiry back after this write.
  std::vector<std::string> keys, args{std::to_string(ms(ttl_))};
  for (const auto& m : **r) {
    keys.push_back(session_key(cache_, m.api_key_hash));
    args.push_back(encode_merchant(m));
  }
  auto set = mset_px_script().run(cache_, keys, args);
  for (int attempt = 1; !set && attempt < 3; ++attempt) {  // rare (an admin call): worth a short retry
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    set = mset_px_script().run(cache_, keys, args);
  }
  if (!set)
    log::error("API key rotated, but the cached sessions of its other keys could not be replaced: other gateways "
               "may accept them past their expiry until the session TTL",
               {{"merchant_id", merchant_id}, {"error", set.error().message}});
  return r;
}

Result<std::vector<Merchant>> RedisCachedMerchants::all_merchants() {
  auto all = inner_.all_merchants();
  if (!all) return all;
  const auto& v = all.value();
  for (size_t i = 0; i < v.size(); i += kWarmBatch) {
    std::vector<std::string> keys, args{std::to_string(ms(ttl_))};
    for (size_t j = i; j < std::min(v.size(), i + kWarmBatch); ++j) {
      keys.push_back(session_key(cache_, v[j].api_key_hash));
      args.push_back(encode_merchant(v[j]));
    }
    auto r = msetnx_px_script().run(cache_, keys, args);  // NX: see find_merchant_by_key_hash
    if (!r) {
      redis_detail::warn_throttled(cache_warned, "session cache warm-up failed", cache_.options().name, r.error());
      break;  // the cache is optional: stop warming, keep the answer
    }
  }
  return all;
}

// ======================================================================================
// Payment status
// ======================================================================================
// One hash per payment: u = updated_ms, d = the payment (encode_payload JSON). A write
// never replaces a newer version: put() (status change) overwrites unless the stored one
// is newer; a fill after a miss only writes when nothing newer-or-equal is there, so a
// slow read-through cannot undo a concurrent put().

namespace {

const Script& payment_put_script() {
  // KEYS[1]; ARGV: updated_ms, payment JSON, TTL (ms), mode ("put" | "fill")
  static const Script s(R"lua(
local u = tonumber(redis.call('HGET', KEYS[1], 'u'))
local nu = tonumber(ARGV[1])
if u and (u > nu or (ARGV[4] == 'fill' and u == nu)) then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
)lua");
  return s;
}

std::string payment_key(RedisClient& c, const std::string& merchant_id, const std::string& payment_id) {
  return c.options().key_prefix + "payment:" + part(merchant_id) + payment_id;
}

}  // namespace

RedisCachedPayments::RedisCachedPayments(PaymentQueries& inner, RedisClient& cache,
                                         std::chrono::seconds processing_ttl, std::chrono::seconds terminal_ttl)
    : inner_(inner), cache_(cache), processing_ttl_(processing_ttl), terminal_ttl_(terminal_ttl) {}

void RedisCachedPayments::put(const std::vector<Payment>& changed) {
  for (const auto& p : changed) {
    const auto ttl = p.status == PaymentStatus::processing ? processing_ttl_ : terminal_ttl_;
    auto r = payment_put_script().run(cache_, {payment_key(cache_, p.merchant_id, p.id)},
                                      {std::to_string(p.updated_ms), encode_payload(EventPayload{p, std::nullopt}),
                                       std::to_string(ms(ttl)), "put"});
    if (!r) {
      // A stale entry lives at most processing_ttl; drop it so reads go to the store.
      (void)cache_.command({"DEL", payment_key(cache_, p.merchant_id, p.id)});
      redis_detail::warn_throttled(cache_warned, "payment cache write-through failed", cache_.options().name,
                                   r.error());
    }
  }
}

Result<size_t> RedisCachedPayments::warm(const std::vector<std::string>& merchant_ids, size_t per_merchant,
                                         size_t max_total) {
  size_t written = 0;
  for (const auto& merchant_id : merchant_ids) {
    if (written >= max_total) break;
    Page page;
    page.limit = int(std::clamp<size_t>(std::min(per_merchant, max_total - written), 1, 100));
    auto newest = inner_.list_payments(merchant_id, std::nullopt, page);
    if (!newest) return newest.error();
    for (const auto& p : *newest) {
      if (p.status == PaymentStatus::processing) continue;  // never served from the cache
      auto r = payment_put_script().run(cache_, {payment_key(cache_, p.merchant_id, p.id)},
                                        {std::to_string(p.updated_ms), encode_payload(EventPayload{p, std::nullopt}),
                                         std::to_string(ms(terminal_ttl_)), "fill"});
      if (!r) {
        redis_detail::warn_throttled(cache_warned, "payment cache warm-up failed", cache_.options().name, r.error());
        return written;
      }
      ++written;
    }
  }
  return written;
}

Result<std::optional<Payment>> RedisCachedPayments::get_payment(const std::string& merchant_id,
                                                                const std::string& payment_id) {
  static auto& hit = cache_counter("payment", "hit");
  static auto& miss = cache_counter("payment", "miss");
  const std::string key = payment_key(cache_, merchant_id, payment_id);
  auto got = cache_.command({"HGET", key, "d"});
  if (got && got->type == Reply::Type::string) {
    auto decoded = decode_payload(got->str);
    // A cached processing status is never served: it may have turned terminal a moment
    // ago in another process (the ledger's write-through lands after its commit, and a
    // Prefer: wait waiter is woken by that commit), so processing reads go to the store.
    if (decoded && decoded->payment && decoded->payment->merchant_id == merchant_id &&
        decoded->payment->id == payment_id && decoded->payment->status != PaymentStatus::processing) {
      hit.inc();
      return std::optional<Payment>(std::move(*decoded->payment));
    }
  } else if (!got) {
    redis_detail::warn_throttled(cache_warned, "payment cache read failed; reading through", cache_.options().name,
                                 got.error());
  }
  miss.inc();
  auto found = inner_.get_payment(merchant_id, payment_id);
  if (found && found->has_value() && got.ok()) {
    const Payment& p = **found;
    const auto ttl = p.status == PaymentStatus::processing ? processing_ttl_ : terminal_ttl_;
    (void)payment_put_script().run(cache_, {key},
                                   {std::to_string(p.updated_ms), encode_payload(EventPayload{p, std::nullopt}),
                                    std::to_string(ms(ttl)), "fill"});
  }
  return found;
}

Result<std::vector<Payment>> RedisCachedPayments::list_payments(const std::string& merchant_id,
                                                                std::optional<PaymentStatus> status,
                                                                const Page& page) {
  return inner_.list_payments(merchant_id, status, page);
}

Result<std::optional<Refund>> RedisCachedPayments::get_refund(const std::string& merchant_id,
                                                              const std::string& refund_id) {
  return inner_.get_refund(merchant_id, refund_id);
}

Result<std::vector<Balance>> RedisCachedPayments::balances(const std::string& merchant_id) {
  return inner_.balances(merchant_id);
}

Result<std::vector<JournalEntry>> RedisCachedPayments::entries_for_payment(const std::string& merchant_id,
                                                                           const std::string& payment_id) {
  return inner_.entries_for_payment(merchant_id, payment_id);
}

}  // namespace ps
