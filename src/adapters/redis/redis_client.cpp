// RedisClient: a bounded pool of synchronous hiredis connections.
// Every call has one deadline (now + timeout_ms) covering the wait for a free connection,
// a connect (when the pool has to open one) and the command itself: the socket's read and
// write timeouts are set to what is left before each command. A connection on which
// anything failed (I/O error, timeout, protocol error) is closed, not returned to the
// pool, so the next call opens a fresh one — this is the reconnect.
// A circuit breaker in front of it all (Breaker below) turns a dead or black-holed Redis
// into instant "redis_circuit_open" failures after a few consecutive I/O failures.
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "adapters/redis/redis.hpp"
#include "adapters/redis/redis_internal.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps {
namespace {
using Clock = std::chrono::steady_clock;
using Reply = RedisClient::Reply;

struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user, password;
};

// redis://[[user]:password@]host[:port][/db]. Error messages never quote the URL (it may
// hold a password, also a mistyped one): they name only the host part.
Result<Endpoint> parse_url(const std::string& url) {
  constexpr std::string_view scheme = "redis://";
  if (url.rfind(scheme, 0) != 0)
    return Error::invalid("redis_url_invalid", "Redis URL must start with redis://");
  std::string rest = url.substr(scheme.size());
  Endpoint ep;
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    std::string cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = cred.find(':'); colon != std::string::npos) {
      ep.user = cred.substr(0, colon);
      ep.password = cred.substr(colon + 1);
    } else {
      ep.password = cred;
    }
  }
  std::string hostport = rest;
  if (auto slash = rest.find('/'); slash != std::string::npos) hostport = rest.substr(0, slash);
  const std::string host = hostport.substr(0, hostport.rfind(':'));
  auto bad = [&](const char* what) {
    return Error::invalid("redis_url_invalid", std::string("bad ") + what + " in the Redis URL of host \"" + host + "\"");
  };
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    std::string db = rest.substr(slash + 1);
    if (!db.empty()) {
      char* end = nullptr;
      long v = std::strtol(db.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v > 1000) return bad("database index");
      ep.db = int(v);
    }
  }
  if (auto colon = hostport.rfind(':'); colon != std::string::npos) {
    char* end = nullptr;
    long v = std::strtol(hostport.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || v <= 0 || v > 65535) return bad("port");
    ep.port = int(v);
    hostport = hostport.substr(0, colon);
  }
  if (!hostport.empty()) ep.host = hostport;
  return ep;
}

timeval to_timeval(std::chrono::microseconds us) {
  if (us.count() < 1000) us = std::chrono::microseconds(1000);  // 0 would mean "no timeout"
  timeval tv;
  tv.tv_sec = long(us.count() / 1'000'000);
  tv.tv_usec = long(us.count() % 1'000'000);
  return tv;
}

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::integer;
      out.integer = r->integer;
      out.str = std::to_string(r->integer);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::nil;
  }
  return out;
}

// A minimal circuit breaker (adapters must not depend on src/stages; this mirrors the
// states and the gauge encoding of stages/resilience.hpp's CircuitBreaker).
// closed -> open after `threshold` consecutive failures; open -> half-open once `open_for`
// has passed; half-open admits one trial call at a time; any success closes it, a failure
// while half-open re-opens it. Thread-safe.
class Breaker {
 public:
  enum class State { closed = 0, open = 1, half_open = 2 };
  // neutral: the call never reached Redis (e.g. no free pooled connection in time).
  enum class Outcome { success, failure, neutral };

  Breaker(std::string dependency, int threshold, std::chrono::milliseconds open_for)
      : dependency_(std::move(dependency)),
        threshold_(std::max(1, threshold)),
        open_for_(std::max(open_for, std::chrono::milliseconds(1))),
        gauge_(metrics::registry().gauge("paystream_circuit_state",
                                         "Circuit breaker state per dependency (0 closed, 1 open, 2 half-open)",
                                         {{"dependency", dependency_}})) {
    gauge_.set(0);
  }

  // Whether a call may go ahead; `trial` tells the caller it holds the half-open slot.
  // Every admitted call is reported exactly once with report().
  bool admit(bool& trial) {
    std::lock_guard lk(mu_);
    trial = false;
    if (state_ == State::open && Clock::now() >= opened_at_ + open_for_) set_locked(State::half_open);
    switch (state_) {
      case State::closed: return true;
      case State::open: return false;
      case State::half_open:
        if (trial_in_flight_) return false;
        trial_in_flight_ = trial = true;
        return true;
    }
    return false;
  }

  void report(bool trial, Outcome o) {
    std::lock_guard lk(mu_);
    if (trial) trial_in_flight_ = false;
    if (o == Outcome::success) {
      failures_ = 0;
      set_locked(State::closed);
    } else if (o == Outcome::failure) {
      // A late failure of a call admitted before the breaker opened changes nothing.
      if (state_ == State::half_open || (state_ == State::closed && ++failures_ >= threshold_)) {
        opened_at_ = Clock::now();
        set_locked(State::open);
      }
    }
  }

