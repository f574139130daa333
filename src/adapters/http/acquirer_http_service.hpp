// The server side of the acquirer HTTP protocol (docs/ACQUIRER_SIMULATOR.md): serves any
// Acquirer (the simulator, in `paystream acquirer-sim`) to HttpAcquirer clients.
//   POST /v1/charges             {"payment_id","amount","currency","source"}
//   POST /v1/refunds             {"refund_id","payment_id","amount","currency"}
//        header X-Timeout-Ms: the caller's timeout, passed on to the acquirer call
//        (absent: default_timeout; capped at max_timeout); Idempotency-Key, if sent, must
//        equal the payment (refund) id.
//        200 {"approved","decline_code","acquirer_ref"}; 504 the acquirer timed out;
//        503 a retryable failure (or overloaded); 400 a malformed request.
//   POST /v1/charges/{payment_id}/lookup  {"payment_id"} (equal to the path's, percent-
//        decoded): Acquirer::lookup_charge. 200 {"charged":true,"approved","decline_code",
//        "acquirer_ref"} or {"charged":false,"voided":true} (the id is voided: definitive);
//        504/503/422 as for charges. A POST: it may void the id.
//   GET  /v1/charges/{payment_id} the stored charge (AcquirerRecords), 404 if none (a
//        read-only reconciliation view: it never voids)
//   GET  /v1/stats                {"charges","refunds","duplicate_calls","voided"}
//   anything else                 the fallback handler (ops endpoints), else 404
// Acquirer calls may sleep (latency, tok_timeout): they never run on the HTTP threads but
// on this service's bounded worker pool (at most `workers` in parallel, `max_queued`
// waiting; beyond that 503 "acquirer_overloaded").
// Metrics: paystream_acquirer_http_calls_total{op="charge"|"refund"|"lookup",result}
// (lookup results: charged, voided, timeout, unavailable, error).
// Lifetime: the handler is valid while the service lives (afterwards it answers 503).
// Shutdown order: HttpServer::stop(), then stop() here (or destroy the service), and only
// then destroy the HttpServer — a worker may still be inside a Respond until stop() returns.
#pragma once
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "adapters/http/http_server.hpp"
#include "ports/external.hpp"

namespace ps {

// What an acquirer stored, for reconciliation (optional read side).
struct AcquirerChargeRecord {
  std::string payment_id;
  int64_t amount_minor = 0;
  std::string currency;
  std::string source;
  bool approved = false;
  std::string decline_code;
  int64_t calls = 0;            // how often it was asked (1 = never repeated)
  int64_t refunded_minor = 0;   // sum of its approved refunds
  int64_t created_ms = 0;
};
struct AcquirerStats {
  int64_t charges = 0;          // stored charge results (approved or declined)
  int64_t refunds = 0;          // approved refunds
  int64_t duplicate_calls = 0;  // repeated calls answered from a stored result
  int64_t voided = 0;           // payment ids a lookup found not charged (and voided)
};
class AcquirerRecords {
 public:
  virtual ~AcquirerRecords() = default;
  virtual Result<std::optional<AcquirerChargeRecord>> find_charge(const std::string& payment_id) = 0;
  virtual Result<AcquirerStats> stats() = 0;
};

struct AcquirerHttpOptions {
  size_t workers = 64;
  size_t max_queued = 4096;
  std::chrono::milliseconds default_timeout{10'000};
  std::chrono::milliseconds max_timeout{60'000};
  AcquirerRecords* records = nullptr;  // GET routes answer 404 without it
  HttpHandler fallback;                // non-/v1 paths; 404 without it
};

class AcquirerHttpService {
 public:
  AcquirerHttpService(Acquirer& acquirer, AcquirerHttpOptions options);
  ~AcquirerHttpService();
  AcquirerHttpService(const AcquirerHttpService&) = delete;
  AcquirerHttpService& operator=(const AcquirerHttpService&) = delete;

  HttpHandler handler();
  size_t queued() const;  // calls waiting for a worker
  // Joins the workers: running calls finish (bounded by their timeouts), queued ones are
  // answered 503 "acquirer_stopping", later ones too. Idempotent; the destructor calls it.
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ps
