// SqliteProjection: where the embedded intake log (adapters/embedded/logged_intake.hpp)
// lands in the store. The log is the acknowledgement path: a payment is durable once its
// log record is fsync'd, and its rows reach SQLite later, in large transactions, off the
// request path. Each transaction stores the log position it reaches (table
// log_projection) with the rows it wrote, so after a crash the log is replayed from
// exactly the first record the store does not hold, and a record is never applied twice.
// Thread-safety: any thread; project() runs as one job of the store's writer (sqlite_core.hpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "common/result.hpp"
#include "ports/stores.hpp"

namespace ps {

// One logged intake write, as the projection applies it.
struct ProjectedWrite {
  uint64_t lsn = 0;
  int64_t now_ms = 0;                    // the clock when it was accepted (event created_ms)
  std::optional<AcceptPayment> payment;  // a payment accepted from the log; else:
  // a replaced idempotent response (Prefer: wait turned the 202 into a 201)
  std::string merchant_id;
  std::string key;
  int http_status = 0;
  std::string body;
};

class SqliteProjection {
 public:
  explicit SqliteProjection(sqlite::Core& core) : core_(core) {}

  // The last log position the store holds (0: none).
  Result<uint64_t> projected_lsn();
  // In one transaction: applies `writes` (ascending lsn) and stores the last lsn as the
  // projected position. Writes at or below the stored position are skipped, so a batch
  // replayed after a crash is applied once. On error nothing changed.
  Result<void> project(const std::vector<ProjectedWrite>& writes);

 private:
  sqlite::Core& core_;
};

}  // namespace ps
