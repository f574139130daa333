// Boost.Asio stays inside this translation unit (and api_client.cpp, which also uses Beast).
#include "bench/load_worker.hpp"

#include <netinet/in.h>
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "bench/http_response.hpp"
#include "bench/schedule.hpp"

namespace ps::bench {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

std::string_view first_id_member(std::string_view body) {
  size_t pos = 0;
  while ((pos = body.find("\"id\"", pos)) != std::string_view::npos) {
    size_t i = pos + 4;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i < body.size() && body[i] == ':') {
      ++i;
      while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
      if (i < body.size() && body[i] == '"') {
        size_t end = body.find('"', i + 1);
        if (end == std::string_view::npos) return {};
        return body.substr(i + 1, end - i - 1);
      }
      return {};
    }
    pos += 4;
  }
  return {};
}

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch()).count();
}
SteadyClock::time_point at_ns(int64_t ns) { return SteadyClock::time_point(std::chrono::nanoseconds(ns)); }

constexpr int kMaxConnectAttempts = 5;
constexpr size_t kRetryRing = 4096;
constexpr uint32_t kDecline = UINT32_MAX;
// The schedule timer is re-armed at most once per kMinTickGapNs. Every re-arm costs a
// timerfd_settime (two with Asio's reactor), which was the largest single item of the
// generator's CPU (perf: ~6 µs per request at 20,000/s). Requests falling between two
// ticks are sent as soon as any response completes (pump() in on_response), which under
// load is within tens of µs; at rates below 1/kMinTickGapNs per worker the timer still
// wakes exactly at each due time. Either way latency is measured from the due time.
constexpr int64_t kMinTickGapNs = 200'000;
constexpr size_t kInitialReadBuffer = 2048;
constexpr ResponseLimits kLimits{};  // 16 KiB of header, 1 MiB of body

enum class Kind : uint8_t { fresh, retry, pair };

struct Slot {
  int64_t due_ns = 0;     // absolute
  uint32_t key = 0;       // index into keys_
  Kind kind = Kind::fresh;
};

struct KeyRec {
  std::string key;
  std::string id;         // first acknowledged payment id ("" until a 2xx)
  uint32_t source = 0;    // kDecline or the index of the approving source
};

struct Conn {
  explicit Conn(asio::io_context& io) : sock(io) {}
  tcp::socket sock;
  std::string out;                 // the request being written (capacity reused)
  std::unique_ptr<char[]> in;      // bytes read and not yet consumed: in[0, in_len)
  size_t in_cap = 0, in_len = 0;   // grows (doubling) only for an answer that does not fit
  Slot slot;
  enum class State : uint8_t { closed, connecting, idle, busy } state = State::closed;
  bool timed_out = false;
  int connect_attempts = 0;
};

class Worker {
 public:
  explicit Worker(const WorkerParams& p)
      : p_(p), cfg_(*p.cfg), timer_(io_), schedule_(cfg_.steps, 1.0 / cfg_.processes),
        rng_(cfg_.seed * 1000003 + uint64_t(p.index) * 7919 + 1) {
    const auto& r = cfg_.raw;
    target_ = tcp::endpoint(asio::ip::make_address(p.target_address), cfg_.target.port);
    if (!p.source_address.empty()) source_ = asio::ip::make_address(p.source_address);
    prefix_ = "POST /v1/payments HTTP/1.1\r\nHost: " + cfg_.target.host + ":" + std::to_string(cfg_.target.port) +
              "\r\nAuthorization: Bearer " + p.api_key +
              "\r\nContent-Type: application/json\r\nAccept: application/json\r\nIdempotency-Key: ";
    body_head_ = "{\"amount\":" + std::to_string(r.amount_minor) + ",\"currency\":\"" + r.currency + "\",\"source\":\"";
    body_mid_ = "\",\"metadata\":{\"bench_run\":\"" + cfg_.run_id + "\",\"bench_key\":\"";
    timeout_ns_ = r.timeout_ms * 1'000'000;
    sweep_ns_ = std::clamp<int64_t>(r.timeout_ms / 10, 1, 50) * 1'000'000;
    res_.scheduled = schedule_.total();
    keys_.reserve(size_t(std::min<uint64_t>(schedule_.total() + 16, 50'000'000)));
    accepted_keys_.reserve(keys_.capacity());
    key_prefix_ = cfg_.run_id + "-w" + std::to_string(p.index) + "-";
  }

