#include "adapters/embedded/engine_record.hpp"

namespace ps::engine_record {
namespace {

constexpr uint8_t kVersion = 1;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(char(v)); }
  void i64(int64_t v) {
    uint64_t u = uint64_t(v);
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = char((u >> (8 * i)) & 0xff);
    out_.append(b, 8);
  }
  void u32(uint32_t v) {
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = char((v >> (8 * i)) & 0xff);
    out_.append(b, 4);
  }
  void str(std::string_view s) {
    u32(uint32_t(s.size()));
    out_.append(s);
  }
  void reserve(size_t n) { out_.reserve(n); }
  std::string take() { return std::move(out_); }

  void payment(const Payment& p) {
    str(p.id);
    str(p.merchant_id);
    str(p.idempotency_key);
    i64(p.amount_minor);
    str(p.currency);
    str(p.source);
    str(p.description);
    u32(uint32_t(p.metadata.size()));
    for (const auto& [k, v] : p.metadata) {
      str(k);
      str(v);
    }
    u8(uint8_t(p.status));
    str(p.failure_code);
    i64(p.amount_refunded_minor);
    i64(p.created_ms);
    i64(p.updated_ms);
  }
  void event(const Event& e) {
    str(e.id);
    str(e.type);
    str(e.source);
    i64(e.time_ms);
    str(e.key);
    str(e.traceparent);
    str(e.data);
  }
  void record(const IdempotencyRecord& r) {
    str(r.merchant_id);
    str(r.key);
    str(r.fingerprint);
    i64(r.http_status);
    str(r.response_body);
    str(r.resource_id);
    i64(r.created_ms);
  }
  void refund(const Refund& r) {
    str(r.id);
    str(r.payment_id);
    str(r.merchant_id);
    str(r.idempotency_key);
    i64(r.amount_minor);
    str(r.currency);
    u8(uint8_t(r.status));
    str(r.failure_code);
    i64(r.created_ms);
    i64(r.updated_ms);
  }
  void entry(const std::optional<JournalEntry>& e) {
    u8(e ? 1 : 0);
    if (!e) return;
    str(e->id);
    u8(uint8_t(e->kind));
    str(e->merchant_id);
    str(e->payment_id);
    str(e->refund_id);
    u32(uint32_t(e->postings.size()));
    for (const auto& p : e->postings) {
      str(p.account);
      str(p.currency);
      i64(p.amount_minor);
    }
    i64(e->created_ms);
  }
  void effects(const Effects& fx) {
    u32(uint32_t(fx.produce.size()));
    for (const auto& e : fx.produce) event(e);
    u32(uint32_t(fx.payment_outcomes.size()));
    for (const auto& o : fx.payment_outcomes) {
      payment(o.payment);
      entry(o.settlement);
    }
    u32(uint32_t(fx.refund_outcomes.size()));
    for (const auto& o : fx.refund_outcomes) {
      refund(o.refund);
      entry(o.reversal);
    }
    u32(uint32_t(fx.merchant_events.size()));
    for (const auto& m : fx.merchant_events) {
      str(m.id);
      str(m.merchant_id);
      str(m.type);
      str(m.data_json);
      i64(m.created_ms);
    }
    u32(uint32_t(fx.deliveries.size()));
    for (const auto& d : fx.deliveries) {
      str(d.id);
      str(d.event_id);
      str(d.endpoint_id);
      str(d.merchant_id);
      u8(uint8_t(d.status));
      i64(d.attempts);
      i64(d.next_attempt_ms);
      i64(d.last_http_status);
      str(d.last_error);
    }
    u32(uint32_t(fx.dead_letters.size()));
    for (const auto& d : fx.dead_letters) {
      str(d.original.topic);
      i64(d.original.partition);
      i64(d.original.offset);
      event(d.original.event);
      str(d.error);
      i64(d.attempts);
    }
  }

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
  bool i32(int& v) {
    int64_t w = 0;
    if (!i64(w)) return false;
    v = int(w);
    return true;
  }
  bool u32(uint32_t& v) {
    if (in_.size() < 4) return fail();
    v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(in_[i])) << (8 * i);
    in_.remove_prefix(4);
    return true;
  }
  // A count of items of at least `min_bytes` each: never more than the bytes left allow.
  bool count(uint32_t& n, size_t min_bytes) {
    if (!u32(n)) return false;
    if (size_t(n) * min_bytes > in_.size()) return fail();
    return true;
  }
  bool str(std::string& s) {
    uint32_t n = 0;
    if (!u32(n) || in_.size() < n) return fail();
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return ok_ && in_.empty(); }

  bool payment(Payment& p) {
    uint32_t n = 0;
    uint8_t status = 0;
    bool ok = str(p.id) && str(p.merchant_id) && str(p.idempotency_key) && i64(p.amount_minor) && str(p.currency) &&
              str(p.source) && str(p.description) && count(n, 8);
    for (uint32_t i = 0; ok && i < n; ++i) {
      std::string k, v;
      ok = str(k) && str(v);
      if (ok) p.metadata.emplace(std::move(k), std::move(v));
    }
    ok = ok && u8(status) && status <= uint8_t(PaymentStatus::failed) && str(p.failure_code) &&
         i64(p.amount_refunded_minor) && i64(p.created_ms) && i64(p.updated_ms);
    if (ok) p.status = PaymentStatus(status);
    return ok || fail();
  }
  bool event(Event& e) {
    return (str(e.id) && str(e.type) && str(e.source) && i64(e.time_ms) && str(e.key) && str(e.traceparent) &&
            str(e.data)) ||
           fail();
  }
  bool record(IdempotencyRecord& r) {
    return (str(r.merchant_id) && str(r.key) && str(r.fingerprint) && i32(r.http_status) && str(r.response_body) &&
            str(r.resource_id) && i64(r.created_ms)) ||
           fail();
  }
  bool refund(Refund& r) {
    uint8_t status = 0;
    bool ok = str(r.id) && str(r.payment_id) && str(r.merchant_id) && str(r.idempotency_key) && i64(r.amount_minor) &&
              str(r.currency) && u8(status) && status <= uint8_t(RefundStatus::failed) && str(r.failure_code) &&
              i64(r.created_ms) && i64(r.updated_ms);
    if (ok) r.status = RefundStatus(status);
    return ok || fail();
  }
  bool entry(std::optional<JournalEntry>& out) {
    uint8_t present = 0;
    if (!u8(present) || present > 1) return fail();
    if (!present) return true;
    JournalEntry e;
    uint8_t kind = 0;
    uint32_t n = 0;
    bool ok = str(e.id) && u8(kind) && kind <= uint8_t(EntryKind::refund) && str(e.merchant_id) &&
              str(e.payment_id) && str(e.refund_id) && count(n, 16);
    for (uint32_t i = 0; ok && i < n; ++i) {
      Posting p;
      ok = str(p.account) && str(p.currency) && i64(p.amount_minor);
      if (ok) e.postings.push_back(std::move(p));
    }
    ok = ok && i64(e.created_ms);
    if (!ok) return fail();
    e.kind = EntryKind(kind);
    out = std::move(e);
    return true;
  }
  bool effects(Effects& fx) {
    uint32_t n = 0;
    if (!count(n, 32)) return false;
    fx.produce.resize(n);
    for (auto& e : fx.produce)
      if (!event(e)) return false;
    if (!count(n, 60)) return false;
    fx.payment_outcomes.resize(n);
    for (auto& o : fx.payment_outcomes)
      if (!payment(o.payment) || !entry(o.settlement)) return false;
    if (!count(n, 50)) return false;
    fx.refund_outcomes.resize(n);
    for (auto& o : fx.refund_outcomes)
      if (!refund(o.refund) || !entry(o.reversal)) return false;
    if (!count(n, 24)) return false;
    fx.merchant_events.resize(n);
    for (auto& m : fx.merchant_events)
      if (!(str(m.id) && str(m.merchant_id) && str(m.type) && str(m.data_json) && i64(m.created_ms))) return false;
    if (!count(n, 45)) return false;
    fx.deliveries.resize(n);
    for (auto& d : fx.deliveries) {
      uint8_t status = 0;
      if (!(str(d.id) && str(d.event_id) && str(d.endpoint_id) && str(d.merchant_id) && u8(status) &&
            status <= uint8_t(DeliveryStatus::failed) && i32(d.attempts) && i64(d.next_attempt_ms) &&
            i32(d.last_http_status) && str(d.last_error)))
        return fail();
      d.status = DeliveryStatus(status);
    }
    if (!count(n, 40)) return false;
    fx.dead_letters.resize(n);
    for (auto& d : fx.dead_letters) {
      int64_t partition = 0;
      if (!(str(d.original.topic) && i64(partition) && i64(d.original.offset) && event(d.original.event) &&
            str(d.error) && i32(d.attempts)))
        return false;
      d.original.partition = int32_t(partition);
    }
    return true;
  }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  std::string_view in_;
  bool ok_ = true;
};

