// Acquirer contract: decline codes of the test sources, idempotency by payment id (also
// across a reopen of the same durable state), refunds idempotent by refund id and bounded
// by the charge, and every call returning within its timeout plus slack.
// Instantiated for AcquirerSimulator (real SQLite file in a temp directory) and for
// HttpAcquirer talking over a real loopback socket to an in-process HttpServer that serves
// the same simulator through AcquirerHttpService (what `paystream acquirer-sim` runs).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adapters/http/acquirer_http_service.hpp"
#include "adapters/http/http_acquirer.hpp"
#include "adapters/http/http_client.hpp"
#include "adapters/http/http_server.hpp"
#include "adapters/sim/acquirer_simulator.hpp"
#include "ports/external.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;

struct AcquirerFactory {
  std::string name;
  // Opens (or reopens) an acquirer whose durable state lives under `dir`.
  std::function<std::unique_ptr<Acquirer>(const std::filesystem::path& dir)> open;
  // Number of distinct charges that moved money or were declined (stored results).
  std::function<int64_t(Acquirer&)> charge_count;
};
// Names the adapter in test listings (instead of a byte dump of the factory).
inline void PrintTo(const AcquirerFactory& f, std::ostream* os) { *os << f.name; }


class AcquirerContract : public ::testing::TestWithParam<AcquirerFactory> {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ps_acq_contract_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    acq_ = GetParam().open(dir_);
  }
  void TearDown() override {
    acq_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void reopen() {
    acq_.reset();
    acq_ = GetParam().open(dir_);
  }
  Result<AcquirerResult> charge(const std::string& id, const std::string& source, int64_t amount = 1000,
                                std::chrono::milliseconds timeout = 2s) {
    return acq_->charge(ChargeRequest{id, amount, "EUR", source}, timeout);
  }
  int64_t count() { return GetParam().charge_count(*acq_); }

  std::filesystem::path dir_;
  std::unique_ptr<Acquirer> acq_;
};

TEST_P(AcquirerContract, TestSourcesGiveDocumentedOutcomes) {
  auto ok = charge("pay_ok", "tok_approve");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->approved);
  EXPECT_TRUE(ok->decline_code.empty());
  EXPECT_FALSE(ok->acquirer_ref.empty());
  auto dec = charge("pay_dec", "tok_decline");
  ASSERT_TRUE(dec.ok());
  EXPECT_FALSE(dec->approved);
  EXPECT_EQ(dec->decline_code, "card_declined");
  auto nsf = charge("pay_nsf", "tok_insufficient_funds");
  ASSERT_TRUE(nsf.ok());
  EXPECT_FALSE(nsf->approved);
  EXPECT_EQ(nsf->decline_code, "insufficient_funds");
  auto other = charge("pay_other", "tok_unknown_card");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->approved);
  auto fraud = charge("pay_fraud", "tok_fraud");
  ASSERT_TRUE(fraud.ok());
  EXPECT_TRUE(fraud->approved);
}

TEST_P(AcquirerContract, TransientFailsRetryablyOnceThenApproves) {
  auto first = charge("pay_tr", "tok_transient");
  ASSERT_FALSE(first.ok());
  EXPECT_TRUE(first.error().retryable);
  EXPECT_EQ(count(), 0);
  auto second = charge("pay_tr", "tok_transient");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->approved);
  EXPECT_EQ(count(), 1);
}

TEST_P(AcquirerContract, RepeatedChargeReturnsFirstResultAndMovesMoneyOnce) {
  auto a = charge("pay_idem", "tok_approve", 1000);
  ASSERT_TRUE(a.ok());
  // Same payment id, even with a different source and amount: the first result stands.
  auto b = charge("pay_idem", "tok_decline", 9999);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->approved);
  EXPECT_EQ(b->acquirer_ref, a->acquirer_ref);
  auto d1 = charge("pay_idem_dec", "tok_decline");
  auto d2 = charge("pay_idem_dec", "tok_approve");
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_FALSE(d2->approved);
  EXPECT_EQ(d2->decline_code, "card_declined");
  EXPECT_EQ(count(), 2);
}

