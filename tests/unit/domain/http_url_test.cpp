#include <gtest/gtest.h>

#include "domain/http_url.hpp"

namespace ps {
namespace {

IpAddress ip(const char* s) {
  auto a = parse_ip(s);
  EXPECT_TRUE(a) << s;
  return a.value_or(IpAddress{});
}
std::string reason(const char* s) { return std::string(non_global_reason(ip(s))); }
std::string url_error(std::string_view u) {
  auto r = parse_http_url(u);
  if (r) return "";
  EXPECT_EQ(r.error().param, "url") << u;
  EXPECT_EQ(r.error().kind, ErrorKind::invalid_request) << u;
  return r.error().code;
}

// ---- IP literals -------------------------------------------------------------------------

TEST(HttpUrlIp, Ipv4IsDottedQuadOnly) {
  EXPECT_EQ(parse_ipv4("127.0.0.1")->to_string(), "127.0.0.1");
  EXPECT_EQ(parse_ipv4("255.255.255.255")->to_string(), "255.255.255.255");
  EXPECT_EQ(parse_ipv4("0.0.0.0")->to_string(), "0.0.0.0");
  for (const char* bad : {"2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "127.0.1",
                          "127.0.0.1.", ".127.0.0.1", "127.0.0.01", "256.0.0.1", "1.2.3.1000", "1.2.3",
                          "1.2.3.4.5", "1..2.3", "", "a.b.c.d", "1.2.3.4 ", "+1.2.3.4", "1.2.3.-4"})
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
}

TEST(HttpUrlIp, Ipv6Forms) {
  EXPECT_EQ(parse_ipv6("::1")->to_string(), "::1");
  EXPECT_EQ(parse_ipv6("0:0:0:0:0:0:0:1")->to_string(), "::1");
  EXPECT_EQ(parse_ipv6("::ffff:127.0.0.1")->to_string(), "::ffff:127.0.0.1");
  EXPECT_EQ(parse_ipv6("2001:DB8::1")->to_string(), "2001:db8::1");
  EXPECT_EQ(parse_ipv6("::")->to_string(), "::");
  for (const char* bad : {"", ":::", "1::2::3", "fe80::1%eth0", "fe80::1%25eth0", "[::1]", "::ffff:127.1",
                          "12345::", "1:2:3:4:5:6:7:8:9", "g::1", " ::1"})
    EXPECT_FALSE(parse_ipv6(bad)) << bad;
}

TEST(HttpUrlIp, MappedV4) {
  EXPECT_EQ(ip("::ffff:10.0.0.1").mapped_v4(), IpAddress::v4(10, 0, 0, 1));
  EXPECT_FALSE(ip("::10.0.0.1").mapped_v4());
  EXPECT_FALSE(ip("10.0.0.1").mapped_v4());
}

// ---- classifier ------------------------------------------------------------------------

TEST(AddressClassifier, Ipv4NonGlobalRanges) {
  EXPECT_EQ(reason("0.0.0.0"), "unspecified");
  EXPECT_EQ(reason("0.1.2.3"), "this_network");
  EXPECT_EQ(reason("10.0.0.1"), "private");
  EXPECT_EQ(reason("10.255.255.255"), "private");
  EXPECT_EQ(reason("100.64.0.1"), "shared");
  EXPECT_EQ(reason("100.127.255.255"), "shared");
  EXPECT_EQ(reason("100.100.100.200"), "metadata");
  EXPECT_EQ(reason("127.0.0.1"), "loopback");
  EXPECT_EQ(reason("127.255.255.254"), "loopback");
  EXPECT_EQ(reason("169.254.169.254"), "metadata");
  EXPECT_EQ(reason("169.254.0.1"), "link_local");
  EXPECT_EQ(reason("168.63.129.16"), "metadata");
  EXPECT_EQ(reason("172.16.0.1"), "private");
  EXPECT_EQ(reason("172.31.255.255"), "private");
  EXPECT_EQ(reason("192.0.0.8"), "reserved");
  EXPECT_EQ(reason("192.0.2.1"), "documentation");
  EXPECT_EQ(reason("192.88.99.1"), "reserved");
  EXPECT_EQ(reason("192.168.1.1"), "private");
  EXPECT_EQ(reason("198.18.0.1"), "benchmarking");
  EXPECT_EQ(reason("198.19.255.255"), "benchmarking");
  EXPECT_EQ(reason("198.51.100.7"), "documentation");
  EXPECT_EQ(reason("203.0.113.9"), "documentation");
  EXPECT_EQ(reason("224.0.0.1"), "multicast");
  EXPECT_EQ(reason("239.255.255.255"), "multicast");
  EXPECT_EQ(reason("240.0.0.1"), "reserved");
  EXPECT_EQ(reason("255.255.255.255"), "broadcast");
}

TEST(AddressClassifier, Ipv4GlobalNeighbours) {
  for (const char* g : {"1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
                        "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255",
                        "172.32.0.0", "192.0.1.0", "192.167.255.255", "192.169.0.0", "198.17.255.255",
                        "198.20.0.0", "223.255.255.255", "93.184.216.34"})
    EXPECT_EQ(reason(g), "") << g;
}

TEST(AddressClassifier, Ipv6NonGlobalRanges) {
  EXPECT_EQ(reason("::"), "unspecified");
  EXPECT_EQ(reason("::1"), "loopback");
  EXPECT_EQ(reason("fe80::1"), "link_local");
  EXPECT_EQ(reason("febf::1"), "link_local");
  EXPECT_EQ(reason("fc00::1"), "unique_local");
  EXPECT_EQ(reason("fdff::1"), "unique_local");
  EXPECT_EQ(reason("fd00:ec2::254"), "metadata");
  EXPECT_EQ(reason("fec0::1"), "site_local");
  EXPECT_EQ(reason("ff02::1"), "multicast");
  EXPECT_EQ(reason("2001:db8::1"), "documentation");
  EXPECT_EQ(reason("3fff::1"), "documentation");
  EXPECT_EQ(reason("2001:2::1"), "benchmarking");
  EXPECT_EQ(reason("2001::1"), "reserved");       // Teredo
  EXPECT_EQ(reason("100::1"), "discard");
  EXPECT_EQ(reason("64:ff9b:1::1"), "nat64_local");
  EXPECT_EQ(reason("1234::1"), "reserved");       // outside 2000::/3
  EXPECT_EQ(reason("4000::1"), "reserved");
}

TEST(AddressClassifier, Ipv6EmbeddingIpv4IsJudgedByTheIpv4Address) {
  EXPECT_EQ(reason("::ffff:127.0.0.1"), "loopback");
  EXPECT_EQ(reason("::ffff:7f00:1"), "loopback");
  EXPECT_EQ(reason("::ffff:169.254.169.254"), "metadata");
  EXPECT_EQ(reason("::ffff:10.0.0.1"), "private");
  EXPECT_EQ(reason("::ffff:8.8.8.8"), "");
  EXPECT_EQ(reason("::127.0.0.1"), "loopback");    // IPv4-compatible
  EXPECT_EQ(reason("::8.8.8.8"), "reserved");      // deprecated form, never global
  EXPECT_EQ(reason("64:ff9b::127.0.0.1"), "loopback");
  EXPECT_EQ(reason("64:ff9b::a00:1"), "private");
  EXPECT_EQ(reason("64:ff9b::8.8.8.8"), "");
  EXPECT_EQ(reason("2002:7f00:1::"), "loopback");  // 6to4 of 127.0.0.1
  EXPECT_EQ(reason("2002:a9fe:a9fe::1"), "metadata");
  EXPECT_EQ(reason("2002:c0a8:101::1"), "private");
  EXPECT_EQ(reason("2002:808:808::1"), "");
}

TEST(AddressClassifier, Ipv6Global) {
  for (const char* g : {"2606:4700:4700::1111", "2a00:1450:4001:82a::200e", "2000::1", "3ffe::1"})
    EXPECT_EQ(reason(g), "") << g;
}

// ---- CIDRs and the policy --------------------------------------------------------------

TEST(Cidr, ParsesAndContains) {
  auto c = parse_cidr("127.0.0.0/8");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->contains(ip("127.1.2.3")));
  EXPECT_FALSE(c->contains(ip("128.0.0.1")));
  EXPECT_FALSE(c->contains(ip("::1")));
  EXPECT_EQ(parse_cidr("10.1.2.3/8")->to_string(), "10.0.0.0/8");   // host bits cleared
  EXPECT_EQ(parse_cidr("10.1.2.3")->to_string(), "10.1.2.3/32");
  EXPECT_EQ(parse_cidr("::1")->to_string(), "::1/128");
  EXPECT_TRUE(parse_cidr("fd00::/8")->contains(ip("fd12::1")));
  EXPECT_FALSE(parse_cidr("fd00::/8")->contains(ip("fc12::1")));
  EXPECT_TRUE(parse_cidr("0.0.0.0/0")->contains(ip("1.2.3.4")));
  EXPECT_TRUE(parse_cidr("172.16.0.0/12")->contains(ip("172.31.0.1")));
  EXPECT_FALSE(parse_cidr("172.16.0.0/12")->contains(ip("172.32.0.1")));
  for (const char* bad : {"", "/8", "127.0.0.0/", "127.0.0.0/33", "::/129", "127.0.0.0/08", "127.1/8",
                          "localhost/8", "10.0.0.0/8/8", "10.0.0.0/-1", "10.0.0.0/ 8"}) {
    auto r = parse_cidr(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, "cidr_invalid");
  }
  auto l = parse_cidr_list({"127.0.0.0/8", " ::1/128 ", ""});
  ASSERT_TRUE(l);
  EXPECT_EQ(l->size(), 2u);
  EXPECT_FALSE(parse_cidr_list({"127.0.0.0/8", "nope"}));
}

TEST(AddressPolicy, GlobalOnlyUnlessAllowListed) {
  AddressPolicy strict;
  EXPECT_TRUE(strict.allows(ip("8.8.8.8")));
  EXPECT_FALSE(strict.allows(ip("127.0.0.1")));
  auto e = strict.check(ip("169.254.169.254"));
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, "url_not_allowed");
  EXPECT_EQ(e.error().param, "url");
  EXPECT_NE(e.error().message.find("169.254.169.254 is metadata"), std::string::npos) << e.error().message;

