// Unknown acquirer outcomes over a real network (SPEC 2.2): the processor stage charges
// through HttpAcquirer, over loopback sockets, via a TCP proxy that loses answers, to the
// acquirer simulator served by AcquirerHttpService (what `paystream acquirer-sim` runs).
// The proxy, per request (one request per connection, as the client sends them):
//   pass           forwards the request and relays the answer;
//   drop_answer    forwards the request, reads the acquirer's answer and throws it away,
//                  then keeps the client waiting until it gives up (its timeout);
//   cut_answer     forwards the request, reads the answer, closes the client's connection
//                  without it (the client sees a broken connection, not a timeout);
//   hold_request   keeps the request (the client times out) and forwards it only when the
//                  test releases it: a charge still in flight after the processor gave up.
// Whatever is lost, the reconciliation holds: the approved charges at the acquirer are
// exactly the succeeded payments, no failed payment was captured, and a payment whose
// outcome cannot be learnt stays processing (dead-lettered) until a replay resolves it.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "adapters/http/acquirer_http_service.hpp"
#include "adapters/http/http_acquirer.hpp"
#include "adapters/http/http_server.hpp"
#include "adapters/sim/acquirer_simulator.hpp"
#include "common/metrics.hpp"
#include "domain/event.hpp"
#include "ports/clock.hpp"
#include "stages/processor_stage.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;

