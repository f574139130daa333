#include "bench/reconcile.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "bench/api_client.hpp"

namespace ps::bench {
namespace json = boost::json;

namespace {
bool is_terminal(const std::string& s) { return s == "succeeded" || s == "failed"; }
bool is_merchant_available(const std::string& account) {
  const std::string pre = "merchant:", suf = ":available";
  return account.size() > pre.size() + suf.size() && account.rfind(pre, 0) == 0 &&
         account.compare(account.size() - suf.size(), suf.size(), suf) == 0;
}
}  // namespace

ReconcileReport reconcile(const ReconcileInput& in) {
  ReconcileReport r;
  r.settled = in.settled;
  r.settle_s = in.settle_s;
  std::unordered_map<std::string, const ListedPayment*> by_id;
  std::unordered_map<std::string, uint64_t> per_key;
  for (const auto& p : in.listed) {
    by_id.emplace(p.id, &p);
    if (++per_key[p.bench_key] > 1) ++r.duplicate_keys;
    if (p.status == "succeeded") ++r.succeeded;
    if (p.status == "failed") ++r.failed;
    if (is_terminal(p.status)) {
      uint64_t us = uint64_t(std::max<int64_t>(0, p.updated_ms - p.created_ms)) * 1000;
      r.e2e_us.record(us);
      if (p.status == "succeeded") r.e2e_succeeded_us.record(us);
    }
  }
  r.listed = in.listed.size();
  std::unordered_set<std::string> acked;
  for (const auto& [key, id] : in.acknowledged) acked.insert(id);
  r.accepted = acked.size();
  for (const auto& id : acked) {
    auto it = by_id.find(id);
    if (it == by_id.end()) ++r.lost;
    else if (is_terminal(it->second->status)) ++r.terminal;
    else ++r.processing;
  }
  r.replay_mismatch = in.replay_mismatch;
  r.pair_mismatch = in.pair_mismatch;
  r.duplicates = r.duplicate_keys + r.replay_mismatch + r.pair_mismatch;

  // Ledger: sampled entries, then the balance delta.
  std::vector<std::string> ledger_failures;
  std::set<int64_t> credits;
  for (const auto& s : in.samples) {
    ++r.entries_checked;
    uint64_t settlements = 0;
    for (const auto& e : s.entries) {
      std::map<std::string, int64_t> sums;
      for (const auto& p : e.postings) sums[p.currency] += p.amount_minor;
      bool zero = !e.postings.empty();
      for (const auto& [c, v] : sums) zero = zero && v == 0;
      if (!zero) ledger_failures.push_back("entry " + e.id + " of " + s.payment_id + " does not sum to zero");
      if (e.kind == "settlement") {
        ++settlements;
        for (const auto& p : e.postings)
          if (is_merchant_available(p.account)) credits.insert(-p.amount_minor);
      }
    }
    if (s.status == "succeeded" && settlements != 1)
      ledger_failures.push_back("succeeded payment " + s.payment_id + " has " + std::to_string(settlements) +
                                " settlement entries (want 1)");
    if (s.status == "failed" && !s.entries.empty())
      ledger_failures.push_back("failed payment " + s.payment_id + " has " + std::to_string(s.entries.size()) +
                                " journal entries (want 0)");
  }
  if (credits.size() > 1) ledger_failures.push_back("sampled settlements credit the merchant different amounts");
  r.balance_delta_minor = in.balance_after_minor - in.balance_before_minor;
  if (credits.size() == 1) {
    r.credit_per_payment_minor = *credits.begin();
    r.expected_balance_delta_minor = r.credit_per_payment_minor * int64_t(r.succeeded);
  } else if (credits.empty() && r.succeeded > 0) {
    ledger_failures.push_back("no settlement entry was sampled, so the balance cannot be checked");
  }
  if (credits.size() <= 1 && r.balance_delta_minor != r.expected_balance_delta_minor)
    ledger_failures.push_back("balance moved by " + std::to_string(r.balance_delta_minor) + " but " +
                              std::to_string(r.succeeded) + " succeeded payments credit " +
                              std::to_string(r.expected_balance_delta_minor));
  r.ledger_balanced = ledger_failures.empty();

  if (!in.settled) r.failures.push_back("payments still processing after the settle timeout");
  if (r.terminal != r.accepted)
    r.failures.push_back(std::to_string(r.accepted - r.terminal) + " of " + std::to_string(r.accepted) +
                         " accepted payments are not terminal");
  if (r.lost) r.failures.push_back(std::to_string(r.lost) + " accepted payments are missing from the listing");
  if (r.duplicate_keys)
    r.failures.push_back(std::to_string(r.duplicate_keys) + " extra payments share an idempotency key");
  if (r.replay_mismatch)
    r.failures.push_back(std::to_string(r.replay_mismatch) + " retries were not replays of the first answer");
  if (r.pair_mismatch)
    r.failures.push_back(std::to_string(r.pair_mismatch) + " concurrent duplicates got two different payment ids");
  size_t shown = 0;
  for (const auto& f : ledger_failures) {
    if (++shown > 5) {
      r.failures.push_back("ledger: " + std::to_string(ledger_failures.size() - 5) + " more ledger failures");
      break;
    }
    r.failures.push_back("ledger: " + f);
  }
  return r;
}

Result<PaymentPage> parse_payment_page(const std::string& body, const std::string& run_id) {
  try {
    json::object o = json::parse(body).as_object();
    PaymentPage page;
    page.has_more = o.at("has_more").as_bool();
    for (const auto& v : o.at("data").as_array()) {
      const auto& p = v.as_object();
      page.last_id = std::string(p.at("id").as_string());
      std::string run, key;
      if (auto* m = p.if_contains("metadata"); m && m->is_object()) {
        if (auto* b = m->as_object().if_contains("bench_run"); b && b->is_string()) run = b->as_string();
        if (auto* k = m->as_object().if_contains("bench_key"); k && k->is_string()) key = k->as_string();
      }
      if (!run_id.empty() && run != run_id) continue;
      ListedPayment lp;
      lp.id = page.last_id;
      lp.status = std::string(p.at("status").as_string());
      lp.bench_key = key;
      lp.currency = std::string(p.at("currency").as_string());
      lp.amount_minor = p.at("amount").to_number<int64_t>();
      lp.created_ms = p.at("created").to_number<int64_t>();
      lp.updated_ms = p.at("updated").to_number<int64_t>();
      page.run_payments.push_back(std::move(lp));
    }
    return page;
  } catch (const std::exception& e) {
    return Error::internal(std::string("unexpected payment list: ") + e.what());
  }
}

Result<std::vector<JournalEntryView>> parse_entries(const std::string& body) {
  try {
    std::vector<JournalEntryView> out;
    const json::value doc = json::parse(body);
    for (const auto& v : doc.as_object().at("data").as_array()) {
      const auto& e = v.as_object();
      JournalEntryView je;
      je.id = std::string(e.at("id").as_string());
      je.kind = std::string(e.at("kind").as_string());
      for (const auto& pv : e.at("postings").as_array()) {
        const auto& p = pv.as_object();
        je.postings.push_back({std::string(p.at("account").as_string()), std::string(p.at("currency").as_string()),
                               p.at("amount").to_number<int64_t>()});
      }
      out.push_back(std::move(je));
    }
    return out;
  } catch (const std::exception& e) {
    return Error::internal(std::string("unexpected ledger entries: ") + e.what());
  }
}

Result<int64_t> parse_balance(const std::string& body, const std::string& currency) {
  try {
    const json::value doc = json::parse(body);
    for (const auto& v : doc.as_object().at("available").as_array()) {
      const auto& b = v.as_object();
      if (b.at("currency").as_string() == currency) return b.at("amount").to_number<int64_t>();
    }
    return int64_t{0};
  } catch (const std::exception& e) {
    return Error::internal(std::string("unexpected balance: ") + e.what());
  }
}

namespace {
Result<HttpAnswer> get_ok(ApiClient& api, const std::string& path) {
  auto a = api.get(path);
  if (!a) return a.error();
  if (a->status != 200)
    return Error::internal("GET " + path + " answered " + std::to_string(a->status) + ": " + a->body.substr(0, 300));
  return a;
}

// Every run payment (optionally only those with `status`), walking the cursor pages.
Result<std::vector<ListedPayment>> list_run_payments(ApiClient& api, const std::string& run_id,
                                                     const std::string& status) {
  std::vector<ListedPayment> out;
  std::string cursor;
  for (int pages = 0; pages < 10'000'000; ++pages) {
    std::string path = "/v1/payments?limit=100";
    if (!status.empty()) path += "&status=" + status;
    if (!cursor.empty()) path += "&starting_after=" + cursor;
    auto a = get_ok(api, path);
    if (!a) return a.error();
    auto page = parse_payment_page(a->body, run_id);
    if (!page) return page.error();
    for (auto& p : page->run_payments) out.push_back(std::move(p));
    if (!page->has_more || page->last_id.empty()) break;
    cursor = page->last_id;
  }
  return out;
}
}  // namespace

Result<int64_t> fetch_balance(ApiClient& api, const std::string& currency) {
  auto a = get_ok(api, "/v1/balance");
  if (!a) return a.error();
  return parse_balance(a->body, currency);
}

Result<ReconcileReport> run_reconciliation(ApiClient& api, const ValidConfig& cfg,
                                           std::vector<std::pair<std::string, std::string>> acknowledged,
                                           uint64_t replay_mismatch, uint64_t pair_mismatch,
                                           int64_t balance_before_minor,
                                           const std::function<void(const std::string&)>& note) {
  using clock = std::chrono::steady_clock;
  ReconcileInput in;
  in.acknowledged = std::move(acknowledged);
  in.replay_mismatch = replay_mismatch;
  in.pair_mismatch = pair_mismatch;
  in.balance_before_minor = balance_before_minor;

  // (1) settle: no run payment processing, or the timeout.
  const auto t0 = clock::now();
  const auto deadline = t0 + std::chrono::milliseconds(int64_t(cfg.raw.settle_timeout_s * 1000));
  auto last_note = t0;
  for (;;) {
    auto processing = list_run_payments(api, cfg.run_id, "processing");
    if (!processing) return processing.error();
    if (processing->empty()) break;
    if (clock::now() >= deadline) {
      in.settled = false;
      break;
    }
    if (clock::now() - last_note >= std::chrono::seconds(2)) {
      note("waiting for " + std::to_string(processing->size()) + " processing payments to settle");
      last_note = clock::now();
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // each poll pages through the backlog
  }
  in.settle_s = std::chrono::duration<double>(clock::now() - t0).count();

  // (2) every run payment.
  auto all = list_run_payments(api, cfg.run_id, "");
  if (!all) return all.error();
  in.listed = std::move(*all);

  // (4) sampled journal entries: succeeded ones, and a few failed ones.
  std::vector<const ListedPayment*> succ, fail;
  for (const auto& p : in.listed) {
    if (p.status == "succeeded") succ.push_back(&p);
    if (p.status == "failed") fail.push_back(&p);
  }
  std::mt19937_64 rng(cfg.seed ^ 0x5eedULL);
  std::shuffle(succ.begin(), succ.end(), rng);
  std::shuffle(fail.begin(), fail.end(), rng);
  const size_t n_succ = std::min<size_t>(succ.size(), size_t(cfg.raw.verify_entries));
  const size_t n_fail = std::min<size_t>(fail.size(), std::max<size_t>(1, size_t(cfg.raw.verify_entries) / 10));
  std::vector<const ListedPayment*> picked(succ.begin(), succ.begin() + long(n_succ));
  picked.insert(picked.end(), fail.begin(), fail.begin() + long(n_fail));
  for (const auto* p : picked) {
    auto a = get_ok(api, "/v1/ledger/entries?payment_id=" + p->id);
    if (!a) return a.error();
    auto es = parse_entries(a->body);
    if (!es) return es.error();
    in.samples.push_back({p->id, p->status, std::move(*es)});
  }

  auto after = fetch_balance(api, cfg.raw.currency);
  if (!after) return after.error();
  in.balance_after_minor = *after;
  return reconcile(in);
}

}  // namespace ps::bench
