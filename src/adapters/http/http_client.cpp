#include "adapters/http/http_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <optional>

#include "adapters/http/host_resolver.hpp"

namespace ps {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr size_t kMaxResponseBytes = 64 * 1024;

using Steady = std::chrono::steady_clock;

std::chrono::milliseconds left_until(Steady::time_point deadline) {
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()));
}

// The addresses to connect to: the literal itself, or what `resolver` says within the
// time left. A resolver failure reads like the connect failure it replaces.
Result<std::vector<IpAddress>> addresses_of(const HttpUrl& u, HostResolver& resolver, Steady::time_point deadline) {
  if (u.ip) return std::vector<IpAddress>{*u.ip};
  auto r = resolver.resolve(u.host, left_until(deadline));
  if (r) {
    if (r->empty()) return Error::unavailable("connect_failed", "resolve failed: no addresses for " + u.host);
    return r;
  }
  if (r.error().kind == ErrorKind::timeout) return Error::timeout("http call timed out during resolve");
  return Error::unavailable("connect_failed", "resolve failed: " + r.error().message);
}

tcp::endpoint endpoint_of(const IpAddress& a, uint16_t port) {
  if (a.is_v4()) {
    asio::ip::address_v4::bytes_type b;
    std::copy_n(a.bytes.begin(), 4, b.begin());
    return {asio::ip::address_v4(b), port};
  }
  asio::ip::address_v6::bytes_type b;
  std::copy_n(a.bytes.begin(), 16, b.begin());
  return {asio::ip::address_v6(b), port};
}
}  // namespace

namespace {
// Verifies peers against the system CA store. Built once; SSL_CTX is safe to share.
asio::ssl::context& tls_context() {
  static asio::ssl::context ctx = [] {
    asio::ssl::context c(asio::ssl::context::tls_client);
    c.set_default_verify_paths();
    c.set_verify_mode(asio::ssl::verify_peer);
    return c;
  }();
  return ctx;
}
}  // namespace

namespace {
// One request to `u` over a connection to one of `addrs` (tried in order; never resolved
// again here), all of it by `deadline`.
Result<HttpClientResponse> exchange(const HttpUrl& u, const std::vector<IpAddress>& addrs, const HttpHeaders& headers,
                                    const std::string& body, Steady::time_point deadline) {
  asio::io_context ioc;
  std::optional<tcp::socket> plain;
  std::optional<asio::ssl::stream<tcp::socket>> tls;
  if (u.tls) {
    tls.emplace(ioc, tls_context());
    // SNI carries names only (RFC 6066); the certificate is checked against the name or address.
    if (!u.ip && !SSL_set_tlsext_host_name(tls->native_handle(), u.host.c_str()))
      return Error::invalid("url_invalid", "host name not usable for TLS", "url");
    tls->set_verify_callback(asio::ssl::host_name_verification(u.host));
  } else {
    plain.emplace(ioc);
  }
  tcp::socket& sock = u.tls ? tls->next_layer() : *plain;

  http::request<http::string_body> req{http::verb::post, u.target, 11};
  req.set(http::field::host, u.host_header());
  req.set(http::field::user_agent, "paystream/0.1");
  req.set(http::field::content_type, "application/json");
  for (const auto& [k, v] : headers) req.set(beast::string_view(k), v);
  req.body() = body;
  req.keep_alive(false);
  req.prepare_payload();
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponseBytes);

  std::optional<beast::error_code> result;
  const char* stage = "connect";
  auto exchange = [&](auto& stream) {
    stage = "write";
    http::async_write(stream, req, [&](beast::error_code ec, size_t) {
      if (ec) { result = ec; return; }
      stage = "read";
      http::async_read(stream, buf, parser, [&](beast::error_code ec, size_t) { result = ec; });
    });
  };
  std::vector<tcp::endpoint> eps;
  for (const auto& a : addrs) eps.push_back(endpoint_of(a, u.port));
  asio::async_connect(sock, eps, [&](beast::error_code ec, const tcp::endpoint&) {
    if (ec) { result = ec; return; }
    if (!tls) return exchange(*plain);
    stage = "tls_handshake";
    tls->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code ec) {
      if (ec) { result = ec; return; }
      exchange(*tls);
    });
  });
  ioc.run_for(left_until(deadline));
  if (!result) {
    beast::error_code ignore;
    sock.close(ignore);
    return Error::timeout(std::string("http call timed out during ") + stage);
  }
  beast::error_code ec = *result;
  // A TLS peer that closes without close_notify after a complete answer is fine.
  bool truncated_ok = ec == asio::ssl::error::stream_truncated && parser.is_done();
  if (ec && !truncated_ok && !(ec == http::error::body_limit && parser.is_header_done())) {
    std::string_view st(stage);
    std::string code = st == "connect" ? "connect_failed" : st == "tls_handshake" ? "tls_failed" : "io_failed";
    return Error::unavailable(code, std::string(stage) + " failed: " + ec.message());
  }
  HttpClientResponse out;
  out.status = int(parser.get().result_int());
  if (!ec || truncated_ok) out.body = std::move(parser.get().body());
  return out;
}

}  // namespace

