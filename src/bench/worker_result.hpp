// WorkerResult: everything one load worker measured, written by the worker process to a
// file and merged by the parent; SharedProgress: the live counters the workers update in
// a MAP_SHARED mapping created before fork (lock-free atomics only).
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bench/histogram.hpp"
#include "common/result.hpp"

namespace ps::bench {

struct WorkerResult {
  uint64_t scheduled = 0;           // requests the schedule held
  uint64_t requests = 0;            // requests written (a duplicate pair counts 2)
  uint64_t responses = 0;           // responses fully read
  uint64_t status_2xx = 0;
  uint64_t ok_slot_halves = 0;      // 2 per good single answer, 1 per good answer of a pair
  uint64_t conflicts_409 = 0;       // expected 409s of concurrent duplicates
  uint64_t replays_ok = 0;
  uint64_t replay_mismatch = 0;     // a retry answered without replay or with another id
  uint64_t pair_mismatch = 0;       // a concurrent-duplicate pair answered with two ids
  uint64_t timeout = 0;
  uint64_t io = 0;
  uint64_t connect = 0;
  std::map<int, uint64_t> by_status;  // unexpected statuses
  uint64_t connections_open_at_start = 0;
  uint64_t connections_open_max = 0;
  int64_t start_ns = 0;             // steady clock (CLOCK_MONOTONIC, shared by processes)
  int64_t last_response_ns = 0;
  Histogram latency_us;
  std::vector<std::pair<std::string, std::string>> accepted;  // (idempotency key, payment id)

  uint64_t errors_total() const;
  void merge(const WorkerResult& o);
  std::string to_json() const;
  static Result<WorkerResult> from_json(const std::string& text);
};

struct alignas(64) SharedProgress {
  static constexpr int kMaxWorkers = 64;
  std::atomic<uint64_t> sent{0}, completed{0}, ok{0}, errors{0}, open{0}, inflight{0};
  std::atomic<uint64_t> ready_workers{0};
  std::atomic<int64_t> start_ns{0};       // set by the parent once every worker is ready
  std::atomic<int64_t> abort{0};          // parent asks workers to stop
  std::atomic<uint64_t> p99_1s_us[kMaxWorkers];  // each worker's p99 over its last second
};

}  // namespace ps::bench
