#include "adapters/embedded/intake_record.hpp"

#include <cstring>

namespace ps::intake_log {
namespace {

constexpr uint8_t kVersion = 1;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(char(v)); }
  void i64(int64_t v) {
    uint64_t u = uint64_t(v);
    for (int i = 0; i < 8; ++i) out_.push_back(char((u >> (8 * i)) & 0xff));
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(char((v >> (8 * i)) & 0xff));
  }
  void str(std::string_view s) {
    u32(uint32_t(s.size()));
    out_.append(s);
  }
  std::string take() { return std::move(out_); }
  void reserve(size_t n) { out_.reserve(n); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u8(uint8_t& v) {
    if (in_.size() < 1) return fail();
    v = uint8_t(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool i64(int64_t& v) {
    if (in_.size() < 8) return fail();
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= uint64_t(uint8_t(in_[i])) << (8 * i);
    v = int64_t(u);
    in_.remove_prefix(8);
    return true;
  }
  bool u32(uint32_t& v) {
    if (in_.size() < 4) return fail();
    v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(in_[i])) << (8 * i);
    in_.remove_prefix(4);
    return true;
  }
  bool str(std::string& s) {
    uint32_t n = 0;
    if (!u32(n) || in_.size() < n) return fail();
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool i32(int& v) {
    int64_t w = 0;
    if (!i64(w)) return false;
    v = int(w);
    return true;
  }
  bool done() const { return ok_ && in_.empty(); }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  std::string_view in_;
  bool ok_ = true;
};

Error undecodable(const char* what) {
  return Error::internal(std::string("log_record_undecodable: ") + what);
}

}  // namespace

uint8_t record_type(const ProjectedWrite& w) { return w.payment ? kPaymentAccepted : kResponseReplaced; }

std::string encode(const ProjectedWrite& w) {
  if (w.payment) return encode_payment(w.now_ms, *w.payment);
  Writer o;
  o.u8(kVersion);
  o.i64(w.now_ms);
  o.str(w.merchant_id);
  o.str(w.key);
  o.i64(w.http_status);
  o.str(w.body);
  return o.take();
}

std::string encode_payment(int64_t now_ms, const AcceptPayment& c) {
  Writer o;
  const Payment& p = c.payment;
  o.reserve(256 + p.description.size() + c.initiated.data.size() + c.record.response_body.size());
  o.u8(kVersion);
  o.i64(now_ms);
  o.str(p.id);
  o.str(p.merchant_id);
  o.str(p.idempotency_key);
  o.i64(p.amount_minor);
  o.str(p.currency);
  o.str(p.source);
  o.str(p.description);
  o.u32(uint32_t(p.metadata.size()));
  for (const auto& [k, v] : p.metadata) {
    o.str(k);
    o.str(v);
  }
  o.u8(uint8_t(p.status));
  o.str(p.failure_code);
  o.i64(p.amount_refunded_minor);
  o.i64(p.created_ms);
  o.i64(p.updated_ms);
  const Event& e = c.initiated;
  o.str(e.id);
  o.str(e.type);
  o.str(e.source);
  o.i64(e.time_ms);
  o.str(e.key);
  o.str(e.traceparent);
  o.str(e.data);
  const IdempotencyRecord& r = c.record;
  o.str(r.merchant_id);
  o.str(r.key);
  o.str(r.fingerprint);
  o.i64(r.http_status);
  o.str(r.response_body);
  o.str(r.resource_id);
  o.i64(r.created_ms);
  return o.take();
}

Result<ProjectedWrite> decode(uint8_t type, std::string_view payload) {
  Reader in(payload);
  uint8_t version = 0;
  ProjectedWrite w;
  if (!in.u8(version) || version != kVersion) return undecodable("unknown format version");
  if (!in.i64(w.now_ms)) return undecodable("truncated");
  if (type == kResponseReplaced) {
    if (!in.str(w.merchant_id) || !in.str(w.key) || !in.i32(w.http_status) || !in.str(w.body) || !in.done())
      return undecodable("bad response record");
    return w;
  }
  if (type != kPaymentAccepted) return undecodable("unknown record type");
  AcceptPayment c;
  Payment& p = c.payment;
  uint32_t n = 0;
  uint8_t status = 0;
  bool ok = in.str(p.id) && in.str(p.merchant_id) && in.str(p.idempotency_key) && in.i64(p.amount_minor) &&
            in.str(p.currency) && in.str(p.source) && in.str(p.description) && in.u32(n);
  for (uint32_t i = 0; ok && i < n; ++i) {
    std::string k, v;
    ok = in.str(k) && in.str(v);
    if (ok) p.metadata.emplace(std::move(k), std::move(v));
  }
  ok = ok && in.u8(status) && status <= uint8_t(PaymentStatus::failed) && in.str(p.failure_code) &&
       in.i64(p.amount_refunded_minor) && in.i64(p.created_ms) && in.i64(p.updated_ms);
  if (ok) p.status = PaymentStatus(status);
  Event& e = c.initiated;
  ok = ok && in.str(e.id) && in.str(e.type) && in.str(e.source) && in.i64(e.time_ms) && in.str(e.key) &&
       in.str(e.traceparent) && in.str(e.data);
  IdempotencyRecord& r = c.record;
  ok = ok && in.str(r.merchant_id) && in.str(r.key) && in.str(r.fingerprint) && in.i32(r.http_status) &&
       in.str(r.response_body) && in.str(r.resource_id) && in.i64(r.created_ms) && in.done();
  if (!ok) return undecodable("bad payment record");
  w.payment = std::move(c);
  return w;
}

}  // namespace ps::intake_log