Result<HttpClientResponse> http_post(const std::string& url, const HttpHeaders& headers,
                                     const std::string& body, std::chrono::milliseconds timeout) {
  const auto deadline = Steady::now() + timeout;
  auto u = parse_http_url(url);
  if (!u) return u.error();
  // Operator-configured peers (acquirer, risk provider) get their own resolver, so a burst
  // of webhook lookups cannot make a charge wait for a lookup slot.
  static SystemResolver operator_resolver(1024);
  auto addrs = addresses_of(*u, operator_resolver, deadline);
  if (!addrs) return addrs.error();
  return exchange(*u, *addrs, headers, body, deadline);
}

HttpWebhookSender::HttpWebhookSender(AddressPolicy policy, HostResolver* resolver)
    : policy_(std::move(policy)), resolver_(resolver ? resolver : &system_resolver()) {}

Result<int> HttpWebhookSender::post(const std::string& url, const HttpHeaders& headers,
                                    const std::string& body, std::chrono::milliseconds timeout) {
  const auto deadline = Steady::now() + timeout;
  auto u = parse_http_url(url);
  if (!u) return u.error();
  // Resolve once, check every address, then connect only to those checked: a name that
  // resolves differently on a second lookup (DNS rebinding) never gets that lookup.
  auto addrs = addresses_of(*u, *resolver_, deadline);
  if (!addrs) return addrs.error();
  for (const auto& a : *addrs) {
    if (auto c = policy_.check(a); !c) {
      Error e = c.error();
      if (!u->ip) e.message = u->host + " resolves to " + a.to_string() + ": " + e.message;
      return e;
    }
  }
  auto r = exchange(*u, *addrs, headers, body, deadline);
  if (!r) return r.error();
  return r->status;
}

HttpRiskProvider::HttpRiskProvider(std::string url) : url_(std::move(url)) {}

Result<RiskVerdict> HttpRiskProvider::assess(const RiskRequest& req, std::chrono::milliseconds timeout) {
  boost::json::object o;
  o["payment_id"] = req.payment_id;
  o["merchant_id"] = req.merchant_id;
  o["amount"] = req.amount_minor;
  o["currency"] = req.currency;
  o["source"] = req.source;
  auto r = http_post(url_, {}, boost::json::serialize(o), timeout);
  if (!r) return r.error();
  if (r->status < 200 || r->status > 299)
    return Error::unavailable("risk_bad_response", "risk provider answered HTTP " + std::to_string(r->status));
  boost::system::error_code ec;
  auto v = boost::json::parse(r->body, ec);
  if (ec || !v.is_object()) return Error::unavailable("risk_bad_response", "risk provider answer is not a JSON object");
  const auto& obj = v.get_object();
  auto* approve = obj.if_contains("approve");
  auto* score = obj.if_contains("score");
  if (!approve || !approve->is_bool() || !score || !(score->is_int64() || score->is_uint64()))
    return Error::unavailable("risk_bad_response", "risk provider answer lacks approve/score");
  RiskVerdict out;
  out.approve = approve->get_bool();
  int64_t s = score->is_int64() ? score->get_int64() : int64_t(std::min<uint64_t>(score->get_uint64(), 100));
  out.score = int(std::clamp<int64_t>(s, 0, 100));
  if (auto* reason = obj.if_contains("reason"); reason && reason->is_string())
    out.reason = std::string(reason->get_string());
  return out;
}

}  // namespace ps
