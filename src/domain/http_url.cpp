#include "domain/http_url.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace ps {

namespace {

Error url_error(std::string message) { return Error::invalid("url_invalid", std::move(message), "url"); }

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

// WHATWG "ends in a number": the last label is all digits, or 0x followed by hex digits.
// Such a host is an IPv4 address to a browser or to inet_aton, so it must be a dotted quad.
bool looks_numeric(std::string_view label) {
  if (label.empty()) return false;
  if (std::all_of(label.begin(), label.end(), is_digit)) return true;
  if (label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X'))
    return std::all_of(label.begin() + 2, label.end(), is_hex);
  return false;
}

bool valid_dns_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = h.find('.', start);
    std::string_view label = h.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!(is_digit(c) || (c >= 'a' && c <= 'z') || c == '-' || c == '_')) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

std::string_view last_label(std::string_view h) {
  auto dot = h.rfind('.');
  return dot == std::string_view::npos ? h : h.substr(dot + 1);
}

bool in_v4(const uint8_t* b, uint8_t a0, uint8_t a1, uint8_t a2, uint8_t a3, int prefix) {
  const uint32_t x = uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
  const uint32_t base = uint32_t(a0) << 24 | uint32_t(a1) << 16 | uint32_t(a2) << 8 | a3;
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix);
  return (x & mask) == (base & mask);
}

// Prefix match of the first `prefix` bits of two 16-byte addresses.
bool prefix_match(const uint8_t* a, const uint8_t* b, int prefix) {
  int full = prefix / 8, rest = prefix % 8;
  if (std::memcmp(a, b, size_t(full)) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = uint8_t(0xFF << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

bool in_v6(const IpAddress& a, std::string_view base, int prefix) {
  auto b = parse_ipv6(base);
  return b && prefix_match(a.bytes.data(), b->bytes.data(), prefix);
}

std::string_view v4_reason(const uint8_t* b) {
  if (in_v4(b, 0, 0, 0, 0, 32)) return "unspecified";
  if (in_v4(b, 0, 0, 0, 0, 8)) return "this_network";
  if (in_v4(b, 10, 0, 0, 0, 8)) return "private";
  if (in_v4(b, 100, 100, 100, 200, 32)) return "metadata";   // Alibaba Cloud
  if (in_v4(b, 100, 64, 0, 0, 10)) return "shared";           // CGNAT, RFC 6598
  if (in_v4(b, 127, 0, 0, 0, 8)) return "loopback";
  if (in_v4(b, 169, 254, 169, 254, 32)) return "metadata";   // AWS, GCP, Azure, OpenStack
  if (in_v4(b, 169, 254, 0, 0, 16)) return "link_local";
  if (in_v4(b, 168, 63, 129, 16, 32)) return "metadata";     // Azure host endpoint
  if (in_v4(b, 172, 16, 0, 0, 12)) return "private";
  if (in_v4(b, 192, 0, 0, 0, 24)) return "reserved";         // IETF protocol assignments
  if (in_v4(b, 192, 0, 2, 0, 24)) return "documentation";
  if (in_v4(b, 192, 88, 99, 0, 24)) return "reserved";       // former 6to4 relay anycast
  if (in_v4(b, 192, 168, 0, 0, 16)) return "private";
  if (in_v4(b, 198, 18, 0, 0, 15)) return "benchmarking";
  if (in_v4(b, 198, 51, 100, 0, 24)) return "documentation";
  if (in_v4(b, 203, 0, 113, 0, 24)) return "documentation";
  if (in_v4(b, 224, 0, 0, 0, 4)) return "multicast";
  if (in_v4(b, 255, 255, 255, 255, 32)) return "broadcast";
  if (in_v4(b, 240, 0, 0, 0, 4)) return "reserved";
  return {};
}

}  // namespace

IpAddress IpAddress::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress ip;
  ip.bytes[0] = a, ip.bytes[1] = b, ip.bytes[2] = c, ip.bytes[3] = d;
  return ip;
}

std::optional<IpAddress> IpAddress::mapped_v4() const {
  if (is_v4()) return std::nullopt;
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (std::memcmp(bytes.data(), kPrefix, 12) != 0) return std::nullopt;
  return v4(bytes[12], bytes[13], bytes[14], bytes[15]);
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf)) return "?";
  return buf;
}

