// Outbound URLs and the addresses they may reach (SPEC §3 "Webhook endpoint URLs must
// resolve to global addresses"). One parser for every outbound http(s) URL, so what the
// API accepts at creation is exactly what the sender can send to; an address classifier;
// and the policy (global addresses only, unless an operator allow-lists a range).
// Pure functions and value types: no I/O, thread-safe.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace ps {

struct IpAddress {
  enum class Family : uint8_t { v4, v6 };
  Family family = Family::v4;
  std::array<uint8_t, 16> bytes{};  // network order; an IPv4 address uses the first 4

  static IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
  bool is_v4() const { return family == Family::v4; }
  // The IPv4 address embedded in an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
  std::optional<IpAddress> mapped_v4() const;
  std::string to_string() const;   // 127.0.0.1, ::1 (RFC 5952 form)
  bool operator==(const IpAddress&) const = default;
};

// Exactly four decimal parts 0..255 without leading zeros ("127.0.0.1"). Anything else
// (2130706433, 0177.0.0.1, 0x7f.0.0.1, 127.1) is nullopt.
std::optional<IpAddress> parse_ipv4(std::string_view s);
// An IPv6 address in RFC 4291 text form (with "::" and a trailing dotted IPv4 allowed;
// no brackets, no zone id).
std::optional<IpAddress> parse_ipv6(std::string_view s);
// parse_ipv4, else parse_ipv6.
std::optional<IpAddress> parse_ip(std::string_view s);

inline constexpr size_t kMaxOutboundUrlChars = 2048;

// An absolute http(s) URL, checked strictly:
//   scheme http or https (case-insensitive); no userinfo ('@'), no fragment ('#'), no
//   backslash, no whitespace or control characters, printable ASCII only, at most 2048
//   characters; host a DNS name (letters, digits, '-', '_', labels of 1..63 characters,
//   at most 253 in all, no empty label) or an IPv4 literal in dotted-quad form or an IPv6
//   literal in brackets; a host whose last label is numeric must be a dotted quad (the
//   decimal, octal, hex and short IPv4 forms are refused, not guessed at); optional port
//   1..65535.
// Errors: invalid_request "url_invalid", param "url".
struct HttpUrl {
  bool tls = false;
  std::string host;               // lower-case; an IPv6 literal without brackets
  std::optional<IpAddress> ip;    // set when host is an IP literal
  uint16_t port = 80;
  std::string target = "/";       // path and query, starting with '/'

  bool default_port() const { return port == (tls ? 443 : 80); }
  // The Host header: host[:port], IPv6 in brackets, port only when not the default.
  std::string host_header() const;
};
Result<HttpUrl> parse_http_url(std::string_view url);

// An address range "a.b.c.d/n" or "v6/n"; a bare address is a /32 or /128.
struct Cidr {
  IpAddress base;   // host bits cleared
  int prefix = 0;
  bool contains(const IpAddress& a) const;
  std::string to_string() const;
};
// Errors: invalid_request "cidr_invalid".
Result<Cidr> parse_cidr(std::string_view s);
// Every entry of `items` (blank entries skipped). Errors: the first bad entry.
Result<std::vector<Cidr>> parse_cidr_list(const std::vector<std::string>& items);

// Why `a` is not a global address ("loopback", "private", "link_local", "metadata",
// "shared" (CGNAT), "this_network", "unspecified", "multicast", "broadcast", "reserved",
// "documentation", "benchmarking", "unique_local", "site_local", "nat64_local", "discard");
// empty when it is global. IPv4-mapped and IPv4-compatible IPv6, NAT64 (64:ff9b::/96) and
// 6to4 (2002::/16) addresses are judged by the IPv4 address they embed.
std::string_view non_global_reason(const IpAddress& a);
inline bool is_global(const IpAddress& a) { return non_global_reason(a).empty(); }

// Which addresses outbound webhook requests may reach: global addresses, and those in an
// allow-listed range (an IPv4-mapped address also when its IPv4 address is allow-listed).
class AddressPolicy {
 public:
  AddressPolicy() = default;
  explicit AddressPolicy(std::vector<Cidr> allow) : allow_(std::move(allow)) {}
  bool allows(const IpAddress& a) const;
  // Ok, or invalid_request "url_not_allowed" (param "url") naming the address and why.
  Result<void> check(const IpAddress& a) const;
  const std::vector<Cidr>& allow_list() const { return allow_; }

 private:
  std::vector<Cidr> allow_;
};

}  // namespace ps
