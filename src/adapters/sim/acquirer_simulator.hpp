// AcquirerSimulator: the built-in, deterministic acquirer (an external system stand-in).
//
// Test sources (ChargeRequest::source):
//   tok_approve             approves
//   tok_decline             declined, decline_code "card_declined"
//   tok_insufficient_funds  declined, decline_code "insufficient_funds"
//   tok_timeout             never answers in time: sleeps the full timeout (real time) and
//                           returns Error::timeout; records no charge
//   tok_transient           the first call for a payment id fails retryably
//                           (Error::unavailable "acquirer_transient"); later calls approve
//   tok_fraud               approves if it ever gets here (the fraud blocklist stops it first)
//   anything else           approves
// Options: `latency` is slept (real time) before every answer; if it exceeds the call's
// timeout the call sleeps the timeout and returns Error::timeout. `failure_rate` makes a
// seeded fraction of calls fail retryably ("acquirer_transient") before any effect.
// Refunds: approved when the payment has an approved charge and the refunds of it stay
// within the charged amount; otherwise declined "charge_not_found" /
// "amount_exceeds_charge". Only approved refunds are stored.
//
// Durability and idempotency: its own SQLite file (WAL unless ":memory:",
// synchronous=FULL), tables
//   charges(payment_id TEXT PRIMARY KEY, amount_minor, currency, source, approved,
//           decline_code, calls, created_ms)
//   refunds(refund_id TEXT PRIMARY KEY, payment_id, amount_minor, calls, created_ms)
// A repeated charge (same payment_id) or refund (same refund_id) returns the stored result,
// increments `calls` and moves money once — also across a restart on the same file.
// Thread-safety: thread-safe (one mutex around the database; sleeps happen outside it).
// Construction throws std::runtime_error if the database cannot be opened (start-up only).
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <unordered_set>

#include "common/result.hpp"
#include "ports/external.hpp"

struct sqlite3;

namespace ps {

struct AcquirerSimOptions {
  std::string db_path = ":memory:";
  std::chrono::milliseconds latency{0};
  double failure_rate = 0;   // 0..1
  uint64_t seed = 42;
};

class AcquirerSimulator final : public Acquirer {
 public:
  explicit AcquirerSimulator(AcquirerSimOptions opts = {});
  ~AcquirerSimulator() override;
  AcquirerSimulator(const AcquirerSimulator&) = delete;
  AcquirerSimulator& operator=(const AcquirerSimulator&) = delete;

  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) override;
  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) override;

  Result<int64_t> charge_count();              // rows in `charges`
  Result<int64_t> calls_for(const std::string& payment_id);  // `calls` of one charge (0 if none)

 private:
  // Sleeps the configured latency; false (after sleeping `timeout`) if it exceeds timeout.
  bool wait_latency(std::chrono::milliseconds timeout) const;
  bool random_failure();

  const AcquirerSimOptions opts_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  std::mt19937_64 rng_;
  std::unordered_set<std::string> transient_seen_;  // bounded: cleared past 100k entries
};

}  // namespace ps