// Concurrent callers (the processor runs up to --processor-concurrency calls at once, and
// the simulator group-commits them): every call answers, every repeat of an id returns
// the first result, and each id is stored once, durably (visible after a reopen).
TEST_P(AcquirerContract, ConcurrentChargesAndRepeatsAreEachStoredOnce) {
  constexpr int kThreads = 16, kIds = 40;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0), mismatches(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIds; ++i) {
        // Every id is charged by two threads (t and t^1), declines for odd ids.
        const int owner = t / 2;
        const std::string id = "pay_conc_" + std::to_string(owner) + "_" + std::to_string(i);
        auto r = charge(id, i % 2 ? "tok_decline" : "tok_approve");
        if (!r) { ++failures[t]; continue; }
        if (r->approved != (i % 2 == 0)) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
  EXPECT_EQ(count(), kThreads / 2 * kIds);
  reopen();
  EXPECT_EQ(count(), kThreads / 2 * kIds);
  auto again = charge("pay_conc_0_1", "tok_approve");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->approved);  // the stored decline stands
}

TEST_P(AcquirerContract, IdempotencySurvivesReopenOfTheSameState) {
  auto a = charge("pay_durable", "tok_insufficient_funds");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(acq_->refund({"re_none", "pay_durable", 10, "EUR"}, 2s).ok());
  ASSERT_TRUE(charge("pay_durable_ok", "tok_approve", 1000).ok());
  auto r1 = acq_->refund({"re_d1", "pay_durable_ok", 700, "EUR"}, 2s);
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(r1->approved);
  reopen();
  auto b = charge("pay_durable", "tok_approve");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->approved);
  EXPECT_EQ(b->decline_code, "insufficient_funds");
  EXPECT_EQ(count(), 2);
  // The refund replays as approved; a new one beyond what is left is declined.
  auto r1_again = acq_->refund({"re_d1", "pay_durable_ok", 700, "EUR"}, 2s);
  ASSERT_TRUE(r1_again.ok());
  EXPECT_TRUE(r1_again->approved);
  auto r2 = acq_->refund({"re_d2", "pay_durable_ok", 301, "EUR"}, 2s);
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(r2->approved);
  auto r3 = acq_->refund({"re_d3", "pay_durable_ok", 300, "EUR"}, 2s);
  ASSERT_TRUE(r3.ok());
  EXPECT_TRUE(r3->approved);
}

TEST_P(AcquirerContract, RefundOfUnknownPaymentIsDeclined) {
  auto r = acq_->refund({"re_x", "pay_never", 100, "EUR"}, 2s);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->approved);
  EXPECT_FALSE(r->decline_code.empty());
}

TEST_P(AcquirerContract, TimeoutIsHonouredWithinSlack) {
  const auto timeout = 150ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = charge("pay_to", "tok_timeout", 1000, timeout);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_LE(took, timeout + 250ms);
  EXPECT_EQ(count(), 0);   // a timed-out call moved no money
}

// lookup_charge (the port's contract): a charged id answers its recorded result and moves
// nothing; an uncharged id is voided, so the negative answer is final.
TEST_P(AcquirerContract, LookupOfAChargedIdReturnsItsRecordedResult) {
  auto a = charge("pay_lk_ok", "tok_approve");
  auto d = charge("pay_lk_nsf", "tok_insufficient_funds");
  ASSERT_TRUE(a.ok() && d.ok());
  auto la = acq_->lookup_charge("pay_lk_ok", 2s);
  ASSERT_TRUE(la.ok()) << la.error().message;
  ASSERT_TRUE(la->has_value());
  EXPECT_TRUE((*la)->approved);
  EXPECT_EQ((*la)->acquirer_ref, a->acquirer_ref);
  auto ld = acq_->lookup_charge("pay_lk_nsf", 2s);
  ASSERT_TRUE(ld.ok() && ld->has_value());
  EXPECT_FALSE((*ld)->approved);
  EXPECT_EQ((*ld)->decline_code, "insufficient_funds");
  EXPECT_EQ(count(), 2);
}