  AddressPolicy loop(*parse_cidr_list({"127.0.0.0/8", "::1/128"}));
  EXPECT_TRUE(loop.allows(ip("127.0.0.1")));
  EXPECT_TRUE(loop.allows(ip("::1")));
  EXPECT_TRUE(loop.allows(ip("::ffff:127.0.0.1")));   // the same host over a v6 socket
  EXPECT_FALSE(loop.allows(ip("10.0.0.1")));
  EXPECT_FALSE(loop.allows(ip("169.254.169.254")));
  EXPECT_TRUE(loop.allows(ip("8.8.8.8")));
}

// ---- URLs ----------------------------------------------------------------------------------

TEST(HttpUrl, ParsesTheParts) {
  auto u = parse_http_url("https://Hooks.Example.com:8443/a/b?x=1");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "hooks.example.com");
  EXPECT_FALSE(u->ip);
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->target, "/a/b?x=1");
  EXPECT_EQ(u->host_header(), "hooks.example.com:8443");

  u = parse_http_url("http://example.com");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/");
  EXPECT_EQ(u->host_header(), "example.com");

  u = parse_http_url("HTTPS://example.com?q");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/?q");

  u = parse_http_url("http://[2606:4700::1]:8080/h");
  ASSERT_TRUE(u);
  ASSERT_TRUE(u->ip);
  EXPECT_EQ(u->host, "2606:4700::1");
  EXPECT_EQ(u->host_header(), "[2606:4700::1]:8080");

  u = parse_http_url("http://8.8.8.8/h");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->ip, IpAddress::v4(8, 8, 8, 8));

  // '@' in the path is not userinfo; the host stays example.com.
  u = parse_http_url("http://example.com/@169.254.169.254");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "example.com");
  EXPECT_EQ(u->target, "/@169.254.169.254");
}

