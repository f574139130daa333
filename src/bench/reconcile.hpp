// Reconciliation of a bench run through the public API (after the load; not timed).
//
// reconcile() is the pure decision: given what the load acknowledged and what the API
// lists, it counts accepted / terminal / lost / duplicates, checks the sampled journal
// entries and the balance delta, and lists every failure. run_reconciliation() fetches
// its inputs: it waits (up to settle_timeout_s) until no run payment is `processing`,
// lists every payment of the merchant (cursor pages of 100) keeping metadata.bench_run ==
// run id, samples journal entries, and reads the balance.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_config.hpp"
#include "bench/histogram.hpp"
#include "common/result.hpp"

namespace ps::bench {

class ApiClient;

struct ListedPayment {
  std::string id, status, bench_key, currency;
  int64_t amount_minor = 0;
  int64_t created_ms = 0, updated_ms = 0;
};

struct Posting {
  std::string account, currency;
  int64_t amount_minor = 0;
};
struct JournalEntryView {
  std::string id, kind;
  std::vector<Posting> postings;
};
struct SampledEntries {
  std::string payment_id, status;
  std::vector<JournalEntryView> entries;
};

struct ReconcileInput {
  std::vector<std::pair<std::string, std::string>> acknowledged;  // (key, id) from 2xx answers
  std::vector<ListedPayment> listed;                              // this run's payments
  uint64_t replay_mismatch = 0;
  uint64_t pair_mismatch = 0;
  std::vector<SampledEntries> samples;
  int64_t balance_before_minor = 0;
  int64_t balance_after_minor = 0;
  bool settled = true;           // no run payment left processing within the settle timeout
  double settle_s = 0;
};

struct ReconcileReport {
  uint64_t accepted = 0;         // distinct acknowledged ids
  uint64_t listed = 0;           // run payments in the listing
  uint64_t terminal = 0;         // acknowledged ids listed as succeeded/failed
  uint64_t processing = 0;       // acknowledged ids still processing
  uint64_t succeeded = 0, failed = 0;  // run payments in the listing by status
  uint64_t lost = 0;             // acknowledged ids absent from the listing
  uint64_t duplicate_keys = 0;   // listed run payments sharing a bench_key beyond the first
  uint64_t replay_mismatch = 0, pair_mismatch = 0;
  uint64_t duplicates = 0;       // duplicate_keys + replay_mismatch + pair_mismatch
  bool ledger_balanced = false;
  uint64_t entries_checked = 0;  // payments whose entries were checked
  int64_t credit_per_payment_minor = 0;
  int64_t balance_delta_minor = 0;
  int64_t expected_balance_delta_minor = 0;
  bool settled = true;
  double settle_s = 0;
  Histogram e2e_us, e2e_succeeded_us;  // updated − created of terminal run payments
  std::vector<std::string> failures;
  bool ok() const { return failures.empty(); }
};

ReconcileReport reconcile(const ReconcileInput& in);

// Parses one `{"object":"list","data":[payment...],"has_more":b}` page; keeps payments
// whose metadata.bench_run == run_id (all when run_id is empty). `last_id` gets the id of
// the page's last element (the next cursor).
struct PaymentPage {
  std::vector<ListedPayment> run_payments;
  std::string last_id;
  bool has_more = false;
};
Result<PaymentPage> parse_payment_page(const std::string& body, const std::string& run_id);
Result<std::vector<JournalEntryView>> parse_entries(const std::string& body);
// The merchant's available balance in `currency` from GET /v1/balance (0 if absent).
Result<int64_t> parse_balance(const std::string& body, const std::string& currency);

Result<int64_t> fetch_balance(ApiClient& api, const std::string& currency);

Result<ReconcileReport> run_reconciliation(ApiClient& api, const ValidConfig& cfg,
                                           std::vector<std::pair<std::string, std::string>> acknowledged,
                                           uint64_t replay_mismatch, uint64_t pair_mismatch,
                                           int64_t balance_before_minor,
                                           const std::function<void(const std::string&)>& note);

}  // namespace ps::bench