TEST_P(AcquirerContract, NegativeLookupVoidsTheIdForGoodAlsoAcrossReopen) {
  auto l = acq_->lookup_charge("pay_lk_none", 2s);
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_FALSE(l->has_value());
  // A charge that arrives afterwards (in flight, retried, replayed) moves no money.
  auto late = charge("pay_lk_none", "tok_approve");
  ASSERT_TRUE(late.ok()) << late.error().message;
  EXPECT_FALSE(late->approved);
  EXPECT_EQ(late->decline_code, kChargeVoidedCode);
  EXPECT_EQ(count(), 0);
  auto again = acq_->lookup_charge("pay_lk_none", 2s);   // idempotent
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  reopen();
  auto after = charge("pay_lk_none", "tok_approve");
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->approved);
  EXPECT_EQ(count(), 0);
  EXPECT_FALSE(acq_->lookup_charge("pay_lk_none", 2s)->has_value());
}

TEST_P(AcquirerContract, TimedOutChargeIsDefinitivelyNotChargedAfterALookup) {
  auto t = charge("pay_lk_to", "tok_timeout", 1000, 100ms);
  ASSERT_FALSE(t.ok());
  auto l = acq_->lookup_charge("pay_lk_to", 2s);
  ASSERT_TRUE(l.ok());
  EXPECT_FALSE(l->has_value());
  // The voided id answers at once now, even for tok_timeout.
  const auto t0 = std::chrono::steady_clock::now();
  auto again = charge("pay_lk_to", "tok_timeout", 1000, 2s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->decline_code, kChargeVoidedCode);
  EXPECT_EQ(count(), 0);
}

// The fence under races: charges and lookups of the same ids at once. Whatever the order,
// a lookup that answered "not charged" is never contradicted by an approved charge.
TEST_P(AcquirerContract, ConcurrentChargeAndLookupNeverContradictEachOther) {
  constexpr int kIds = 40;
  std::vector<Result<AcquirerResult>> charges(kIds, Error::internal("not run"));
  std::vector<Result<std::optional<AcquirerResult>>> looks(kIds, Error::internal("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kIds; ++i) {
    const std::string id = "pay_race_" + std::to_string(i);
    threads.emplace_back([&, i, id] { charges[i] = charge(id, "tok_approve"); });
    threads.emplace_back([&, i, id] { looks[i] = acq_->lookup_charge(id, 2s); });
  }
  for (auto& t : threads) t.join();
  int voided = 0, charged = 0;
  for (int i = 0; i < kIds; ++i) {
    ASSERT_TRUE(charges[i].ok()) << charges[i].error().message;
    ASSERT_TRUE(looks[i].ok()) << looks[i].error().message;
    if (looks[i]->has_value()) {
      ++charged;
      EXPECT_TRUE(charges[i]->approved) << i;
      EXPECT_TRUE((*looks[i])->approved) << i;
    } else {
      ++voided;
      EXPECT_FALSE(charges[i]->approved) << i << ": charged after a lookup said not charged";
      EXPECT_EQ(charges[i]->decline_code, kChargeVoidedCode) << i;
    }
  }
  EXPECT_EQ(count(), charged);
  EXPECT_EQ(charged + voided, kIds);
}

AcquirerFactory simulator_factory() {
  return {"sim",
          [](const std::filesystem::path& dir) -> std::unique_ptr<Acquirer> {
            AcquirerSimOptions o;
            o.db_path = (dir / "acquirer.db").string();
            return std::make_unique<AcquirerSimulator>(o);
          },
          [](Acquirer& a) -> int64_t {
            auto r = dynamic_cast<AcquirerSimulator&>(a).charge_count();
            return r ? r.value() : -1;
          }};
}

// The simulator behind an HTTP server on 127.0.0.1:<free port>, reached by HttpAcquirer.
class HttpOverSimulator final : public Acquirer {
 public:
  HttpOverSimulator(AcquirerSimOptions sim_opts, AcquirerHttpOptions svc_opts = {})
      : sim_(std::move(sim_opts)), service_(sim_, std::move(svc_opts)), server_(loopback(), service_.handler()) {
    auto port = server_.start();
    if (!port) throw std::runtime_error("cannot start the acquirer HTTP server: " + port.error().message);
    port_ = *port;
    client_ = std::make_unique<HttpAcquirer>("http://127.0.0.1:" + std::to_string(port_) + "/");
  }
  ~HttpOverSimulator() override {
    server_.stop();
    service_.stop();  // no worker is inside a Respond once the server object goes
  }
  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) override {
    return client_->charge(req, timeout);
  }
  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) override {
    return client_->refund(req, timeout);
  }
  Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
                                                      std::chrono::milliseconds timeout) override {
    return client_->lookup_charge(payment_id, timeout);
  }
  AcquirerSimulator& sim() { return sim_; }
  uint16_t port() const { return port_; }

 private:
  static HttpServerOptions loopback() {
    HttpServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.threads = 2;
    return o;
  }
  AcquirerSimulator sim_;          // declared first: destroyed last
  AcquirerHttpService service_;
  HttpServer server_;
  std::unique_ptr<HttpAcquirer> client_;
  uint16_t port_ = 0;
};

