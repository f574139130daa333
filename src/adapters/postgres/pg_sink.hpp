// PgSink: where the pipeline's stages commit over PostgreSQL (PositionSink), and the
// dead-letter replay bookkeeping of the distributed shape.
// * PositionSink: outcomes, merchant events and deliveries plus consumer positions
//   (table consumer_positions(group, topic, partition, next_offset)) in one transaction;
//   after commit, payments that changed are passed to the payment-change listener and their
//   ids announced with NOTIFY paystream_terminal (terminal ones).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/event_log.hpp"
#include "ports/position_sink.hpp"

namespace ps {

namespace pg {
struct Core;
}  // namespace pg

class PgSink : public PositionSink {
 public:
  explicit PgSink(pg::Core& core) : core_(core) {}

  // PositionSink
  Result<void> apply(const std::string& group, const std::vector<Record>& consumed,
                     const Effects& effects) override;
  Result<std::map<TopicPartition, int64_t>> positions(const std::string& group) override;

  // Dead-letter replay bookkeeping: true if `position` was not marked before (now marked).
  Result<bool> mark_dead_letter_replayed(int64_t position, int64_t now_ms);
  Result<void> unmark_dead_letter_replayed(int64_t position);
  Result<bool> dead_letter_replayed(int64_t position);
  // The merchant a merchant event (/v1/events record) belongs to; nullopt if there is no
  // such event. Replaying a webhook dead letter redelivers the event to that merchant.
  Result<std::optional<std::string>> merchant_of_event(const std::string& event_id);

 private:
  pg::Core& core_;
};

}  // namespace ps
