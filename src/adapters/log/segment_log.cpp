#include "adapters/log/segment_log.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <future>

#include "adapters/log/record_format.hpp"
#include "common/log.hpp"
#include "common/thread_name.hpp"

namespace ps::wal {
namespace {

constexpr size_t kZeroChunk = 1u << 20;
constexpr auto kPrepareRetry = std::chrono::milliseconds(100);

std::optional<uint64_t> segment_number(const std::string& name) {
  // seg-<20 digits>.log
  if (name.size() != 4 + 20 + 4 || name.rfind("seg-", 0) != 0 || name.substr(24) != ".log") return std::nullopt;
  uint64_t n = 0;
  for (size_t i = 4; i < 24; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    n = n * 10 + uint64_t(name[i] - '0');
  }
  return n;
}

Result<std::string> read_all(LogFile& f) {
  auto size = f.size();
  if (!size) return size.error();
  std::string buf(*size, '\0');
  auto n = f.read_at(0, buf.data(), buf.size());
  if (!n) return n.error();
  buf.resize(*n);
  return buf;
}

Result<void> write_zeros(LogFile& f, uint64_t from, uint64_t to) {
  static const std::string zeros(kZeroChunk, '\0');
  for (uint64_t off = from; off < to;) {
    size_t n = size_t(std::min<uint64_t>(kZeroChunk, to - off));
    if (auto w = f.write_at(off, zeros.data(), n); !w) return w;
    off += n;
  }
  return ok();
}

Error corrupt(const std::string& path, uint64_t offset, const std::string& why) {
  Error e = Error::internal("log corrupt: " + path + " at offset " + std::to_string(offset) + ": " + why +
                            "; acknowledged records may be damaged, refusing to open (restore the file "
                            "or move the log aside to decide)");
  e.code = "log_corrupt";
  e.retryable = false;
  return e;
}

// Past the end of the readable records (a bad record or zeros at some offset, whose lsn
// would have been `expected`, 0 if unknown): is there a valid record in buf[from..], and
// of the same group commit or a later one? (record_format.hpp)
enum class After { nothing, same_group, later_group };
After scan_after(std::string_view buf, size_t from, uint64_t expected) {
  After seen = After::nothing;
  const char magic[4] = {char(kMagic & 0xFF), char((kMagic >> 8) & 0xFF), char((kMagic >> 16) & 0xFF),
                         char((kMagic >> 24) & 0xFF)};
  for (size_t pos = from; pos + kHeaderBytes <= buf.size();) {
    auto hit = buf.find(std::string_view(magic, 4), pos);
    if (hit == std::string_view::npos) break;
    Frame f = decode_record(buf.substr(hit));
    if (f.status == FrameStatus::ok) {
      if (expected == 0 || f.header.batch_lsn > expected) return After::later_group;
      seen = After::same_group;
    }
    pos = hit + 1;
  }
  return seen;
}

}  // namespace

SegmentLog::SegmentLog(LogOptions opts, LogFs& fs) : opts_(std::move(opts)), fs_(fs) {}

std::string SegmentLog::path_of(uint64_t number) const {
  char name[32];
  std::snprintf(name, sizeof name, "seg-%020" PRIu64 ".log", number);
  return opts_.dir + "/" + name;
}

Result<std::unique_ptr<SegmentLog>> SegmentLog::open(LogOptions opts, LogFs& fs, uint64_t from_lsn,
                                                     const Replay& replay) {
  if (opts.dir.empty()) return Error::invalid("log_dir_missing", "the log directory is not set");
  if (opts.segment_bytes < (1u << 16)) return Error::invalid("segment_bytes_invalid", "segments must be >= 64 KiB");
  opts.max_batch_bytes = std::max<size_t>(opts.max_batch_bytes, kHeaderBytes + 1);
  std::unique_ptr<SegmentLog> log(new SegmentLog(std::move(opts), fs));
  if (auto d = fs.create_dir(log->opts_.dir); !d) return d.error();
  if (auto r = log->recover(from_lsn, replay); !r) return r.error();
  if (log->opts_.stepped) return log;
  log->writer_ = std::thread([p = log.get()] {
    name_this_thread("ps-log-writer");
    p->writer_loop();
  });
  log->preparer_ = std::thread([p = log.get()] {
    name_this_thread("ps-log-prepare");
    p->preparer_loop();
  });
  return log;
}

Result<void> SegmentLog::recover(uint64_t from_lsn, const Replay& replay) {
  auto names = fs_.list(opts_.dir);
  if (!names) return names.error();
  std::vector<uint64_t> numbers;
  for (const auto& n : *names)
    if (auto num = segment_number(n)) numbers.push_back(*num);
  std::sort(numbers.begin(), numbers.end());

  // First pass: the first lsn of each segment (0 = no data), so segments entirely below
  // from_lsn need not be read.
  struct Seen {
    uint64_t number;
    uint64_t first_lsn;
  };
  std::vector<Seen> seen;
  for (uint64_t num : numbers) {
    auto f = fs_.open(path_of(num), false);
    if (!f) return f.error();
    std::string head(kHeaderBytes, '\0');
    auto n = (*f)->read_at(0, head.data(), head.size());
    if (!n) return n.error();
    head.resize(*n);
    uint64_t first = 0;
    if (head.size() == kHeaderBytes) {
      // A header alone cannot be CRC-checked; the full scan below checks it when read.
      bool zero = std::all_of(head.begin(), head.end(), [](char c) { return c == 0; });
      if (!zero) {
        uint64_t lsn = 0;
        for (int i = 0; i < 8; ++i) lsn |= uint64_t(uint8_t(head[8 + i])) << (8 * i);
        first = lsn == 0 ? 1 : lsn;   // unreadable lsn: "has something"; the scan decides
      }
    }
    seen.push_back({num, first});
  }

  uint64_t expected = 0;   // next lsn; 0 = not known yet
  size_t data_segments = 0;
  for (size_t i = 0; i < seen.size(); ++i) {
    const bool last_with_data = [&] {
      for (size_t j = i + 1; j < seen.size(); ++j)
        if (seen[j].first_lsn != 0) return false;
      return true;
    }();
    if (seen[i].first_lsn == 0 && last_with_data) break;   // trailing empty segments
    // Skip a segment whose successor starts at or below from_lsn: all its records are older.
    if (i + 1 < seen.size() && seen[i + 1].first_lsn != 0 && seen[i + 1].first_lsn <= from_lsn) {
      segments_.push_back({seen[i].number, seen[i].first_lsn});
      expected = seen[i + 1].first_lsn;
      ++data_segments;
      continue;
    }
    const std::string path = path_of(seen[i].number);
    auto f = fs_.open(path, false);
    if (!f) return f.error();
    auto buf_r = read_all(**f);
    if (!buf_r) return buf_r.error();
    const std::string& buf = *buf_r;
    if (expected == 0 && seen[i].number == 1) expected = 1;   // a log that never released starts at 1
    uint64_t first = 0;
    size_t off = 0;
    bool cut = false;
    for (;;) {
      Frame fr = decode_record(std::string_view(buf).substr(off));
      if (fr.status == FrameStatus::ok && (expected == 0 || fr.header.lsn == expected)) {
        if (first == 0) first = fr.header.lsn;
        if (fr.header.lsn >= from_lsn)
          if (auto r = replay(LogRecord{fr.header.lsn, fr.header.type, fr.payload}); !r) return r;
        expected = fr.header.lsn + 1;
        off += fr.frame_bytes;
        continue;
      }
      // The readable records end here (zeros, a bad record, or an lsn out of sequence).
      // Normal if nothing valid follows; a torn tail if only records of the same group do;
      // damaged fsync'd data if a later group follows.
      const bool bad = fr.status != FrameStatus::end;
      After after = scan_after(buf, bad ? off + 1 : off, expected);
      bool later_segment_has_data = false;
      for (size_t j = i + 1; j < seen.size(); ++j) later_segment_has_data |= seen[j].first_lsn != 0;
      if (after == After::later_group || ((bad || after == After::same_group) && later_segment_has_data))
        return corrupt(path, off, "a later group commit follows unreadable data");
      if (bad || after == After::same_group) {
        log::warn("log: torn tail cut off", {{"segment", path}, {"offset", std::to_string(off)},
                                             {"bytes", std::to_string(buf.size() - off)}});
        if (auto z = write_zeros(**f, off, buf.size()); !z) return z;
        if (auto s = (*f)->sync(); !s) return s;
        cut = true;
      }
      break;
    }
    segments_.push_back({seen[i].number, first});
    ++data_segments;
    current_ = std::move(*f);
    current_offset_ = off;
    if (cut) break;
  }
  // Remove segments past the last one with data (prepared but unused, or emptied by a cut).
  const uint64_t keep_upto = segments_.empty() ? 0 : segments_.back().number;
  bool removed = false;
  for (const auto& s : seen) {
    if (s.number > keep_upto) {
      if (auto r = fs_.remove(path_of(s.number)); !r) return r;
      removed = true;
    }
  }
  if (removed)
    if (auto r = fs_.sync_dir(opts_.dir); !r) return r;
  if (data_segments == 0) {
    segments_.clear();
    const uint64_t number = keep_upto + 1;
    auto f = prepare_segment(number);
    if (!f) return f.error();
    current_ = std::move(*f);
    current_offset_ = 0;
    segments_.push_back({number, 0});
  }
  if ((expected == 0 && from_lsn > 1) || (expected != 0 && from_lsn > expected))
    return corrupt(opts_.dir, 0, "the log ends before lsn " + std::to_string(from_lsn) +
                                     ", which the caller has already applied");
  next_lsn_ = expected == 0 ? 1 : expected;
  durable_lsn_ = next_lsn_ - 1;
  return ok();
}

Result<std::unique_ptr<LogFile>> SegmentLog::prepare_segment(uint64_t number) {
  const std::string path = path_of(number);
  auto f = fs_.open(path, true);
  if (!f) return f.error();
  if (auto t = (*f)->truncate(0); !t) return t.error();
  if (auto p = (*f)->preallocate(opts_.segment_bytes); !p) return p.error();
  if (auto z = write_zeros(**f, 0, opts_.segment_bytes); !z) return z.error();
  if (auto s = (*f)->sync(); !s) return s.error();
  if (auto d = fs_.sync_dir(opts_.dir); !d) return d.error();
  std::lock_guard lk(mu_);
  ++stats_.segments_prepared;
  return f;
}

void SegmentLog::preparer_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    spare_cv_.wait(lk, [&] { return preparer_stop_ || !spare_; });
    if (preparer_stop_) return;
    const uint64_t number = segments_.back().number + 1;
    lk.unlock();
    auto f = prepare_segment(number);
    lk.lock();
    if (f) {
      spare_ = std::move(*f);
      spare_number_ = number;
      spare_failed_ = false;
    } else {
      spare_failed_ = true;
      spare_error_ = f.error();
      log::error("log: cannot prepare the next segment", {{"error", f.error().message}});
    }
    spare_cv_.notify_all();
    if (!f) spare_cv_.wait_for(lk, kPrepareRetry, [&] { return preparer_stop_; });
  }
}