Error undecodable(const char* what) { return Error::internal(std::string("log_record_undecodable: ") + what); }

}  // namespace

std::string encode_payment(int64_t now_ms, const AcceptPayment& c) {
  Writer o;
  o.reserve(256 + c.payment.description.size() + c.initiated.data.size() + c.record.response_body.size());
  o.u8(kVersion);
  o.i64(now_ms);
  o.payment(c.payment);
  o.event(c.initiated);
  o.record(c.record);
  return o.take();
}

std::string encode(const ProjectedWrite& w) {
  if (w.kind == ProjectedWrite::Kind::payment && w.payment) return encode_payment(w.now_ms, *w.payment);
  Writer o;
  o.u8(kVersion);
  o.i64(w.now_ms);
  switch (w.kind) {
    case ProjectedWrite::Kind::payment:  // without a payment: decodes as undecodable
      break;
    case ProjectedWrite::Kind::response:
      o.str(w.merchant_id);
      o.str(w.key);
      o.i64(w.http_status);
      o.str(w.body);
      break;
    case ProjectedWrite::Kind::refund:
      o.refund(w.refund);
      o.event(w.refund_event);
      o.record(w.refund_record);
      break;
    case ProjectedWrite::Kind::stage_commit:
      o.str(w.group);
      o.u32(uint32_t(w.positions.size()));
      for (const auto& [topic, offset] : w.positions) {
        o.str(topic);
        o.i64(offset);
      }
      o.effects(w.effects);
      break;
    case ProjectedWrite::Kind::replay:
      o.i64(w.dlq_offset);
      o.u8(w.replay_topic.empty() ? 0 : 1);  // the new offset follows from the record's lsn
      o.str(w.replay_topic);
      o.event(w.replay_event);
      break;
  }
  return o.take();
}

