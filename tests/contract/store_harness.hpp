// Contract-test harness: an adapter under test exposes the durable-store and event-log
// ports through a StoreHarness; store_factories() lists one factory per adapter. A new
// adapter (PostgreSQL + Kafka, ...) is added by appending a factory, and every contract
// suite in this folder then runs against it.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include "common/result.hpp"
#include "domain/ids.hpp"
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps::contract {

class StoreHarness {
 public:
  virtual ~StoreHarness() = default;
  virtual StageLog& log() = 0;
  virtual DeadLetterStore& dead_letters() = 0;
  virtual IntakeStore& intake() = 0;
  virtual PaymentQueries& queries() = 0;
  virtual MerchantStore& merchants() = 0;
  virtual EndpointStore& endpoints() = 0;
  virtual EventQueries& events() = 0;
  virtual DeliveryStore& deliveries() = 0;
  // Closes every connection and opens the same durable state again.
  virtual void reopen() = 0;
  // Number of events ever appended to `topic`.
  virtual int64_t count_events(const std::string& topic) = 0;

  // Capabilities: properties of the embedded shape that a distributed adapter does not
  // have by design. A suite asserting one skips it (GTEST_SKIP with the reason) or leaves
  // out just that assertion for adapters without it; the embedded adapter keeps them all.
  // One total order of offsets across topics (embedded: one events table; Kafka: offsets
  // per topic partition).
  virtual bool global_log_order() const { return true; }
  // The log itself ignores a re-produced (topic, event id) at append time (embedded:
  // UNIQUE(topic, id)); Kafka appends it again and consumers deduplicate by event id.
  virtual bool log_dedups_event_ids() const { return true; }
  // A database-sink commit's produced events and its database effects commit together
  // (embedded: one transaction); distributed: events are published (acks=all) before the
  // database transaction, so a failed database commit leaves them on the bus.
  virtual bool produce_atomic_with_store() const { return true; }
  // Replaying a dead letter appends the event as it is in the log (looked up by topic and
  // id), not the letter's own copy of it; so a webhook letter's replay puts the pipeline
  // event back before the notifier. Distributed: Kafka has no lookup by id; a webhook
  // letter is redelivered from PostgreSQL instead (nothing is appended), any other letter's
  // own copy is appended.
  virtual bool replay_uses_logged_event() const { return true; }
  ManualClock clock;
};

struct HarnessFactory {
  std::string name;
  std::function<std::unique_ptr<StoreHarness>()> make;
};
// Names the adapter in test listings (instead of a byte dump of the factory).
inline void PrintTo(const HarnessFactory& f, std::ostream* os) { *os << f.name; }

std::vector<HarnessFactory> store_factories();

inline std::string factory_name(const testing::TestParamInfo<HarnessFactory>& info) { return info.param.name; }

// ---------- helpers shared by the suites (written against the ports only) ----------

inline Result<AcceptOutcome> accept_payment_sync(IntakeStore& s, AcceptPayment cmd) {
  std::promise<Result<AcceptOutcome>> p;
  auto f = p.get_future();
  s.accept_payment(std::move(cmd), [&p](Result<AcceptOutcome> r) { p.set_value(std::move(r)); });
  return f.get();
}
inline Result<AcceptOutcome> accept_refund_sync(IntakeStore& s, AcceptRefund cmd) {
  std::promise<Result<AcceptOutcome>> p;
  auto f = p.get_future();
  s.accept_refund(std::move(cmd), [&p](Result<AcceptOutcome> r) { p.set_value(std::move(r)); });
  return f.get();
}

inline AcceptPayment payment_cmd(const std::string& merchant, const std::string& key, int64_t amount,
                                 int64_t now_ms, const std::string& currency = "EUR") {
  AcceptPayment c;
  Payment& p = c.payment;
  p.id = payment_id_for(merchant, key);
  p.merchant_id = merchant;
  p.idempotency_key = key;
  p.amount_minor = amount;
  p.currency = currency;
  p.source = "tok_approve";
  p.metadata = {{"order", key}};
  p.created_ms = now_ms;
  p.updated_ms = now_ms;
  c.initiated = make_payment_event(p, event_types::payment_initiated, "/paystream/gateway", now_ms, "");
  c.record = IdempotencyRecord{merchant, key, "fp-" + key, 202, "{\"id\":\"" + p.id + "\"}", p.id, now_ms};
  return c;
}

inline AcceptRefund refund_cmd(const std::string& merchant, const std::string& payment_id, const std::string& key,
                               int64_t amount, int64_t now_ms) {
  AcceptRefund c;
  Refund& r = c.refund;
  r.id = refund_id_for(merchant, key);
  r.payment_id = payment_id;
  r.merchant_id = merchant;
  r.idempotency_key = key;
  r.amount_minor = amount;
  r.created_ms = now_ms;
  r.updated_ms = now_ms;
  c.requested = make_refund_event(r, event_types::refund_requested, "/paystream/gateway", now_ms, "");
  c.record = IdempotencyRecord{merchant, key, "fp-" + key, 202, "", r.id, now_ms};
  c.render = [](const Refund& rf) { return "{\"id\":\"" + rf.id + "\",\"amount\":" + std::to_string(rf.amount_minor) + "}"; };
  return c;
}

// A settlement: debit clearing, credit the merchant (minus `fee` to platform:fees).
inline JournalEntry settlement_for(const Payment& p, int64_t fee = 0) {
  JournalEntry e;
  e.id = deterministic_id("je_", p.id, "settlement");
  e.kind = EntryKind::settlement;
  e.merchant_id = p.merchant_id;
  e.payment_id = p.id;
  e.created_ms = p.updated_ms;
  e.postings.push_back({"acquirer:clearing", p.currency, p.amount_minor});
  e.postings.push_back({"merchant:" + p.merchant_id + ":available", p.currency, -(p.amount_minor - fee)});
  if (fee) e.postings.push_back({"platform:fees", p.currency, -fee});
  return e;
}
inline JournalEntry reversal_for(const Refund& r) {
  JournalEntry e;
  e.id = deterministic_id("je_", r.id, "refund");
  e.kind = EntryKind::refund;
  e.merchant_id = r.merchant_id;
  e.payment_id = r.payment_id;
  e.refund_id = r.id;
  e.created_ms = r.updated_ms;
  e.postings.push_back({"merchant:" + r.merchant_id + ":available", r.currency, r.amount_minor});
  e.postings.push_back({"acquirer:clearing", r.currency, -r.amount_minor});
  return e;
}

inline Effects succeed_payment(Payment p, int64_t now_ms, int64_t fee = 0) {
  p.status = PaymentStatus::succeeded;
  p.updated_ms = now_ms;
  Effects fx;
  fx.payment_outcomes.push_back({p, settlement_for(p, fee)});
  return fx;
}

// Accepts and settles a payment; returns it as accepted.
inline Payment settled_payment(StoreHarness& h, const std::string& merchant, const std::string& key, int64_t amount,
                               const std::string& currency = "EUR", int64_t fee = 0) {
  auto cmd = payment_cmd(merchant, key, amount, h.clock.now_ms(), currency);
  Payment p = cmd.payment;
  auto r = accept_payment_sync(h.intake(), std::move(cmd));
  if (!r || !r->created) throw std::runtime_error("accept failed");
  auto c = h.log().commit("test-ledger", {}, succeed_payment(p, h.clock.now_ms(), fee));
  if (!c) throw std::runtime_error("settle failed: " + c.error().message);
  return p;
}

inline Event test_event(const std::string& subject, std::string_view type, int64_t now_ms) {
  Event e;
  e.id = make_event_id(subject, type);
  e.type = std::string(type);
  e.source = "/paystream/test";
  e.time_ms = now_ms;
  e.key = subject;
  e.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
  e.data = "{\"subject\":\"" + subject + "\"}";
  return e;
}

}  // namespace ps::contract
