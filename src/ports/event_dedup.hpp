// Event dedup port: tells a consumer group whether a record is the FIRST copy of its event
// it has seen. Kafka can hold the same event (same ce_id) twice — the gateway's outbox relay
// re-publishing a row whose first publish was in fact stored, a publish whose delete failed —
// and a stage whose decision is not a pure function of the event (fraud velocity, the risk
// provider's breaker) could decide differently for the second copy. The embedded log drops
// such copies when they are appended; the distributed log drops them when they are polled.
//
// Semantics: for each record, atomically "insert (group, event id) -> (topic, partition,
// offset) if absent", then answer true iff the stored position is this record's position.
// So a redelivery of the first copy (same position, e.g. after a failed commit) is still
// processed — at-least-once holds — and any later copy at another position is not.
// Records with an empty event id are always "first". Entries may be forgotten after a
// retention period far longer than any redelivery window (days).
// Thread-safety: implementations are thread-safe.
#pragma once
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/event_log.hpp"

namespace ps {

class EventDedup {
 public:
  virtual ~EventDedup() = default;
  // One answer per record, in order.
  virtual Result<std::vector<bool>> first_copies(const std::string& group,
                                                 const std::vector<Record>& records) = 0;
};

}  // namespace ps
