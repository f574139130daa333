// parse_response(): the load worker's bounded response parser (complete, split at every
// byte, pipelined, keep-alive rules, the replay header, and every malformed or
// over-limit case), plus first_id_member().
#include "bench/http_response.hpp"

#include <gtest/gtest.h>

#include <string>

#include "bench/load_worker.hpp"

namespace ps::bench {
namespace {

const std::string kBody =
    R"({"id":"pay_0a093877c7015b88a647e157","object":"payment","amount":1000,"status":"processing"})";

std::string answer(const std::string& status_line, const std::string& headers, const std::string& body) {
  return status_line + "\r\n" + headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

const std::string kAccepted = answer("HTTP/1.1 202 Accepted",
                                     "Content-Type: application/json\r\nIdempotent-Replayed: true\r\n"
                                     "RateLimit-Limit: 10000000\r\n",
                                     kBody);

ParseResult parse(const std::string& s, ResponseHead& h, ResponseLimits l = {}) { return parse_response(s, h, l); }

TEST(HttpResponse, ParsesACompleteAnswer) {
  ResponseHead h;
  ASSERT_EQ(parse(kAccepted, h), ParseResult::complete);
  EXPECT_EQ(h.status, 202);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_TRUE(h.replayed);
  EXPECT_EQ(h.body_bytes, kBody.size());
  EXPECT_EQ(h.total(), kAccepted.size());
  EXPECT_EQ(kAccepted.substr(h.header_bytes), kBody);
  EXPECT_EQ(first_id_member(kAccepted.substr(h.header_bytes, h.body_bytes)), "pay_0a093877c7015b88a647e157");
}

TEST(HttpResponse, EveryPrefixIsIncompleteNeverMalformed) {
  for (size_t n = 0; n < kAccepted.size(); ++n) {
    ResponseHead h;
    EXPECT_EQ(parse(kAccepted.substr(0, n), h), ParseResult::incomplete) << n;
  }
}

TEST(HttpResponse, PipelinedBytesAfterTheMessageAreLeftAlone) {
  std::string two = kAccepted + kAccepted;
  ResponseHead h;
  ASSERT_EQ(parse(two, h), ParseResult::complete);
  EXPECT_EQ(h.total(), kAccepted.size());
  ASSERT_EQ(parse(two.substr(h.total()), h), ParseResult::complete);
}

TEST(HttpResponse, HeadersAreCaseInsensitiveAndTrimmed) {
  std::string s = "HTTP/1.1 409 Conflict\r\ncontent-LENGTH:  2 \r\nIDEMPOTENT-REPLAYED:\tfalse\r\n\r\n{}";
  ResponseHead h;
  ASSERT_EQ(parse(s, h), ParseResult::complete);
  EXPECT_EQ(h.status, 409);
  EXPECT_FALSE(h.replayed);
  EXPECT_EQ(h.body_bytes, 2u);
}

TEST(HttpResponse, KeepAliveRules) {
  ResponseHead h;
  ASSERT_EQ(parse(answer("HTTP/1.1 503 Service Unavailable", "Connection: close\r\n", "{}"), h), ParseResult::complete);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(parse(answer("HTTP/1.0 200 OK", "", "{}"), h), ParseResult::complete);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(parse(answer("HTTP/1.0 200 OK", "Connection: Keep-Alive\r\n", "{}"), h), ParseResult::complete);
  EXPECT_TRUE(h.keep_alive);
  ASSERT_EQ(parse(answer("HTTP/1.1 200 OK", "Connection: upgrade, close\r\n", "{}"), h), ParseResult::complete);
  EXPECT_FALSE(h.keep_alive);
}

TEST(HttpResponse, BodylessStatusesNeedNoLength) {
  ResponseHead h;
  ASSERT_EQ(parse("HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", h), ParseResult::complete);
  EXPECT_EQ(h.body_bytes, 0u);
  ASSERT_EQ(parse("HTTP/1.1 100 Continue\r\n\r\n", h), ParseResult::complete);
  EXPECT_EQ(h.status, 100);
  ASSERT_EQ(parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", h), ParseResult::complete);
  EXPECT_EQ(h.total(), std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").size());
}

TEST(HttpResponse, MalformedAnswers) {
  const char* bad[] = {
      "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\n",                                          // no length
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
      "garbage",
      "<html>",
  };
  for (const char* b : bad) {
    ResponseHead h;
    EXPECT_EQ(parse(b, h), ParseResult::malformed) << b;
  }
}

TEST(HttpResponse, LimitsAreEnforced) {
  ResponseLimits l;
  l.max_header_bytes = 64;
  l.max_body_bytes = 10;
  ResponseHead h;
  // A header block that does not end within the limit, complete or not.
  std::string long_head = "HTTP/1.1 200 OK\r\nX: " + std::string(100, 'a');
  EXPECT_EQ(parse(long_head, h, l), ParseResult::malformed);
  EXPECT_EQ(parse(long_head + "\r\nContent-Length: 0\r\n\r\n", h, l), ParseResult::malformed);
  // Body above the limit: refused as soon as the header is read.
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", h, l), ParseResult::malformed);
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", h, l), ParseResult::complete);
}

TEST(HttpResponse, FirstIdMember) {
  EXPECT_EQ(first_id_member(R"({"id" : "p1","x":{"id":"p2"}})"), "p1");
  EXPECT_EQ(first_id_member(R"({"error":{"code":"x"}})"), "");
  EXPECT_EQ(first_id_member(R"({"id":12})"), "");
  EXPECT_EQ(first_id_member(R"({"id":"unterminated)"), "");
  EXPECT_EQ(first_id_member(""), "");
}

}  // namespace
}  // namespace ps::bench
