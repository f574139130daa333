// Webhook URL parsing (domain/http_url.hpp): parse_http_url, the IP literal and CIDR
// parsers and the address policy, on arbitrary text.
// Asserts: no crash/UB; what parse_http_url accepts re-serialises (scheme, Host header,
// target) to a URL that parses to the same parts; accepted IP literals and CIDRs print to
// text that parses back to the same value; AddressPolicy::check agrees with allows().
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include "domain/http_url.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_http_url: invariant broken: %s\n", what);
    std::abort();
  }
}

void check_ip(const ps::IpAddress& ip) {
  auto back = ps::parse_ip(ip.to_string());
  check(back && *back == ip, "IpAddress::to_string re-parses to the same address");
  (void)ps::non_global_reason(ip);
  if (auto m = ip.mapped_v4()) (void)ps::non_global_reason(*m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  if (auto u = ps::parse_http_url(in)) {
    check(u->target.size() >= 1 && u->target[0] == '/', "target starts with '/'");
    check(u->port != 0, "port is 1..65535");
    check(in.size() <= ps::kMaxOutboundUrlChars, "length limit");
    std::string again = std::string(u->tls ? "https" : "http") + "://" + u->host_header() + u->target;
    auto v = ps::parse_http_url(again);
    check(bool(v), "the re-serialised URL parses");
    check(v->tls == u->tls && v->host == u->host && v->port == u->port && v->target == u->target,
          "the re-serialised URL has the same parts");
    check(v->ip == u->ip, "the re-serialised URL has the same IP literal");
    if (u->ip) {
      check_ip(*u->ip);
      ps::AddressPolicy policy;
      check(policy.allows(*u->ip) == bool(policy.check(*u->ip)), "check agrees with allows");
    }
  }

  if (auto ip = ps::parse_ip(in)) check_ip(*ip);

  if (auto c = ps::parse_cidr(in)) {
    auto back = ps::parse_cidr(c->to_string());
    check(back && back->prefix == c->prefix && back->base == c->base, "Cidr::to_string re-parses");
    check(c->contains(c->base), "a range contains its base");
    ps::AddressPolicy policy({*c});
    check(policy.allows(c->base), "an allow-listed range's base is allowed");
    check(bool(policy.check(c->base)), "check agrees with allows");
  }
  return 0;
}
