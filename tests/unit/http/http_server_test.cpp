// Real server on 127.0.0.1:<free port>, real sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "adapters/http/host_resolver.hpp"
#include "adapters/http/http_client.hpp"
#include "adapters/http/http_server.hpp"
#include "common/metrics.hpp"

using namespace ps;
using namespace std::chrono_literals;

namespace {

class Conn {
 public:
  // `source`: the local address to connect from (another loopback address is another client).
  explicit Conn(uint16_t port, const char* source = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (source) {
      sockaddr_in b{};
      b.sin_family = AF_INET;
      ::inet_pton(AF_INET, source, &b.sin_addr);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&b), sizeof b) != 0) ADD_FAILURE() << "bind to " << source << " failed";
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ADD_FAILURE() << "connect failed";
  }
  ~Conn() { ::close(fd_); }
  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  // Reads until `pred(buffer)` or EOF/timeout. Returns false on timeout.
  bool read_until(std::function<bool(const std::string&)> pred, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred(buf_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) return false;
      char tmp[8192];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        eof_ = true;
        return pred(buf_);
      }
      buf_.append(tmp, size_t(n));
    }
    return true;
  }
  // One complete response (headers + Content-Length body); removes it from the buffer.
  std::string response(std::chrono::milliseconds timeout = 5s) {
    auto complete = [](const std::string& b) {
      auto end = b.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      auto cl = b.find("Content-Length: ");
      size_t len = cl != std::string::npos && cl < end ? std::stoul(b.substr(cl + 16)) : 0;
      return b.size() >= end + 4 + len;
    };
    if (!read_until(complete, timeout)) return {};
    auto end = buf_.find("\r\n\r\n");
    auto cl = buf_.find("Content-Length: ");
    size_t len = cl != std::string::npos && cl < end ? std::stoul(buf_.substr(cl + 16)) : 0;
    std::string r = buf_.substr(0, end + 4 + len);
    buf_.erase(0, end + 4 + len);
    return r;
  }
  // True if the peer closes the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout) {
    read_until([](const std::string&) { return false; }, timeout);
    return eof_;
  }

 private:
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n";
}
int status_of(const std::string& resp) { return resp.size() > 12 ? std::stoi(resp.substr(9, 3)) : 0; }
std::string body_of(const std::string& resp) { return resp.substr(resp.find("\r\n\r\n") + 4); }

// Echo handler: answers the method, path, a query value and body size.
HttpHandler echo() {
  return [](HttpRequest req, Respond respond) {
    std::string q = req.query.count("q") ? req.query.at("q") : "";
    auto h = req.header("x-test");
    respond(HttpResponse{200, {{"X-Path", req.path}},
                         req.method + " " + req.path + " q=" + q + " h=" + std::string(h.value_or("")) +
                             " len=" + std::to_string(req.body.size())});
  };
}

struct Server {
  std::unique_ptr<HttpServer> s;
  uint16_t port = 0;
  explicit Server(HttpHandler h, HttpServerOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    s = std::make_unique<HttpServer>(o, std::move(h));
    auto p = s->start();
    EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
    port = p.ok() ? p.value() : 0;
  }
};

}  // namespace

