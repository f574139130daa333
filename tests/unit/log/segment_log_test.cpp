// SegmentLog: framing, group commit, segments, and every fault the embedded engine's
// acknowledgement path must survive (issue: log faults): a torn final record, a CRC
// mismatch mid-segment, ENOSPC and other write errors after a partial write, a failed
// fsync, and crashes that drop unsynced data (FaultFs), after which every acknowledged
// record must still be there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "adapters/log/record_format.hpp"
#include "adapters/log/segment_log.hpp"
#include "unit/log/fault_fs.hpp"

namespace ps::wal {
namespace {
namespace fs = std::filesystem;
using testing::FaultFs;

constexpr uint64_t kSmallSegment = 64 * 1024;

struct Replayed {
  std::vector<std::pair<uint64_t, std::string>> records;
  SegmentLog::Replay fn() {
    return [this](const LogRecord& r) {
      records.emplace_back(r.lsn, std::string(r.payload));
      return ok();
    };
  }
};

LogOptions small(const std::string& dir) {
  LogOptions o;
  o.dir = dir;
  o.segment_bytes = kSmallSegment;
  return o;
}

std::string payload_of(int i, size_t size = 100) {
  std::string s = "record-" + std::to_string(i) + "-";
  while (s.size() < size) s += char('a' + (i + s.size()) % 26);
  return s;
}

class TempDir {
 public:
  TempDir() {
    path_ = (fs::temp_directory_path() / ("ps-log-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))).string();
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  static inline int counter_ = 0;
};

std::vector<fs::path> segment_files(const std::string& dir) {
  std::vector<fs::path> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(RecordFormat, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  EXPECT_EQ(crc32c_portable("123456789", 9), 0xE3069283u);
}

TEST(RecordFormat, TheCpuInstructionAndTheTableAgreeOnEveryLengthAndAlignment) {
  std::string data;
  for (int i = 0; i < 600; ++i) data.push_back(char((i * 131 + 7) & 0xFF));
  for (size_t off = 0; off < 9; ++off)
    for (size_t n = 0; off + n <= data.size(); n += (n < 40 ? 1 : 37))
      ASSERT_EQ(crc32c(data.data() + off, n), crc32c_portable(data.data() + off, n)) << off << "+" << n;
}

TEST(RecordFormat, RoundTripAndEveryFlippedBitIsDetected) {
  std::string buf;
  encode_record(buf, RecordHeader{0, 42, 40, 7}, "hello");
  Frame f = decode_record(buf);
  ASSERT_EQ(f.status, FrameStatus::ok);
  EXPECT_EQ(f.header.lsn, 42u);
  EXPECT_EQ(f.header.batch_lsn, 40u);
  EXPECT_EQ(f.header.type, 7);
  EXPECT_EQ(f.payload, "hello");
  EXPECT_EQ(f.frame_bytes, kHeaderBytes + 5);
  for (size_t bit = 0; bit < buf.size() * 8; ++bit) {
    std::string bad = buf;
    bad[bit / 8] = char(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_NE(decode_record(bad).status, FrameStatus::ok) << "bit " << bit;
  }
  EXPECT_EQ(decode_record(std::string(kHeaderBytes, '\0')).status, FrameStatus::end);
  EXPECT_EQ(decode_record(buf.substr(0, buf.size() - 1)).status, FrameStatus::bad);
}

TEST(SegmentLog, AppendsAreDurableAndReplayedInOrderAfterReopen) {
  TempDir dir;
  PosixLogFs pfs;
  {
    Replayed none;
    auto log = SegmentLog::open(small(dir.path()), pfs, 1, none.fn());
    ASSERT_TRUE(log) << log.error().message;
    EXPECT_TRUE(none.records.empty());
    for (int i = 0; i < 50; ++i) {
      auto lsn = (*log)->append_wait(1, payload_of(i));
      ASSERT_TRUE(lsn) << lsn.error().message;
      EXPECT_EQ(*lsn, uint64_t(i + 1));
    }
    EXPECT_EQ((*log)->durable_lsn(), 50u);
  }
  Replayed all;
  auto log = SegmentLog::open(small(dir.path()), pfs, 1, all.fn());
  ASSERT_TRUE(log) << log.error().message;
  ASSERT_EQ(all.records.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(all.records[i].first, uint64_t(i + 1));
    EXPECT_EQ(all.records[i].second, payload_of(i));
  }
  EXPECT_EQ((*log)->next_lsn(), 51u);
  // from_lsn: only the tail is replayed.
  log->reset();
  Replayed tail;
  auto again = SegmentLog::open(small(dir.path()), pfs, 41, tail.fn());
  ASSERT_TRUE(again);
  ASSERT_EQ(tail.records.size(), 10u);
  EXPECT_EQ(tail.records.front().first, 41u);
}

TEST(SegmentLog, ConcurrentAppendsShareGroupCommits) {
  TempDir dir;
  PosixLogFs pfs;
  Replayed none;
  auto log = SegmentLog::open(small(dir.path()), pfs, 1, none.fn());
  ASSERT_TRUE(log);
  constexpr int kThreads = 16, kEach = 40;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        if (!(*log)->append_wait(1, payload_of(t * 1000 + i))) ++failures;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto st = (*log)->stats();
  EXPECT_EQ(st.records, uint64_t(kThreads * kEach));
  EXPECT_LT(st.groups, st.records) << "16 concurrent writers never shared an fsync";
}

TEST(SegmentLog, RollsSegmentsAndReleaseRemovesOnlyWhollyOlderOnes) {
  TempDir dir;
  PosixLogFs pfs;
  Replayed none;
  auto log = SegmentLog::open(small(dir.path()), pfs, 1, none.fn());
  ASSERT_TRUE(log);
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE((*log)->append_wait(1, payload_of(i, 200)));
  const size_t before = (*log)->segment_count();
  EXPECT_GE(before, 5u);   // 2000 x ~230 B over 64 KiB segments
  ASSERT_TRUE((*log)->release(1500));
  EXPECT_LT((*log)->segment_count(), before);
  log->reset();
  Replayed tail;
  auto again = SegmentLog::open(small(dir.path()), pfs, 1500, tail.fn());
  ASSERT_TRUE(again) << again.error().message;
  ASSERT_EQ(tail.records.size(), 501u);
  EXPECT_EQ(tail.records.front().first, 1500u);
  EXPECT_EQ(tail.records.back().second, payload_of(1999, 200));
  // Records below the release point may be gone, never those at or above it.
  Replayed from_start;
  again->reset();
  auto third = SegmentLog::open(small(dir.path()), pfs, 1, from_start.fn());
  ASSERT_TRUE(third) << third.error().message;
  EXPECT_LE(from_start.records.front().first, 1500u);
  EXPECT_EQ(from_start.records.back().first, 2000u);
}

// Stepped mode (the simulation's): nothing is written until write_queued(), which writes
// every queued record in groups of up to max_batch_bytes on the caller's thread, rolls
// segments there, and runs the callbacks before it returns; the destructor writes what
// is still queued.
TEST(SegmentLog, SteppedModeWritesOnlyWhenToldAndOnTheCallersThread) {
  FaultFs ffs;
  Replayed none;
  LogOptions o = small("/stepped");
  o.stepped = true;
  o.max_batch_bytes = 4096;
  auto log = SegmentLog::open(o, ffs, 1, none.fn());
  ASSERT_TRUE(log) << log.error().message;
  std::vector<uint64_t> durable;
  const auto caller = std::this_thread::get_id();
  bool other_thread = false;
  for (int i = 0; i < 600; ++i)
    (*log)->append(1, payload_of(i, 200), [&](Result<uint64_t> r) {
      ASSERT_TRUE(r) << r.error().message;
      durable.push_back(*r);
      other_thread |= std::this_thread::get_id() != caller;
    });
  EXPECT_TRUE(durable.empty()) << "nothing is written before write_queued()";
  EXPECT_EQ((*log)->durable_lsn(), 0u);
  const size_t groups = (*log)->write_queued();
  EXPECT_GE(groups, 600u * 230 / 4096);   // about 17 records per 4 KiB group
  ASSERT_EQ(durable.size(), 600u);
  EXPECT_FALSE(other_thread);
  for (size_t i = 0; i < durable.size(); ++i) EXPECT_EQ(durable[i], i + 1);
  EXPECT_GE((*log)->segment_count(), 2u) << "600 x ~230 B roll a 64 KiB segment";
  EXPECT_EQ((*log)->write_queued(), 0u);
  (*log)->append(1, "last", [&](Result<uint64_t> r) { durable.push_back(r ? *r : 0); });
  log->reset();   // writes what is queued
  ASSERT_EQ(durable.size(), 601u);
  EXPECT_EQ(durable.back(), 601u);
  Replayed all;
  auto again = SegmentLog::open(small("/stepped"), ffs, 1, all.fn());
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(all.records.size(), 601u);
}

TEST(SegmentLog, TornFinalRecordIsCutOffAndTheLogGoesOn) {
  TempDir dir;
  PosixLogFs pfs;
  {
    Replayed none;
    auto log = SegmentLog::open(small(dir.path()), pfs, 1, none.fn());
    ASSERT_TRUE(log);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->append_wait(1, payload_of(i)));
  }
  // Tear the last record: its last 30 bytes never reached the disk.
  auto segs = segment_files(dir.path());
  ASSERT_GE(segs.size(), 1u);   // seg 1 (first in name order); maybe the prepared spare
  const uint64_t frame = kHeaderBytes + payload_of(9).size();
  const uint64_t end = 10 * frame;
  {
    std::fstream f(segs[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(end - 30));
    f.write(std::string(30, '\0').data(), 30);
  }
  Replayed r;
  auto log = SegmentLog::open(small(dir.path()), pfs, 1, r.fn());
  ASSERT_TRUE(log) << log.error().message;
  ASSERT_EQ(r.records.size(), 9u);
  EXPECT_EQ((*log)->next_lsn(), 10u);
  auto lsn = (*log)->append_wait(1, "after the tear");
  ASSERT_TRUE(lsn);
  EXPECT_EQ(*lsn, 10u);
  log->reset();
  Replayed r2;
  auto again = SegmentLog::open(small(dir.path()), pfs, 1, r2.fn());
  ASSERT_TRUE(again) << again.error().message;
  ASSERT_EQ(r2.records.size(), 10u);
  EXPECT_EQ(r2.records.back().second, "after the tear");
}

TEST(SegmentLog, CrcMismatchMidSegmentRefusesToOpenAndChangesNothing) {
  TempDir dir;
  PosixLogFs pfs;
  {
    Replayed none;
    auto log = SegmentLog::open(small(dir.path()), pfs, 1, none.fn());
    ASSERT_TRUE(log);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->append_wait(1, payload_of(i)));   // 10 groups
  }
  auto segs = segment_files(dir.path());
  const uint64_t frame = kHeaderBytes + payload_of(0).size();
  std::string before;
  {
    std::fstream f(segs[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(3 * frame + kHeaderBytes + 5));   // a payload byte of lsn 4
    f.put('#');
  }
  {
    std::ifstream in(segs[0], std::ios::binary);
    before.assign(std::istreambuf_iterator<char>(in), {});
  }
  Replayed r;
  auto log = SegmentLog::open(small(dir.path()), pfs, 1, r.fn());
  ASSERT_FALSE(log);
  EXPECT_EQ(log.error().code, "log_corrupt");
  EXPECT_NE(log.error().message.find(segs[0].filename().string()), std::string::npos);
  std::ifstream in(segs[0], std::ios::binary);
  std::string after(std::istreambuf_iterator<char>(in), {});
  EXPECT_EQ(after, before) << "a corrupt log must be left as it was";
}

// Appends n records from one thread; returns which were acknowledged.
std::map<uint64_t, std::string> append_n(SegmentLog& log, int from, int n, int* failed = nullptr) {
  std::map<uint64_t, std::string> acked;
  for (int i = from; i < from + n; ++i) {
    auto r = log.append_wait(1, payload_of(i));
    if (r) {
      acked[*r] = payload_of(i);
    } else if (failed) {
      ++*failed;
    }
  }
  return acked;
}

// A fresh log prepares its first segment in open() and its spare on the preparer thread;
// wait for the spare so an injected write fault hits the append, not the zero-filling.
void wait_for_spare(SegmentLog& log) {
  for (int i = 0; i < 5000 && log.stats().segments_prepared < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GE(log.stats().segments_prepared, 2u);
}

void expect_exactly(FaultFs& ffs, const std::map<uint64_t, std::string>& acked) {
  Replayed r;
  auto log = SegmentLog::open(small("/log"), ffs, 1, r.fn());
  ASSERT_TRUE(log) << log.error().message;
  ASSERT_EQ(r.records.size(), acked.size());
  for (auto& [lsn, payload] : r.records) {
    auto it = acked.find(lsn);
    ASSERT_NE(it, acked.end()) << "lsn " << lsn << " was never acknowledged";
    EXPECT_EQ(it->second, payload);
  }
}

TEST(SegmentLog, EnospcDuringAppendFailsThatGroupOnlyAndLeavesNothingBehind) {
  FaultFs ffs;
  std::map<uint64_t, std::string> acked;
  {
    Replayed none;
    auto log = SegmentLog::open(small("/log"), ffs, 1, none.fn());
    ASSERT_TRUE(log);
    acked = append_n(**log, 0, 5);
    wait_for_spare(**log);
    ffs.fail_writes(1, ENOSPC);   // half of the next group is written, then the disk is full
    auto r = (*log)->append_wait(1, payload_of(100));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, "disk_full");
    EXPECT_EQ(r.error().kind, ErrorKind::unavailable);
    auto more = append_n(**log, 5, 5);
    EXPECT_EQ(more.size(), 5u);
    acked.insert(more.begin(), more.end());
  }
  expect_exactly(ffs, acked);
}

TEST(SegmentLog, WriteErrorAfterPartialWriteThenCrashBringsBackNothingUnacknowledged) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    FaultFs ffs;
    std::map<uint64_t, std::string> acked;
    {
      Replayed none;
      auto log = SegmentLog::open(small("/log"), ffs, 1, none.fn());
      ASSERT_TRUE(log);
      acked = append_n(**log, 0, 5);
      wait_for_spare(**log);
      ffs.fail_writes(1, EIO);
      ASSERT_FALSE((*log)->append_wait(1, payload_of(100, 3000)));
      ffs.crash(seed);
    }
    ffs.revive();
    expect_exactly(ffs, acked);
  }
}

TEST(SegmentLog, FailedFsyncFailsTheLogUntilReopened) {
  FaultFs ffs;
  std::map<uint64_t, std::string> acked;
  {
    Replayed none;
    auto log = SegmentLog::open(small("/log"), ffs, 1, none.fn());
    ASSERT_TRUE(log);
    acked = append_n(**log, 0, 3);
    wait_for_spare(**log);
    ffs.fail_syncs(1);
    auto r = (*log)->append_wait(1, payload_of(50));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, "log_failed");
    auto later = (*log)->append_wait(1, payload_of(51));
    ASSERT_FALSE(later);
    EXPECT_EQ(later.error().code, "log_failed") << "no append may succeed after a failed fsync";
  }
  // Nothing after the failed fsync was acknowledged; what was is there. The record whose
  // fsync failed may or may not have reached the disk: it was never acknowledged, and
  // the log after reopening must either hold it whole or not at all.
  Replayed r;
  auto log = SegmentLog::open(small("/log"), ffs, 1, r.fn());
  ASSERT_TRUE(log) << log.error().message;
  ASSERT_GE(r.records.size(), acked.size());
  ASSERT_LE(r.records.size(), acked.size() + 1);
  for (size_t i = 0; i < acked.size(); ++i) EXPECT_EQ(r.records[i].second, acked.at(i + 1));
  if (r.records.size() == acked.size() + 1) {
    EXPECT_EQ(r.records.back().second, payload_of(50));
  }
}

TEST(SegmentLog, OverloadIsRefusedNotQueuedWithoutBound) {
  FaultFs ffs;
  Replayed none;
  LogOptions o = small("/log");
  o.max_pending_bytes = 1000;
  auto log = SegmentLog::open(o, ffs, 1, none.fn());
  ASSERT_TRUE(log);
  std::atomic<int> overloaded{0}, done{0};
  for (int i = 0; i < 200; ++i)
    (*log)->append(1, payload_of(i, 400), [&](Result<uint64_t> r) {
      if (!r && r.error().code == "log_overloaded") ++overloaded;
      ++done;
    });
  log->reset();   // drains
  EXPECT_EQ(done.load(), 200);
  EXPECT_GT(overloaded.load(), 0);
}

// Crash at a random moment under concurrent appends, dropping unsynced data page by page
// in random order: after recovery every acknowledged record is there with its payload,
// nothing else is, and lsns are continuous. 60 seeds.
TEST(SegmentLog, CrashDroppingUnsyncedDataKeepsEveryAcknowledgedRecord) {
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    FaultFs ffs;
    std::mutex mu;
    std::map<uint64_t, std::string> acked;
    std::map<std::string, int> submitted;   // payload -> 1
    {
      Replayed none;
      LogOptions o = small("/log");
      auto log = SegmentLog::open(o, ffs, 1, none.fn());
      ASSERT_TRUE(log);
      std::atomic<bool> stop{false};
      std::vector<std::thread> ts;
      for (int t = 0; t < 4; ++t)
        ts.emplace_back([&, t] {
          for (int i = 0; !stop && i < 5000; ++i) {
            std::string p = payload_of(t * 100000 + i, 50 + (i * 37 + t) % 900);
            {
              std::lock_guard lk(mu);
              submitted[p] = 1;
            }
            auto r = (*log)->append_wait(1, p);
            if (r) {
              std::lock_guard lk(mu);
              acked[*r] = p;
            }
          }
        });
      std::mt19937 rng{unsigned(seed)};
      std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 20000));
      ffs.crash(seed);
      stop = true;
      for (auto& t : ts) t.join();
    }
    ffs.revive();
    Replayed r;
    auto log = SegmentLog::open(small("/log"), ffs, 1, r.fn());
    ASSERT_TRUE(log) << "seed " << seed << ": " << log.error().message;
    std::map<uint64_t, std::string> got(r.records.begin(), r.records.end());
    for (auto& [lsn, p] : acked) {
      auto it = got.find(lsn);
      ASSERT_NE(it, got.end()) << "seed " << seed << ": acknowledged lsn " << lsn << " lost";
      EXPECT_EQ(it->second, p) << "seed " << seed;
    }
    uint64_t expect = 1;
    for (auto& [lsn, p] : r.records) {
      EXPECT_EQ(lsn, expect++) << "seed " << seed;
      EXPECT_TRUE(submitted.count(p)) << "seed " << seed << ": a record nobody wrote";
    }
    // The log goes on after recovery.
    EXPECT_TRUE((*log)->append_wait(1, "after crash")) << "seed " << seed;
  }
}

}  // namespace
}  // namespace ps::wal
