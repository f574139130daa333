// Prototype comparison of the embedded engine's acknowledgement-path candidates
// (docs/DECISIONS.md, "Embedded engine: the acknowledgement path"). Each candidate makes
// one ~600-byte payment intake durable (fsync'd) per client request, with N client
// threads submitting concurrently for D seconds, and reports throughput, per-request
// latency (p50/p99/max) and process CPU per request:
//   segment   the segment log (src/adapters/log): one framed record per payment,
//             group-committed by its writer thread, zero-filled segments;
//   sqlite    today's shape: one SQLite transaction per group of queued payments (WAL,
//             synchronous=FULL) inserting the payment row (random-key primary key), the
//             idempotency row (random-key unique index) and the event row;
//   rocksdb   RocksDB 7.8: a WriteBatch of the same three keys per payment,
//             WriteOptions::sync, concurrent writers group-committed by RocksDB itself;
//   project   not an ack path: how fast SQLite absorbs the same rows in batches of 5,000
//             payments without an fsync per batch (synchronous=NORMAL), i.e. whether a
//             projection off the ack path keeps up; project-lean: the bodies in rowid
//             tables appended in order and the random keys only in small secondary
//             indexes; project-rocks: the same rows into RocksDB without its WAL.
// Build and run: bench/proto/run_log_candidates.sh (needs librocksdb-dev).
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "adapters/log/segment_log.hpp"

namespace {
using Clock = std::chrono::steady_clock;

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::string random_key(std::mt19937_64& rng, const char* prefix) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%016llx%08x", prefix, (unsigned long long)rng(), unsigned(rng()));
  return buf;
}

std::string payload(std::mt19937_64& rng) {
  std::string s = R"({"id":")" + random_key(rng, "pay_") + R"(","merchant_id":"m_1","amount":1999,"currency":"EUR",)";
  while (s.size() < 600) s += "x";
  return s;
}

struct Result {
  const char* name;
  uint64_t n = 0;
  double seconds = 0, cpu = 0;
  std::vector<double> lat_ms;
};

void print(Result& r, int threads) {
  std::sort(r.lat_ms.begin(), r.lat_ms.end());
  auto pct = [&](double p) { return r.lat_ms.empty() ? 0 : r.lat_ms[size_t(p * double(r.lat_ms.size() - 1))]; };
  std::printf(
      "{\"candidate\":\"%s\",\"threads\":%d,\"records\":%llu,\"per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
      "\"max_ms\":%.3f,\"cpu_us_per_record\":%.1f}\n",
      r.name, threads, (unsigned long long)r.n, double(r.n) / r.seconds, pct(0.5), pct(0.99),
      r.lat_ms.empty() ? 0 : r.lat_ms.back(), r.cpu * 1e6 / double(std::max<uint64_t>(1, r.n)));
  std::fflush(stdout);
}

// Runs `op` from `threads` clients for `seconds`; op returns false on failure.
Result drive(const char* name, int threads, double seconds, const std::function<bool(std::mt19937_64&)>& op) {
  Result r{name};
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0};
  const double cpu0 = cpu_seconds();
  const auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(uint64_t(t) * 7919 + 1);
      std::vector<double> mine;
      while (!stop) {
        auto a = Clock::now();
        if (!op(rng)) ++failures;
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      }
      std::lock_guard lk(mu);
      r.lat_ms.insert(r.lat_ms.end(), mine.begin(), mine.end());
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.cpu = cpu_seconds() - cpu0;
  r.n = r.lat_ms.size() - failures.load();
  if (failures) std::fprintf(stderr, "%s: %llu failures\n", name, (unsigned long long)failures.load());
  return r;
}

