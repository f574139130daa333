// External-port contract over HTTP (ports/external.hpp): WebhookSender and RiskProvider
// talk to a real peer — a tiny HTTP/1.1 server written here on plain POSIX sockets, bound
// to 127.0.0.1 port 0 — so what goes over the wire is captured byte for byte and the peer
// can misbehave (never answer, stall mid-body, hang up, refuse connections).
// Each suite runs over a factory; another adapter is added by appending one factory.
// Instantiated for HttpWebhookSender and HttpRiskProvider.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "adapters/http/http_client.hpp"
#include "domain/http_url.hpp"
#include "ports/external.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Scheduling slack allowed on top of a call's timeout (ASan build on a shared 2-core box).
constexpr auto kSlack = 400ms;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

// ---------------------------------------------------------------------------- peer server

struct Captured {
  std::string method, target, version;
  HttpHeaders headers;  // as received: order, case and duplicates kept
  std::string body;
  std::vector<std::string> values(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : headers)
      if (lower(k) == lower(name)) out.push_back(v);
    return out;
  }
};

// What the peer does with a request it has read.
struct Reply {
  enum class Kind {
    send,          // write `raw` and close
    send_and_hold, // write `raw` (e.g. a partial response) and keep the connection open, silent
    hold,          // write nothing, keep the connection open (never answers)
    hang_up,       // close without a byte
  } kind = Kind::send;
  std::string raw;
};

std::string http_response(int status, const std::string& body, const std::string& reason = "X") {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}
Reply respond(int status, const std::string& body = "") { return {Reply::Kind::send, http_response(status, body)}; }

class PeerServer {
 public:
  using Handler = std::function<Reply(const Captured&)>;
  explicit PeerServer(Handler h) : handler_(std::move(h)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = 0;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 64) != 0)
      throw std::runtime_error("peer server: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("peer server: pipe");
    thread_ = std::thread([this] { loop(); });
  }
  ~PeerServer() {
    char c = 'x';
    (void)!::write(wake_[1], &c, 1);
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  uint16_t port() const { return port_; }
  std::string url(const std::string& target) const {
    return "http://127.0.0.1:" + std::to_string(port_) + target;
  }
  std::vector<Captured> captured() {
    std::lock_guard lk(mu_);
    return seen_;
  }
  int accepted() const { return accepted_.load(); }

 private:
  void loop() {
    for (;;) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, 1000) < 0) return;
      if (p[1].revents) return;
      if (!(p[0].revents & POLLIN)) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      accepted_.fetch_add(1);
      serve(fd);
    }
  }
  // Reads one request (Content-Length framing) with a deadline, then replies.
  void serve(int fd) {
    std::string buf;
    Captured c;
    const auto deadline = Clock::now() + 3s;
    size_t header_end = std::string::npos;
    size_t need = 0;
    bool complete = false;
    while (Clock::now() < deadline) {
      if (header_end == std::string::npos) {
        header_end = buf.find("\r\n\r\n");
        if (header_end != std::string::npos) {
          parse_head(buf.substr(0, header_end), c);
          auto cl = c.values("content-length");
          need = cl.empty() ? 0 : std::stoul(cl.front());
        }
      }
      if (header_end != std::string::npos && buf.size() >= header_end + 4 + need) {
        c.body = buf.substr(header_end + 4, need);
        complete = true;
        break;
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char tmp[16384];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) break;
      buf.append(tmp, size_t(n));
    }
    if (!complete) {
      ::close(fd);
      return;
    }
    {
      std::lock_guard lk(mu_);
      seen_.push_back(c);
    }
    Reply r = handler_(c);
    if (r.kind == Reply::Kind::send || r.kind == Reply::Kind::send_and_hold) send_all(fd, r.raw);
    if (r.kind == Reply::Kind::hold || r.kind == Reply::Kind::send_and_hold) {
      held_.push_back(fd);
      return;
    }
    if (r.kind == Reply::Kind::send) ::shutdown(fd, SHUT_WR);
    ::close(fd);
  }
  static void parse_head(const std::string& head, Captured& c) {
    size_t line_end = head.find("\r\n");
    std::string first = head.substr(0, line_end);
    size_t s1 = first.find(' '), s2 = first.rfind(' ');
    c.method = first.substr(0, s1);
    c.target = first.substr(s1 + 1, s2 - s1 - 1);
    c.version = first.substr(s2 + 1);
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string line = head.substr(pos, e - pos);
      size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      size_t b = value.find_first_not_of(" \t");
      size_t t = value.find_last_not_of(" \t");
      value = b == std::string::npos ? "" : value.substr(b, t - b + 1);
      c.headers.emplace_back(name, value);
      pos = e + 2;
    }
  }
  static void send_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += size_t(n);
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Captured> seen_;
  std::vector<int> held_;  // only touched by the server thread, then by the destructor
  std::atomic<int> accepted_{0};
};