// --- a small lossy HTTP/1.1 proxy ----------------------------------------------------------

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// Reads one HTTP message (head + Content-Length body); empty on EOF/error/timeout.
std::string read_message(int fd) {
  std::string buf;
  char chunk[4096];
  size_t head_end = std::string::npos;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return {};
    buf.append(chunk, size_t(n));
  }
  size_t length = 0;
  std::string head = buf.substr(0, head_end);
  for (auto& c : head) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (auto p = head.find("\r\ncontent-length:"); p != std::string::npos)
    length = std::stoul(head.substr(p + 17));
  const size_t total = head_end + 4 + length;
  while (buf.size() < total) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return {};
    buf.append(chunk, size_t(n));
  }
  return buf.substr(0, total);
}

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` upstream; the answer (empty if none).
std::string forward(uint16_t upstream, const std::string& request) {
  int fd = connect_loopback(upstream);
  if (fd < 0) return {};
  std::string answer = send_all(fd, request) ? read_message(fd) : std::string();
  ::close(fd);
  return answer;
}

class LossyProxy {
 public:
  enum class Action { pass, drop_answer, cut_answer, hold_request };
  // Decides per request from its path and body.
  using Policy = std::function<Action(const std::string& path, const std::string& body)>;

  LossyProxy(uint16_t upstream, Policy policy) : upstream_(upstream), policy_(std::move(policy)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener_, 64) != 0)
      throw std::runtime_error("proxy: cannot listen");
    socklen_t len = sizeof addr;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~LossyProxy() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    acceptor_.join();
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu_);
      ts.swap(connections_);
    }
    for (auto& t : ts) t.join();
  }
  uint16_t port() const { return port_; }
  void set_policy(Policy p) {
    std::lock_guard lk(mu_);
    policy_ = std::move(p);
  }
  // Forwards every held request now (answers discarded); how many reached the acquirer.
  int release_held() {
    std::vector<std::string> held;
    {
      std::lock_guard lk(mu_);
      held.swap(held_);
    }
    int answered = 0;
    for (const auto& r : held)
      if (!forward(upstream_, r).empty()) ++answered;
    return answered;
  }
  size_t held_count() {
    std::lock_guard lk(mu_);
    return held_.size();
  }

 private:
  void accept_loop() {
    while (!stopping_) {
      int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) {
        if (stopping_) return;
        continue;
      }
      std::lock_guard lk(mu_);
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  }
  // Waits until the client closes its side (it gave up), bounded by SO_RCVTIMEO.
  static void wait_client_gone(int fd) {
    char c;
    while (::recv(fd, &c, 1, 0) > 0) {
    }
  }
  void serve(int fd) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string request = read_message(fd);
    if (request.empty()) {
      ::close(fd);
      return;
    }
    const size_t sp1 = request.find(' '), sp2 = request.find(' ', sp1 + 1);
    const std::string path = request.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string body = request.substr(request.find("\r\n\r\n") + 4);
    Action action;
    {
      std::lock_guard lk(mu_);
      action = policy_(path, body);
    }
    switch (action) {
      case Action::pass:
        send_all(fd, forward(upstream_, request));
        break;
      case Action::drop_answer:
        forward(upstream_, request);
        wait_client_gone(fd);
        break;
      case Action::cut_answer:
        forward(upstream_, request);
        break;
      case Action::hold_request:
        wait_client_gone(fd);
        {
          std::lock_guard lk(mu_);
          held_.push_back(request);
        }
        break;
    }
    ::close(fd);
  }

  const uint16_t upstream_;
  std::mutex mu_;
  Policy policy_;
  std::vector<std::string> held_;
  std::vector<std::thread> connections_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
};

std::string payment_id_in(const std::string& body) {
  static constexpr std::string_view key = "\"payment_id\":\"";
  auto p = body.find(key);
  if (p == std::string::npos) return {};
  p += key.size();
  return body.substr(p, body.find('"', p) - p);
}
bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

// --- the deployment under test ------------------------------------------------------------

Record validated(const std::string& id, const std::string& source, int64_t offset) {
  Payment p;
  p.id = id;
  p.merchant_id = "mer_1";
  p.idempotency_key = "k_" + id;
  p.amount_minor = 1000;
  p.currency = "EUR";
  p.source = source;
  p.created_ms = 1'700'000'000'000;
  p.updated_ms = p.created_ms;
  Record r;
  r.topic = "tx.validated";
  r.offset = offset;
  r.event = make_payment_event(p, event_types::payment_validated, "/test", p.created_ms, "");
  return r;
}

class LostAnswers : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ps_lost_answer_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    AcquirerSimOptions so;
    so.db_path = (dir_ / "acquirer-sim.db").string();
    sim_ = std::make_unique<AcquirerSimulator>(so);
    service_ = std::make_unique<AcquirerHttpService>(*sim_, AcquirerHttpOptions{});
    HttpServerOptions ho;
    ho.host = "127.0.0.1";
    ho.port = 0;
    ho.threads = 2;
    server_ = std::make_unique<HttpServer>(ho, service_->handler());
    auto port = server_->start();
    ASSERT_TRUE(port.ok());
    proxy_ = std::make_unique<LossyProxy>(*port, [](const std::string&, const std::string&) {
      return LossyProxy::Action::pass;
    });
    client_ = std::make_unique<HttpAcquirer>("http://127.0.0.1:" + std::to_string(proxy_->port()));
  }
  void TearDown() override {
    proxy_.reset();
    server_->stop();
    service_->stop();
    server_.reset();
    service_.reset();
    sim_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static ProcessorConfig config() {
    ProcessorConfig cfg;
    cfg.acquirer_timeout = 300ms;
    cfg.backoff = {10ms, 50ms, 3};
    cfg.lookup_max_attempts = 3;
    cfg.breaker = {1'000, 30s, 1};   // per-payment losses here, not an outage
    cfg.concurrency = 16;
    return cfg;
  }
  // payment id -> approved, from the simulator's own file (what reconciliation reads).
  std::map<std::string, bool> acquirer_charges() {
    std::map<std::string, bool> out;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(sim_db().c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT payment_id, approved FROM charges", -1, &st, nullptr), SQLITE_OK);
    while (st && sqlite3_step(st) == SQLITE_ROW)
      out[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] = sqlite3_column_int64(st, 1) != 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }
  std::string sim_db() const { return (dir_ / "acquirer-sim.db").string(); }

  std::filesystem::path dir_;
  std::unique_ptr<AcquirerSimulator> sim_;
  std::unique_ptr<AcquirerHttpService> service_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<LossyProxy> proxy_;
  std::unique_ptr<HttpAcquirer> client_;
};

using Action = LossyProxy::Action;

TEST_F(LostAnswers, ApprovedChargesAtTheAcquirerAreExactlySucceededPaymentsAndNoFailedOneIsCaptured) {
  std::atomic<bool> dark{true};   // the acquirer unreachable for dark_* (charges and lookups)
  proxy_->set_policy([&](const std::string& path, const std::string& body) {
    const std::string id = payment_id_in(body);
    const bool lookup = path.size() > 7 && path.compare(path.size() - 7, 7, "/lookup") == 0;
    if (starts_with(id, "dark_") && dark) return Action::drop_answer;
    if (lookup) return Action::pass;
    if (starts_with(id, "lost_")) return Action::drop_answer;
    if (starts_with(id, "cut_")) return Action::cut_answer;
    if (starts_with(id, "held_")) return Action::hold_request;
    return Action::pass;
  });
  ManualClock clock;   // backoff sleeps are virtual; the network timeouts are real
  ProcessorStage stage(*client_, clock, config());
  auto& unknown = metrics::registry().counter("paystream_acquirer_unknown_outcomes_total", "", {{"op", "charge"}});
  const double unknown_before = unknown.value();

  const std::vector<std::pair<std::string, std::string>> payments = {
      {"ok_1", "tok_approve"},     {"ok_dec", "tok_decline"},   {"lost_1", "tok_approve"},
      {"lost_2", "tok_approve"},   {"lost_dec", "tok_insufficient_funds"},
      {"cut_1", "tok_approve"},    {"cut_dec", "tok_decline"},  {"to_1", "tok_timeout"},
      {"held_1", "tok_approve"},   {"held_2", "tok_approve"},   {"dark_1", "tok_approve"},
      {"dark_2", "tok_decline"}};
  std::vector<Record> batch;
  for (size_t i = 0; i < payments.size(); ++i)
    batch.push_back(validated(payments[i].first, payments[i].second, int64_t(i)));

  std::map<std::string, Payment> terminal;   // payment id -> its terminal event's payment
  std::set<std::string> dead;
  auto collect = [&](const Effects& fx) {
    for (const auto& e : fx.produce) {
      auto p = decode_payload(e.data);
      ASSERT_TRUE(p.ok() && p->payment);
      terminal[p->payment->id] = *p->payment;
    }
    for (const auto& d : fx.dead_letters) {
      dead.insert(d.original.event.key);
      EXPECT_NE(d.error.find("charge outcome unknown after 3 attempts and 3 lookups"), std::string::npos) << d.error;
    }
  };
  auto r = stage.handle(batch);
  ASSERT_TRUE(r.ok()) << r.error().message;
  collect(*r);

  auto expect = [&](const std::string& id, PaymentStatus status, const std::string& code) {
    auto it = terminal.find(id);
    ASSERT_NE(it, terminal.end()) << id << " has no terminal event";
    EXPECT_EQ(it->second.status, status) << id;
    EXPECT_EQ(it->second.failure_code, code) << id;
  };
  expect("ok_1", PaymentStatus::succeeded, "");
  expect("ok_dec", PaymentStatus::failed, "card_declined");
  // Captured, every answer lost: the lookup finds the recorded results.
  expect("lost_1", PaymentStatus::succeeded, "");
  expect("lost_2", PaymentStatus::succeeded, "");
  expect("lost_dec", PaymentStatus::failed, "insufficient_funds");
  expect("cut_1", PaymentStatus::succeeded, "");
  expect("cut_dec", PaymentStatus::failed, "card_declined");
  // Never captured: the lookup voids them, so failing them is truthful.
  expect("to_1", PaymentStatus::failed, "acquirer_timeout");
  expect("held_1", PaymentStatus::failed, "acquirer_timeout");
  expect("held_2", PaymentStatus::failed, "acquirer_timeout");
  // Unknown: neither succeeded nor failed, dead-lettered for an operator, counted.
  EXPECT_EQ(terminal.count("dark_1") + terminal.count("dark_2"), 0u);
  EXPECT_EQ(dead, (std::set<std::string>{"dark_1", "dark_2"}));
  EXPECT_EQ(unknown.value(), unknown_before + 2);

  // The held charges arrive at the acquirer only now, after the payments were failed:
  // the void refuses them, nothing is captured.
  EXPECT_EQ(proxy_->held_count(), 6u);   // 3 attempts each
  EXPECT_EQ(proxy_->release_held(), 6);
  auto charges = acquirer_charges();
  EXPECT_EQ(charges.count("held_1") + charges.count("held_2") + charges.count("to_1"), 0u);
  EXPECT_EQ(sim_->void_count().value(), 3);

  auto reconcile = [&](bool all_terminal) {
    std::set<std::string> approved, succeeded, failed;
    for (const auto& [id, ok] : acquirer_charges())
      if (ok) approved.insert(id);
    for (const auto& [id, p] : terminal) (p.status == PaymentStatus::succeeded ? succeeded : failed).insert(id);
    for (const auto& id : approved) {
      EXPECT_EQ(failed.count(id), 0u) << id << ": captured at the acquirer but reported failed";
      if (all_terminal) {
        EXPECT_EQ(succeeded.count(id), 1u) << id << ": captured but not succeeded";
      }
    }
    for (const auto& id : succeeded) EXPECT_EQ(approved.count(id), 1u) << id << ": succeeded without a capture";
  };
  reconcile(false);   // dark_1 is captured but still processing: not failed

  // The acquirer is reachable again; the operator replays the dead letters (new offsets,
  // the same events): each resolves from the acquirer's record, nothing is charged twice.
  dark = false;
  std::vector<Record> replay;
  for (const auto& d : r->dead_letters) {
    Record again = d.original;
    again.offset += 100;
    replay.push_back(again);
  }
  auto r2 = stage.handle(replay);
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_TRUE(r2->dead_letters.empty());
  collect(*r2);
  expect("dark_1", PaymentStatus::succeeded, "");
  expect("dark_2", PaymentStatus::failed, "card_declined");
  EXPECT_EQ(sim_->calls_for("dark_1").value(), 4);   // 3 lost attempts + the replay: one capture
  EXPECT_EQ(terminal.size(), payments.size());
  reconcile(true);
  EXPECT_EQ(acquirer_charges().size(), 9u);   // one row per charged id, none for the voided three
}

}  // namespace
}  // namespace ps::contract