TEST(HttpUrl, EdgePorts) {
  EXPECT_EQ(parse_http_url("http://example.com:1/")->port, 1);
  EXPECT_EQ(parse_http_url("http://example.com:65535/")->port, 65535);
  EXPECT_EQ(parse_http_url("http://[::1]:65535/")->port, 65535);
  for (const char* bad : {"http://example.com:0/", "http://example.com:65536/", "http://example.com:99999/",
                          "http://example.com:123456/", "http://example.com:/", "http://example.com:-1/",
                          "http://example.com:8a/", "http://example.com:80:80/", "http://[::1]:/",
                          "http://[::1]:70000/", "http://[::1]80/"})
    EXPECT_EQ(url_error(bad), "url_invalid") << bad;
}

TEST(HttpUrl, RefusesAmbiguousAndMalformedHosts) {
  for (const char* bad : {
           "http://2130706433/",         // decimal 127.0.0.1
           "http://0x7f000001/",         // hex
           "http://0177.0.0.1/",         // octal
           "http://0x7f.0.0.1/",         // hex part
           "http://127.1/",              // short form
           "http://127.0.1/",
           "http://10.1/",
           "http://127.0.0.01/",
           "http://256.1.1.1/",
           "http://1.2.3.4.5/",
           "http://example.123/",        // numeric last label
           "http://example.0x1f/",
           "http://127.0.0.1./",         // trailing dot
           "http://example.com./",
           "http://exa mple.com/",
           "http://-example.com/",
           "http://example-.com/",
           "http://a..b/",
           "http://ex%61mple.com/",
           "http://例え.jp/",
           "http://[::1/",
           "http://[fe80::1%25eth0]/",
           "http://[127.0.0.1]/",
           "http://[::1]x/",
           "http://::1/",
           "http:///path",
           "http://",
           "http://:80/",
       })
    EXPECT_EQ(url_error(bad), "url_invalid") << bad;
  std::string long_label = "http://" + std::string(64, 'a') + ".com/";
  EXPECT_EQ(url_error(long_label), "url_invalid");
  std::string ok_label = "http://" + std::string(63, 'a') + ".com/";
  EXPECT_EQ(url_error(ok_label), "");
}

