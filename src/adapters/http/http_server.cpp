#include "adapters/http/http_server.hpp"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <sys/resource.h>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_name.hpp"

namespace ps {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
std::string error_body(std::string_view type, std::string_view code, std::string_view message) {
  boost::json::object e;
  e["type"] = type;
  e["code"] = code;
  e["message"] = message;
  e["param"] = nullptr;
  boost::json::object o;
  o["error"] = std::move(e);
  return boost::json::serialize(o);
}
constexpr size_t kLingerMaxBytes = 1 << 20;  // discarded after a closing answer
constexpr int kLingerMs = 1000;
}  // namespace

class Session;

struct HttpServer::Impl {
  HttpServerOptions opt;
  HttpHandler handler;
  std::atomic<size_t> in_flight{0};
  std::atomic<size_t> conns{0};
  std::atomic<bool> accepting{false};
  std::atomic<bool> stopped{false};
  std::mutex drain_mu;
  std::condition_variable drain_cv;
  std::mutex sessions_mu;
  std::unordered_map<Session*, std::shared_ptr<Session>> sessions;  // owner of live sessions
  metrics::Gauge& conn_gauge = metrics::registry().gauge(
      "paystream_http_connections", "Open HTTP connections");
  metrics::Counter& refused_total = metrics::registry().counter(
      "paystream_http_connections_refused_total", "Connections closed at accept: over a limit",
      {{"reason", "max_connections"}});
  metrics::Counter& refused_per_address = metrics::registry().counter(
      "paystream_http_connections_refused_total", "Connections closed at accept: over a limit",
      {{"reason", "per_address"}});
  // Open connections per client address (max_connections_per_address).
  std::mutex peers_mu;
  std::unordered_map<std::string, size_t> peers;
  // Takes a slot for `peer`; false if it already holds max_connections_per_address.
  bool take_peer_slot(const std::string& peer) {
    if (opt.max_connections_per_address == 0) return true;
    std::lock_guard lk(peers_mu);
    size_t& n = peers[peer];
    if (n >= opt.max_connections_per_address) return false;
    ++n;
    return true;
  }
  void release_peer_slot(const std::string& peer) {
    if (opt.max_connections_per_address == 0) return;
    std::lock_guard lk(peers_mu);
    auto it = peers.find(peer);
    if (it != peers.end() && --it->second == 0) peers.erase(it);
  }
  // Declared last: destroyed first, while the members above still exist.
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  asio::steady_timer accept_backoff{acceptor.get_executor()};  // after accept errors (EMFILE)
  std::vector<std::thread> threads;

