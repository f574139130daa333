// Shared by the Redis-specific tests: real servers from the environment (a missing
// variable fails the test, never skips it), a unique key prefix per client, metric reads.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "adapters/redis/redis.hpp"
#include "common/metrics.hpp"
#include "domain/ids.hpp"

namespace ps::redis_test {

// The URL in `var`, or "" after recording a failure (callers ASSERT on it).
inline std::string url_from(const char* var) {
  const char* v = std::getenv(var);
  if (!v || !*v) {
    ADD_FAILURE() << var << " is not set (scripts/test.sh starts the Redis instances and exports it)";
    return {};
  }
  return v;
}
inline std::string durable_url() { return url_from("PAYSTREAM_REDIS_URL"); }
inline std::string cache_url() { return url_from("PAYSTREAM_REDIS_CACHE_URL"); }

inline std::string unique_prefix() { return "pstest:" + random_token("", 8) + ":"; }

inline std::unique_ptr<RedisClient> open_client(const std::string& url, const std::string& name,
                                                const std::string& prefix, int timeout_ms = 5000,
                                                size_t pool = 4) {
  RedisOptions o;
  o.url = url;
  o.name = name;
  o.key_prefix = prefix;
  o.timeout_ms = timeout_ms;
  o.pool_size = pool;
  auto c = RedisClient::open(o);
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c.value()) : nullptr;
}

inline double errors_of(const std::string& target) {
  return metrics::registry().counter("paystream_redis_errors_total", "", {{"target", target}}).value();
}
inline double cache_count(const std::string& ns, const std::string& result) {
  return metrics::registry()
      .counter("paystream_cache_requests_total", "", {{"namespace", ns}, {"result", result}})
      .value();
}

// PTTL of a key (ms; -2 missing, -1 no TTL).
inline int64_t pttl(RedisClient& c, const std::string& key) {
  auto r = c.command({"PTTL", key});
  EXPECT_TRUE(r.ok());
  return r.ok() ? r->integer : -3;
}

// Deletes every key under the client's prefix.
inline void drop_prefix(RedisClient& c) {
  std::string cursor = "0";
  do {
    auto r = c.command({"SCAN", cursor, "MATCH", c.options().key_prefix + "*", "COUNT", "1000"});
    if (!r || r->elements.size() != 2) return;
    cursor = r->elements[0].str;
    for (const auto& k : r->elements[1].elements) (void)c.command({"DEL", k.str});
  } while (cursor != "0");
}

}  // namespace ps::redis_test
