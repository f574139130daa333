#include "adapters/http/acquirer_http_service.hpp"

#include <boost/json.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps {
namespace json = boost::json;
using std::chrono::milliseconds;

namespace {

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse error_response(int status, std::string_view type, std::string_view code, std::string_view message) {
  json::object e;
  e["type"] = type;
  e["code"] = code;
  e["message"] = message;
  json::object o;
  o["error"] = std::move(e);
  return json_response(status, json::serialize(o));
}

// The acquirer's answer on the wire: 200 with the result, 504 for a timeout, 503 for any
// other retryable failure; a permanent failure is a 422 (the client treats it as final).
HttpResponse result_response(const Result<AcquirerResult>& r) {
  if (r) {
    json::object o;
    o["approved"] = r->approved;
    o["decline_code"] = r->decline_code;
    o["acquirer_ref"] = r->acquirer_ref;
    return json_response(200, json::serialize(o));
  }
  const Error& e = r.error();
  if (e.kind == ErrorKind::timeout) return error_response(504, "timeout", e.code, e.message);
  if (e.retryable) return error_response(503, "unavailable", e.code, e.message);
  return error_response(422, "unprocessable", e.code, e.message);
}

// A lookup's answer: 200 {"charged":true, result fields} or {"charged":false,"voided":true};
// errors as above.
HttpResponse lookup_response(const Result<std::optional<AcquirerResult>>& r) {
  if (!r) return result_response(r.error());
  json::object o;
  o["charged"] = r->has_value();
  if (r->has_value()) {
    o["approved"] = (*r)->approved;
    o["decline_code"] = (*r)->decline_code;
    o["acquirer_ref"] = (*r)->acquirer_ref;
  } else {
    o["voided"] = true;
  }
  return json_response(200, json::serialize(o));
}

const char* lookup_label(const Result<std::optional<AcquirerResult>>& r) {
  if (r) return r->has_value() ? "charged" : "voided";
  if (r.error().kind == ErrorKind::timeout) return "timeout";
  return r.error().retryable ? "unavailable" : "error";
}

// Percent-decodes a path segment; nullopt if malformed.
std::optional<std::string> decode_segment(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += char(hi * 16 + lo);
    i += 2;
  }
  return out;
}

const char* result_label(const Result<AcquirerResult>& r) {
  if (r) return r->approved ? "approved" : "declined";
  if (r.error().kind == ErrorKind::timeout) return "timeout";
  return r.error().retryable ? "unavailable" : "error";
}

void count(const char* op, const char* result) {
  metrics::registry()
      .counter("paystream_acquirer_http_calls_total", "Acquirer calls served over HTTP by operation and result",
               {{"op", op}, {"result", result}})
      .inc();
}

// Strict body readers: a missing or mistyped field is a 400 naming it.
struct Body {
  json::object o;
  std::string bad;
  bool str(const char* k, std::string& out, bool required_non_empty) {
    auto* v = o.if_contains(k);
    if (!v || !v->is_string() || (required_non_empty && v->get_string().empty())) return fail(k);
    out = std::string(v->get_string());
    return true;
  }
  bool i64(const char* k, int64_t& out) {
    auto* v = o.if_contains(k);
    if (!v || !v->is_int64()) return fail(k);
    out = v->get_int64();
    return true;
  }
  bool fail(const char* k) {
    if (bad.empty()) bad = k;
    return false;
  }
};

std::optional<Body> parse_body(const std::string& s) {
  json::error_code ec;
  json::value v = json::parse(s, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return Body{std::move(v.get_object()), {}};
}

}  // namespace

struct AcquirerHttpService::Impl : std::enable_shared_from_this<Impl> {
  Acquirer& acquirer;
  AcquirerHttpOptions opts;

  struct Task {
    std::function<void()> run;  // makes the call and responds
    Respond respond;            // for a task cancelled at shutdown
  };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Task> queue;
  std::vector<std::thread> threads;
  size_t idle = 0;
  bool stopping = false;

  Impl(Acquirer& a, AcquirerHttpOptions o) : acquirer(a), opts(std::move(o)) {}

  void submit(std::function<void()> run, Respond respond) {
    {
      std::lock_guard lk(mu);
      if (!stopping && queue.size() < opts.max_queued) {
        queue.push_back({std::move(run), respond});
        // Threads start on demand, up to `workers`.
        if (idle == 0 && threads.size() < std::max<size_t>(1, opts.workers))
          threads.emplace_back([this] { work(); });
        else
          cv.notify_one();
        return;
      }
    }
    respond(error_response(503, "unavailable", "acquirer_overloaded", "too many acquirer calls waiting"));
  }

