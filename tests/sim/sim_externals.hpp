// The simulation's outside world: an acquirer and a merchant's webhook receiver, in
// memory, driven by the simulation's seeded random stream and its clock. They survive a
// simulated crash of paystream (they are other systems).
//
// SimAcquirer keeps the Acquirer port's contract (ports/external.hpp) exactly: charges
// are idempotent by payment id and refunds by refund id; a lookup that finds no charge
// voids the id, so a charge arriving later is declined kChargeVoidedCode. Faults, per call:
//   refuse        unavailable before any effect;
//   timeout       the clock runs to the call's timeout, no effect;
//   lost answer   the effect happens, then the clock runs to the timeout and the call
//                 times out (the money moved, nobody heard);
//   in flight     the call times out, and its request reaches the acquirer later, when the
//                 simulation delivers it (deliver_in_flight): after a lookup voided the
//                 id it is declined, otherwise it charges;
//   slow          the answer takes part of the timeout (the clock advances);
//   lookup fails  a lookup times out.
// It records what moved money, for the invariants: the approved charge and the refunds of
// every payment id.
//
// SimReceiver (WebhookSender): per POST it refuses the connection, stalls to the timeout,
// answers 500, or takes the event and loses its answer (the dispatcher sends it again: a
// duplicate), else takes it and answers 200. It records every event taken, per URL.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ports/clock.hpp"
#include "ports/external.hpp"

namespace ps::sim {

// The seeded random stream every part of one simulation draws from.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t next() { return g_(); }
  bool chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(g_) < p; }
  int64_t between(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g_); }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[size_t(between(0, int64_t(v.size()) - 1))]; }

 private:
  std::mt19937_64 g_;
};

struct AcquirerFaults {
  double refuse = 0, timeout = 0, lost_answer = 0, in_flight = 0, slow = 0, lookup_fails = 0;
};

class SimAcquirer final : public Acquirer {
 public:
  struct Charge {
    AcquirerResult result;
    int64_t amount_minor = 0;
    int captures = 0;   // times money moved for this id (the invariant: at most 1)
  };
  struct RefundRow {
    std::string payment_id;
    int64_t amount_minor = 0;
  };