TEST(HttpServer, KeepAliveServesManyRequestsOnOneConnection) {
  Server srv(echo());
  Conn c(srv.port);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(get("/a%20b?q=x+y&z=1", "X-Test: v" + std::to_string(i) + "\r\n")));
    auto r = c.response();
    EXPECT_EQ(status_of(r), 200) << r;
    EXPECT_EQ(body_of(r), "GET /a b q=x y h=v" + std::to_string(i) + " len=0");
    EXPECT_NE(r.find("Content-Type: application/json"), std::string::npos);
  }
  // Pipelined: two requests in one write, two answers in order.
  ASSERT_TRUE(c.send(get("/one") + "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  EXPECT_EQ(body_of(c.response()), "GET /one q= h= len=0");
  EXPECT_EQ(body_of(c.response()), "POST /two q= h= len=3");
  EXPECT_EQ(srv.s->connections(), 1u);
  // Connection: close is honoured.
  ASSERT_TRUE(c.send(get("/bye", "Connection: close\r\n")));
  EXPECT_EQ(status_of(c.response()), 200);
  EXPECT_TRUE(c.closed_within(2s));
}

TEST(HttpServer, BodyTooLargeBeforeReading) {
  HttpServerOptions o;
  o.body_limit_bytes = 1024;
  std::atomic<int> handled{0};
  Server srv([&](HttpRequest, Respond r) { ++handled; r(HttpResponse{200, {}, "{}"}); }, o);
  {
    Conn c(srv.port);
    // Only the headers are sent: the answer must come without the body.
    ASSERT_TRUE(c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"));
    auto r = c.response();
    EXPECT_EQ(status_of(r), 413) << r;
    EXPECT_NE(body_of(r).find("\"code\":\"body_too_large\""), std::string::npos);
    EXPECT_TRUE(c.closed_within(3s));
  }
  {
    Conn c(srv.port);  // chunked body above the limit
    std::string chunk(2000, 'a');
    ASSERT_TRUE(c.send("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + chunk + "\r\n0\r\n\r\n"));
    EXPECT_EQ(status_of(c.response()), 413);
  }
  {
    Conn c(srv.port);  // at the limit is fine
    ASSERT_TRUE(c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'b')));
    EXPECT_EQ(status_of(c.response()), 200);
  }
  EXPECT_EQ(handled.load(), 1);
}

TEST(HttpServer, HeadersTooLargeIs431) {
  Server srv(echo());
  Conn c(srv.port);
  ASSERT_TRUE(c.send(get("/", "X-Big: " + std::string(17 * 1024, 'h') + "\r\n")));
  auto r = c.response();
  EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
}

TEST(HttpServer, MalformedHttpIs400) {
  Server srv(echo());
  Conn c(srv.port);
  ASSERT_TRUE(c.send("THIS IS NOT HTTP\r\n\r\n"));
  auto r = c.response();
  EXPECT_EQ(status_of(r), 400) << r;
  EXPECT_NE(body_of(r).find("\"error\""), std::string::npos);
}

TEST(HttpServer, SlowClientGets408AndIdleConnectionCloses) {
  HttpServerOptions o;
  o.request_timeout_ms = 300;
  o.idle_timeout_ms = 400;
  Server srv(echo(), o);
  {
    Conn c(srv.port);
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: x\r\n"));  // headers never finished
    auto t0 = std::chrono::steady_clock::now();
    auto r = c.response(3s);
    EXPECT_EQ(status_of(r), 408) << r;
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
    EXPECT_TRUE(c.closed_within(2s));
  }
  {
    Conn c(srv.port);  // body never finished
    ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
    EXPECT_EQ(status_of(c.response(3s)), 408);
  }
  {
    Conn c(srv.port);  // idle: closed without an answer, after the idle timeout
    ASSERT_TRUE(c.send(get("/")));
    EXPECT_EQ(status_of(c.response()), 200);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(c.closed_within(3s));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  }
}

TEST(HttpServer, RespondFromAnotherThreadAndDrain) {
  std::mutex mu;
  std::vector<Respond> held;
  Server srv([&](HttpRequest req, Respond r) {
    if (req.path == "/thread") {
      std::thread([r] {
        std::this_thread::sleep_for(50ms);
        r(HttpResponse{202, {{"X-From", "thread"}}, "{\"ok\":true}"});
      }).detach();
      return;
    }
    std::lock_guard lk(mu);
    held.push_back(std::move(r));
  });
  {
    Conn c(srv.port);
    ASSERT_TRUE(c.send(get("/thread")));
    auto r = c.response();
    EXPECT_EQ(status_of(r), 202);
    EXPECT_NE(r.find("X-From: thread"), std::string::npos);
  }
  Conn c1(srv.port), c2(srv.port);
  ASSERT_TRUE(c1.send(get("/hold")));
  ASSERT_TRUE(c2.send(get("/hold")));
  for (int i = 0; i < 100 && srv.s->in_flight() < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(srv.s->in_flight(), 2u);
  srv.s->stop_accepting();
  EXPECT_FALSE(srv.s->drain(100));
  std::vector<Respond> rs;
  {
    std::lock_guard lk(mu);
    rs.swap(held);
  }
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    for (auto& r : rs) r(HttpResponse{200, {}, "{}"});
    for (auto& r : rs) r(HttpResponse{500, {}, "ignored second call"});
  });
  EXPECT_TRUE(srv.s->drain(5000));
  t.join();
  auto r1 = c1.response();
  EXPECT_EQ(status_of(r1), 200);
  EXPECT_NE(r1.find("Connection: close"), std::string::npos);  // draining: no keep-alive
  EXPECT_EQ(status_of(c2.response()), 200);
  // The listener is closed: new connections are refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(srv.port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::close(fd);
  srv.s->stop();
}

TEST(HttpServer, DroppedRespondAnswers500AndThrowingHandlerToo) {
  Server srv([](HttpRequest req, Respond r) {
    if (req.path == "/throw") throw std::runtime_error("boom");
    // drop r without calling it
  });
  Conn c(srv.port);
  ASSERT_TRUE(c.send(get("/drop")));
  EXPECT_EQ(status_of(c.response()), 500);
  ASSERT_TRUE(c.send(get("/throw")));
  EXPECT_EQ(status_of(c.response()), 500);
}

TEST(HttpServer, MaxConnectionsAndStopWithOpenConnections) {
  HttpServerOptions o;
  o.max_connections = 1;
  Server srv(echo(), o);
  Conn c1(srv.port);
  ASSERT_TRUE(c1.send(get("/")));
  EXPECT_EQ(status_of(c1.response()), 200);
  Conn c2(srv.port);
  EXPECT_TRUE(c2.closed_within(2s));
  srv.s->stop();
  EXPECT_TRUE(c1.closed_within(2s));
}

// One client address may hold at most max_connections_per_address connections; another
// address is not affected, and a slot comes back when a connection closes. Handlers see
// the client's address in HttpRequest::peer.
TEST(HttpServer, ConnectionsPerClientAddressAreCapped) {
  HttpServerOptions o;
  o.max_connections_per_address = 2;
  Server srv([](HttpRequest req, Respond respond) { respond(HttpResponse{200, {}, "peer=" + req.peer}); }, o);
  auto& refused = metrics::registry().counter("paystream_http_connections_refused_total", "", {{"reason", "per_address"}});
  const double before = refused.value();
  auto a1 = std::make_unique<Conn>(srv.port, "127.0.0.1");
  Conn a2(srv.port, "127.0.0.1");
  ASSERT_TRUE(a1->send(get("/")));
  auto r = a1->response();
  EXPECT_EQ(status_of(r), 200);
  EXPECT_EQ(body_of(r), "peer=127.0.0.1");
  ASSERT_TRUE(a2.send(get("/")));
  EXPECT_EQ(status_of(a2.response()), 200);
  Conn a3(srv.port, "127.0.0.1");
  EXPECT_TRUE(a3.closed_within(2s)) << "a third connection from 127.0.0.1 is closed at once";
  EXPECT_EQ(refused.value(), before + 1);
  Conn b1(srv.port, "127.0.0.2");
  ASSERT_TRUE(b1.send(get("/")));
  r = b1.response();
  EXPECT_EQ(status_of(r), 200) << "another client address is not affected";
  EXPECT_EQ(body_of(r), "peer=127.0.0.2");
  a1.reset();  // frees a slot of 127.0.0.1
  const auto until = std::chrono::steady_clock::now() + 5s;
  bool served = false;
  while (!served && std::chrono::steady_clock::now() < until) {
    Conn again(srv.port, "127.0.0.1");
    served = again.send(get("/")) && status_of(again.response(1s)) == 200;
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served) << "the slot of a closed connection is given back";
}

TEST(ConnectionLimits, ReserveDescriptorsBelowTheOpenFilesLimit) {
  auto d = connection_limits(20000, 0, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->max_connections, 20000u - kFdReserve);
  EXPECT_EQ(d->max_connections_per_address, (20000u - kFdReserve) / 2);
  auto set = connection_limits(20000, 1000, 10);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->max_connections, 1000u);
  EXPECT_EQ(set->max_connections_per_address, 10u);
  auto too_many = connection_limits(20000, 20000, 0);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().param, "max_connections");
  EXPECT_NE(too_many.error().message.find("at most 19488"), std::string::npos) << too_many.error().message;
  auto per_address = connection_limits(20000, 1000, 1001);
  ASSERT_FALSE(per_address.ok());
  EXPECT_EQ(per_address.error().param, "max_connections_per_address");
  EXPECT_FALSE(connection_limits(256, 0, 0).ok()) << "no room left for connections";
  EXPECT_GT(open_files_limit(), 0u);
}