Result<void> SegmentLog::roll() {
  if (opts_.stepped) {
    uint64_t number = 0;
    {
      std::lock_guard lk(mu_);
      number = segments_.back().number + 1;
    }
    auto f = prepare_segment(number);
    if (!f) return f.error();
    std::lock_guard lk(mu_);
    current_ = std::move(*f);
    current_offset_ = 0;
    segments_.push_back({number, 0});
    return ok();
  }
  std::unique_lock lk(mu_);
  spare_cv_.wait(lk, [&] { return spare_ || spare_failed_; });
  if (!spare_) return spare_error_;
  current_ = std::move(spare_);
  current_offset_ = 0;
  segments_.push_back({spare_number_, 0});
  spare_cv_.notify_all();
  return ok();
}

void SegmentLog::append(uint8_t type, std::string payload, Done done) {
  if (type == 0 || payload.empty() || payload.size() > kMaxPayloadBytes) {
    done(Error::invalid("log_record_invalid", "a log record needs a type 1..255 and 1 .. 16 MiB of payload"));
    return;
  }
  const size_t bytes = kHeaderBytes + payload.size();
  bool stopping = false;
  {
    std::lock_guard lk(mu_);
    stopping = stopping_;
    if (!stopping && queued_bytes_ + bytes <= opts_.max_pending_bytes) {
      queued_bytes_ += bytes;
      queue_.push_back(Pending{type, std::move(payload), std::move(done)});
      queue_cv_.notify_one();
      return;
    }
  }
  done(stopping ? Error::unavailable("log_stopping", "the log is stopping")
                : Error::unavailable("log_overloaded", "the log's write queue is full"));
}