AcquirerFactory http_factory() {
  return {"http",
          [](const std::filesystem::path& dir) -> std::unique_ptr<Acquirer> {
            AcquirerSimOptions o;
            o.db_path = (dir / "acquirer.db").string();
            return std::make_unique<HttpOverSimulator>(o);
          },
          [](Acquirer& a) -> int64_t {
            auto r = dynamic_cast<HttpOverSimulator&>(a).sim().charge_count();
            return r ? r.value() : -1;
          }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, AcquirerContract, ::testing::Values(simulator_factory(), http_factory()),
                         [](const ::testing::TestParamInfo<AcquirerFactory>& i) { return i.param.name; });

// Simulator-specific: latency above the timeout answers timeout after the timeout.
TEST(AcquirerSimulatorOptions, LatencyAboveTimeoutTimesOut) {
  AcquirerSimulator sim({":memory:", 300ms, 0, 42});
  const auto t0 = std::chrono::steady_clock::now();
  auto r = sim.charge({"pay_lat", 100, "EUR", "tok_approve"}, 50ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::timeout);
  EXPECT_EQ(sim.charge_count().value(), 0);
}

TEST(AcquirerSimulatorOptions, FailureRateIsSeededAndRetryable) {
  auto run = [] {
    AcquirerSimulator sim({":memory:", 0ms, 0.5, 7});
    std::string pattern;
    for (int i = 0; i < 64; ++i) {
      auto r = sim.charge({"pay_fr" + std::to_string(i), 100, "EUR", "tok_approve"}, 1s);
      if (!r.ok()) {
        EXPECT_TRUE(r.error().retryable);
      }
      pattern += r.ok() ? 'o' : 'x';
    }
    return pattern;
  };
  const auto a = run();
  EXPECT_EQ(a, run());
  const auto fails = std::count(a.begin(), a.end(), 'x');
  EXPECT_GT(fails, 10);
  EXPECT_LT(fails, 54);
}

// --- The HTTP protocol itself (AcquirerHttpService) -------------------------------------

// A plain GET over a socket (the project's client only POSTs): {status, body}.
std::pair<int, std::string> http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {0, ""};
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
    }
  }
  ::close(fd);
  if (out.rfind("HTTP/1.1 ", 0) != 0) return {0, out};
  auto body = out.find("\r\n\r\n");
  return {std::stoi(out.substr(9, 3)), body == std::string::npos ? "" : out.substr(body + 4)};
}

