#include "adapters/http/http_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <optional>

namespace ps {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr size_t kMaxResponseBytes = 64 * 1024;

struct Url {
  bool tls = false;
  std::string host, port, target;
};

Result<Url> parse_url(std::string_view url) {
  Url u;
  std::string_view rest;
  if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return Error::invalid("url_invalid", "URL must start with http:// or https://", "url");
  }
  const char* default_port = u.tls ? "443" : "80";
  auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!u.target.empty() && u.target[0] == '?') u.target = "/" + u.target;
  if (authority.find('@') != std::string_view::npos) return Error::invalid("url_invalid", "credentials in URL", "url");
  if (!authority.empty() && authority[0] == '[') {  // [v6]:port
    auto close = authority.find(']');
    if (close == std::string_view::npos) return Error::invalid("url_invalid", "bad IPv6 host", "url");
    u.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    u.port = after.size() > 1 && after[0] == ':' ? std::string(after.substr(1)) : default_port;
  } else {
    auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    u.port = colon == std::string_view::npos ? default_port : std::string(authority.substr(colon + 1));
  }
  if (u.host.empty() || u.port.empty()) return Error::invalid("url_invalid", "URL has no host", "url");
  for (char c : u.port)
    if (c < '0' || c > '9') return Error::invalid("url_invalid", "bad port", "url");
  return u;
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

Result<HttpClientResponse> http_post(const std::string& url, const HttpHeaders& headers,
                                     const std::string& body, std::chrono::milliseconds timeout) {
  auto u = parse_url(url);
  if (!u) return u.error();
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  std::optional<tcp::socket> plain;
  std::optional<asio::ssl::stream<tcp::socket>> tls;
  if (u->tls) {
    tls.emplace(ioc, tls_context());
    if (!SSL_set_tlsext_host_name(tls->native_handle(), u->host.c_str()))
      return Error::invalid("url_invalid", "host name not usable for TLS", "url");
    tls->set_verify_callback(asio::ssl::host_name_verification(u->host));
  } else {
    plain.emplace(ioc);
  }
  tcp::socket& sock = u->tls ? tls->next_layer() : *plain;

  http::request<http::string_body> req{http::verb::post, u->target, 11};
  bool default_port = u->port == (u->tls ? "443" : "80");
  req.set(http::field::host, u->host + (default_port ? "" : ":" + u->port));
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
  const char* stage = "resolve";
  auto exchange = [&](auto& stream) {
    stage = "write";
    http::async_write(stream, req, [&](beast::error_code ec, size_t) {
      if (ec) { result = ec; return; }
      stage = "read";
      http::async_read(stream, buf, parser, [&](beast::error_code ec, size_t) { result = ec; });
    });
  };
  resolver.async_resolve(u->host, u->port, [&](beast::error_code ec, tcp::resolver::results_type eps) {
    if (ec) { result = ec; return; }
    stage = "connect";
    asio::async_connect(sock, eps, [&](beast::error_code ec, const tcp::endpoint&) {
      if (ec) { result = ec; return; }
      if (!tls) return exchange(*plain);
      stage = "tls_handshake";
      tls->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code ec) {
        if (ec) { result = ec; return; }
        exchange(*tls);
      });
    });
  });
  ioc.run_for(timeout);
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
    std::string code = st == "resolve" || st == "connect" ? "connect_failed"
                       : st == "tls_handshake"            ? "tls_failed"
                                                          : "io_failed";
    return Error::unavailable(code, std::string(stage) + " failed: " + ec.message());
  }
  HttpClientResponse out;
  out.status = int(parser.get().result_int());
  if (!ec || truncated_ok) out.body = std::move(parser.get().body());
  return out;
}

Result<int> HttpWebhookSender::post(const std::string& url, const HttpHeaders& headers,
                                    const std::string& body, std::chrono::milliseconds timeout) {
  auto r = http_post(url, headers, body, timeout);
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
