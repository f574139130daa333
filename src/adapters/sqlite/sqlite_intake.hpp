// SqliteIntake: payments and refunds taken in (IntakeStore): one job per request in the
// core's group commit, uniqueness per (merchant, key) by the idempotency table, refund
// admission by the shared rule (domain/ledger_rules.hpp) on maintained rows.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps {

class SqliteIntake : public IntakeStore {
 public:
  explicit SqliteIntake(sqlite::Core& core) : core_(core) {}

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override;
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override;
  void update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                  int http_status, std::string body,
                                  std::function<void(Result<void>)> cb) override;
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override;

 private:
  sqlite::Core& core_;
};

}  // namespace ps
