// HTTP/1.1 server (Boost.Beast underneath; no Boost in this header).
// Contract:
//  - keep-alive and pipelined requests; one request at a time per connection;
//  - a request must be fully received within request_timeout_ms (timer starts at its first
//    byte) or it is answered 408 and the connection closed; an idle keep-alive connection
//    is closed after idle_timeout_ms;
//  - Content-Length above body_limit_bytes: 413 `body_too_large` before the body is read
//    (chunked bodies are cut by the parser limit, same answer); headers above
//    header_limit_bytes: 431; unparseable HTTP: 400; every such answer closes the connection;
//  - the handler runs on a server thread and must not block; it must call Respond exactly
//    once, from any thread (the write is posted onto the connection's strand). A Respond
//    dropped without being called answers 500 `internal_error`.
//  - at most max_connections connections; further ones are accepted and closed at once.
// Thread-safety: start/stop_accepting/drain/stop are called from one owner thread.
// Lifetime: a Respond called after stop() is ignored.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/http_types.hpp"
#include "common/result.hpp"

namespace ps {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;   // 0 = pick a free port
  int threads = 2;
  bool reuse_port = false;
  size_t header_limit_bytes = 16 * 1024;
  size_t body_limit_bytes = 64 * 1024;
  int request_timeout_ms = 10000;
  int idle_timeout_ms = 60000;
  size_t max_connections = 20000;
};

using HttpHandler = std::function<void(HttpRequest, Respond)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  Result<uint16_t> start();      // binds, listens, starts the threads; returns the bound port
  void stop_accepting();         // closes the listener; open connections keep being served
  bool drain(int timeout_ms);    // true once no request is in flight; false on timeout
  void stop();                   // closes every connection and joins the threads (idempotent)

  size_t in_flight() const;      // requests received and not yet answered
  size_t connections() const;    // open connections

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ps
