// The load worker of `paystream bench`: one single-threaded process (one io_context)
// driving `connections` keep-alive HTTP/1.1 connections at its share of the schedule.
//
// Contract:
//  - opens its connections gradually (at most connect_concurrency connects in flight,
//    failed connects retried up to 4 times), then counts itself ready in `shared` and
//    waits for the parent to publish shared->start_ns (a CLOCK_MONOTONIC instant common
//    to all workers);
//  - request i is due at start_ns + schedule.due_ns(i); due requests go to idle
//    connections FIFO, otherwise wait in a pending queue; latency = response fully read −
//    due time; a request unanswered `timeout_ms` after its due time is a `timeout` error
//    (its connection is closed and reopened); never sends ahead of the schedule and never
//    skips a scheduled request;
//  - writes its WorkerResult as JSON to result_path. Returns 0 when the file was written.
// Must run in a process without other threads (it is forked by the parent).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "bench/bench_config.hpp"
#include "bench/worker_result.hpp"

namespace ps::bench {

struct WorkerParams {
  const ValidConfig* cfg = nullptr;
  int index = 0;                 // k of P
  std::string target_address;    // resolved IPv4/IPv6 address of the server
  std::string source_address;    // "" = no bind
  std::string api_key;
  int64_t connections = 1;
  SharedProgress* shared = nullptr;
  std::string result_path;
};

int run_load_worker(const WorkerParams& p);

// The value of the first `"id"` member of a JSON object body (the payment id of a
// payment answer: `id` is the first member); empty when there is none.
std::string_view first_id_member(std::string_view body);

}  // namespace ps::bench