std::optional<IpAddress> parse_ipv4(std::string_view s) {
  IpAddress ip;
  size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= s.size() || s[pos] != '.') return std::nullopt;
      ++pos;
    }
    size_t start = pos;
    unsigned v = 0;
    while (pos < s.size() && is_digit(s[pos]) && pos - start < 3) v = v * 10 + unsigned(s[pos++] - '0');
    const size_t len = pos - start;
    if (len == 0 || v > 255 || (len > 1 && s[start] == '0')) return std::nullopt;
    if (pos < s.size() && is_digit(s[pos])) return std::nullopt;  // a fourth digit
    ip.bytes[size_t(part)] = uint8_t(v);
  }
  if (pos != s.size()) return std::nullopt;
  return ip;
}

std::optional<IpAddress> parse_ipv6(std::string_view s) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  for (char c : s)
    if (!(is_hex(c) || c == ':' || c == '.')) return std::nullopt;   // no zone id, no junk
  char buf[INET6_ADDRSTRLEN] = {};
  std::memcpy(buf, s.data(), s.size());
  IpAddress ip;
  ip.family = IpAddress::Family::v6;
  if (inet_pton(AF_INET6, buf, ip.bytes.data()) != 1) return std::nullopt;
  return ip;
}

std::optional<IpAddress> parse_ip(std::string_view s) {
  if (auto v4 = parse_ipv4(s)) return v4;
  return parse_ipv6(s);
}

std::string HttpUrl::host_header() const {
  std::string h = ip && !ip->is_v4() ? "[" + host + "]" : host;
  if (!default_port()) h += ":" + std::to_string(port);
  return h;
}

Result<HttpUrl> parse_http_url(std::string_view url) {
  if (url.size() > kMaxOutboundUrlChars) return url_error("url must be at most 2048 characters");
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) return url_error("url must be printable ASCII without spaces");
    if (c == '\\') return url_error("url must not contain a backslash");
    if (c == '#') return url_error("url must not contain a fragment ('#')");
  }
  HttpUrl out;
  auto sep = url.find("://");
  std::string scheme;
  if (sep != std::string_view::npos)
    for (char c : url.substr(0, sep)) scheme += lower(c);
  if (scheme == "https") out.tls = true;
  else if (scheme != "http") return url_error("url must start with http:// or https://");
  std::string_view rest = url.substr(sep + 3);
  const auto end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  if (end != std::string_view::npos) {
    out.target = std::string(rest.substr(end));
    if (out.target[0] == '?') out.target.insert(0, "/");
  }
  if (authority.find('@') != std::string_view::npos)
    return url_error("url must not contain credentials ('user@host')");

  std::string_view host, port;
  bool has_port = false;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return url_error("url has an unterminated IPv6 literal");
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return url_error("url has junk after the IPv6 literal");
      port = after.substr(1);
      has_port = true;
    }
    auto ip = parse_ipv6(host);
    if (!ip) return url_error("url host is not a valid IPv6 address");
    out.ip = *ip;
    out.host = ip->to_string();
  } else {
    auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return url_error("url has no host");
    for (char c : host) out.host += lower(c);
    if (auto ip = parse_ipv4(out.host)) {
      out.ip = *ip;
    } else if (looks_numeric(last_label(out.host))) {
      return url_error("url host is a numeric form that is not a dotted-quad IPv4 address (a.b.c.d)");
    } else if (!valid_dns_name(out.host)) {
      return url_error("url host is not a valid DNS name or IP address");
    }
  }
  if (has_port) {
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit))
      return url_error("url port must be a number from 1 to 65535");
    unsigned long p = std::stoul(std::string(port));
    if (p < 1 || p > 65535) return url_error("url port must be a number from 1 to 65535");
    out.port = uint16_t(p);
  } else {
    out.port = out.tls ? 443 : 80;
  }
  return out;
}

bool Cidr::contains(const IpAddress& a) const {
  if (a.family != base.family) return false;
  return prefix_match(a.bytes.data(), base.bytes.data(), prefix);
}