// A port on 127.0.0.1 where nothing listens (bound, then closed): connecting is refused.
uint16_t refused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

template <class T>
void expect_retryable_error(const Result<T>& r, const char* what) {
  ASSERT_FALSE(r.ok()) << what << ": expected an error";
  EXPECT_TRUE(r.error().retryable) << what << ": " << r.error().code << " " << r.error().message;
  EXPECT_TRUE(r.error().kind == ErrorKind::timeout || r.error().kind == ErrorKind::unavailable)
      << what << ": kind " << int(r.error().kind) << " " << r.error().message;
}

// ======================================================================================
// WebhookSender
// ======================================================================================

struct WebhookSenderFactory {
  std::string name;
  std::function<std::unique_ptr<WebhookSender>()> make;
};
// Names the adapter in test listings (instead of a byte dump of the factory).
inline void PrintTo(const WebhookSenderFactory& f, std::ostream* os) { *os << f.name; }

class WebhookSenderContract : public ::testing::TestWithParam<WebhookSenderFactory> {
 protected:
  void SetUp() override { sender_ = GetParam().make(); }
  std::unique_ptr<WebhookSender> sender_;
};

TEST_P(WebhookSenderContract, ReturnsThePeersStatusFor2xx4xx5xx) {
  PeerServer peer([](const Captured& c) {
    int status = std::stoi(c.target.substr(c.target.rfind('/') + 1));
    return respond(status, status == 204 ? "" : R"({"peer":"says hi"})");
  });
  for (int status : {200, 201, 202, 204, 299, 400, 401, 404, 410, 429, 500, 502, 503}) {
    auto r = sender_->post(peer.url("/hook/" + std::to_string(status)), {}, "{}", 2s);
    ASSERT_TRUE(r.ok()) << status << ": " << r.error().message;
    EXPECT_EQ(r.value(), status);
  }
  EXPECT_EQ(peer.captured().size(), 13u);  // one request per call, no retries inside
}