  void work() {
    std::unique_lock lk(mu);
    for (;;) {
      ++idle;
      cv.wait(lk, [&] { return stopping || !queue.empty(); });
      --idle;
      if (stopping) return;
      Task t = std::move(queue.front());
      queue.pop_front();
      lk.unlock();
      t.run();
      lk.lock();
    }
  }

  void stop() {
    std::deque<Task> left;
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu);
      stopping = true;
      left.swap(queue);
      ts.swap(threads);
    }
    cv.notify_all();
    for (auto& t : ts) t.join();  // running calls finish (bounded by their timeouts)
    for (auto& t : left) t.respond(error_response(503, "unavailable", "acquirer_stopping", "shutting down"));
  }

  // X-Timeout-Ms, or the default; nullopt if malformed.
  std::optional<milliseconds> timeout_of(const HttpRequest& req) const {
    auto h = req.header("X-Timeout-Ms");
    if (!h) return opts.default_timeout;
    std::string s(*h);
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v <= 0) return std::nullopt;
    return std::min(milliseconds(v), opts.max_timeout);
  }

  void charge(const HttpRequest& req, Respond respond) {
    auto body = parse_body(req.body);
    if (!body) return respond(error_response(400, "invalid_request", "body_invalid", "body must be a JSON object"));
    ChargeRequest c;
    if (!body->str("payment_id", c.payment_id, true) || !body->i64("amount", c.amount_minor) ||
        !body->str("currency", c.currency, false) || !body->str("source", c.source, false))
      return respond(error_response(400, "invalid_request", "parameter_invalid", "missing or mistyped: " + body->bad));
    if (auto key = req.header("Idempotency-Key"); key && *key != c.payment_id)
      return respond(error_response(400, "invalid_request", "idempotency_key_mismatch",
                                    "Idempotency-Key must equal payment_id"));
    auto timeout = timeout_of(req);
    if (!timeout) return respond(error_response(400, "invalid_request", "timeout_invalid", "X-Timeout-Ms must be a positive integer"));
    auto self = shared_from_this();
    submit([self, c = std::move(c), t = *timeout, respond] {
             auto r = self->acquirer.charge(c, t);
             count("charge", result_label(r));
             respond(result_response(r));
           },
           respond);
  }

  void refund(const HttpRequest& req, Respond respond) {
    auto body = parse_body(req.body);
    if (!body) return respond(error_response(400, "invalid_request", "body_invalid", "body must be a JSON object"));
    AcquirerRefundRequest rr;
    if (!body->str("refund_id", rr.refund_id, true) || !body->str("payment_id", rr.payment_id, true) ||
        !body->i64("amount", rr.amount_minor) || !body->str("currency", rr.currency, false))
      return respond(error_response(400, "invalid_request", "parameter_invalid", "missing or mistyped: " + body->bad));
    if (auto key = req.header("Idempotency-Key"); key && *key != rr.refund_id)
      return respond(error_response(400, "invalid_request", "idempotency_key_mismatch",
                                    "Idempotency-Key must equal refund_id"));
    auto timeout = timeout_of(req);
    if (!timeout) return respond(error_response(400, "invalid_request", "timeout_invalid", "X-Timeout-Ms must be a positive integer"));
    auto self = shared_from_this();
    submit([self, rr = std::move(rr), t = *timeout, respond] {
             auto r = self->acquirer.refund(rr, t);
             count("refund", result_label(r));
             respond(result_response(r));
           },
           respond);
  }

  // POST /v1/charges/{id}/lookup: Acquirer::lookup_charge (it may void the id: a write).
  void lookup(const HttpRequest& req, std::string_view segment, Respond respond) {
    auto path_id = decode_segment(segment);
    auto body = parse_body(req.body.empty() ? std::string("{}") : req.body);
    if (!body) return respond(error_response(400, "invalid_request", "body_invalid", "body must be a JSON object"));
    std::string id;
    if (!body->str("payment_id", id, true))
      return respond(error_response(400, "invalid_request", "parameter_invalid", "missing or mistyped: payment_id"));
    if (!path_id || *path_id != id)
      return respond(error_response(400, "invalid_request", "payment_id_mismatch",
                                    "the path's payment id must equal payment_id"));
    if (auto key = req.header("Idempotency-Key"); key && *key != id)
      return respond(error_response(400, "invalid_request", "idempotency_key_mismatch",
                                    "Idempotency-Key must equal payment_id"));
    auto timeout = timeout_of(req);
    if (!timeout) return respond(error_response(400, "invalid_request", "timeout_invalid", "X-Timeout-Ms must be a positive integer"));
    auto self = shared_from_this();
    submit([self, id = std::move(id), t = *timeout, respond] {
             auto r = self->acquirer.lookup_charge(id, t);
             count("lookup", lookup_label(r));
             respond(lookup_response(r));
           },
           respond);
  }

  // Reads may touch a database: they run on the workers too.
  void get_charge(std::string payment_id, Respond respond) {
    if (!opts.records) return respond(error_response(404, "not_found", "route_not_found", "no records here"));
    auto self = shared_from_this();
    submit([self, id = std::move(payment_id), respond] {
             auto r = self->opts.records->find_charge(id);
             if (!r) return respond(error_response(503, "unavailable", r.error().code, r.error().message));
             if (!r->has_value())
               return respond(error_response(404, "not_found", "resource_missing", "no charge for " + id));
             const AcquirerChargeRecord& c = **r;
             json::object o;
             o["payment_id"] = c.payment_id;
             o["amount"] = c.amount_minor;
             o["currency"] = c.currency;
             o["source"] = c.source;
             o["approved"] = c.approved;
             o["decline_code"] = c.decline_code;
             o["calls"] = c.calls;
             o["refunded"] = c.refunded_minor;
             o["created_ms"] = c.created_ms;
             respond(json_response(200, json::serialize(o)));
           },
           respond);
  }

  void get_stats(Respond respond) {
    if (!opts.records) return respond(error_response(404, "not_found", "route_not_found", "no records here"));
    auto self = shared_from_this();
    submit([self, respond] {
             auto r = self->opts.records->stats();
             if (!r) return respond(error_response(503, "unavailable", r.error().code, r.error().message));
             json::object o;
             o["charges"] = r->charges;
             o["refunds"] = r->refunds;
             o["duplicate_calls"] = r->duplicate_calls;
             o["voided"] = r->voided;
             respond(json_response(200, json::serialize(o)));
           },
           respond);
  }

  void handle(HttpRequest req, Respond respond) {
    static constexpr std::string_view charges_prefix = "/v1/charges/";
    static constexpr std::string_view lookup_suffix = "/lookup";
    const std::string& p = req.path;
    if (p.rfind("/v1/", 0) != 0) {
      if (opts.fallback) return opts.fallback(std::move(req), std::move(respond));
      return respond(error_response(404, "not_found", "route_not_found", "no such route"));
    }
    const bool post = req.method == "POST", get = req.method == "GET";
    if (p == "/v1/charges") {
      if (post) return charge(req, std::move(respond));
    } else if (p == "/v1/refunds") {
      if (post) return refund(req, std::move(respond));
    } else if (p == "/v1/stats") {
      if (get) return get_stats(std::move(respond));
    } else if (p.rfind(charges_prefix, 0) == 0 && p.size() > charges_prefix.size() &&
               p.find('/', charges_prefix.size()) == std::string::npos) {
      if (get) return get_charge(p.substr(charges_prefix.size()), std::move(respond));
    } else if (p.rfind(charges_prefix, 0) == 0 && p.size() > charges_prefix.size() + lookup_suffix.size() &&
               p.compare(p.size() - lookup_suffix.size(), lookup_suffix.size(), lookup_suffix) == 0 &&
               p.find('/', charges_prefix.size()) == p.size() - lookup_suffix.size()) {
      const std::string_view segment = std::string_view(p).substr(
          charges_prefix.size(), p.size() - lookup_suffix.size() - charges_prefix.size());
      if (post) return lookup(req, segment, std::move(respond));
    } else {
      return respond(error_response(404, "not_found", "route_not_found", "no such route"));
    }
    respond(error_response(405, "invalid_request", "method_not_allowed", req.method + " not allowed on " + p));
  }
};

AcquirerHttpService::AcquirerHttpService(Acquirer& acquirer, AcquirerHttpOptions options)
    : impl_(std::make_shared<Impl>(acquirer, std::move(options))) {}

AcquirerHttpService::~AcquirerHttpService() { impl_->stop(); }

void AcquirerHttpService::stop() { impl_->stop(); }

HttpHandler AcquirerHttpService::handler() {
  std::weak_ptr<Impl> weak = impl_;
  return [weak](HttpRequest req, Respond respond) {
    auto impl = weak.lock();
    if (!impl) return respond(error_response(503, "unavailable", "acquirer_stopping", "shutting down"));
    impl->handle(std::move(req), std::move(respond));
  };
}

size_t AcquirerHttpService::queued() const {
  std::lock_guard lk(impl_->mu);
  return impl_->queue.size();
}

}  // namespace ps