// Records backed by the simulator's own accessors (the app reads its SQLite file instead).
class SimCounts final : public AcquirerRecords {
 public:
  explicit SimCounts(AcquirerSimulator*& sim) : sim_(sim) {}
  Result<std::optional<AcquirerChargeRecord>> find_charge(const std::string& id) override {
    auto calls = sim_->calls_for(id);
    if (!calls) return calls.error();
    if (*calls == 0) return std::optional<AcquirerChargeRecord>();
    AcquirerChargeRecord c;
    c.payment_id = id;
    c.calls = *calls;
    return std::optional<AcquirerChargeRecord>(c);
  }
  Result<AcquirerStats> stats() override {
    auto n = sim_->charge_count();
    if (!n) return n.error();
    auto v = sim_->void_count();
    if (!v) return v.error();
    return AcquirerStats{*n, 0, 0, *v};
  }

 private:
  AcquirerSimulator*& sim_;
};

class AcquirerHttpProtocol : public ::testing::Test {
 protected:
  void SetUp() override {
    AcquirerHttpOptions o;
    o.records = &records_;
    o.fallback = [](HttpRequest, Respond respond) { respond(HttpResponse{200, {}, "ops", "text/plain"}); };
    acq_ = std::make_unique<HttpOverSimulator>(AcquirerSimOptions{}, std::move(o));
    sim_ = &acq_->sim();
    base_ = "http://127.0.0.1:" + std::to_string(acq_->port());
  }
  AcquirerSimulator* sim_ = nullptr;
  SimCounts records_{sim_};
  std::unique_ptr<HttpOverSimulator> acq_;
  std::string base_;
};

TEST_F(AcquirerHttpProtocol, ReadRoutesShowStoredChargesAndStats) {
  ASSERT_TRUE(acq_->charge({"pay_r", 500, "EUR", "tok_approve"}, 2s).ok());
  ASSERT_TRUE(acq_->charge({"pay_r", 500, "EUR", "tok_approve"}, 2s).ok());
  auto [st, body] = http_get(acq_->port(), "/v1/charges/pay_r");
  EXPECT_EQ(st, 200);
  EXPECT_NE(body.find(R"("payment_id":"pay_r")"), std::string::npos) << body;
  EXPECT_NE(body.find(R"("calls":2)"), std::string::npos) << body;
  EXPECT_EQ(http_get(acq_->port(), "/v1/charges/pay_none").first, 404);
  auto [st2, stats] = http_get(acq_->port(), "/v1/stats");
  EXPECT_EQ(st2, 200);
  EXPECT_NE(stats.find(R"("charges":1)"), std::string::npos) << stats;
  EXPECT_NE(stats.find(R"("duplicate_calls":)"), std::string::npos) << stats;
  EXPECT_EQ(http_get(acq_->port(), "/healthz").second, "ops");  // the fallback
  EXPECT_EQ(http_get(acq_->port(), "/v1/nothing").first, 404);
  EXPECT_EQ(http_get(acq_->port(), "/v1/charges").first, 405);
}

TEST_F(AcquirerHttpProtocol, MalformedRequestsAre400AndPermanent) {
  auto post = [&](const std::string& path, const std::string& body, HttpHeaders h = {}) {
    auto r = http_post(base_ + path, h, body, 2s);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->status : 0;
  };
  EXPECT_EQ(post("/v1/charges", "not json"), 400);
  EXPECT_EQ(post("/v1/charges", R"({"payment_id":"p","amount":"1","currency":"EUR","source":"s"})"), 400);
  EXPECT_EQ(post("/v1/refunds", R"({"refund_id":"r","amount":1,"currency":"EUR"})"), 400);
  EXPECT_EQ(post("/v1/charges", R"({"payment_id":"p","amount":1,"currency":"EUR","source":"s"})",
                 {{"Idempotency-Key", "other"}}),
            400);
  EXPECT_EQ(post("/v1/charges", R"({"payment_id":"p","amount":1,"currency":"EUR","source":"s"})",
                 {{"X-Timeout-Ms", "soon"}}),
            400);
  EXPECT_EQ(sim_->charge_count().value(), 0);
}

