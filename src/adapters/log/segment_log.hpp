// SegmentLog: an append-only, group-committed, CRC-framed log in preallocated segment
// files — the embedded shape's acknowledgement path (SPEC §5: "the acknowledgement path
// appends sequentially").
//
// Appends: append() queues one record; one writer thread takes everything queued (up to
// max_batch_bytes), frames it (record_format.hpp), writes it with one write and one
// fdatasync, and only then runs the callbacks, in lsn order, on the writer thread. While
// a group is being synced the next one gathers, so the fsync cost is shared by every
// record that arrived meanwhile. A record is durable when its callback says ok: a 202 may
// be sent from there.
// Segments: files seg-<n>.log of segment_bytes, zero-filled and fsync'd by a preparer
// thread before the writer needs them, so an append never changes a file's size or block
// map. A group never spans two segments.
// Errors (the callback's Result):
//   - queue above max_pending_bytes: unavailable "log_overloaded", nothing written;
//   - a failed write (ENOSPC: "disk_full"; EIO...): the group's bytes are zeroed and
//     synced again, the group fails, the log goes on; if that clean-up fails too, the log
//     is failed;
//   - a failed fdatasync: the log is failed ("log_failed") from then on, because after
//     a failed fsync the kernel may have dropped the dirty pages (the page cache no longer
//     tells what is on disk); the process must restart and recover.
//   A failed group never leaves a record that recovery could bring back.
// Recovery (open): every segment is scanned; records with lsn >= from_lsn are handed to
// `replay` in order. A torn tail (a bad record whose group never finished its fsync) is
// cut off and zeroed; a bad record followed by a later group's record means fsync'd data
// is damaged: open fails with internal "log_corrupt" naming the segment and offset and
// nothing is changed (an operator decides). A bad final record of the last group cannot
// be told from a torn one (as in LevelDB and RocksDB) and is cut off.
// Release: release(lsn) removes segments that hold only records below lsn.
// Stepped mode (LogOptions::stepped; the deterministic simulation, tests/sim): no writer
// and no preparer thread. Appends queue; write_queued() writes them, group by group, on
// the caller's thread, and prepares a segment there when one is needed. The framing,
// syncs, failures and callbacks are the threaded mode's, only the scheduling differs.
// Thread-safety: append/append_wait/release/next_lsn/durable_lsn from any thread; the
// callbacks must not block and must not call append_wait (it would wait for itself).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "adapters/log/log_fs.hpp"
#include "common/result.hpp"

namespace ps::wal {

struct LogOptions {
  std::string dir;                        // created (0700) if missing
  uint64_t segment_bytes = 64ull << 20;   // size of each preallocated segment
  size_t max_batch_bytes = 4u << 20;      // framed bytes per group commit (at least one record)
  size_t max_pending_bytes = 64u << 20;   // queued and unwritten; beyond: "log_overloaded"
  bool sync = true;                       // fdatasync each group (off: the OS decides; tests)
  bool stepped = false;                   // no threads: write_queued() writes (see above)
};

struct LogRecord {
  uint64_t lsn = 0;
  uint8_t type = 0;             // 1..255, the caller's
  std::string_view payload;     // valid during the replay call only
};

struct LogStats {
  uint64_t groups = 0;          // group commits written
  uint64_t records = 0;         // records made durable
  uint64_t bytes = 0;           // framed bytes written
  uint64_t segments_prepared = 0;
};

class SegmentLog {
 public:
  using Done = std::function<void(Result<uint64_t>)>;   // the record's lsn once durable
  using Replay = std::function<Result<void>(const LogRecord&)>;

  // Opens or creates the log in opts.dir, recovers it (see above) and starts the writer
  // and the preparer. `replay` errors abort the open.
  static Result<std::unique_ptr<SegmentLog>> open(LogOptions opts, LogFs& fs, uint64_t from_lsn,
                                                  const Replay& replay);
  ~SegmentLog();   // writes what is queued, then stops
  SegmentLog(const SegmentLog&) = delete;
  SegmentLog& operator=(const SegmentLog&) = delete;

  // Queues one record (type 1..255, payload 1 .. kMaxPayloadBytes bytes; else the callback
  // gets invalid_request at once, on the caller's thread).
  void append(uint8_t type, std::string payload, Done done);
  // append() and wait for the outcome. Not from a callback.
  Result<uint64_t> append_wait(uint8_t type, std::string payload);
  // Stepped mode only: writes everything queued (groups of up to max_batch_bytes) and runs
  // the callbacks, on this thread; returns the groups written. Not from a callback.
  size_t write_queued();
  // Segments whose records are all below `lsn` are removed.
  Result<void> release(uint64_t lsn);

  uint64_t next_lsn() const { return next_lsn_.load(); }        // lsn the next record gets
  uint64_t durable_lsn() const { return durable_lsn_.load(); }  // last durable lsn (0: none)
  size_t segment_count() const;
  LogStats stats() const;

 private:
  struct Pending {
    uint8_t type;
    std::string payload;
    Done done;
  };
  struct Segment {
    uint64_t number = 0;
    uint64_t first_lsn = 0;    // 0 while empty
  };

  SegmentLog(LogOptions opts, LogFs& fs);
  Result<void> recover(uint64_t from_lsn, const Replay& replay);
  std::string path_of(uint64_t number) const;
  Result<std::unique_ptr<LogFile>> prepare_segment(uint64_t number);
  Result<void> roll();
  void writer_loop();
  // Moves the next group off the queue (false: nothing queued). `wait`: until there is
  // one or the log stops.
  bool take_group(std::vector<Pending>& group, bool wait);
  void preparer_loop();
  void write_group(std::vector<Pending>& group);

  LogOptions opts_;
  LogFs& fs_;

  // Writer-owned.
  std::unique_ptr<LogFile> current_;
  uint64_t current_offset_ = 0;
  bool failed_ = false;
  std::string buffer_;

  mutable std::mutex mu_;           // queue, segments_, spare_, stats_
  std::condition_variable queue_cv_;
  std::deque<Pending> queue_;
  size_t queued_bytes_ = 0;
  bool stopping_ = false;
  std::vector<Segment> segments_;   // oldest first; back() is the current one
  std::unique_ptr<LogFile> spare_;  // the next segment, zero-filled and synced
  uint64_t spare_number_ = 0;
  Error spare_error_;               // why the last preparation failed
  bool spare_failed_ = false;
  bool preparer_stop_ = false;
  std::condition_variable spare_cv_;
  LogStats stats_;

  std::atomic<uint64_t> next_lsn_{1};
  std::atomic<uint64_t> durable_lsn_{0};
  std::thread writer_;
  std::thread preparer_;
};

}  // namespace ps::wal
