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
//  - at most max_connections connections, and at most max_connections_per_address from
//    one client address (0 = no per-address cap); further ones are accepted and closed at
//    once (counted in paystream_http_connections_refused_total{reason}).
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
  size_t max_connections_per_address = 0;
};

// The connection limits `serve` and `gateway` apply, from the open-files limit: a reserve
// of kFdReserve descriptors stays for everything else the process opens (store and log
// files, Kafka, PostgreSQL and Redis sockets, acquirer and webhook connections), so
// max_connections is at most the limit minus the reserve; 0 requested = that maximum. The
// per-address cap defaults (0 requested) to half of max_connections, so one client can
// never take every slot. A request above the maximum is refused with a clear error.
struct ConnectionLimits {
  size_t max_connections = 0;
  size_t max_connections_per_address = 0;
};
inline constexpr size_t kFdReserve = 512;
Result<ConnectionLimits> connection_limits(uint64_t open_files_limit, uint64_t requested_max,
                                           uint64_t requested_per_address);
// The soft RLIMIT_NOFILE of this process.
uint64_t open_files_limit();

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