TEST_P(WebhookSenderContract, SendsExactlyTheGivenHeadersAndBody) {
  PeerServer peer([](const Captured&) { return respond(200, "ok"); });
  const HttpHeaders headers = {
      {"webhook-id", "evt_01HZX3"},
      {"webhook-timestamp", "1700000000"},
      {"webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,second+sig/=="},
      {"Content-Type", "application/json; charset=utf-8"},
      {"X-Empty-Looking", "a  b"},
  };
  // Byte-exact body: JSON with escapes and UTF-8, bigger than one socket read.
  std::string body = R"({"type":"payment.succeeded","note":"caf\u00e9 \"q\" \\ ü € 💳","pad":")";
  body += std::string(100'000, 'x');
  body += R"("})";
  auto r = sender_->post(peer.url("/hooks/in?tenant=mer_1&v=2"), headers, body, 3s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 200);

  auto seen = peer.captured();
  ASSERT_EQ(seen.size(), 1u);
  const Captured& c = seen.front();
  EXPECT_EQ(c.method, "POST");
  EXPECT_EQ(c.target, "/hooks/in?tenant=mer_1&v=2");
  EXPECT_EQ(c.version, "HTTP/1.1");
  EXPECT_EQ(c.body.size(), body.size());
  EXPECT_TRUE(c.body == body) << "body differs";
  // Every given header arrives once, with exactly its value (a given Content-Type replaces
  // any default rather than adding a second one).
  for (const auto& [name, value] : headers) {
    auto got = c.values(name);
    ASSERT_EQ(got.size(), 1u) << name;
    EXPECT_EQ(got.front(), value) << name;
  }
  // Nothing else but the transport headers HTTP/1.1 needs.
  const std::vector<std::string> transport = {"host", "content-length", "connection", "user-agent",
                                              "accept", "accept-encoding"};
  for (const auto& [name, value] : c.headers) {
    bool given = std::any_of(headers.begin(), headers.end(),
                             [&](const auto& h) { return lower(h.first) == lower(name); });
    bool allowed = std::find(transport.begin(), transport.end(), lower(name)) != transport.end();
    EXPECT_TRUE(given || allowed) << "unexpected header " << name << ": " << value;
  }
  ASSERT_EQ(c.values("host").size(), 1u);
  EXPECT_EQ(c.values("host").front(), "127.0.0.1:" + std::to_string(peer.port()));
  ASSERT_EQ(c.values("content-length").size(), 1u);
  EXPECT_EQ(c.values("content-length").front(), std::to_string(body.size()));
}

TEST_P(WebhookSenderContract, PeerThatNeverAnswersTimesOutRetryably) {
  PeerServer peer([](const Captured&) { return Reply{Reply::Kind::hold, ""}; });
  const auto timeout = 300ms;
  const auto t0 = Clock::now();
  auto r = sender_->post(peer.url("/silent"), {{"webhook-id", "evt_1"}}, "{}", timeout);
  const auto took = Clock::now() - t0;
  expect_retryable_error(r, "silent peer");
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_LE(took, timeout + kSlack);
  EXPECT_GE(took, timeout - 50ms);  // it really waited for the answer
  EXPECT_EQ(peer.captured().size(), 1u);
}

TEST_P(WebhookSenderContract, PeerThatStallsMidResponseTimesOutRetryably) {
  PeerServer peer([](const Captured&) {
    return Reply{Reply::Kind::send_and_hold,
                 "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"only\":\"part"};
  });
  const auto timeout = 300ms;
  const auto t0 = Clock::now();
  auto r = sender_->post(peer.url("/stall"), {}, "{}", timeout);
  const auto took = Clock::now() - t0;
  expect_retryable_error(r, "stalling peer");
  EXPECT_LE(took, timeout + kSlack);
}

TEST_P(WebhookSenderContract, PeerThatHangsUpIsARetryableError) {
  PeerServer peer([](const Captured&) { return Reply{Reply::Kind::hang_up, ""}; });
  const auto t0 = Clock::now();
  auto r = sender_->post(peer.url("/bye"), {}, "{}", 2s);
  expect_retryable_error(r, "hang-up");
  EXPECT_LT(Clock::now() - t0, 2s);  // noticed at once, not at the timeout
}

TEST_P(WebhookSenderContract, ConnectionRefusedIsARetryableError) {
  const uint16_t port = refused_port();
  const auto t0 = Clock::now();
  auto r = sender_->post("http://127.0.0.1:" + std::to_string(port) + "/hook", {}, "{}", 2s);
  expect_retryable_error(r, "refused");
  EXPECT_LT(Clock::now() - t0, 2s);
}

// The peer is on loopback, which the sender refuses unless allow-listed (see below).
AddressPolicy loopback_allowed() { return AddressPolicy(*parse_cidr_list({"127.0.0.0/8", "::1/128"})); }