Result<uint64_t> SegmentLog::append_wait(uint8_t type, std::string payload) {
  std::promise<Result<uint64_t>> p;
  auto fut = p.get_future();
  append(type, std::move(payload), [&p](Result<uint64_t> r) { p.set_value(std::move(r)); });
  return fut.get();
}

bool SegmentLog::take_group(std::vector<Pending>& group, bool wait) {
  group.clear();
  std::unique_lock lk(mu_);
  if (wait) queue_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return false;
  size_t bytes = 0;
  while (!queue_.empty()) {
    const size_t b = kHeaderBytes + queue_.front().payload.size();
    if (!group.empty() && bytes + b > opts_.max_batch_bytes) break;
    bytes += b;
    queued_bytes_ -= b;
    group.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return true;
}

void SegmentLog::writer_loop() {
  std::vector<Pending> group;
  while (take_group(group, true)) write_group(group);   // false: stopping, everything written
}

size_t SegmentLog::write_queued() {
  std::vector<Pending> group;
  size_t groups = 0;
  for (; take_group(group, false); ++groups) write_group(group);
  return groups;
}

void SegmentLog::write_group(std::vector<Pending>& group) {
  auto fail_all = [&](const Error& e) {
    for (auto& p : group) p.done(e);
  };
  if (failed_) {
    fail_all(Error::unavailable("log_failed", "the log failed an fsync earlier; restart to recover"));
    return;
  }
  const uint64_t batch_lsn = next_lsn_.load();
  buffer_.clear();
  for (size_t i = 0; i < group.size(); ++i)
    encode_record(buffer_, RecordHeader{uint32_t(group[i].payload.size()), batch_lsn + i, batch_lsn, group[i].type},
                  group[i].payload);
  if (current_offset_ > 0 && current_offset_ + buffer_.size() > opts_.segment_bytes) {
    if (auto r = roll(); !r) {
      fail_all(r.error());
      return;
    }
  }
  if (auto w = current_->write_at(current_offset_, buffer_.data(), buffer_.size()); !w) {
    // Some prefix may be on disk: zero the group's range and sync before anyone hears of
    // the failure, so no record of it can come back at recovery. The lsns are reused.
    auto z = write_zeros(*current_, current_offset_, current_offset_ + buffer_.size());
    Result<void> s = z ? current_->sync() : z;
    if (!z || !s) {
      failed_ = true;
      log::error("log: cannot clean up after a failed write; the log is failed",
                 {{"error", (!z ? z : s).error().message}});
    }
    log::warn("log: group commit failed", {{"error", w.error().message}, {"records", std::to_string(group.size())}});
    fail_all(w.error());
    return;
  }
  if (opts_.sync) {
    if (auto s = current_->sync(); !s) {
      failed_ = true;
      log::error("log: fdatasync failed; the log is failed (restart to recover)", {{"error", s.error().message}});
      Error e = s.error();
      e.code = "log_failed";
      e.kind = ErrorKind::unavailable;
      fail_all(e);
      return;
    }
  }
  current_offset_ += buffer_.size();
  const uint64_t last = batch_lsn + group.size() - 1;
  next_lsn_ = last + 1;
  durable_lsn_ = last;
  {
    std::lock_guard lk(mu_);
    if (segments_.back().first_lsn == 0) segments_.back().first_lsn = batch_lsn;
    ++stats_.groups;
    stats_.records += group.size();
    stats_.bytes += buffer_.size();
  }
  for (size_t i = 0; i < group.size(); ++i) group[i].done(batch_lsn + i);
}

Result<void> SegmentLog::release(uint64_t lsn) {
  std::vector<uint64_t> doomed;
  {
    std::lock_guard lk(mu_);
    while (segments_.size() >= 2 && segments_[1].first_lsn != 0 && segments_[1].first_lsn <= lsn) {
      doomed.push_back(segments_.front().number);
      segments_.erase(segments_.begin());
    }
  }
  if (doomed.empty()) return ok();
  for (uint64_t n : doomed)
    if (auto r = fs_.remove(path_of(n)); !r) return r;
  return fs_.sync_dir(opts_.dir);
}

size_t SegmentLog::segment_count() const {
  std::lock_guard lk(mu_);
  return segments_.size();
}

LogStats SegmentLog::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

SegmentLog::~SegmentLog() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();   // drains the queue (the preparer still runs)
  if (opts_.stepped) write_queued();
  {
    std::lock_guard lk(mu_);
    preparer_stop_ = true;
  }
  spare_cv_.notify_all();
  if (preparer_.joinable()) preparer_.join();
}

}  // namespace ps::wal