TEST_F(AcquirerHttpProtocol, TheServerBoundsItsWorkByTheCallersTimeout) {
  // The client waits 3 s, but tells the server 100 ms: tok_timeout sleeps exactly that
  // and the answer is a 504, i.e. a retryable timeout.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = http_post(base_ + "/v1/charges", {{"X-Timeout-Ms", "100"}},
                     R"({"payment_id":"pay_t","amount":1,"currency":"EUR","source":"tok_timeout"})", 3s);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 504);
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 1s);
}

TEST_F(AcquirerHttpProtocol, SleepingCallsDoNotBlockTheHttpThreads) {
  // More sleeping calls than HTTP threads (2): other requests are still answered at once.
  std::vector<std::thread> sleepers;
  for (int i = 0; i < 6; ++i)
    sleepers.emplace_back([&, i] {
      auto r = acq_->charge({"pay_sleep_" + std::to_string(i), 1, "EUR", "tok_timeout"}, 800ms);
      EXPECT_FALSE(r.ok());
      if (!r.ok()) {
        EXPECT_EQ(r.error().kind, ErrorKind::timeout);
      }
    });
  std::this_thread::sleep_for(100ms);
  const auto t0 = std::chrono::steady_clock::now();
  auto ok = acq_->charge({"pay_fast", 1, "EUR", "tok_approve"}, 2s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 400ms);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->approved);
  for (auto& t : sleepers) t.join();
}

// A lookup is definitive only on the protocol's explicit answer: an acquirer without the
// route (404), a 500, or a "not charged" without the void promise are errors, never "no".
TEST(HttpAcquirerClient, OnlyAnExplicitVoidIsANegativeLookup) {
  std::string answer;
  int status = 200;
  HttpServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.threads = 1;
  std::string seen_path;
  HttpServer server(o, [&](HttpRequest req, Respond respond) {
    seen_path = req.path;
    respond(HttpResponse{status, {}, answer, "application/json"});
  });
  auto port = server.start();
  ASSERT_TRUE(port.ok());
  HttpAcquirer acq("http://127.0.0.1:" + std::to_string(*port));
  auto ask = [&](int st, std::string body) {
    status = st;
    answer = std::move(body);
    return acq.lookup_charge("pay_q", 1s);
  };
  auto voided = ask(200, R"({"charged":false,"voided":true})");
  ASSERT_TRUE(voided.ok());
  EXPECT_FALSE(voided->has_value());
  EXPECT_EQ(seen_path, "/v1/charges/pay_q/lookup");
  auto charged = ask(200, R"({"charged":true,"approved":true,"decline_code":"","acquirer_ref":"ch_1"})");
  ASSERT_TRUE(charged.ok() && charged->has_value());
  EXPECT_TRUE((*charged)->approved);
  auto no_promise = ask(200, R"({"charged":false})");
  ASSERT_FALSE(no_promise.ok());
  EXPECT_TRUE(no_promise.error().retryable);
  auto missing_route = ask(404, R"({"error":{"code":"route_not_found","message":"no such route"}})");
  ASSERT_FALSE(missing_route.ok());
  EXPECT_FALSE(missing_route.error().retryable);
  auto server_error = ask(500, "oops");
  ASSERT_FALSE(server_error.ok());
  EXPECT_TRUE(server_error.error().retryable);
  server.stop();
}

TEST(HttpAcquirerClient, UnreachableAcquirerIsARetryableError) {
  HttpAcquirer acq("http://127.0.0.1:1");
  auto r = acq.charge({"pay_x", 1, "EUR", "tok_approve"}, 500ms);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.error().retryable);
  auto l = acq.lookup_charge("pay_x", 500ms);
  ASSERT_FALSE(l.ok());
  EXPECT_TRUE(l.error().retryable);
}

}  // namespace
}  // namespace ps::contract
