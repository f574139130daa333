// In-test fakes of the store ports used by the API (logic tests only; the real stores
// have their own contract tests). Thread-safe via one mutex. Async callbacks run inline
// unless `defer_accepts` is set, in which case they wait in `deferred` until released.
#pragma once
#include <stdexcept>
#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <mutex>

#include "ports/stores.hpp"

namespace ps::testing {

class FakeStores final : public IntakeStore, public PaymentQueries, public MerchantStore,
                         public EndpointStore, public EventQueries, public DeliveryStore {
 public:
  std::mutex mu;
  std::map<std::string, Payment> payments;               // by id
  std::map<std::string, Refund> refunds;                 // by id
  std::map<std::pair<std::string, std::string>, IdempotencyRecord> idem;  // (merchant, key)
  std::vector<Event> events_out;
  std::map<std::string, Merchant> merchants_by_hash;
  std::map<std::string, WebhookEndpoint> endpoints;
  std::vector<MerchantEvent> merchant_events;            // oldest first
  std::map<std::string, std::vector<Balance>> balances_by_merchant;
  std::vector<JournalEntry> entries;
  std::vector<std::pair<std::string, std::string>> redelivered;  // (merchant, event)
  int key_hash_lookups = 0;
  bool fail_accept = false;       // accept_* answer unavailable
  bool fail_find = false;         // find_idempotency answers unavailable
  bool fail_key_lookup = false;   // find_merchant_by_key_hash answers unavailable
  bool hide_from_find = false;    // find_idempotency answers "none" (simulates a race)
  int find_calls = 0;             // find_idempotency calls (with mu)
  bool settle_on_accept = false;  // accepted payments become succeeded at once
  bool defer_accepts = false;
  bool throw_on_accept = false;   // accept_* throw (a bug after the key was taken)
  std::deque<std::function<void()>> deferred;

  void release_deferred() {
    std::deque<std::function<void()>> d;
    {
      std::lock_guard lk(mu);
      d.swap(deferred);
    }
    for (auto& f : d) f();
  }
  void run(std::function<void()> f) {
    {
      std::lock_guard lk(mu);
      if (defer_accepts) {
        deferred.push_back(std::move(f));
        return;
      }
    }
    f();
  }

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override {
    if (throw_on_accept) throw std::runtime_error("accept_payment blew up");
    run([this, cmd = std::move(cmd), cb = std::move(cb)]() mutable {
      Result<AcceptOutcome> out = Error::unavailable("unavailable", "store down");
      {
        std::lock_guard lk(mu);
        if (!fail_accept) {
          auto k = std::make_pair(cmd.record.merchant_id, cmd.record.key);
          if (auto it = idem.find(k); it != idem.end()) {
            out = AcceptOutcome{false, it->second};
          } else {
            idem[k] = cmd.record;
            Payment p = cmd.payment;
            if (settle_on_accept) p.status = PaymentStatus::succeeded;
            payments[p.id] = p;
            events_out.push_back(cmd.initiated);
            out = AcceptOutcome{true, cmd.record};
          }
        }
      }
      cb(std::move(out));
    });
  }
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override {
    if (throw_on_accept) throw std::runtime_error("accept_refund blew up");
    run([this, cmd = std::move(cmd), cb = std::move(cb)]() mutable {
      Result<AcceptOutcome> out = Error::unavailable("unavailable", "store down");
      {
        std::lock_guard lk(mu);
        auto k = std::make_pair(cmd.record.merchant_id, cmd.record.key);
        auto pit = payments.find(cmd.refund.payment_id);
        if (fail_accept) {
        } else if (auto it = idem.find(k); it != idem.end()) {
          out = AcceptOutcome{false, it->second};
        } else if (pit == payments.end() || pit->second.merchant_id != cmd.refund.merchant_id) {
          out = Error::not_found("no such payment");
        } else if (pit->second.status != PaymentStatus::succeeded) {
          out = Error::unprocessable("payment_not_succeeded", "not succeeded");
        } else {
          int64_t left = pit->second.amount_minor - pit->second.amount_refunded_minor;
          for (const auto& [id, r] : refunds)
            if (r.payment_id == cmd.refund.payment_id && r.status == RefundStatus::processing) left -= r.amount_minor;
          Refund r = cmd.refund;
          if (r.amount_minor == 0) r.amount_minor = left;
          if (r.amount_minor <= 0 || r.amount_minor > left) {
            out = Error::unprocessable("amount_exceeds_refundable", "too much", "amount");
          } else {
            IdempotencyRecord rec = cmd.record;
            if (cmd.render) rec.response_body = cmd.render(r);
            idem[k] = rec;
            refunds[r.id] = r;
            events_out.push_back(cmd.requested);
            out = AcceptOutcome{true, rec};
          }
        }
      }
      cb(std::move(out));
    });
  }
  void update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                  std::string body, std::function<void(Result<void>)> cb) override {
    {
      std::lock_guard lk(mu);
      auto& r = idem[{merchant_id, key}];
      r.http_status = http_status;
      r.response_body = std::move(body);
    }
    cb(ok());
  }
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override {
    std::lock_guard lk(mu);
    ++find_calls;
    if (fail_find) return Error::unavailable("unavailable", "store down");
    if (hide_from_find) return std::optional<IdempotencyRecord>();
    auto it = idem.find({merchant_id, key});
    if (it == idem.end()) return std::optional<IdempotencyRecord>();
    return std::optional<IdempotencyRecord>(it->second);
  }