  int run() {
    for (int64_t i = 0; i < p_.connections; ++i) conns_.push_back(std::make_unique<Conn>(io_));
    open_more();
    wait_for_start();
    io_.run();
    res_.latency_us = std::move(hist_);
    // (key, id) of every first acknowledgement, built once here rather than per answer.
    res_.accepted.reserve(res_.accepted.size() + accepted_keys_.size());
    for (uint32_t i : accepted_keys_) res_.accepted.emplace_back(std::move(keys_[i].key), std::move(keys_[i].id));
    std::ofstream f(p_.result_path, std::ios::trunc);
    f << res_.to_json();
    f.close();
    return f ? 0 : 1;
  }

 private:
  // ---- connections ------------------------------------------------------------------
  void open_more() {
    while (next_to_open_ < conns_.size() && connecting_ < cfg_.raw.connect_concurrency) {
      start_connect(*conns_[next_to_open_++]);
    }
  }

  void start_connect(Conn& c) {
    c.state = Conn::State::connecting;
    c.timed_out = false;
    ++connecting_;
    boost::system::error_code ec;
    c.sock = tcp::socket(io_);
    c.sock.open(target_.protocol(), ec);
    if (!ec && source_) {
#ifdef IP_BIND_ADDRESS_NO_PORT
      int one = 1;
      ::setsockopt(c.sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
      c.sock.bind(tcp::endpoint(*source_, 0), ec);
    }
    if (ec) {
      asio::post(io_, [this, &c, ec] { on_connected(c, ec); });
      return;
    }
    c.sock.async_connect(target_, [this, &c](boost::system::error_code e) { on_connected(c, e); });
  }

  void on_connected(Conn& c, boost::system::error_code ec) {
    --connecting_;
    if (ec) {
      ++res_.connect;
      ++live_.errors;
      if (first_connect_error_.empty()) first_connect_error_ = ec.message();
      boost::system::error_code ig;
      c.sock.close(ig);
      c.state = Conn::State::closed;
      ++c.connect_attempts;
      if (!started_ && c.connect_attempts >= kMaxConnectAttempts) {
        ++given_up_;
      } else if (!finished_) {
        auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100 * std::min(c.connect_attempts, 10)));
        t->async_wait([this, &c, t](boost::system::error_code) {
          if (!finished_ && c.state == Conn::State::closed) start_connect(c);
        });
      }
    } else {
      boost::system::error_code ig;
      c.sock.set_option(tcp::no_delay(true), ig);
      c.sock.non_blocking(true, ig);  // send() writes directly, without a completion round trip
      c.connect_attempts = 0;
      c.state = Conn::State::idle;
      ++open_;
      res_.connections_open_max = std::max<uint64_t>(res_.connections_open_max, open_);
      p_.shared->open.fetch_add(1, std::memory_order_relaxed);
      idle_.push_back(&c);
      if (started_) dispatch();
    }
    if (!started_) {
      open_more();
      if (!counted_ready_ && open_ + given_up_ == conns_.size()) {
        counted_ready_ = true;
        p_.shared->ready_workers.fetch_add(1);
      }
    }
  }

  void close_conn(Conn& c) {
    boost::system::error_code ig;
    c.sock.close(ig);
    if (c.state == Conn::State::idle || c.state == Conn::State::busy) {
      --open_;
      p_.shared->open.fetch_sub(1, std::memory_order_relaxed);
    }
    c.state = Conn::State::closed;
    c.in_len = 0;
    if (!finished_) start_connect(c);
  }

  // ---- start --------------------------------------------------------------------------
  void wait_for_start() {
    timer_.expires_after(std::chrono::milliseconds(1));
    timer_.async_wait([this](boost::system::error_code) {
      publish_live();
      if (p_.shared->abort.load()) return finish();
      int64_t s = p_.shared->start_ns.load();
      if (s == 0 || now_ns() < s) return wait_for_start();
      started_ = true;
      start_ns_ = s;
      res_.start_ns = s;
      res_.connections_open_at_start = open_;
      next_sweep_ns_ = s + sweep_ns_;
      next_publish_ns_ = s + 1'000'000'000;
      end_ns_ = s + int64_t(schedule_.length_s() * 1e9) + timeout_ns_ + 1'000'000'000;
      tick();
    });
  }

  // ---- scheduling ---------------------------------------------------------------------
  // Queues every request due by `now` and hands queued requests to idle connections.
  void pump(int64_t now) {
    while (next_index_ < schedule_.total()) {
      int64_t due = start_ns_ + schedule_.due_ns(next_index_);
      if (due > now) break;
      ++next_index_;
      enqueue(due);
    }
    dispatch();
  }

  void tick() {
    if (finished_) return;
    const int64_t now = now_ns();
    if (p_.shared->abort.load(std::memory_order_relaxed)) return finish();
    pump(now);
    publish_live();
    if (now >= next_sweep_ns_) {
      sweep(now);
      next_sweep_ns_ = now + sweep_ns_;
    }
    if (now >= next_publish_ns_) {
      p_.shared->p99_1s_us[p_.index].store(window_.value_at_percentile(99), std::memory_order_relaxed);
      window_.reset();
      next_publish_ns_ = now + 1'000'000'000;
    }
    dispatch();  // sweep() may have freed connections
    if (next_index_ >= schedule_.total() && pending_.empty() && busy_ == 0) return finish();
    if (now >= end_ns_) return finish();
    int64_t wake = std::min(next_sweep_ns_, next_publish_ns_);
    if (next_index_ < schedule_.total()) wake = std::min(wake, start_ns_ + schedule_.due_ns(next_index_));
    timer_.expires_at(at_ns(std::max(wake, now + kMinTickGapNs)));
    timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) tick();
    });
  }

  void enqueue(int64_t due) {
    const auto& r = cfg_.raw;
    double u = uni_(rng_);
    if (u < r.retry_share && !ring_.empty()) {
      uint32_t k = ring_[size_t(rng_() % ring_.size())];
      pending_.push_back({due, k, Kind::retry});
      return;
    }
    bool pair = u >= r.retry_share && u < r.retry_share + r.duplicate_share;
    uint32_t k = uint32_t(keys_.size());
    KeyRec rec;
    char num[24];
    const int len = std::snprintf(num, sizeof num, "%u", k);
    rec.key.reserve(key_prefix_.size() + size_t(len));  // one allocation per new key
    rec.key.append(key_prefix_).append(num, size_t(len));
    rec.source = uni_(rng_) < r.decline_share ? kDecline : uint32_t(rng_() % uint64_t(r.approve_sources));
    keys_.push_back(std::move(rec));
    pending_.push_back({due, k, pair ? Kind::pair : Kind::fresh});
    if (pair) pending_.push_back({due, k, Kind::pair});
  }

  void dispatch() {
    while (!pending_.empty() && !idle_.empty()) {
      Conn* c = idle_.front();
      idle_.pop_front();
      if (c->state != Conn::State::idle) continue;
      Slot s = pending_.front();
      pending_.pop_front();
      send(*c, s);
    }
  }

  void build(Conn& c, const KeyRec& k) {
    std::string& b = body_scratch_;
    b.clear();
    b += body_head_;
    if (k.source == kDecline) {
      b += "tok_decline";
    } else if (cfg_.raw.approve_sources == 1) {
      b += "tok_approve";
    } else {
      b += "tok_approve_";
      b += std::to_string(k.source);
    }
    b += body_mid_;
    b += k.key;
    b += "\"}}";
    std::string& o = c.out;
    o.clear();
    o += prefix_;
    o += k.key;
    o += "\r\nContent-Length: ";
    o += std::to_string(b.size());
    o += "\r\n\r\n";
    o += b;
  }

  void send(Conn& c, const Slot& s) {
    c.slot = s;
    c.state = Conn::State::busy;
    c.timed_out = false;
    ++busy_;
    ++res_.requests;
    ++live_.sent;
    build(c, keys_[s.key]);
    // The socket is non-blocking: a request (a few hundred bytes) normally goes out in this
    // one send; only the rest of a partial write waits for the reactor.
    boost::system::error_code ec;
    size_t n = c.sock.write_some(asio::buffer(c.out), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec = {};
      n = 0;
    }
    if (ec) {  // reported from the loop, not from inside dispatch()
      asio::post(io_, [this, &c, ec] { on_failed(c, ec); });
      return;
    }
    if (n == c.out.size()) return read_more(c);
    asio::async_write(c.sock, asio::buffer(c.out.data() + n, c.out.size() - n),
                      [this, &c](boost::system::error_code e, size_t) {
                        if (e || c.timed_out) return on_failed(c, e);
                        read_more(c);
                      });
  }

  void read_more(Conn& c) {
    if (!c.in) {
      c.in = std::make_unique<char[]>(kInitialReadBuffer);
      c.in_cap = kInitialReadBuffer;
    } else if (c.in_len == c.in_cap) {  // parse_response bounds the message, so this ends
      size_t cap = std::min(c.in_cap * 2, kLimits.max_header_bytes + kLimits.max_body_bytes);
      auto bigger = std::make_unique<char[]>(cap);
      std::memcpy(bigger.get(), c.in.get(), c.in_len);
      c.in = std::move(bigger);
      c.in_cap = cap;
    }
    c.sock.async_read_some(asio::buffer(c.in.get() + c.in_len, c.in_cap - c.in_len),
                           [this, &c](boost::system::error_code e, size_t n) {
                             if (e || c.timed_out) return on_failed(c, e);
                             c.in_len += n;
                             on_bytes(c);
                           });
  }

  void on_bytes(Conn& c) {
    ResponseHead h;
    switch (parse_response(std::string_view(c.in.get(), c.in_len), h, kLimits)) {
      case ParseResult::incomplete:
        return read_more(c);
      case ParseResult::malformed:
        return on_failed(c, asio::error::invalid_argument);  // an io error; the connection reopens
      case ParseResult::complete:
        return on_response(c, h);
    }
  }

  void sweep(int64_t now) {
    while (!pending_.empty() && pending_.front().due_ns + timeout_ns_ <= now) {
      pending_.pop_front();
      count_error_timeout();
    }
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.state == Conn::State::busy && !c.timed_out && c.slot.due_ns + timeout_ns_ <= now) {
        c.timed_out = true;
        boost::system::error_code ig;
        c.sock.close(ig);  // the pending handler reports, then the connection reopens
      }
    }
  }

  // The progress counters in the shared mapping are updated once per tick, not per
  // request: with several workers they share a cache line.
  void publish_live() {
    auto& sh = *p_.shared;
    if (live_.sent) sh.sent.fetch_add(live_.sent, std::memory_order_relaxed);
    if (live_.completed) sh.completed.fetch_add(live_.completed, std::memory_order_relaxed);
    if (live_.sent != live_.completed) sh.inflight.fetch_add(live_.sent - live_.completed, std::memory_order_relaxed);
    if (live_.ok) sh.ok.fetch_add(live_.ok, std::memory_order_relaxed);
    if (live_.errors) sh.errors.fetch_add(live_.errors, std::memory_order_relaxed);
    live_ = {};
  }

  void count_error_timeout() {
    ++res_.timeout;
    ++live_.errors;
  }

  void request_done(Conn& c) {
    --busy_;
    ++live_.completed;
  }

  void on_failed(Conn& c, boost::system::error_code) {
    request_done(c);
    if (c.timed_out) {
      count_error_timeout();
    } else {
      ++res_.io;
      ++live_.errors;
    }
    close_conn(c);
    maybe_finish();
  }

  void on_response(Conn& c, const ResponseHead& h) {
    const int64_t now = now_ns();
    request_done(c);
    const int status = h.status;
    const uint64_t lat_us = uint64_t(std::max<int64_t>(0, now - c.slot.due_ns) / 1000);
    hist_.record(lat_us);
    window_.record(lat_us);
    ++res_.responses;
    res_.last_response_ns = std::max(res_.last_response_ns, now);
    KeyRec& k = keys_[c.slot.key];
    bool good = false;
    if (status >= 200 && status < 300) {
      ++res_.status_2xx;
      std::string_view id = first_id_member(std::string_view(c.in.get() + h.header_bytes, h.body_bytes));
      bool replayed = h.replayed;
      switch (c.slot.kind) {
        case Kind::fresh:
          if (id.empty()) break;
          good = true;
          k.id = id;
          accepted_keys_.push_back(c.slot.key);
          remember(c.slot.key);
          break;
        case Kind::retry:
          if (replayed && id == k.id) {
            ++res_.replays_ok;
            good = true;
          } else {
            ++res_.replay_mismatch;
            if (!id.empty() && id != k.id) res_.accepted.emplace_back(k.key, std::string(id));
            ++live_.errors;
            if (first_mismatch_.empty())
              first_mismatch_ = k.key + ": expected a replay of " + k.id + ", got " + std::string(id) +
                                (replayed ? " (replayed)" : " (not replayed)");
          }
          break;
        case Kind::pair:
          if (id.empty()) break;
          good = true;
          if (k.id.empty()) {
            k.id = id;
            accepted_keys_.push_back(c.slot.key);
            remember(c.slot.key);
          } else if (id != k.id) {
            ++res_.pair_mismatch;
            res_.accepted.emplace_back(k.key, std::string(id));
          }
          break;
      }
      if (good) {
        res_.ok_slot_halves += c.slot.kind == Kind::pair ? 1 : 2;
        ++live_.ok;
      } else if (c.slot.kind != Kind::retry) {
        ++res_.by_status[status];  // a 2xx without a payment id
        ++live_.errors;
      }
    } else if (status == 409 && c.slot.kind == Kind::pair) {
      ++res_.conflicts_409;
      res_.ok_slot_halves += 1;
      ++live_.ok;
    } else {
      ++res_.by_status[status];
      ++live_.errors;
    }
    // Bytes after the answer were never asked for (one request at a time, no pipelining):
    // the answer counts, the connection is reopened rather than trusted with them.
    const bool extra = c.in_len > h.total();
    c.in_len = 0;
    if (!h.keep_alive || extra) {
      close_conn(c);
    } else {
      c.state = Conn::State::idle;
      idle_.push_back(&c);
      pump(now);  // also sends what fell due since the last tick
    }
    maybe_finish();
  }

  void remember(uint32_t key) {
    if (ring_.size() < kRetryRing) ring_.push_back(key);
    else ring_[ring_pos_++ % kRetryRing] = key;
  }

  void maybe_finish() {
    if (started_ && !finished_ && next_index_ >= schedule_.total() && pending_.empty() && busy_ == 0) finish();
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    // Whatever is still queued or in flight never got an answer in time.
    for (size_t i = 0; i < pending_.size(); ++i) count_error_timeout();
    pending_.clear();
    for (auto& cp : conns_)
      if (cp->state == Conn::State::busy) count_error_timeout();
    if (!started_) res_.connections_open_at_start = open_;
    publish_live();
    timer_.cancel();
    io_.stop();
    if (!first_connect_error_.empty())
      std::fprintf(stderr, "bench: worker %d: first connect error: %s\n", p_.index, first_connect_error_.c_str());
    if (!first_mismatch_.empty())
      std::fprintf(stderr, "bench: worker %d: first replay mismatch: %s\n", p_.index, first_mismatch_.c_str());
  }

  const WorkerParams& p_;
  const ValidConfig& cfg_;
  // Single-threaded: no locking inside Asio's scheduler and reactor (perf showed the mutexes).
  asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  asio::steady_timer timer_;
  tcp::endpoint target_;
  std::optional<asio::ip::address> source_;
  Schedule schedule_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uni_{0.0, 1.0};
  std::string prefix_, body_head_, body_mid_, body_scratch_;
  int64_t timeout_ns_ = 0, sweep_ns_ = 0;

  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<Conn*> idle_;
  std::deque<Slot> pending_;
  std::vector<KeyRec> keys_;
  std::vector<uint32_t> accepted_keys_;  // keys_ whose id was acknowledged first (→ res_.accepted)
  std::string key_prefix_;               // "<run id>-w<k>-"
  std::vector<uint32_t> ring_;
  size_t ring_pos_ = 0;
  size_t next_to_open_ = 0;
  int64_t connecting_ = 0;
  uint64_t open_ = 0, given_up_ = 0, busy_ = 0;
  bool started_ = false, finished_ = false, counted_ready_ = false;
  int64_t start_ns_ = 0, end_ns_ = 0, next_sweep_ns_ = 0, next_publish_ns_ = 0;
  uint64_t next_index_ = 0;
  struct Live {
    uint64_t sent = 0, completed = 0, ok = 0, errors = 0;  // not yet added to *p_.shared
  } live_;
  Histogram hist_, window_;
  WorkerResult res_;
  std::string first_connect_error_, first_mismatch_;
};

}  // namespace

int run_load_worker(const WorkerParams& p) {
  // The open-files soft limit may be below the hard one; take what we may.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  try {
    Worker w(p);
    return w.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: worker %d failed: %s\n", p.index, e.what());
    return 1;
  }
}

}  // namespace ps::bench