  Impl(HttpServerOptions o, HttpHandler h) : opt(std::move(o)), handler(std::move(h)) {}
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket sock);
  void remove(Session* s) {
    std::shared_ptr<Session> keep;  // destroyed outside the lock
    std::lock_guard lk(sessions_mu);
    auto it = sessions.find(s);
    if (it != sessions.end()) {
      keep = std::move(it->second);
      sessions.erase(it);
    }
  }
  void request_done() {
    {
      std::lock_guard lk(drain_mu);
      in_flight.fetch_sub(1);
    }
    drain_cv.notify_all();
  }
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `peer` holds a slot of the per-address count (released here).
  Session(HttpServer::Impl& srv, tcp::socket sock, std::string peer)
      : srv_(srv), sock_(std::move(sock)), timer_(sock_.get_executor()), peer_(std::move(peer)) {
    srv_.conns.fetch_add(1);
    srv_.conn_gauge.inc();
  }
  ~Session() {
    srv_.release_peer_slot(peer_);
    srv_.conns.fetch_sub(1);
    srv_.conn_gauge.dec();
  }
  void start() {
    asio::dispatch(sock_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }
  void deliver(HttpResponse r) {
    asio::post(sock_.get_executor(), [self = shared_from_this(), r = std::move(r)]() mutable {
      self->write_response(std::move(r));
    });
  }
  void force_close() {  // only when no server thread runs
    beast::error_code ec;
    timer_.cancel();
    sock_.close(ec);
  }

 private:
  enum class Phase { idle, reading, handling, writing, lingering, closed };

  void arm(int ms) {
    uint64_t gen = ++timer_gen_;
    timer_.expires_after(std::chrono::milliseconds(ms));
    timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
      if (ec || gen != self->timer_gen_) return;
      self->on_timeout();
    });
  }
  void disarm() {
    ++timer_gen_;
    timer_.cancel();
  }

  void on_timeout() {
    switch (phase_) {
      case Phase::idle:
      case Phase::writing:
      case Phase::lingering:
        close();
        break;
      case Phase::reading: {
        timed_out_ = true;
        beast::error_code ec;
        sock_.cancel(ec);  // the pending read completes with operation_aborted
        break;
      }
      default:
        break;
    }
  }

  void do_read() {
    if (phase_ == Phase::closed) return;
    parser_.emplace();
    parser_->header_limit(std::uint32_t(srv_.opt.header_limit_bytes));
    parser_->body_limit(srv_.opt.body_limit_bytes);
    timed_out_ = false;
    if (buf_.size() == 0) {
      phase_ = Phase::idle;
      arm(srv_.opt.idle_timeout_ms);
      sock_.async_read_some(buf_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
        self->buf_.commit(n);
        if (ec) return self->close();
        self->start_request();
      });
    } else {
      start_request();
    }
  }

  void start_request() {
    phase_ = Phase::reading;
    arm(srv_.opt.request_timeout_ms);
    http::async_read_header(sock_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_header(ec);
    });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    auto cl = parser_->content_length();
    if (cl && *cl > srv_.opt.body_limit_bytes)
      return send_error(413, "invalid_request_error", "body_too_large", "request body too large");
    auto& req = parser_->get();
    auto expect = req[http::field::expect];
    if (!expect.empty() && beast::iequals(expect, "100-continue") && !parser_->is_done()) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(sock_, asio::buffer(kContinue), [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_request();
    http::async_read(sock_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->on_read_error(ec);
      self->on_request();
    });
  }

  void on_read_error(beast::error_code ec) {
    if (timed_out_) return send_error(408, "invalid_request_error", "request_timeout", "request not received in time");
    if (ec == http::error::header_limit)
      return send_error(431, "invalid_request_error", "headers_too_large", "request headers too large");
    if (ec == http::error::body_limit)
      return send_error(413, "invalid_request_error", "body_too_large", "request body too large");
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec.category() != http::make_error_code(http::error::bad_method).category())
      return close();
    send_error(400, "invalid_request_error", "http_invalid", "malformed HTTP request");
  }

  void on_request() {
    disarm();
    phase_ = Phase::handling;
    auto msg = parser_->release();
    keep_alive_ = msg.keep_alive();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    parse_target(req.target, req.path, req.query);
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(msg.body());
    req.peer = peer_;

    {
      std::lock_guard lk(srv_.drain_mu);
      srv_.in_flight.fetch_add(1);
    }
    counted_ = true;

    struct State {
      std::weak_ptr<Session> session;
      std::atomic<bool> done{false};
      void send(HttpResponse r) {
        if (done.exchange(true)) return;
        if (auto s = session.lock()) s->deliver(std::move(r));
      }
      ~State() {
        if (!done.load())
          send(HttpResponse{500, {}, error_body("api_error", "internal_error", "no response produced")});
      }
    };
    auto st = std::make_shared<State>();
    st->session = weak_from_this();
    Respond respond = [st](HttpResponse r) { st->send(std::move(r)); };
    try {
      srv_.handler(std::move(req), std::move(respond));
    } catch (const std::exception& e) {
      log::error("http handler threw", {{"error", e.what()}});
      st->send(HttpResponse{500, {}, error_body("api_error", "internal_error", "internal error")});
    } catch (...) {
      st->send(HttpResponse{500, {}, error_body("api_error", "internal_error", "internal error")});
    }
  }

  void send_error(int status, std::string_view type, std::string_view code, std::string_view message) {
    keep_alive_ = false;
    phase_ = Phase::handling;
    write_response(HttpResponse{status, {}, error_body(type, code, message)});
  }

  void write_response(HttpResponse r) {
    if (phase_ != Phase::handling) return;  // closed meanwhile
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(r.status));
    res->set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res->set(beast::string_view(k), v);
    res->body() = std::move(r.body);
    bool keep = keep_alive_ && srv_.accepting.load() && !srv_.stopped.load();
    res->keep_alive(keep);
    res->prepare_payload();
    phase_ = Phase::writing;
    arm(srv_.opt.request_timeout_ms);
    http::async_write(sock_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
      self->disarm();
      if (self->counted_) {
        self->counted_ = false;
        self->srv_.request_done();
      }
      if (ec) return self->close();
      if (!keep) return self->linger();
      self->do_read();
    });
  }

  // Graceful close: stop sending, discard what the peer still sends (bounded), then close,
  // so the peer reads our answer instead of a reset.
  void linger() {
    beast::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_send, ec);
    phase_ = Phase::lingering;
    arm(kLingerMs);
    discard();
  }
  void discard() {
    sock_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->discarded_ += n;
      if (ec || self->discarded_ > kLingerMaxBytes || self->phase_ != Phase::lingering) return self->close();
      self->discard();
    });
  }

  void close() {
    if (phase_ == Phase::closed) return;
    phase_ = Phase::closed;
    disarm();
    beast::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    sock_.close(ec);
    if (counted_) {
      counted_ = false;
      srv_.request_done();
    }
    srv_.remove(this);
  }

  HttpServer::Impl& srv_;
  tcp::socket sock_;
  asio::steady_timer timer_;
  std::string peer_;  // the client address (per-address count, HttpRequest::peer)
  uint64_t timer_gen_ = 0;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Phase phase_ = Phase::idle;
  bool timed_out_ = false;
  bool keep_alive_ = true;
  bool counted_ = false;
  size_t discarded_ = 0;
  std::array<char, 4096> scratch_{};
};

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket sock) {
    on_accept(ec, std::move(sock));
  });
}