WebhookSenderFactory http_webhook_sender_factory() {
  return {"http", []() -> std::unique_ptr<WebhookSender> {
            return std::make_unique<HttpWebhookSender>(loopback_allowed());
          }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, WebhookSenderContract, ::testing::Values(http_webhook_sender_factory()),
                         [](const ::testing::TestParamInfo<WebhookSenderFactory>& i) { return i.param.name; });

// ---- HttpWebhookSender: where it may connect (SPEC §3) ---------------------------------

// A resolver answering from a table, counting lookups and recording the timeout given.
class TableResolver final : public HostResolver {
 public:
  std::map<std::string, std::vector<IpAddress>> table;
  std::chrono::milliseconds delay{0};
  std::atomic<int> lookups{0};
  std::atomic<int64_t> last_timeout_ms{-1};
  Result<std::vector<IpAddress>> resolve(const std::string& host, std::chrono::milliseconds timeout) override {
    lookups.fetch_add(1);
    last_timeout_ms = timeout.count();
    if (delay > timeout) {
      std::this_thread::sleep_for(timeout);
      return Error::timeout("DNS lookup timed out");
    }
    std::this_thread::sleep_for(delay);
    auto it = table.find(host);
    if (it == table.end()) return Error::unavailable("resolve_failed", "cannot resolve " + host);
    return it->second;
  }
};

IpAddress addr(const char* s) { return *parse_ip(s); }

TEST(WebhookSenderGuard, LiteralNonGlobalAddressesAreRefusedWithoutConnecting) {
  PeerServer peer([](const Captured&) { return respond(204, ""); });
  HttpWebhookSender strict;   // no allow-list: global addresses only
  const std::string port = std::to_string(peer.port());
  for (const std::string& url : std::vector<std::string>{"http://127.0.0.1:" + port + "/h", "http://[::ffff:127.0.0.1]:" + port + "/h",
                                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/h", "http://[::1]/h",
                                "http://0.0.0.0:" + port + "/h"}) {
    auto r = strict.post(url, {}, "{}", 2s);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().code, "url_not_allowed") << url;
    EXPECT_FALSE(r.error().retryable) << url;
  }
  // The forms the old parser let through to a later failure are refused as malformed.
  for (const std::string& url : std::vector<std::string>{"http://2130706433:" + port + "/h", "http://u@127.0.0.1:" + port + "/h",
                                "http://127.0.0.1:" + port + "/h#f", "http://127.0.0.1:70000/h", "http://127.1:" + port + "/"}) {
    auto r = strict.post(url, {}, "{}", 2s);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().code, "url_invalid") << url;
  }
  EXPECT_EQ(peer.accepted(), 0);
}

TEST(WebhookSenderGuard, NameResolvingToANonGlobalAddressIsRefusedAtConnectTime) {
  PeerServer peer([](const Captured&) { return respond(204, ""); });
  TableResolver dns;
  // A name that passed a check once and now rebinds to internal addresses.
  dns.table["rebind.test"] = {addr("127.0.0.1"), addr("10.0.0.1")};
  dns.table["inside.test"] = {addr("8.8.8.8"), addr("169.254.169.254")};
  HttpWebhookSender strict(AddressPolicy{}, &dns);
  auto r = strict.post("http://rebind.test:" + std::to_string(peer.port()) + "/h", {}, "{}", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "url_not_allowed");
  EXPECT_NE(r.error().message.find("rebind.test resolves to 127.0.0.1"), std::string::npos) << r.error().message;
  // Every address counts, not only the first.
  r = strict.post("http://inside.test/h", {}, "{}", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "url_not_allowed");
  EXPECT_NE(r.error().message.find("169.254.169.254"), std::string::npos) << r.error().message;

  // With loopback allow-listed, 10.0.0.1 still refuses the name as a whole.
  HttpWebhookSender loop(loopback_allowed(), &dns);
  r = loop.post("http://rebind.test:" + std::to_string(peer.port()) + "/h", {}, "{}", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "url_not_allowed");
  EXPECT_NE(r.error().message.find("10.0.0.1 is private"), std::string::npos) << r.error().message;
  EXPECT_EQ(peer.accepted(), 0);
}