  Error refusal(const std::string& target) const {
    return Error::unavailable("redis_circuit_open", "redis " + target + ": circuit open after " +
                                                        std::to_string(threshold_) + " consecutive failures");
  }

 private:
  void set_locked(State s) {
    if (s == state_) return;
    state_ = s;
    failures_ = 0;
    gauge_.set(double(int(s)));
    static constexpr const char* kNames[] = {"closed", "open", "half_open"};
    if (s == State::open)  // Redis stopped answering: callers now take their fallbacks at once
      log::warn("circuit breaker state change", {{"dependency", dependency_}, {"state", kNames[int(s)]}});
    else
      log::info("circuit breaker state change", {{"dependency", dependency_}, {"state", kNames[int(s)]}});
  }

  const std::string dependency_;
  const int threshold_;
  const std::chrono::milliseconds open_for_;
  metrics::Gauge& gauge_;
  std::mutex mu_;
  State state_ = State::closed;
  int failures_ = 0;
  bool trial_in_flight_ = false;
  Clock::time_point opened_at_{};
};

}  // namespace

struct RedisClient::Impl {
  RedisOptions opts;
  Endpoint ep;
  metrics::Counter& errors;
  metrics::Histogram& call_seconds;
  Breaker breaker;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<redisContext*> idle;  // connected, no command in flight
  size_t open = 0;                  // idle + borrowed + being connected

  Impl(RedisOptions o, Endpoint e)
      : opts(std::move(o)),
        ep(std::move(e)),
        errors(metrics::registry().counter("paystream_redis_errors_total",
                                           "Redis calls that failed (I/O, timeout, error reply)",
                                           {{"target", opts.name}})),
        call_seconds(metrics::registry().histogram("paystream_redis_call_seconds", "Redis call latency",
                                                   {{"target", opts.name}})),
        breaker("redis-" + opts.name, opts.breaker_failures, std::chrono::milliseconds(opts.breaker_open_ms)) {}
  ~Impl() {
    for (auto* c : idle) redisFree(c);
  }

  Error io_error(redisContext* c, int saved_errno, const char* what) const {
    std::string detail = c ? std::string(c->errstr) : std::string("out of memory");
    bool timed_out = c && c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
    return Error::unavailable(timed_out ? "redis_timeout" : "redis_unavailable",
                              "redis " + opts.name + " (" + ep.host + ":" + std::to_string(ep.port) + ") " +
                                  what + ": " + (timed_out ? "timed out after " + std::to_string(opts.timeout_ms) + " ms" : detail));
  }

  // One command on `c` within the deadline. An I/O failure leaves `c` unusable (the
  // caller closes it); an error reply is a value (`c` stays usable).
  Result<Reply> exec(redisContext* c, const std::vector<std::string>& argv, Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Error::unavailable("redis_timeout", "redis " + opts.name + ": deadline passed");
    redisSetTimeout(c, to_timeval(left));
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    errno = 0;
    auto* raw = static_cast<redisReply*>(redisCommandArgv(c, int(argv.size()), ptrs.data(), lens.data()));
    int saved = errno;
    if (!raw) return io_error(c, saved, "command failed");
    Reply r = convert(raw);
    freeReplyObject(raw);
    return r;
  }

  Result<redisContext*> connect(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Error::unavailable("redis_timeout", "redis " + opts.name + ": deadline passed");
    errno = 0;
    redisContext* c = redisConnectWithTimeout(ep.host.c_str(), ep.port, to_timeval(left));
    int saved = errno;
    if (!c || c->err) {
      Error e = io_error(c, saved, "connect failed");
      if (c) redisFree(c);
      return e;
    }
    std::vector<std::vector<std::string>> setup;
    if (!ep.password.empty()) {
      if (ep.user.empty()) setup.push_back({"AUTH", ep.password});
      else setup.push_back({"AUTH", ep.user, ep.password});
    }
    if (ep.db != 0) setup.push_back({"SELECT", std::to_string(ep.db)});
    for (const auto& cmd : setup) {
      auto r = exec(c, cmd, deadline);
      if (!r || r->type == Reply::Type::error) {
        Error e = r ? Error::unavailable("redis_unavailable", "redis " + opts.name + " " + cmd[0] + ": " + r->str)
                    : r.error();
        redisFree(c);
        return e;
      }
    }
    return c;
  }

