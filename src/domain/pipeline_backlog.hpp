// PipelineBacklog: the records each settling stage (fraud, processor, ledger) has yet to
// consume, fed by the store that holds the stage log: appended() when an event on a
// tracked topic became durable, consumed() when a group's committed position moved. A
// record dead-lettered by a stage is consumed (its position moves past it), so a parked
// payment never counts; a stage that cannot commit (an open circuit) lets the count grow,
// which is what intake admission must see. Thread-safe.
#pragma once
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "ports/backlog.hpp"

namespace ps {

class PipelineBacklog final : public BacklogProbe {
 public:
  struct Settling {
    std::string group;
    std::vector<std::string> topics;
  };
  explicit PipelineBacklog(std::vector<Settling> settling);

  // (group, topic) pairs tracked, for a store that loads the records already waiting.
  std::vector<std::pair<std::string, std::string>> tracked() const;
  // An event at `offset` on `topic` became durable at `at_ms`. Offsets grow per topic.
  void appended(std::string_view topic, int64_t offset, int64_t at_ms);
  // `group` has committed every record of `topic` up to and including `position`.
  void consumed(std::string_view group, std::string_view topic, int64_t position);

  // One durable write's changes, seen at once: what its commit consumed and the events it
  // appended (at `at_ms`). Taken under one lock, so a concurrent pipeline_backlog() never
  // sees the consumed records gone before the records they became are counted: a stage
  // commit of N records moves N from one stage to the next, and intake admission must not
  // see a dip of N in between (it would admit past the bound).
  struct Change {
    std::vector<std::tuple<std::string, std::string, int64_t>> consumed;   // (group, topic, position)
    std::vector<std::pair<std::string, int64_t>> appended;                 // (topic, offset)
    bool empty() const { return consumed.empty() && appended.empty(); }
  };
  void apply(const Change& change, int64_t at_ms);
  Backlog pipeline_backlog(int64_t now_ms) const override;

 private:
  struct Queue {
    std::string group, topic;
    std::deque<std::pair<int64_t, int64_t>> waiting;   // (offset, appended ms), offset order
  };
  void append_locked(std::string_view topic, int64_t offset, int64_t at_ms);
  void consume_locked(std::string_view group, std::string_view topic, int64_t position);

  mutable std::mutex mu_;
  std::vector<Queue> queues_;
  uint64_t total_ = 0;
};

}  // namespace ps