TEST(WebhookSenderGuard, AllowedNameConnectsToTheCheckedAddressWithTheOriginalHost) {
  PeerServer peer([](const Captured&) { return respond(204, ""); });
  TableResolver dns;
  dns.table["hooks.rebind.test"] = {addr("127.0.0.1")};
  HttpWebhookSender loop(loopback_allowed(), &dns);
  auto r = loop.post("http://hooks.rebind.test:" + std::to_string(peer.port()) + "/in?x=1", {}, "{}", 2s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 204);
  EXPECT_EQ(dns.lookups.load(), 1);   // resolved once, by the sender, through the given resolver
  auto seen = peer.captured();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/in?x=1");
  ASSERT_EQ(seen[0].values("host").size(), 1u);
  EXPECT_EQ(seen[0].values("host")[0], "hooks.rebind.test:" + std::to_string(peer.port()));
}

TEST(WebhookSenderGuard, TheLookupIsBoundedByTheAttemptTimeout) {
  TableResolver dns;
  dns.table["slow.test"] = {addr("8.8.8.8")};
  dns.delay = 5s;   // a DNS server that does not answer
  HttpWebhookSender s(AddressPolicy{}, &dns);
  const auto t0 = Clock::now();
  auto r = s.post("http://slow.test/h", {}, "{}", 300ms);
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_LE(dns.last_timeout_ms.load(), 300);
  EXPECT_GT(dns.last_timeout_ms.load(), 0);
  EXPECT_LE(took, 300ms + kSlack);
}

// ======================================================================================
// RiskProvider
// ======================================================================================

struct RiskProviderFactory {
  std::string name;
  // A provider that asks the risk service at `url`.
  std::function<std::unique_ptr<RiskProvider>(const std::string& url)> make;
};
inline void PrintTo(const RiskProviderFactory& f, std::ostream* os) { *os << f.name; }

class RiskProviderContract : public ::testing::TestWithParam<RiskProviderFactory> {
 protected:
  Result<RiskVerdict> assess(const std::string& url, std::chrono::milliseconds timeout = 2s) {
    return GetParam().make(url)->assess(req_, timeout);
  }
  const RiskRequest req_{"pay_7Hk2", "mer_42", 12345, "EUR", "tok_approve"};
};

