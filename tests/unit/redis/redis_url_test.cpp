// Redis URL parsing (no server needed: RedisClient::open connects lazily). A password in
// the URL never appears in an error, also when the URL is malformed around it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "adapters/redis/redis.hpp"

namespace ps {
namespace {

Result<std::unique_ptr<RedisClient>> open_url(const std::string& url) {
  RedisOptions o;
  o.url = url;
  o.name = "test";
  return RedisClient::open(o);
}

TEST(RedisUrl, ParseErrorsNeverShowThePassword) {
  const std::string secret = "s3cr3t-P4ss";
  for (const std::string& url : std::vector<std::string>{
           "http://user:" + secret + "@127.0.0.1:6379",          // wrong scheme
           "rediss://:" + secret + "@127.0.0.1:6379",            // TLS scheme (unsupported)
           "redis://user:" + secret + "@127.0.0.1:notaport/0",   // bad port
           "redis://:" + secret + "@127.0.0.1:6379/x",           // bad database index
           "redis://user:" + secret + "/0",                      // '@' forgotten: read as host:port
           "redis://:" + secret + "@127.0.0.1:99999",            // port out of range
           secret + "@127.0.0.1:6379",                           // no scheme at all
       }) {
    auto r = open_url(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().code, "redis_url_invalid") << url;
    EXPECT_EQ(r.error().message.find(secret), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().param.find(secret), std::string::npos) << r.error().param;
  }
}

TEST(RedisUrl, ErrorsStillNameTheHost) {
  auto r = open_url("redis://:pw@cache.internal:70000");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("cache.internal"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("port"), std::string::npos) << r.error().message;
}

TEST(RedisUrl, ValidUrlsWithCredentialsOpen) {
  EXPECT_TRUE(open_url("redis://:pw@127.0.0.1:6390/2").ok());
  EXPECT_TRUE(open_url("redis://user:p@ss@127.0.0.1:6390").ok());   // the last '@' ends the credentials
  EXPECT_TRUE(open_url("redis://127.0.0.1").ok());
}

}  // namespace
}  // namespace ps
