// Schedule: the open-loop arrival schedule of `paystream bench`.
//
// A schedule is a list of steps (rate per second, seconds). Arrivals follow the cumulative
// count A(t) = ∫ rate: request i (i = 0, 1, ...) is due at the t where A(t) = i, so a
// constant rate R over D seconds schedules ceil(R·D) requests at 0, 1/R, 2/R, ... A
// worker of P gets every rate divided by P over the same time axis. Pure and cheap:
// due_ns() walks forward with a cursor, so sequential calls are O(1).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace ps::bench {

struct Step {
  double rate_per_s = 0;
  double seconds = 0;
};

// "RATE:SECONDS,RATE:SECONDS" → steps; rates > 0, seconds > 0, at most 1000 steps.
Result<std::vector<Step>> parse_steps(const std::string& text);

class Schedule {
 public:
  // `share` scales every rate (1/P for one of P workers).
  Schedule(std::vector<Step> steps, double share);

  uint64_t total() const { return total_; }            // requests scheduled in all steps
  double length_s() const { return length_s_; }        // Σ seconds
  // Offset of request i from the start, in nanoseconds; i < total().
  int64_t due_ns(uint64_t i);

 private:
  struct Seg {
    double start_s, end_s, rate, first;  // first = A(start_s)
    uint64_t end_index;                  // requests with index < end_index are due in or before this step
  };
  std::vector<Seg> segs_;
  uint64_t total_ = 0;
  double length_s_ = 0;
  size_t cursor_ = 0;
};

}  // namespace ps::bench