TEST(HttpUrl, RefusesCredentialsFragmentsAndOtherSchemes) {
  for (const char* bad : {"http://user@example.com/", "http://user:pw@example.com/", "http://@example.com/",
                          "http://example.com@169.254.169.254/", "http://example.com/#frag",
                          "http://example.com#", "http://example.com\\@evil/", "ftp://example.com/",
                          "gopher://x", "file:///etc/passwd", "example.com/h", "//example.com/",
                          "http:/example.com/", "https//example.com", "http://example.com/a b",
                          "http://example.com/\x01", "http://example.com/\x7f", " http://example.com/"})
    EXPECT_EQ(url_error(bad), "url_invalid") << bad;
  EXPECT_EQ(url_error("http://example.com/" + std::string(2048, 'a')), "url_invalid");
}

TEST(HttpUrl, TheIssuesExamplesParseToNonGlobalAddresses) {
  // Each parses (or is refused as ambiguous) and never reaches a global address.
  for (const char* u : {"http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8080/h", "http://[::1]/h",
                        "http://10.0.0.1/h"}) {
    auto p = parse_http_url(u);
    ASSERT_TRUE(p && p->ip) << u;
    EXPECT_FALSE(AddressPolicy().allows(*p->ip)) << u;
  }
  EXPECT_EQ(url_error("http://2130706433/h"), "url_invalid");
}

}  // namespace
}  // namespace ps
