// In-test fakes of the ports used by the stage tests (logic tests only).
#pragma once
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "domain/event.hpp"
#include "ports/event_log.hpp"
#include "ports/external.hpp"
#include "ports/stores.hpp"

namespace ps::testing {

inline Payment make_payment(std::string id, std::string source = "tok_approve", int64_t amount = 1000,
                            std::string currency = "EUR", std::string merchant = "mer_1") {
  Payment p;
  p.id = std::move(id);
  p.merchant_id = std::move(merchant);
  p.idempotency_key = "k_" + p.id;
  p.amount_minor = amount;
  p.currency = std::move(currency);
  p.source = std::move(source);
  p.created_ms = 1'700'000'000'000;
  p.updated_ms = p.created_ms;
  return p;
}

inline Refund make_refund(std::string id, std::string payment_id, int64_t amount = 400,
                          std::string merchant = "mer_1") {
  Refund r;
  r.id = std::move(id);
  r.payment_id = std::move(payment_id);
  r.merchant_id = std::move(merchant);
  r.idempotency_key = "rk_" + r.id;
  r.amount_minor = amount;
  r.currency = "EUR";
  r.created_ms = 1'700'000'000'000;
  r.updated_ms = r.created_ms;
  return r;
}

inline Record record_of(Event e, int64_t offset = 0) {
  Record r;
  r.topic = std::string(topic_for(e.type));
  r.offset = offset;
  r.event = std::move(e);
  return r;
}

inline Record payment_record(const Payment& p, std::string_view type, int64_t offset = 0) {
  return record_of(make_payment_event(p, type, "/test", 1'700'000'000'500, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                   offset);
}

inline Record refund_record(const Refund& r, std::string_view type, int64_t offset = 0) {
  return record_of(make_refund_event(r, type, "/test", 1'700'000'000'600, ""), offset);
}

inline Record garbage_record(int64_t offset = 0, std::string type = "payment.initiated") {
  Record r;
  r.topic = "tx.initiated";
  r.offset = offset;
  r.event.id = "evt_garbage";
  r.event.type = std::move(type);
  r.event.key = "pay_garbage";
  r.event.data = "{not json";
  return r;
}

inline Payment payment_of(const Event& e) {
  auto p = decode_payload(e.data);
  if (!p || !p->payment) throw std::runtime_error("event carries no payment");
  return *p->payment;
}
inline Refund refund_of(const Event& e) {
  auto p = decode_payload(e.data);
  if (!p || !p->refund) throw std::runtime_error("event carries no refund");
  return *p->refund;
}

// StageLog fake: hands out queued batches; records commits; optional scripted commit failures.
class FakeStageLog : public StageLog {
 public:
  std::mutex mu;
  std::deque<std::vector<Record>> pending;   // a batch stays until committed
  std::vector<std::pair<std::vector<Record>, Effects>> commits;
  int fail_commits = 0;
  int polls = 0;
  // Decides each commit when set: an error refuses it (after fail_commits is used up).
  std::function<std::optional<Error>(const std::vector<Record>&, const Effects&)> refuse;

  Result<std::vector<Record>> poll(const std::string&, const std::vector<std::string>&, size_t,
                                   std::chrono::milliseconds) override {
    {
      std::lock_guard lk(mu);
      ++polls;
      if (!pending.empty()) return pending.front();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return std::vector<Record>{};
  }
  Result<void> commit(const std::string&, const std::vector<Record>& consumed, Effects effects) override {
    std::lock_guard lk(mu);
    if (fail_commits > 0) {
      --fail_commits;
      return Error::internal("disk full (scripted)");
    }
    if (refuse)
      if (auto e = refuse(consumed, effects)) return *e;
    commits.emplace_back(consumed, std::move(effects));
    // A commit covers the batch's records it names (a runner may commit a prefix first).
    if (!pending.empty()) {
      auto& front = pending.front();
      for (const auto& c : consumed)
        std::erase_if(front, [&](const Record& r) { return r.topic == c.topic && r.offset == c.offset; });
      if (front.empty()) pending.pop_front();
    }
    return ok();
  }
  size_t commit_count() {
    std::lock_guard lk(mu);
    return commits.size();
  }
};

// Acquirer fake: a per-call script function. Without on_lookup, a lookup answers "not
// charged" (the scripted charges of such tests never reach the acquirer).
class FakeAcquirer : public Acquirer {
 public:
  std::function<Result<AcquirerResult>(const ChargeRequest&, int call)> on_charge;
  std::function<Result<AcquirerResult>(const AcquirerRefundRequest&, int call)> on_refund;
  std::function<Result<std::optional<AcquirerResult>>(const std::string& payment_id, int call)> on_lookup;
  std::mutex mu;
  std::map<std::string, int> charge_calls;
  std::map<std::string, int> lookup_calls;
  std::vector<std::string> order;   // payment ids in call order (lookups as "lookup:<id>")

  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds) override {
    int n;
    {
      std::lock_guard lk(mu);
      n = ++charge_calls[req.payment_id];
      order.push_back(req.payment_id);
    }
    return on_charge(req, n);
  }
  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds) override {
    int n;
    {
      std::lock_guard lk(mu);
      n = ++charge_calls[req.refund_id];
      order.push_back("refund:" + req.refund_id);
    }
    return on_refund(req, n);
  }
  Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
                                                      std::chrono::milliseconds) override {
    int n;
    {
      std::lock_guard lk(mu);
      n = ++lookup_calls[payment_id];
      order.push_back("lookup:" + payment_id);
    }
    if (!on_lookup) return std::optional<AcquirerResult>();
    return on_lookup(payment_id, n);
  }
};