  // PaymentQueries
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id, const std::string& id) override {
    std::lock_guard lk(mu);
    auto it = payments.find(id);
    if (it == payments.end() || it->second.merchant_id != merchant_id) return std::optional<Payment>();
    return std::optional<Payment>(it->second);
  }
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id, std::optional<PaymentStatus> status,
                                             const Page& page) override {
    std::lock_guard lk(mu);
    std::vector<Payment> all;
    for (const auto& [id, p] : payments)
      if (p.merchant_id == merchant_id && (!status || p.status == *status)) all.push_back(p);
    std::sort(all.begin(), all.end(), [](const Payment& a, const Payment& b) {
      return a.created_ms != b.created_ms ? a.created_ms > b.created_ms : a.id > b.id;
    });
    size_t start = 0;
    if (!page.starting_after.empty()) {
      auto it = payments.find(page.starting_after);
      if (it == payments.end() || it->second.merchant_id != merchant_id)
        return Error::invalid("cursor_invalid", "bad cursor", "starting_after");
      auto pos = std::find_if(all.begin(), all.end(), [&](const Payment& p) { return p.id == page.starting_after; });
      start = pos == all.end() ? all.size() : size_t(pos - all.begin()) + 1;
    }
    std::vector<Payment> out;
    for (size_t i = start; i < all.size() && out.size() < size_t(page.limit); ++i) out.push_back(all[i]);
    return out;
  }
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id, const std::string& id) override {
    std::lock_guard lk(mu);
    auto it = refunds.find(id);
    if (it == refunds.end() || it->second.merchant_id != merchant_id) return std::optional<Refund>();
    return std::optional<Refund>(it->second);
  }
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override {
    std::lock_guard lk(mu);
    return balances_by_merchant[merchant_id];
  }
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override {
    std::lock_guard lk(mu);
    std::vector<JournalEntry> out;
    for (const auto& e : entries)
      if (e.merchant_id == merchant_id && e.payment_id == payment_id) out.push_back(e);
    return out;
  }

  // MerchantStore
  Result<void> create_merchant(const Merchant& m) override {
    std::lock_guard lk(mu);
    merchants_by_hash[m.api_key_hash] = m;
    return ok();
  }
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& h) override {
    std::lock_guard lk(mu);
    ++key_hash_lookups;
    if (fail_key_lookup) return Error::unavailable("store_unavailable", "injected");
    auto it = merchants_by_hash.find(h);
    if (it == merchants_by_hash.end()) return std::optional<Merchant>();
    return std::optional<Merchant>(it->second);
  }
  Result<std::vector<Merchant>> all_merchants() override {
    std::lock_guard lk(mu);
    std::vector<Merchant> out;
    for (const auto& [h, m] : merchants_by_hash) out.push_back(m);
    return out;
  }
  // The same rules as the stores (ports/stores.hpp); the stores' own are in the contract tests.
  Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id,
                                                              const std::string& new_key_hash, int64_t now_ms,
                                                              int64_t old_keys_expire_ms) override {
    std::lock_guard lk(mu);
    std::optional<Merchant> any;
    std::vector<Merchant> others;
    for (auto it = merchants_by_hash.begin(); it != merchants_by_hash.end();) {
      Merchant& m = it->second;
      if (m.id != merchant_id) { ++it; continue; }
      any = m;
      if (m.key_expires_ms != 0 && m.key_expires_ms <= now_ms) { it = merchants_by_hash.erase(it); continue; }
      if (m.key_expires_ms == 0 || m.key_expires_ms > old_keys_expire_ms) m.key_expires_ms = old_keys_expire_ms;
      others.push_back(m);
      ++it;
    }
    if (!any) return std::optional<std::vector<Merchant>>();
    Merchant fresh = *any;
    fresh.api_key_hash = new_key_hash;
    fresh.key_expires_ms = 0;
    merchants_by_hash[new_key_hash] = fresh;
    return std::optional<std::vector<Merchant>>(std::move(others));
  }

  // EndpointStore
  Result<void> create_endpoint(const WebhookEndpoint& e) override {
    std::lock_guard lk(mu);
    endpoints[e.id] = e;
    return ok();
  }
  Result<std::vector<WebhookEndpoint>> list_endpoints(const std::string& merchant_id) override {
    std::lock_guard lk(mu);
    std::vector<WebhookEndpoint> out;
    for (const auto& [id, e] : endpoints)
      if (e.merchant_id == merchant_id) out.push_back(e);
    return out;
  }
  Result<std::optional<WebhookEndpoint>> get_endpoint(const std::string& merchant_id, const std::string& id) override {
    std::lock_guard lk(mu);
    auto it = endpoints.find(id);
    if (it == endpoints.end() || it->second.merchant_id != merchant_id) return std::optional<WebhookEndpoint>();
    return std::optional<WebhookEndpoint>(it->second);
  }
  Result<bool> delete_endpoint(const std::string& merchant_id, const std::string& id) override {
    std::lock_guard lk(mu);
    auto it = endpoints.find(id);
    if (it == endpoints.end() || it->second.merchant_id != merchant_id) return false;
    endpoints.erase(it);
    return true;
  }
  Result<std::optional<WebhookEndpoint>> update_endpoint(const std::string& merchant_id, const std::string& id,
                                                         const EndpointUpdate& u) override {
    std::lock_guard lk(mu);
    auto it = endpoints.find(id);
    if (it == endpoints.end() || it->second.merchant_id != merchant_id) return std::optional<WebhookEndpoint>();
    it->second = apply_endpoint_update(it->second, u);
    return std::optional<WebhookEndpoint>(it->second);
  }

  // EventQueries
  Result<std::vector<MerchantEvent>> list_events(const std::string& merchant_id, const Page& page) override {
    std::lock_guard lk(mu);
    std::vector<MerchantEvent> mine;
    for (auto it = merchant_events.rbegin(); it != merchant_events.rend(); ++it)
      if (it->merchant_id == merchant_id) mine.push_back(*it);
    size_t start = 0;
    if (!page.starting_after.empty()) {
      auto pos = std::find_if(mine.begin(), mine.end(), [&](const MerchantEvent& e) { return e.id == page.starting_after; });
      if (pos == mine.end()) return Error::invalid("cursor_invalid", "bad cursor", "starting_after");
      start = size_t(pos - mine.begin()) + 1;
    }
    std::vector<MerchantEvent> out;
    for (size_t i = start; i < mine.size() && out.size() < size_t(page.limit); ++i) out.push_back(mine[i]);
    return out;
  }
  Result<std::optional<MerchantEvent>> get_event(const std::string& merchant_id, const std::string& id) override {
    std::lock_guard lk(mu);
    for (const auto& e : merchant_events)
      if (e.id == id && e.merchant_id == merchant_id) return std::optional<MerchantEvent>(e);
    return std::optional<MerchantEvent>();
  }

  // DeliveryStore
  Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) override {
    return list_endpoints(merchant_id);
  }
  Result<std::vector<DueDelivery>> due_deliveries(int64_t, size_t) override { return std::vector<DueDelivery>{}; }
  Result<void> record_attempt(const WebhookDelivery&, std::optional<DeadLetter>) override { return ok(); }
  Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id, int64_t) override {
    std::lock_guard lk(mu);
    for (const auto& e : merchant_events)
      if (e.id == event_id && e.merchant_id == merchant_id) {
        redelivered.emplace_back(merchant_id, event_id);
        return true;
      }
    return false;
  }
};

}  // namespace ps::testing