TEST(HttpServer, BindFailureIsAnError) {
  Server a(echo());
  HttpServerOptions o;
  o.port = a.port;
  HttpServer b(o, echo());
  EXPECT_FALSE(b.start().ok());
}

// ---- client -------------------------------------------------------------------------

TEST(HttpClient, WebhookSenderPostsAndReturnsStatus) {
  std::mutex mu;
  HttpRequest seen;
  Server srv([&](HttpRequest req, Respond r) {
    {
      std::lock_guard lk(mu);
      seen = req;
    }
    r(HttpResponse{req.path == "/gone" ? 410 : 204, {}, ""});
  });
  HttpWebhookSender s(AddressPolicy(*parse_cidr_list({"127.0.0.0/8"})));
  std::string base = "http://127.0.0.1:" + std::to_string(srv.port);
  auto r = s.post(base + "/hook?x=1", {{"webhook-id", "evt_1"}}, R"({"a":1})", 2s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 204);
  {
    std::lock_guard lk(mu);
    EXPECT_EQ(seen.method, "POST");
    EXPECT_EQ(seen.path, "/hook");
    EXPECT_EQ(seen.query.at("x"), "1");
    EXPECT_EQ(seen.header("webhook-id"), "evt_1");
    EXPECT_EQ(seen.body, R"({"a":1})");
  }
  EXPECT_EQ(s.post(base + "/gone", {}, "{}", 2s).value(), 410);
}

