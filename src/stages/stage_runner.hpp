// Stage and StageRunner: the consume -> handle -> commit loop every pipeline role runs.
//
// A Stage turns a batch of records into Effects. It puts records it cannot decode or that
// fail permanently into Effects::dead_letters itself; a retryable error from handle()
// means "a dependency is down": the runner backs off (capped) and retries the same batch
// without committing, for as long as it takes (payments stay processing, nothing is lost
// or failed). A non-retryable error from handle() is treated as a poison batch: the runner
// retries it record by record, and a record that still fails after max_record_attempts
// becomes a dead letter. A commit error backs off and re-polls (at-least-once). A commit
// the store refuses permanently (a non-retryable error), or that failed max_commit_attempts
// times in a row, is retried record by record instead, each record handled and committed
// alone: a record whose own commit fails max_record_attempts times becomes a dead letter
// (with the commit's error) and the stage goes on. If the log cannot take that dead letter
// either, it is an outage, not poison: nothing is dead-lettered and the rest of the batch
// is re-polled, as before.
//
// Threading: the runner owns one thread; a Stage's handle() is only ever called from it.
// stop(): finishes the batch in hand, commits it, then joins (SIGTERM drain). If the batch
// in hand is waiting on a retryable error, stop() abandons it uncommitted (it is polled
// again after restart). Metrics: paystream_stage_processed_total{stage,outcome},
// paystream_stage_duration_seconds{stage}, paystream_dead_letters_total{stage},
// paystream_stage_batches_total{stage}.
#pragma once
#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "stages/resilience.hpp"

namespace ps {

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string_view name() const = 0;
  virtual Result<Effects> handle(const std::vector<Record>& batch) = 0;
};

struct RunnerOptions {
  size_t batch_max = 256;
  std::chrono::milliseconds poll_wait{200};
  int max_record_attempts = 5;                     // for non-retryable handle() errors
  int max_commit_attempts = 5;                     // failed commits of a batch before isolating
  std::chrono::milliseconds retry_backoff_max{2000};
};

class StageRunner {
 public:
  StageRunner(std::string group, std::vector<std::string> topics, StageLog& log, Stage& stage,
              const Clock& clock, RunnerOptions opts = {});
  ~StageRunner();
  StageRunner(const StageRunner&) = delete;
  StageRunner& operator=(const StageRunner&) = delete;

  void start();
  void stop();
  // One poll/handle/commit cycle on the calling thread (tests, and the loop body).
  // Returns the number of records committed (0 if nothing was polled or commit failed).
  size_t run_once();

 private:
  void loop();
  // Handles `batch`, retrying retryable errors; false if stop was requested meanwhile.
  bool handle_with_retries(const std::vector<Record>& batch, Effects* out);
  // One record at a time; false if a retryable error came up (back to whole-batch retry).
  bool handle_records_singly(const std::vector<Record>& batch, const Error& batch_error, Effects* out);
  // After a commit of `batch` failed (`error`): each record handled and committed alone; a
  // record whose commit keeps failing is dead-lettered. Returns the records committed.
  size_t commit_records_singly(const std::vector<Record>& batch, const Error& error);
  void count_committed(size_t records, size_t dead);
  void pause(std::chrono::milliseconds d);  // clock sleep in slices, cut short by stop()

  const std::string group_;
  const std::vector<std::string> topics_;
  StageLog& log_;
  Stage& stage_;
  const Clock& clock_;
  const RunnerOptions opts_;
  Backoff backoff_;
  std::atomic<bool> stopping_{false};
  int commit_failures_ = 0;  // consecutive failed commits (the same batch comes back)
  std::thread thread_;
  std::string stage_name_;
};

}  // namespace ps
