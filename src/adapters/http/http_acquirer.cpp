// HttpAcquirer: the client side of the acquirer protocol (see http_acquirer.hpp and
// acquirer_http_service.hpp for the server). One POST per call within the caller's
// timeout (lookups too: a lookup voids an id, it is not a safe GET); the timeout also
// travels as X-Timeout-Ms so the server bounds its own work by it.
#include "adapters/http/http_acquirer.hpp"

#include <boost/json.hpp>

#include <cctype>

#include "adapters/http/http_client.hpp"

namespace ps {
namespace json = boost::json;

namespace {

// {"error":{"code","message"}} of a non-200 answer, or fallbacks.
std::pair<std::string, std::string> error_of(const HttpClientResponse& r, std::string code) {
  std::string message = "acquirer answered HTTP " + std::to_string(r.status);
  json::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (!ec && v.is_object())
    if (auto* e = v.get_object().if_contains("error"); e && e->is_object()) {
      const auto& eo = e->get_object();
      if (auto* c = eo.if_contains("code"); c && c->is_string() && !c->get_string().empty())
        code = std::string(c->get_string());
      if (auto* m = eo.if_contains("message"); m && m->is_string())
        message += ": " + std::string(m->get_string());
    }
  return {code, message};
}

// The POST itself: the 200 answer's parsed body, or the error its status maps to.
Result<json::object> post(const std::string& url, const std::string& idempotency_key, const json::object& body,
                          std::chrono::milliseconds timeout) {
  HttpHeaders headers{{"Idempotency-Key", idempotency_key}, {"X-Timeout-Ms", std::to_string(timeout.count())}};
  auto r = http_post(url, headers, json::serialize(body), timeout);
  if (!r) return r.error();  // timeout / connect_failed / io_failed: all retryable
  if (r->status == 504) return Error::timeout(error_of(*r, "acquirer_timeout").second);
  if (r->status == 503) {
    auto [code, message] = error_of(*r, "acquirer_unavailable");
    return Error::unavailable(code, message);
  }
  if (r->status >= 500) {
    // A server (or proxy) failure: the call may have taken effect, retrying is safe.
    auto [code, message] = error_of(*r, "acquirer_server_error");
    return Error::unavailable(code, message);
  }
  if (r->status != 200) {
    auto [code, message] = error_of(*r, "acquirer_rejected");
    return Error{ErrorKind::internal, code, message, {}, false};  // permanent
  }
  json::error_code ec;
  json::value v = json::parse(r->body, ec);
  if (ec || !v.is_object())
    return Error::unavailable("acquirer_bad_response", "acquirer answer is not a JSON object");
  return std::move(v.get_object());
}

// {"approved","decline_code","acquirer_ref"} of an answer.
Result<AcquirerResult> result_of(const json::object& o) {
  const json::value* approved = o.if_contains("approved");
  const json::value* decline = o.if_contains("decline_code");
  const json::value* ref = o.if_contains("acquirer_ref");
  if (!approved || !approved->is_bool() || !decline || !decline->is_string() || !ref || !ref->is_string())
    // The call may have taken effect: retrying is safe (idempotent by key) and right.
    return Error::unavailable("acquirer_bad_response", "acquirer answer lacks approved/decline_code/acquirer_ref");
  AcquirerResult out;
  out.approved = approved->get_bool();
  out.decline_code = std::string(decline->get_string());
  out.acquirer_ref = std::string(ref->get_string());
  return out;
}

Result<AcquirerResult> call(const std::string& url, const std::string& idempotency_key, const json::object& body,
                            std::chrono::milliseconds timeout) {
  auto o = post(url, idempotency_key, body, timeout);
  if (!o) return o.error();
  return result_of(*o);
}

// A path segment: ids are [A-Za-z0-9_-] in practice; anything else is percent-encoded.
std::string path_segment(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace

HttpAcquirer::HttpAcquirer(std::string base_url) : base_(std::move(base_url)) {
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
}

HttpAcquirer::~HttpAcquirer() = default;

Result<AcquirerResult> HttpAcquirer::charge(const ChargeRequest& req, std::chrono::milliseconds timeout) {
  json::object o;
  o["payment_id"] = req.payment_id;
  o["amount"] = req.amount_minor;
  o["currency"] = req.currency;
  o["source"] = req.source;
  return call(base_ + "/v1/charges", req.payment_id, o, timeout);
}

Result<AcquirerResult> HttpAcquirer::refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) {
  json::object o;
  o["refund_id"] = req.refund_id;
  o["payment_id"] = req.payment_id;
  o["amount"] = req.amount_minor;
  o["currency"] = req.currency;
  return call(base_ + "/v1/refunds", req.refund_id, o, timeout);
}

Result<std::optional<AcquirerResult>> HttpAcquirer::lookup_charge(const std::string& payment_id,
                                                                  std::chrono::milliseconds timeout) {
  json::object body;
  body["payment_id"] = payment_id;
  auto o = post(base_ + "/v1/charges/" + path_segment(payment_id) + "/lookup", payment_id, body, timeout);
  if (!o) return o.error();
  const json::value* charged = o->if_contains("charged");
  if (!charged || !charged->is_bool())
    return Error::unavailable("acquirer_bad_response", "lookup answer lacks charged");
  if (charged->get_bool()) {
    auto r = result_of(*o);
    if (!r) return r.error();
    return std::optional<AcquirerResult>(std::move(*r));
  }
  // "Not charged" is definitive only with the acquirer's promise that the id is voided.
  const json::value* voided = o->if_contains("voided");
  if (!voided || !voided->is_bool() || !voided->get_bool())
    return Error::unavailable("acquirer_bad_response", "lookup answer says not charged without voiding the id");
  return std::optional<AcquirerResult>();
}

}  // namespace ps