  SimAcquirer(Rng& rng, ManualClock& clock) : rng_(rng), clock_(clock) {}
  void set_faults(AcquirerFaults f) { faults_ = f; }

  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) override {
    ++calls_;
    if (auto e = before_effect(timeout)) return *e;
    if (rng_.chance(faults_.in_flight)) {
      in_flight_.push_back(req);
      clock_.advance(timeout);
      return Error::timeout("acquirer: no answer within the timeout (request still in flight)");
    }
    AcquirerResult r = execute(req);
    return after_effect(r, timeout);
  }

  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) override {
    ++calls_;
    if (auto e = before_effect(timeout)) return *e;
    AcquirerResult r;
    if (auto it = refunds_.find(req.refund_id); it != refunds_.end()) {
      r.approved = true;
      r.acquirer_ref = "ref_" + req.refund_id;
    } else {
      auto c = charges_.find(req.payment_id);
      int64_t refunded = 0;
      for (const auto& [id, row] : refunds_)
        if (row.payment_id == req.payment_id) refunded += row.amount_minor;
      if (c == charges_.end() || !c->second.result.approved) {
        r.decline_code = "charge_not_found";
      } else if (refunded + req.amount_minor > c->second.amount_minor) {
        r.decline_code = "amount_exceeds_charge";
      } else {
        refunds_[req.refund_id] = RefundRow{req.payment_id, req.amount_minor};
        r.approved = true;
        r.acquirer_ref = "ref_" + req.refund_id;
      }
    }
    return after_effect(r, timeout);
  }

  Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
                                                      std::chrono::milliseconds timeout) override {
    ++calls_;
    if (rng_.chance(faults_.lookup_fails)) {
      clock_.advance(timeout);
      return Error::timeout("acquirer: lookup unanswered");
    }
    if (auto it = charges_.find(payment_id); it != charges_.end())
      return std::optional<AcquirerResult>(it->second.result);
    voids_.insert(payment_id);
    return std::optional<AcquirerResult>();
  }

  // Requests that timed out on their way arrive now (some or all).
  size_t deliver_in_flight(bool all) {
    size_t n = 0;
    std::vector<ChargeRequest> later;
    for (auto& req : in_flight_) {
      if (all || rng_.chance(0.5)) {
        execute(req);
        ++n;
      } else {
        later.push_back(req);
      }
    }
    in_flight_.swap(later);
    return n;
  }

  const std::map<std::string, Charge>& charges() const { return charges_; }
  const std::map<std::string, RefundRow>& refunds() const { return refunds_; }
  uint64_t calls() const { return calls_; }

 private:
  std::optional<Error> before_effect(std::chrono::milliseconds timeout) {
    if (rng_.chance(faults_.refuse)) return Error::unavailable("acquirer_unavailable", "acquirer: connection refused");
    if (rng_.chance(faults_.timeout)) {
      clock_.advance(timeout);
      return Error::timeout("acquirer: no answer within the timeout");
    }
    return std::nullopt;
  }
  Result<AcquirerResult> after_effect(const AcquirerResult& r, std::chrono::milliseconds timeout) {
    if (rng_.chance(faults_.lost_answer)) {
      clock_.advance(timeout);
      return Error::timeout("acquirer: the answer was lost");
    }
    if (rng_.chance(faults_.slow)) clock_.advance(std::chrono::milliseconds(rng_.between(0, timeout.count() - 1)));
    return r;
  }
  AcquirerResult execute(const ChargeRequest& req) {
    if (auto it = charges_.find(req.payment_id); it != charges_.end()) return it->second.result;
    AcquirerResult r;
    if (voids_.count(req.payment_id)) {
      r.decline_code = std::string(kChargeVoidedCode);
      return r;   // a voided id is never stored as a charge
    }
    Charge c;
    c.amount_minor = req.amount_minor;
    if (req.source == "tok_decline") {
      r.decline_code = "card_declined";
    } else {
      r.approved = true;
      r.acquirer_ref = "ch_" + req.payment_id;
      c.captures = 1;
    }
    c.result = r;
    charges_[req.payment_id] = c;
    return r;
  }

  Rng& rng_;
  ManualClock& clock_;
  AcquirerFaults faults_;
  std::map<std::string, Charge> charges_;
  std::map<std::string, RefundRow> refunds_;
  std::set<std::string> voids_;
  std::vector<ChargeRequest> in_flight_;
  uint64_t calls_ = 0;
};

struct ReceiverFaults {
  double refuse = 0, stall = 0, error_500 = 0, lost_answer = 0;
};

class SimReceiver final : public WebhookSender {
 public:
  SimReceiver(Rng& rng, ManualClock& clock) : rng_(rng), clock_(clock) {}
  void set_faults(ReceiverFaults f) { faults_ = f; }

  Result<int> post(const std::string& url, const HttpHeaders& headers, const std::string&,
                   std::chrono::milliseconds timeout) override {
    ++posts_;
    if (rng_.chance(faults_.refuse)) return Error::unavailable("connect_failed", "receiver: connection refused");
    if (rng_.chance(faults_.stall)) {
      clock_.advance(timeout);
      return Error::timeout("receiver: no answer within the timeout");
    }
    if (rng_.chance(faults_.error_500)) return 500;
    std::string id;
    for (const auto& [k, v] : headers)
      if (k == "webhook-id") id = v;
    ++taken_[url][id];
    if (rng_.chance(faults_.lost_answer)) {
      clock_.advance(timeout);
      return Error::timeout("receiver: took the event, the answer was lost");
    }
    return 200;
  }

  // url -> webhook-id (the event id) -> times taken
  const std::map<std::string, std::map<std::string, int>>& taken() const { return taken_; }
  uint64_t posts() const { return posts_; }

 private:
  Rng& rng_;
  ManualClock& clock_;
  ReceiverFaults faults_;
  std::map<std::string, std::map<std::string, int>> taken_;
  uint64_t posts_ = 0;
};

}  // namespace ps::sim
