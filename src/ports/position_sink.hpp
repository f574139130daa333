// Position sink port: where a stage whose effects land in a database (ledger, notifier)
// makes those effects durable together with its consumed positions (SPEC §2.3: "where the
// sink is the database, the consumed position is stored in the same transaction").
// The Kafka stage log calls it on commit and reads the positions back on assignment.
// Thread-safety: implementations are thread-safe.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "ports/event_log.hpp"

namespace ps {

using TopicPartition = std::pair<std::string, int32_t>;

class PositionSink {
 public:
  virtual ~PositionSink() = default;
  // In one database transaction: applies effects.payment_outcomes, refund_outcomes,
  // merchant_events and deliveries (idempotently, as the embedded store does) and stores,
  // for each (topic, partition) among `consumed`, next offset = max consumed offset + 1
  // — never moving a stored position backwards. On error nothing changed.
  // effects.produce and effects.dead_letters are not the sink's business (the caller
  // publishes them before calling apply).
  virtual Result<void> apply(const std::string& group, const std::vector<Record>& consumed,
                             const Effects& effects) = 0;
  // The stored next offsets of `group`; partitions never stored are absent.
  virtual Result<std::map<TopicPartition, int64_t>> positions(const std::string& group) = 0;
};

}  // namespace ps