Result<ProjectedWrite> decode(uint8_t type, std::string_view payload) {
  Reader in(payload);
  uint8_t version = 0;
  ProjectedWrite w;
  if (!in.u8(version) || version != kVersion) return undecodable("unknown format version");
  if (!in.i64(w.now_ms)) return undecodable("truncated");
  bool ok = false;
  switch (type) {
    case kPaymentAccepted: {
      w.kind = ProjectedWrite::Kind::payment;
      AcceptPayment c;
      ok = in.payment(c.payment) && in.event(c.initiated) && in.record(c.record);
      if (ok) w.payment = std::move(c);
      break;
    }
    case kResponseReplaced:
      w.kind = ProjectedWrite::Kind::response;
      ok = in.str(w.merchant_id) && in.str(w.key) && in.i32(w.http_status) && in.str(w.body);
      break;
    case uint8_t(ProjectedWrite::Kind::refund):
      w.kind = ProjectedWrite::Kind::refund;
      ok = in.refund(w.refund) && in.event(w.refund_event) && in.record(w.refund_record);
      break;
    case uint8_t(ProjectedWrite::Kind::stage_commit): {
      w.kind = ProjectedWrite::Kind::stage_commit;
      uint32_t n = 0;
      ok = in.str(w.group) && in.count(n, 12);
      for (uint32_t i = 0; ok && i < n; ++i) {
        std::string topic;
        int64_t offset = 0;
        ok = in.str(topic) && in.i64(offset);
        if (ok) w.positions[topic] = offset;
      }
      ok = ok && in.effects(w.effects);
      break;
    }
    case uint8_t(ProjectedWrite::Kind::replay):
      w.kind = ProjectedWrite::Kind::replay;
      {
        uint8_t appends = 0;
        ok = in.i64(w.dlq_offset) && in.u8(appends) && appends <= 1 && in.str(w.replay_topic) &&
             in.event(w.replay_event) && (appends == 1) == !w.replay_topic.empty();
      }
      break;
    default:
      return undecodable("unknown record type");
  }
  if (!ok || !in.done()) return undecodable("bad record");
  return w;
}

}  // namespace ps::engine_record