void HttpServer::Impl::on_accept(beast::error_code ec, tcp::socket sock) {
  if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
  if (!ec) {
    beast::error_code ignore;
    auto remote = sock.remote_endpoint(ignore);
    std::string peer = ignore ? std::string() : remote.address().to_string();
    if (conns.load() >= opt.max_connections) {
      refused_total.inc();
      sock.close(ignore);
    } else if (!take_peer_slot(peer)) {
      refused_per_address.inc();
      sock.close(ignore);
    } else {
      sock.set_option(tcp::no_delay(true), ignore);
      auto s = std::make_shared<Session>(*this, std::move(sock), std::move(peer));
      {
        std::lock_guard lk(sessions_mu);
        sessions.emplace(s.get(), s);
      }
      s->start();
    }
  } else {
    log::warn("http accept failed", {{"error", ec.message()}});
    accept_backoff.expires_after(std::chrono::milliseconds(50));
    accept_backoff.async_wait([this](beast::error_code wec) {
      if (!wec && acceptor.is_open()) do_accept();
    });
    return;
  }
  do_accept();
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() { stop(); }

Result<uint16_t> HttpServer::start() {
  auto& m = *impl_;
  beast::error_code ec;
  auto addr = asio::ip::make_address(m.opt.host, ec);
  if (ec) return Error::invalid("http_bind_failed", "invalid listen address " + m.opt.host);
  tcp::endpoint ep(addr, m.opt.port);
  m.acceptor.open(ep.protocol(), ec);
  if (!ec) m.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && m.opt.reuse_port) {
    using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    m.acceptor.set_option(reuse_port(true), ec);
  }
  if (!ec) m.acceptor.bind(ep, ec);
  if (!ec) m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignore;
    m.acceptor.close(ignore);
    return Error::unavailable("http_bind_failed", "cannot listen on " + m.opt.host + ":" +
                                                      std::to_string(m.opt.port) + ": " + ec.message());
  }
  uint16_t port = m.acceptor.local_endpoint().port();
  m.accepting = true;
  m.work.emplace(m.ioc.get_executor());
  m.do_accept();
  int n = std::max(1, m.opt.threads);
  for (int i = 0; i < n; ++i)
    m.threads.emplace_back([&m, i] {
      name_this_thread("ps-http-" + std::to_string(i));
      m.ioc.run();
    });
  return port;
}

void HttpServer::stop_accepting() {
  auto& m = *impl_;
  if (!m.accepting.exchange(false)) return;
  if (m.threads.empty()) return;
  std::promise<void> done;
  asio::post(m.acceptor.get_executor(), [&m, &done] {
    beast::error_code ec;
    m.acceptor.close(ec);
    m.accept_backoff.cancel();
    done.set_value();
  });
  done.get_future().wait();
}

bool HttpServer::drain(int timeout_ms) {
  auto& m = *impl_;
  std::unique_lock lk(m.drain_mu);
  return m.drain_cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return m.in_flight.load() == 0; });
}

void HttpServer::stop() {
  auto& m = *impl_;
  if (m.stopped.exchange(true)) return;
  stop_accepting();
  m.work.reset();
  m.ioc.stop();
  for (auto& t : m.threads)
    if (t.joinable()) t.join();
  m.threads.clear();
  std::unordered_map<Session*, std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lk(m.sessions_mu);
    sessions.swap(m.sessions);
  }
  for (auto& [p, s] : sessions) s->force_close();
  sessions.clear();
  beast::error_code ec;
  m.acceptor.close(ec);
}

size_t HttpServer::in_flight() const { return impl_->in_flight.load(); }
size_t HttpServer::connections() const { return impl_->conns.load(); }

}  // namespace ps

namespace ps {

Result<ConnectionLimits> connection_limits(uint64_t open_files_limit, uint64_t requested_max,
                                           uint64_t requested_per_address) {
  if (open_files_limit <= kFdReserve + 16)
    return Error::invalid("config_invalid",
                          "the open-files limit (" + std::to_string(open_files_limit) + ") leaves no room for connections: raise ulimit -n above " +
                              std::to_string(kFdReserve + 16),
                          "max_connections");
  const uint64_t most = open_files_limit - kFdReserve;
  if (requested_max > most)
    return Error::invalid("config_invalid",
                          "--max-connections " + std::to_string(requested_max) + " leaves too few file descriptors: with the open-files limit " +
                              std::to_string(open_files_limit) + " at most " + std::to_string(most) + " (" +
                              std::to_string(kFdReserve) + " stay for files and outgoing connections)",
                          "max_connections");
  ConnectionLimits l;
  l.max_connections = size_t(requested_max == 0 ? most : requested_max);
  if (requested_per_address > l.max_connections)
    return Error::invalid("config_invalid",
                          "--max-connections-per-address " + std::to_string(requested_per_address) +
                              " is above --max-connections " + std::to_string(l.max_connections),
                          "max_connections_per_address");
  l.max_connections_per_address = size_t(requested_per_address == 0 ? std::max<size_t>(1, l.max_connections / 2)
                                                                     : requested_per_address);
  return l;
}

uint64_t open_files_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return uint64_t(rl.rlim_cur);
}

}  // namespace ps