class FakeRisk : public RiskProvider {
 public:
  std::function<Result<RiskVerdict>(const RiskRequest&)> fn;
  int calls = 0;
  Result<RiskVerdict> assess(const RiskRequest& r, std::chrono::milliseconds) override {
    ++calls;
    return fn(r);
  }
};

class FakeDeliveryStore : public DeliveryStore {
 public:
  std::mutex mu;
  std::map<std::string, std::vector<WebhookEndpoint>> endpoints;
  std::vector<DueDelivery> due;                    // returned by due_deliveries (if due)
  std::vector<std::pair<WebhookDelivery, std::optional<DeadLetter>>> recorded;
  bool fail_endpoints = false;

  Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) override {
    if (fail_endpoints) return Error::internal("db down (scripted)");
    std::lock_guard lk(mu);
    return endpoints[merchant_id];
  }
  Result<std::vector<DueDelivery>> due_deliveries(int64_t now_ms, size_t max) override {
    std::lock_guard lk(mu);
    std::vector<DueDelivery> out;
    for (const auto& d : due)
      if (d.delivery.status == DeliveryStatus::pending && d.delivery.next_attempt_ms <= now_ms && out.size() < max)
        out.push_back(d);
    return out;
  }
  Result<void> record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> letter) override {
    std::lock_guard lk(mu);
    recorded.emplace_back(updated, letter);
    for (auto& d : due)
      if (d.delivery.id == updated.id) d.delivery = updated;
    return ok();
  }
  Result<bool> redeliver(const std::string&, const std::string&, int64_t) override { return true; }
};

class FakeSender : public WebhookSender {
 public:
  std::mutex mu;
  std::function<Result<int>(const std::string& url)> fn = [](const std::string&) { return Result<int>(200); };
  struct Call {
    std::string url;
    HttpHeaders headers;
    std::string body;
  };
  std::vector<Call> calls;
  Result<int> post(const std::string& url, const HttpHeaders& headers, const std::string& body,
                   std::chrono::milliseconds) override {
    {
      std::lock_guard lk(mu);
      calls.push_back({url, headers, body});
    }
    return fn(url);
  }
  static std::string header(const HttpHeaders& h, const std::string& name) {
    for (const auto& [k, v] : h)
      if (k == name) return v;
    return {};
  }
};

}  // namespace ps::testing