  // A connection for one command: an idle one, a new one while below pool_size, or the
  // next one released before the deadline.
  Result<redisContext*> acquire(Clock::time_point deadline) {
    std::unique_lock lk(mu);
    for (;;) {
      if (!idle.empty()) {
        redisContext* c = idle.back();
        idle.pop_back();
        return c;
      }
      if (open < std::max<size_t>(1, opts.pool_size)) {
        ++open;
        lk.unlock();
        auto c = connect(deadline);
        if (!c) {
          lk.lock();
          --open;
          cv.notify_one();
        }
        return c;
      }
      if (cv.wait_until(lk, deadline) == std::cv_status::timeout && idle.empty() &&
          open >= std::max<size_t>(1, opts.pool_size))
        return Error::unavailable("redis_pool_busy", "redis " + opts.name + ": no free connection within " +
                                                         std::to_string(opts.timeout_ms) + " ms");
    }
  }

  void release(redisContext* c, bool healthy) {
    std::lock_guard lk(mu);
    if (healthy && c->err == 0) {
      idle.push_back(c);
    } else {
      redisFree(c);
      --open;
    }
    cv.notify_one();
  }
};

RedisClient::RedisClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisClient::~RedisClient() = default;

Result<std::unique_ptr<RedisClient>> RedisClient::open(const RedisOptions& opts) {
  auto ep = parse_url(opts.url);
  if (!ep) return ep.error();
  if (opts.timeout_ms <= 0) return Error::invalid("redis_timeout_invalid", "Redis timeout_ms must be positive");
  return std::unique_ptr<RedisClient>(new RedisClient(std::make_unique<Impl>(opts, std::move(ep.value()))));
}

const RedisOptions& RedisClient::options() const { return impl_->opts; }

Result<RedisClient::Reply> RedisClient::command(const std::vector<std::string>& argv) {
  Impl& im = *impl_;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(im.opts.timeout_ms);
  auto finish = [&](Result<Reply> r) -> Result<Reply> {
    im.call_seconds.observe(std::chrono::duration<double>(Clock::now() - start).count());
    // NOSCRIPT is expected after a restart or SCRIPT FLUSH (the caller falls back to EVAL).
    if (!r.ok() && r.error().message.rfind("NOSCRIPT", 0) != 0) im.errors.inc();
    return r;
  };
  if (argv.empty()) return Error::invalid("redis_command_empty", "empty Redis command");
  bool trial = false;
  if (!im.breaker.admit(trial)) return finish(im.breaker.refusal(im.opts.name));
  auto c = im.acquire(deadline);
  if (!c) {
    // Waiting for a busy pool says nothing about Redis; a failed connect does.
    im.breaker.report(trial, c.error().code == "redis_pool_busy" ? Breaker::Outcome::neutral
                                                                  : Breaker::Outcome::failure);
    return finish(c.error());
  }
  if (Clock::now() >= deadline) {  // the wait for the pool used the whole budget
    im.release(*c, true);
    im.breaker.report(trial, Breaker::Outcome::neutral);
    return finish(Error::unavailable("redis_pool_busy", "redis " + im.opts.name + ": no free connection within " +
                                                            std::to_string(im.opts.timeout_ms) + " ms"));
  }
  auto r = im.exec(*c, argv, deadline);
  im.release(*c, r.ok());
  // An error reply came from a working server: only I/O failures and timeouts count.
  im.breaker.report(trial, r.ok() ? Breaker::Outcome::success : Breaker::Outcome::failure);
  if (!r) return finish(r.error());
  if (r->type == Reply::Type::error) {
    Error e = Error::internal(r->str);
    e.code = "redis_error";
    return finish(e);
  }
  return finish(std::move(r));
}

Result<void> RedisClient::ping() {
  auto r = command({"PING"});
  if (!r) return r.error();
  return ok();
}

Result<void> RedisClient::flushall() {
  auto r = command({"FLUSHALL"});
  if (!r) return r.error();
  return ok();
}

// --- internal helpers ------------------------------------------------------------------

namespace redis_detail {

namespace {
std::string sha1_hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha1(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}
}  // namespace

Script::Script(std::string source) : source_(std::move(source)), sha1_(sha1_hex(source_)) {}

Result<RedisClient::Reply> Script::run(RedisClient& redis, const std::vector<std::string>& keys,
                                       const std::vector<std::string>& args) const {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(sha1_);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = redis.command(argv);
  if (!r && r.error().message.rfind("NOSCRIPT", 0) == 0) {
    argv[0] = "EVAL";
    argv[1] = source_;
    r = redis.command(argv);
  }
  return r;
}

std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void warn_throttled(std::atomic<int64_t>& last_ms, std::string_view msg, const std::string& target,
                    const Error& e) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          Clock::now().time_since_epoch()).count();
  int64_t prev = last_ms.load();
  if (now - prev < 1000 || !last_ms.compare_exchange_strong(prev, now)) return;
  log::warn(msg, {{"target", target}, {"code", e.code}, {"error", e.message}});
}

}  // namespace redis_detail
}  // namespace ps
