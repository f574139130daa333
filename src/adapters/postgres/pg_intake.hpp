// PgIntake: payments and refunds taken in (IntakeStore), group-committed by the core's
// intake writer (pg_core.hpp); pg_intake.cpp has the batches' design.
// * Intake: accept_payment/accept_refund commit payment (or refund), idempotency record and
//   an outbox row with the event in one transaction (group-committed: many requests share
//   one transaction, each under a savepoint; the row's age is stamped at commit), then hand
//   the events to the EventPublisher. The caller's callback runs once the publisher answered
//   (ok or not) or publish_wait_ms passed, whichever is first. The outbox row is deleted
//   (off the callback thread) once the publish succeeded; the relay (relay_interval_ms > 0)
//   re-publishes rows older than relay_after_ms that no publish of this process has in
//   flight, claiming them by moving their age in one short statement (SKIP LOCKED), so
//   several gateways may relay and no row lock is held while waiting for the bus.
//   Refunds lock the payment row (SELECT ... FOR UPDATE) so concurrent refunds never exceed
//   what was captured.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/stores.hpp"

namespace ps {

namespace pg {
struct Core;
struct IntakeJob;
}  // namespace pg

class PgIntake : public IntakeStore {
 public:
  explicit PgIntake(pg::Core& core) : core_(core) {}

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override;
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override;
  void update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                  int http_status, std::string body,
                                  std::function<void(Result<void>)> cb) override;
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override;

 protected:
  // The core's intake writer thread: takes up to max_batch queued jobs and runs them as one batch.
  void writer_loop();

 private:
  void submit(std::shared_ptr<pg::IntakeJob> j);
  void run_batch(std::vector<std::shared_ptr<pg::IntakeJob>>& batch);
  std::optional<Error> run_batch_once(std::vector<std::shared_ptr<pg::IntakeJob>>& batch);

  pg::Core& core_;
};

}  // namespace ps
