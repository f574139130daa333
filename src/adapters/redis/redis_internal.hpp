// Internal helpers shared by the Redis adapters' translation units (not part of the
// contract in redis.hpp; still free of hiredis includes).
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/redis/redis.hpp"

namespace ps::redis_detail {

// A Lua script run with EVALSHA (its SHA-1 is computed locally), falling back to EVAL when
// the server answers NOSCRIPT (after a restart or SCRIPT FLUSH); EVAL caches it again.
class Script {
 public:
  explicit Script(std::string source);
  Result<RedisClient::Reply> run(RedisClient& redis, const std::vector<std::string>& keys,
                                 const std::vector<std::string>& args) const;
 private:
  std::string source_;
  std::string sha1_;
};

// A key component that cannot collide with another split of the same characters:
// "<length>:<text>" ("mer_c" + "x:y" and "mer_c:x" + "y" give different keys).
inline std::string part(std::string_view s) { return std::to_string(s.size()) + ":" + std::string(s); }

// %.17g: a double that parses back to the same bits (Lua's tonumber uses strtod).
std::string exact(double v);

// Logs at most once per second per call site (an outage would otherwise log every call);
// the failures themselves are counted by RedisClient in paystream_redis_errors_total.
void warn_throttled(std::atomic<int64_t>& last_ms, std::string_view msg, const std::string& target,
                    const Error& e);

}  // namespace ps::redis_detail