std::string Cidr::to_string() const { return base.to_string() + "/" + std::to_string(prefix); }

Result<Cidr> parse_cidr(std::string_view s) {
  auto bad = [&](const std::string& why) {
    return Error::invalid("cidr_invalid", "bad CIDR '" + std::string(s) + "': " + why);
  };
  auto slash = s.find('/');
  auto ip = parse_ip(s.substr(0, slash));
  if (!ip) return bad("not an IPv4 (a.b.c.d) or IPv6 address");
  const int max = ip->is_v4() ? 32 : 128;
  int prefix = max;
  if (slash != std::string_view::npos) {
    auto p = s.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), is_digit) || (p.size() > 1 && p[0] == '0'))
      return bad("prefix length must be a number");
    prefix = std::stoi(std::string(p));
    if (prefix > max) return bad("prefix length must be at most " + std::to_string(max));
  }
  Cidr c;
  c.prefix = prefix;
  c.base = *ip;
  // Clear the host bits, so the range is the one written and to_string() is canonical.
  const size_t len = ip->is_v4() ? 4 : 16;
  for (size_t i = 0; i < len; ++i) {
    const int bits = std::clamp(prefix - int(i) * 8, 0, 8);
    c.base.bytes[i] &= uint8_t(bits == 0 ? 0 : 0xFF << (8 - bits));
  }
  return c;
}

Result<std::vector<Cidr>> parse_cidr_list(const std::vector<std::string>& items) {
  std::vector<Cidr> out;
  for (const auto& raw : items) {
    std::string_view s = raw;
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    if (s.empty()) continue;
    auto c = parse_cidr(s);
    if (!c) return c.error();
    out.push_back(*c);
  }
  return out;
}

std::string_view non_global_reason(const IpAddress& a) {
  const uint8_t* b = a.bytes.data();
  if (a.is_v4()) return v4_reason(b);
  static constexpr uint8_t kZero[16] = {};
  if (std::memcmp(b, kZero, 16) == 0) return "unspecified";
  if (std::memcmp(b, kZero, 15) == 0 && b[15] == 1) return "loopback";
  if (a.mapped_v4()) return v4_reason(b + 12);                     // ::ffff:a.b.c.d
  if (std::memcmp(b, kZero, 12) == 0) {                             // ::a.b.c.d (deprecated)
    auto r = v4_reason(b + 12);
    return r.empty() ? "reserved" : r;
  }
  if (in_v6(a, "64:ff9b::", 96)) return v4_reason(b + 12);         // NAT64, RFC 6052
  if (in_v6(a, "64:ff9b:1::", 48)) return "nat64_local";            // RFC 8215
  if (in_v6(a, "2002::", 16)) return v4_reason(b + 2);             // 6to4, RFC 3056
  if (in_v6(a, "100::", 64)) return "discard";
  if (in_v6(a, "2001:db8::", 32) || in_v6(a, "3fff::", 20)) return "documentation";
  if (in_v6(a, "2001:2::", 48)) return "benchmarking";
  if (in_v6(a, "2001::", 23)) return "reserved";                    // Teredo, ORCHID, ...
  if (in_v6(a, "fd00:ec2::254", 128)) return "metadata";            // AWS
  if (in_v6(a, "fc00::", 7)) return "unique_local";
  if (in_v6(a, "fe80::", 10)) return "link_local";
  if (in_v6(a, "fec0::", 10)) return "site_local";
  if (in_v6(a, "ff00::", 8)) return "multicast";
  if (!in_v6(a, "2000::", 3)) return "reserved";                    // not global unicast
  return {};
}

bool AddressPolicy::allows(const IpAddress& a) const {
  for (const auto& c : allow_) {
    if (c.contains(a)) return true;
    if (auto v4 = a.mapped_v4(); v4 && c.contains(*v4)) return true;
  }
  return is_global(a);
}

Result<void> AddressPolicy::check(const IpAddress& a) const {
  if (allows(a)) return ok();
  return Error::invalid("url_not_allowed",
                        "url must reach a public (global) address; " + a.to_string() + " is " +
                            std::string(non_global_reason(a)),
                        "url");
}

}  // namespace ps