TEST_P(RiskProviderContract, ParsesApproveAndScore) {
  PeerServer peer([](const Captured& c) {
    if (c.target == "/approve") return respond(200, R"({"approve":true,"score":12})");
    if (c.target == "/decline") return respond(200, R"({"score":87,"reason":"velocity","approve":false})");
    return respond(200, R"({"approve":true,"score":0,"reason":"","extra":{"ignored":[1,2]}})");
  });
  auto a = assess(peer.url("/approve"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_TRUE(a->approve);
  EXPECT_EQ(a->score, 12);
  auto d = assess(peer.url("/decline"));
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_FALSE(d->approve);
  EXPECT_EQ(d->score, 87);
  EXPECT_EQ(d->reason, "velocity");
  auto e = assess(peer.url("/extra"));
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_TRUE(e->approve);
  EXPECT_EQ(e->score, 0);
}

TEST_P(RiskProviderContract, SendsThePaymentAsJson) {
  PeerServer peer([](const Captured&) { return respond(200, R"({"approve":true,"score":1})"); });
  ASSERT_TRUE(assess(peer.url("/risk/v1")).ok());
  auto seen = peer.captured();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/risk/v1");
  ASSERT_FALSE(seen[0].values("content-type").empty());
  EXPECT_EQ(lower(seen[0].values("content-type").front()).rfind("application/json", 0), 0u);
  boost::system::error_code ec;
  auto v = boost::json::parse(seen[0].body, ec);
  ASSERT_FALSE(ec) << seen[0].body;
  ASSERT_TRUE(v.is_object());
  const auto& o = v.get_object();
  ASSERT_TRUE(o.contains("payment_id") && o.contains("merchant_id") && o.contains("amount") &&
              o.contains("currency") && o.contains("source"))
      << seen[0].body;
  EXPECT_EQ(o.at("payment_id").as_string(), "pay_7Hk2");
  EXPECT_EQ(o.at("merchant_id").as_string(), "mer_42");
  EXPECT_EQ(o.at("amount").to_number<int64_t>(), 12345);
  EXPECT_EQ(o.at("currency").as_string(), "EUR");
  EXPECT_EQ(o.at("source").as_string(), "tok_approve");
}

TEST_P(RiskProviderContract, MalformedOrUnexpectedAnswerIsAnError) {
  const std::vector<std::string> bad_bodies = {
      "",
      "not json",
      R"({"approve":true,"score":12)",          // truncated
      "[true, 12]",
      R"({"score":12})",                         // approve missing
      R"({"approve":true})",                     // score missing
      R"({"approve":"yes","score":12})",
      R"({"approve":1,"score":12})",
      R"({"approve":true,"score":"12"})",
      R"({"approve":true,"score":12.5})",
      R"({"approve":null,"score":null})",
  };
  std::mutex mu;
  size_t next = 0;
  PeerServer peer([&](const Captured& c) {
    if (c.target == "/500") return respond(500, R"({"approve":true,"score":1})");
    if (c.target == "/404") return respond(404, R"({"approve":true,"score":1})");
    if (c.target == "/302") return respond(302, R"({"approve":true,"score":1})");
    std::lock_guard lk(mu);
    return respond(200, bad_bodies[next++]);
  });
  for (size_t i = 0; i < bad_bodies.size(); ++i) {
    auto r = assess(peer.url("/bad"));
    ASSERT_FALSE(r.ok()) << "body accepted: " << bad_bodies[i];
    EXPECT_EQ(r.error().kind, ErrorKind::unavailable) << bad_bodies[i] << ": " << r.error().message;
    EXPECT_TRUE(r.error().retryable) << bad_bodies[i];  // the caller's fallback applies
  }
  for (const char* path : {"/500", "/404", "/302"}) {
    auto r = assess(peer.url(path));
    ASSERT_FALSE(r.ok()) << path << " accepted";
    EXPECT_TRUE(r.error().retryable) << path;
  }
}

TEST_P(RiskProviderContract, ScoreStaysWithinZeroToHundred) {
  PeerServer peer([](const Captured& c) {
    return respond(200, c.target == "/high" ? R"({"approve":false,"score":1000})"
                                            : R"({"approve":true,"score":-5})");
  });
  for (const char* path : {"/high", "/low"}) {
    auto r = assess(peer.url(path));
    if (r.ok()) {  // either rejected, or clamped into the documented range
      EXPECT_GE(r->score, 0) << path;
      EXPECT_LE(r->score, 100) << path;
    }
  }
}

TEST_P(RiskProviderContract, SilentPeerTimesOutAndRefusedIsRetryable) {
  PeerServer silent([](const Captured&) { return Reply{Reply::Kind::hold, ""}; });
  const auto timeout = 300ms;
  auto t0 = Clock::now();
  auto r = assess(silent.url("/risk"), timeout);
  auto took = Clock::now() - t0;
  expect_retryable_error(r, "silent risk peer");
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_LE(took, timeout + kSlack);

  const uint16_t port = refused_port();
  t0 = Clock::now();
  r = assess("http://127.0.0.1:" + std::to_string(port) + "/risk", 2s);
  expect_retryable_error(r, "refused risk peer");
  EXPECT_LT(Clock::now() - t0, 2s);
}

RiskProviderFactory http_risk_provider_factory() {
  return {"http", [](const std::string& url) -> std::unique_ptr<RiskProvider> {
            return std::make_unique<HttpRiskProvider>(url);
          }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, RiskProviderContract, ::testing::Values(http_risk_provider_factory()),
                         [](const ::testing::TestParamInfo<RiskProviderFactory>& i) { return i.param.name; });

}  // namespace
}  // namespace ps::contract
