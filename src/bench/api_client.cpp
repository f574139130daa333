#include "bench/api_client.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

namespace ps::bench {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

Result<std::string> resolve_target(const Target& t) {
  boost::system::error_code ec;
  auto a = asio::ip::make_address(t.host, ec);
  if (!ec) return a.to_string();
  asio::io_context io;
  tcp::resolver r(io);
  auto res = r.resolve(t.host, std::to_string(t.port), ec);
  if (ec || res.empty()) return Error::invalid("url", "cannot resolve " + t.host + ": " + ec.message(), "url");
  for (const auto& e : res)
    if (e.endpoint().address().is_v4()) return e.endpoint().address().to_string();
  return res.begin()->endpoint().address().to_string();
}

struct ApiClient::Impl {
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
  tcp::endpoint ep;
  std::string host, bearer;
  std::chrono::milliseconds timeout;
  beast::flat_buffer buf;

  // Runs the queued operation to completion (tcp_stream enforces the deadline).
  void drive() {
    io.restart();
    io.run();
  }

  Result<void> connect() {
    stream.emplace(io);
    stream->expires_after(timeout);
    boost::system::error_code ec;
    stream->async_connect(ep, [&](boost::system::error_code e) { ec = e; });
    drive();
    if (ec) {
      stream.reset();
      return Error::unavailable("connect_failed", "cannot connect to " + host + ": " + ec.message());
    }
    buf.clear();
    return {};
  }

  Result<HttpAnswer> once(http::verb verb, const std::string& target, const std::string& body) {
    if (!stream) {
      if (auto c = connect(); !c) return c.error();
    }
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, host);
    req.set(http::field::authorization, "Bearer " + bearer);
    req.set(http::field::accept, "application/json");
    req.keep_alive(true);
    if (verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    boost::system::error_code ec;
    stream->expires_after(timeout);
    http::async_write(*stream, req, [&](boost::system::error_code e, size_t) { ec = e; });
    drive();
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    if (!ec) {
      http::async_read(*stream, buf, parser, [&](boost::system::error_code e, size_t) { ec = e; });
      drive();
    }
    if (ec) {
      stream.reset();
      return Error::unavailable("http_failed", std::string(verb == http::verb::get ? "GET " : "POST ") + target +
                                                   ": " + ec.message());
    }
    auto& msg = parser.get();
    HttpAnswer a{int(msg.result_int()), std::move(msg.body())};
    if (!msg.keep_alive()) stream.reset();
    return a;
  }
};

ApiClient::ApiClient(std::string address, Target target, std::string bearer, int64_t timeout_ms)
    : impl_(std::make_unique<Impl>()) {
  impl_->ep = tcp::endpoint(asio::ip::make_address(address), target.port);
  impl_->host = target.host + ":" + std::to_string(target.port);
  impl_->bearer = std::move(bearer);
  impl_->timeout = std::chrono::milliseconds(timeout_ms);
}

ApiClient::~ApiClient() = default;

Result<HttpAnswer> ApiClient::get(const std::string& path_and_query) {
  auto r = impl_->once(http::verb::get, path_and_query, {});
  if (!r) r = impl_->once(http::verb::get, path_and_query, {});  // the kept-alive connection may have closed
  return r;
}

Result<HttpAnswer> ApiClient::post(const std::string& path, const std::string& json_body) {
  return impl_->once(http::verb::post, path, json_body);
}

}  // namespace ps::bench
