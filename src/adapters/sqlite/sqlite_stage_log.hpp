// SqliteStageLog: the embedded event log (table `events`) and its dead letters, as the
// stages see it (StageLog) and as `paystream dlq` does (DeadLetterStore). The design of
// offsets, replays and dead-letter ids is described in sqlite_store.hpp.
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

class SqliteStageLog : public StageLog, public DeadLetterStore {
 public:
  explicit SqliteStageLog(sqlite::Core& core) : core_(core) {}

  // Number of events appended to `topic` (replays included).
  Result<int64_t> count_events(const std::string& topic);

  // StageLog
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics,
                                   size_t max, std::chrono::milliseconds wait) override;
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed,
                      Effects effects) override;
  // DeadLetterStore (list: newest first, limit capped at 1000)
  Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) override;
  Result<std::optional<DeadLetterView>> get_dead_letter(int64_t offset) override;
  Result<void> replay_dead_letter(int64_t offset) override;

 private:
  sqlite::Core& core_;
};

}  // namespace ps