// --- SQLite group commit (today's shape, reduced to the intake writes) ---
class SqliteGroup {
 public:
  // lean: bodies in rowid tables appended in order; the random keys only in small
  // secondary indexes (key -> rowid).
  SqliteGroup(const std::string& path, bool full_sync, bool lean = false) {
    sqlite3_open(path.c_str(), &db_);
    exec("PRAGMA journal_mode=WAL");
    exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec("PRAGMA cache_size=-131072");
    if (lean) {
      exec("CREATE TABLE payments(seq INTEGER PRIMARY KEY, id TEXT, merchant TEXT, body TEXT)");
      exec("CREATE UNIQUE INDEX payments_id ON payments(id)");
      exec("CREATE TABLE idem(seq INTEGER PRIMARY KEY, merchant TEXT, key TEXT, body TEXT)");
      exec("CREATE UNIQUE INDEX idem_key ON idem(merchant, key)");
      sqlite3_prepare_v2(db_, "INSERT INTO payments(id, merchant, body) VALUES(?,?,?)", -1, &ins_p_, nullptr);
      sqlite3_prepare_v2(db_, "INSERT INTO idem(merchant, key, body) VALUES(?,?,?)", -1, &ins_i_, nullptr);
    } else {
      exec("CREATE TABLE IF NOT EXISTS payments(id TEXT PRIMARY KEY, merchant TEXT, body TEXT) WITHOUT ROWID");
      exec("CREATE TABLE IF NOT EXISTS idem(merchant TEXT, key TEXT, body TEXT, PRIMARY KEY(merchant, key)) WITHOUT ROWID");
      sqlite3_prepare_v2(db_, "INSERT INTO payments VALUES(?,?,?)", -1, &ins_p_, nullptr);
      sqlite3_prepare_v2(db_, "INSERT INTO idem VALUES(?,?,?)", -1, &ins_i_, nullptr);
    }
    exec("CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, body TEXT)");
    sqlite3_prepare_v2(db_, "INSERT INTO events(id, body) VALUES(?,?)", -1, &ins_e_, nullptr);
    writer_ = std::thread([this] { loop(); });
  }
  ~SqliteGroup() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    writer_.join();
    sqlite3_finalize(ins_p_);
    sqlite3_finalize(ins_i_);
    sqlite3_finalize(ins_e_);
    sqlite3_close(db_);
  }
  struct Row {
    std::string id, key, ev, body;
  };
  bool submit(Row row) {
    std::promise<void> p;
    auto f = p.get_future();
    {
      std::lock_guard lk(mu_);
      q_.push_back({std::move(row), &p});
    }
    cv_.notify_one();
    f.get();
    return true;
  }
  // Applies rows in one transaction (the projection candidate), no queue.
  void apply(const std::vector<Row>& rows) {
    exec("BEGIN");
    for (auto& r : rows) insert(r);
    exec("COMMIT");
  }

 private:
  void exec(const char* sql) { sqlite3_exec(db_, sql, nullptr, nullptr, nullptr); }
  void bind_run(sqlite3_stmt* s, const std::string& a, const std::string& b, const std::string* c) {
    sqlite3_bind_text(s, 1, a.data(), int(a.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 2, b.data(), int(b.size()), SQLITE_STATIC);
    if (c) sqlite3_bind_text(s, 3, c->data(), int(c->size()), SQLITE_STATIC);
    sqlite3_step(s);
    sqlite3_reset(s);
  }
  void insert(const Row& r) {
    bind_run(ins_p_, r.id, "m_1", &r.body);
    bind_run(ins_i_, "m_1", r.key, &r.body);
    bind_run(ins_e_, r.ev, r.body, nullptr);
  }
  void loop() {
    std::vector<std::pair<Row, std::promise<void>*>> batch;
    for (;;) {
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        while (!q_.empty() && batch.size() < 512) {
          batch.push_back(std::move(q_.front()));
          q_.pop_front();
        }
      }
      exec("BEGIN IMMEDIATE");
      for (auto& [row, _] : batch) insert(row);
      exec("COMMIT");
      for (auto& [_, p] : batch) p->set_value();
      batch.clear();
    }
  }
  sqlite3* db_ = nullptr;
  sqlite3_stmt *ins_p_ = nullptr, *ins_i_ = nullptr, *ins_e_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Row, std::promise<void>*>> q_;
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s segment|sqlite|rocksdb|project|project-lean|project-rocks DIR THREADS SECONDS\n"
                         "       %s recover DIR RECORDS 0\n", argv[0], argv[0]);
    return 2;
  }
  const std::string which = argv[1], dir = argv[2];
  const int threads = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  if (which == "segment") {
    ps::wal::PosixLogFs fs;
    ps::wal::LogOptions o;
    o.dir = dir + "/log";
    auto log = ps::wal::SegmentLog::open(o, fs, 1, [](const ps::wal::LogRecord&) { return ps::ok(); });
    if (!log) {
      std::fprintf(stderr, "%s\n", log.error().message.c_str());
      return 1;
    }
    auto r = drive("segment", threads, seconds, [&](std::mt19937_64& rng) {
      return bool((*log)->append_wait(1, payload(rng)));
    });
    auto st = (*log)->stats();
    std::fprintf(stderr, "segment: %llu groups, %.1f records/group\n", (unsigned long long)st.groups,
                 double(st.records) / double(std::max<uint64_t>(1, st.groups)));
    print(r, threads);
  } else if (which == "sqlite") {
    SqliteGroup g(dir + "/p.db", true);
    auto r = drive("sqlite", threads, seconds, [&](std::mt19937_64& rng) {
      return g.submit({random_key(rng, "pay_"), random_key(rng, "k_"), random_key(rng, "evt_"), payload(rng)});
    });
    print(r, threads);
  } else if (which == "rocksdb") {
    rocksdb::DB* db = nullptr;
    rocksdb::Options opts;
    opts.create_if_missing = true;
    opts.enable_pipelined_write = true;
    auto s = rocksdb::DB::Open(opts, dir + "/rocks", &db);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    auto r = drive("rocksdb", threads, seconds, [&](std::mt19937_64& rng) {
      rocksdb::WriteBatch b;
      std::string body = payload(rng);
      b.Put(random_key(rng, "p/pay_"), body);
      b.Put(random_key(rng, "i/m_1/k_"), body);
      b.Put(random_key(rng, "e/evt_"), body);
      return db->Write(wo, &b).ok();
    });
    print(r, threads);
    delete db;
  } else if (which == "project" || which == "project-lean") {
    // Rows per second SQLite absorbs in batches of 5,000 (synchronous=NORMAL, no fsync
    // per batch), with the same random keys.
    SqliteGroup g(dir + "/proj.db", false, which == "project-lean");
    std::mt19937_64 rng(1);
    const double cpu0 = cpu_seconds();
    const auto t0 = Clock::now();
    uint64_t n = 0;
    std::vector<double> lat;
    while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
      std::vector<SqliteGroup::Row> rows(5000);
      for (auto& row : rows) row = {random_key(rng, "pay_"), random_key(rng, "k_"), random_key(rng, "evt_"), payload(rng)};
      auto a = Clock::now();
      g.apply(rows);
      lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      n += rows.size();
    }
    Result r{which == "project" ? "project" : "project-lean"};
    r.n = n;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.cpu = cpu_seconds() - cpu0;
    r.lat_ms = lat;   // per batch of 5,000
    print(r, 1);
  } else if (which == "recover") {
    // Recovery of the segment log after N (= THREADS argument here) 600-byte records:
    // a full scan from lsn 1, and a tail scan of the last 10,000 records (what a restart
    // replays past a projection that is 10,000 records behind).
    const uint64_t n = uint64_t(threads);
    ps::wal::PosixLogFs fs;
    ps::wal::LogOptions o;
    o.dir = dir + "/log";
    {
      auto log = ps::wal::SegmentLog::open(o, fs, 1, [](const ps::wal::LogRecord&) { return ps::ok(); });
      if (!log) return 1;
      std::mt19937_64 rng(1);
      std::atomic<uint64_t> done{0};
      for (uint64_t i = 0; i < n; ++i) {
        while (i - done.load() > 20000) std::this_thread::sleep_for(std::chrono::microseconds(200));
        (*log)->append(1, payload(rng), [&](ps::Result<uint64_t>) { ++done; });
      }
      while (done.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto scan = [&](uint64_t from, const char* name) {
      uint64_t seen = 0;
      const double cpu0 = cpu_seconds();
      const auto t0 = Clock::now();
      auto log = ps::wal::SegmentLog::open(o, fs, from, [&](const ps::wal::LogRecord&) {
        ++seen;
        return ps::ok();
      });
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!log) return;
      std::printf("{\"candidate\":\"%s\",\"records_in_log\":%llu,\"replayed\":%llu,\"seconds\":%.3f,\"cpu_s\":%.3f}\n",
                  name, (unsigned long long)n, (unsigned long long)seen, s, cpu_seconds() - cpu0);
    };
    scan(1, "recover-full");
    scan(n > 10000 ? n - 9999 : 1, "recover-tail-10000");
  } else if (which == "project-rocks") {
    // The same rows into RocksDB in WriteBatches of 5,000 payments without its own WAL
    // (the segment log is the source of truth; the projection's lsn rides in the batch).
    rocksdb::DB* db = nullptr;
    rocksdb::Options opts;
    opts.create_if_missing = true;
    auto st = rocksdb::DB::Open(opts, dir + "/rocks", &db);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;
    std::mt19937_64 rng(1);
    const double cpu0 = cpu_seconds();
    const auto t0 = Clock::now();
    uint64_t n = 0;
    std::vector<double> lat;
    while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
      rocksdb::WriteBatch b;
      for (int i = 0; i < 5000; ++i) {
        std::string body = payload(rng);
        b.Put(random_key(rng, "p/pay_"), body);
        b.Put(random_key(rng, "i/m_1/k_"), body);
        b.Put(random_key(rng, "e/evt_"), body);
      }
      b.Put("meta/projected_lsn", std::to_string(n));
      auto a = Clock::now();
      if (!db->Write(wo, &b).ok()) return 1;
      lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      n += 5000;
    }
    Result r{"project-rocks"};
    r.n = n;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.cpu = cpu_seconds() - cpu0;
    r.lat_ms = lat;
    print(r, 1);
    delete db;
  } else {
    std::fprintf(stderr, "unknown candidate %s\n", which.c_str());
    return 2;
  }
  std::filesystem::remove_all(dir);
  return 0;
}
