// EventBus: the log-first engine's stage log in memory (log_engine.hpp). Stages poll and
// commit here; the records come from the engine's log, which is read from disk only on
// recovery. Offsets are the engine's (log position << 16 | index in the record), so they
// grow per topic and give one total order across topics.
// Retention: a record leaves memory once every registered group subscribed to its topic
// has committed past it. A bus without registered groups keeps everything (tests).
// Thread-safety: every method from any thread; poll blocks up to its wait.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ports/event_log.hpp"

namespace ps {

class EventBus {
 public:
  struct Subscription {
    std::string group;
    std::vector<std::string> topics;
  };
  explicit EventBus(std::vector<Subscription> registered = {});

  // Appends `r` to r.topic (offsets must grow per topic); wakes pollers. A record every
  // registered subscriber of its topic has already consumed is counted but not kept.
  void append(Record r);
  // Up to `max` records after `group`'s position on `topics`, oldest offset first, waiting
  // up to `wait` for at least one.
  std::vector<Record> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                           std::chrono::milliseconds wait);
  // Moves `group`'s positions (never backwards) and drops what every subscriber consumed.
  void commit(const std::string& group, const std::map<std::string, int64_t>& positions);
  int64_t position(const std::string& group, const std::string& topic) const;
  // The smallest offset a registered group has not consumed yet (max(): none), and whether
  // any group is registered.
  int64_t oldest_unconsumed() const;
  bool has_registered_groups() const { return !registered_.empty(); }
  // Records appended to `topic` since the bus was made (kept or not).
  uint64_t appended(const std::string& topic) const;
  size_t kept() const;   // records in memory

  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

 private:
  int64_t floor_locked(const std::string& topic) const;  // offsets <= this are consumed by all
  void trim_locked(const std::string& topic);

  const std::vector<Subscription> registered_;
  std::map<std::string, std::vector<std::string>> subscribers_;  // topic -> registered groups
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
  std::map<std::string, std::deque<Record>> topics_;
  std::map<std::string, uint64_t> appended_;
  std::map<std::pair<std::string, std::string>, int64_t> positions_;  // (group, topic) -> last consumed offset
};

}  // namespace ps