TEST(HttpClient, TimeoutRefusedAndTlsFailure) {
  std::mutex mu;
  std::vector<Respond> held;
  Server srv([&](HttpRequest, Respond r) {
    std::lock_guard lk(mu);
    held.push_back(std::move(r));  // never answers in time
  });
  HttpWebhookSender s(AddressPolicy(*parse_cidr_list({"127.0.0.0/8"})));
  auto t0 = std::chrono::steady_clock::now();
  auto r = s.post("http://127.0.0.1:" + std::to_string(srv.port) + "/slow", {}, "{}", 200ms);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_LT(took, 1s);
  {
    std::lock_guard lk(mu);
    for (auto& h : held) h(HttpResponse{200, {}, "{}"});
  }
  // Nothing listens on this port any more.
  uint16_t dead_port;
  {
    Server tmp(echo());
    dead_port = tmp.port;
  }
  r = s.post("http://127.0.0.1:" + std::to_string(dead_port) + "/", {}, "{}", 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "connect_failed");
  EXPECT_TRUE(r.error().retryable);
  // https to a plain-HTTP server: the handshake fails cleanly, within the timeout.
  Server plain(echo());
  t0 = std::chrono::steady_clock::now();
  r = s.post("https://127.0.0.1:" + std::to_string(plain.port) + "/", {}, "{}", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "tls_failed") << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms);
  EXPECT_EQ(s.post("ftp://x/", {}, "{}", 1s).error().code, "url_invalid");
}

TEST(HttpClient, RiskProviderParsesVerdict) {
  std::mutex mu;
  std::string body_seen;
  Server srv([&](HttpRequest req, Respond r) {
    {
      std::lock_guard lk(mu);
      body_seen = req.body;
    }
    if (req.path == "/bad") return r(HttpResponse{200, {}, R"({"approve":"yes"})"});
    if (req.path == "/err") return r(HttpResponse{500, {}, "{}"});
    r(HttpResponse{200, {}, R"({"approve":false,"score":87,"reason":"velocity"})"});
  });
  std::string base = "http://127.0.0.1:" + std::to_string(srv.port);
  RiskRequest req{"pay_1", "mer_1", 1500, "EUR", "tok_x"};
  auto v = HttpRiskProvider(base + "/risk").assess(req, 2s);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_FALSE(v->approve);
  EXPECT_EQ(v->score, 87);
  EXPECT_EQ(v->reason, "velocity");
  {
    std::lock_guard lk(mu);
    EXPECT_EQ(body_seen, R"({"payment_id":"pay_1","merchant_id":"mer_1","amount":1500,"currency":"EUR","source":"tok_x"})");
  }
  EXPECT_EQ(HttpRiskProvider(base + "/bad").assess(req, 2s).error().code, "risk_bad_response");
  EXPECT_EQ(HttpRiskProvider(base + "/err").assess(req, 2s).error().code, "risk_bad_response");
}

// ---- name resolution ----------------------------------------------------------------

TEST(SystemResolver, ALookupThatHangsIsAbandonedAtTheTimeout) {
  auto release = std::make_shared<std::atomic<bool>>(false);
  SystemResolver r(2, [release](const std::string&) -> Result<std::vector<IpAddress>> {
    while (!release->load()) std::this_thread::sleep_for(5ms);   // a DNS server that never answers
    return std::vector<IpAddress>{IpAddress::v4(8, 8, 8, 8)};
  });
  auto t0 = std::chrono::steady_clock::now();
  auto a = r.resolve("slow.example", 150ms);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().kind, ErrorKind::timeout);
  EXPECT_GE(took, 140ms);
  EXPECT_LT(took, 1s);
  // Abandoned lookups still count: at most 2 at once, then an immediate refusal.
  EXPECT_FALSE(r.resolve("slow.example", 50ms).ok());
  t0 = std::chrono::steady_clock::now();
  auto busy = r.resolve("slow.example", 5s);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, "resolve_busy");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms);
  release->store(true);
  for (int i = 0; i < 200 && r.in_flight() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(r.in_flight(), 0u);
  auto ok = r.resolve("fast.example", 1s);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->at(0), IpAddress::v4(8, 8, 8, 8));
}

TEST(SystemResolver, ResolvesThroughGetaddrinfo) {
  SystemResolver r;
  auto a = r.resolve("localhost", 2s);
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_FALSE(a->empty());
  for (const auto& ip : *a) EXPECT_EQ(non_global_reason(ip), "loopback") << ip.to_string();
  auto none = r.resolve("no-such-host.invalid", 2s);
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(none.error().code == "resolve_failed" || none.error().kind == ErrorKind::timeout) << none.error().code;
}
