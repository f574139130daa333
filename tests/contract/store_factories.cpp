// The adapters the store/event-log contract suites run against:
// * Sqlite — the embedded shape (one SQLite file is log and store).
// * LogEngine — the log-first engine (serve --engine log): the segment log as the
//   acknowledgement path, stages on its in-memory bus, the SQLite store as its projection.
// * Distributed — PgStore (PostgreSQL) as the durable store and position sink,
//   KafkaPublisher for intake events and outbox, KafkaStageLog as the log (database
//   groups ledger, notifier and the suites' test-ledger), dead letters read from tx.dlq
//   with replay marks in PostgreSQL, replayed by the code behind `paystream dlq replay`. Each harness uses its own schema and topic prefix
//   (one partition per topic) on the servers named by PAYSTREAM_POSTGRES_URL and
//   PAYSTREAM_KAFKA_BROKERS; a missing variable fails the test.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "adapters/embedded/log_engine.hpp"
#include "adapters/kafka/kafka.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "app/dist_tools.hpp"
#include "contract/store_harness.hpp"
#include "postgres/pg_test_util.hpp"

namespace ps::contract {
namespace {

std::filesystem::path make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ps_contract_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::unique_ptr<SqliteStore> open_sqlite_store(const std::filesystem::path& dir, const Clock& clock) {
  SqliteOptions o;
  o.path = (dir / "paystream.db").string();
  auto r = SqliteStore::open(o, clock);
  if (!r) throw std::runtime_error("open failed: " + r.error().message);
  return std::move(r.value());
}

int64_t count_or_throw(Result<int64_t> r) {
  if (!r) throw std::runtime_error(r.error().message);
  return *r;
}

class SqliteHarness final : public StoreHarness {
 public:
  SqliteHarness() : dir_(make_temp_dir()) { open(); }
  ~SqliteHarness() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  StageLog& log() override { return *store_; }
  DeadLetterStore& dead_letters() override { return *store_; }
  IntakeStore& intake() override { return *store_; }
  PaymentQueries& queries() override { return *store_; }
  MerchantStore& merchants() override { return *store_; }
  EndpointStore& endpoints() override { return *store_; }
  EventQueries& events() override { return *store_; }
  DeliveryStore& deliveries() override { return *store_; }
  void reopen() override {
    store_.reset();
    open();
  }
  int64_t count_events(const std::string& topic) override { return count_or_throw(store_->count_events(topic)); }

 private:
  void open() { store_ = open_sqlite_store(dir_, clock); }
  std::filesystem::path dir_;
  std::unique_ptr<SqliteStore> store_;
};

// The log-first engine (serve --engine log): SQLite is its projection. The suites read
// the store right after a commit; the engine's stage outcomes reach the store when
// projected (milliseconds later), so this log's commit returns once they have.
class ProjectedStageLog final : public StageLog {
 public:
  explicit ProjectedStageLog(LogEngine& engine) : engine_(engine), inner_(engine) {}
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait) override {
    return inner_.poll(group, topics, max, wait);
  }
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) override {
    auto r = inner_.commit(group, consumed, std::move(effects));
    if (!r) return r;
    return engine_.await_projection();
  }

 private:
  LogEngine& engine_;
  EngineStageLog inner_;
};

class LogEngineHarness final : public StoreHarness {
 public:
  LogEngineHarness() : dir_(make_temp_dir()) { open(); }
  ~LogEngineHarness() override {
    close();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  StageLog& log() override { return *log_; }
  DeadLetterStore& dead_letters() override { return *dead_letters_; }
  IntakeStore& intake() override { return *engine_; }
  PaymentQueries& queries() override { return *queries_; }
  MerchantStore& merchants() override { return *store_; }
  EndpointStore& endpoints() override { return *store_; }
  EventQueries& events() override { return *store_; }
  DeliveryStore& deliveries() override { return *store_; }
  void reopen() override {
    close();
    open();
  }
  int64_t count_events(const std::string& topic) override {
    if (topic != topics::dlq) return int64_t(engine_->bus().appended(topic));
    if (auto w = engine_->await_projection(); !w) throw std::runtime_error(w.error().message);
    return count_or_throw(store_->count_events(topic));  // dead letters are rows of the store
  }
  // The bus keeps every event it is given (the stages deduplicate, as with Kafka), and a
  // webhook letter is redelivered in the store rather than re-appended.
  bool log_dedups_event_ids() const override { return false; }
  bool replay_uses_logged_event() const override { return false; }

 private:
  void open() {
    store_ = open_sqlite_store(dir_, clock);
    LogEngineOptions lo;
    lo.log.dir = (dir_ / "log").string();
    lo.log.segment_bytes = 1u << 20;
    auto l = LogEngine::open(lo, fs_, *store_, clock);
    if (!l) throw std::runtime_error("engine open failed: " + l.error().message);
    engine_ = std::move(l.value());
    queries_ = std::make_unique<EngineQueries>(*engine_);
    dead_letters_ = std::make_unique<EngineDeadLetters>(*engine_);
    log_ = std::make_unique<ProjectedStageLog>(*engine_);
  }
  void close() {
    log_.reset();
    dead_letters_.reset();
    queries_.reset();
    engine_.reset();
    store_.reset();
  }
  std::filesystem::path dir_;
  wal::PosixLogFs fs_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<LogEngine> engine_;
  std::unique_ptr<EngineQueries> queries_;
  std::unique_ptr<EngineDeadLetters> dead_letters_;
  std::unique_ptr<ProjectedStageLog> log_;
};

// Kafka makes a record visible to a consumer a fetch round after the broker acknowledged
// it, and a rewound consumer needs another fetch before it returns records again. The
// suites poll with short waits and expect what was committed before, so this wrapper
// polls repeatedly (each poll returns every record after the committed position, so a
// larger result is a superset) and returns the largest result once it has not grown for
// kSettle, or after kQuiet (or the caller's wait) with nothing. Commits go straight through.
class SettlingLog final : public StageLog {
 public:
  static constexpr auto kQuiet = std::chrono::milliseconds(2000);
  static constexpr auto kSettle = std::chrono::milliseconds(600);
  explicit SettlingLog(StageLog* inner = nullptr) : inner_(inner) {}
  void reset(StageLog* inner) { inner_ = inner; }
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait) override {
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + std::max<milliseconds>(wait, kQuiet);
    std::vector<Record> best;
    auto grown = steady_clock::now();
    for (;;) {
      auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
      auto r = inner_->poll(group, topics, max, std::clamp(left, milliseconds(0), milliseconds(250)));
      if (!r) return r;
      if (r->size() > best.size()) {
        best = std::move(r.value());
        grown = steady_clock::now();
      }
      if ((!best.empty() && steady_clock::now() - grown >= kSettle) || steady_clock::now() >= deadline) return best;
    }
  }
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) override {
    return inner_->commit(group, consumed, std::move(effects));
  }

 private:
  StageLog* inner_;
};

// tx.dlq read from Kafka; the "replayed" marks in PostgreSQL (as `paystream dlq` does it).
class KafkaPgDeadLetters final : public DeadLetterStore {
 public:
  KafkaPgDeadLetters(KafkaDlqReader& reader, PgStore& store, const Clock& clock)
      : reader_(reader), store_(store), clock_(clock) {}
  // A letter committed in a Kafka transaction becomes visible to a read_committed reader
  // once the coordinator has written the commit markers, which it does after the producer's
  // commit returned. As SettlingLog does for polls, list again until the result has not
  // grown for kSettle (or kQuiet passed); a letter that never appears still fails the suite.
  Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) override {
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + SettlingLog::kQuiet;
    auto entries = reader_.list(limit);
    auto grown = steady_clock::now();
    while (entries && entries->size() < limit && steady_clock::now() < deadline &&
           steady_clock::now() - grown < SettlingLog::kSettle) {
      std::this_thread::sleep_for(milliseconds(50));
      auto again = reader_.list(limit);
      if (!again) return again.error();
      if (again->size() > entries->size()) {
        entries = std::move(again);
        grown = steady_clock::now();
      }
    }
    if (!entries) return entries.error();
    std::vector<DeadLetterView> out;
    for (auto& e : *entries) {
      auto v = view(std::move(e));
      if (!v) return v.error();
      out.push_back(std::move(*v));
    }
    return out;
  }
  Result<std::optional<DeadLetterView>> get_dead_letter(int64_t position) override {
    auto e = reader_.get(position);
    if (!e) return e.error();
    if (!*e) return std::optional<DeadLetterView>();
    auto v = view(std::move(**e));
    if (!v) return v.error();
    return std::optional<DeadLetterView>(std::move(*v));
  }
  // The replay of `paystream dlq replay` itself (webhook letters are redelivered).
  Result<void> replay_dead_letter(int64_t position) override {
    return app::replay_distributed_dead_letter(reader_, store_, position, clock_.now_ms());
  }

 private:
  Result<DeadLetterView> view(KafkaDlqEntry e) {
    auto replayed = store_.dead_letter_replayed(e.position);
    if (!replayed) return replayed.error();
    return DeadLetterView{e.position, std::move(e.letter), e.created_ms, *replayed};
  }
  KafkaDlqReader& reader_;
  PgStore& store_;
  const Clock& clock_;
};

std::string env_or_throw(const char* var) {
  const char* v = std::getenv(var);
  if (!v || !*v)
    throw std::runtime_error(std::string(var) + " is not set (scripts/test.sh starts the servers and exports it)");
  return v;
}

class DistributedHarness final : public StoreHarness {
 public:
  DistributedHarness() {
    ko_.brokers = env_or_throw("PAYSTREAM_KAFKA_BROKERS");
    url_ = env_or_throw("PAYSTREAM_POSTGRES_URL");
    ko_.topic_prefix = random_token("c", 6) + ".";
    ko_.client_id = "paystream-contract";
    ko_.request_timeout_ms = 10000;
    ko_.transaction_timeout_ms = 15000;
    ko_.session_timeout_ms = 6000;  // the broker's minimum
    schema_ = pg_test::unique_schema();
    // One partition per topic: the suites read offsets of one partition.
    auto topics = create_topics(ko_, 1, 1);
    if (!topics) throw std::runtime_error("create_topics: " + topics.error().message);
    auto v = pg_migrate(url_, schema_);
    if (!v) throw std::runtime_error("pg_migrate: " + v.error().message);
    open();
  }
  ~DistributedHarness() override {
    close();
    pg_test::drop_schema(url_, schema_);
  }
  StageLog& log() override { return settling_; }
  DeadLetterStore& dead_letters() override { return *dlq_; }
  IntakeStore& intake() override { return *store_; }
  PaymentQueries& queries() override { return *store_; }
  MerchantStore& merchants() override { return *store_; }
  EndpointStore& endpoints() override { return *store_; }
  EventQueries& events() override { return *store_; }
  DeliveryStore& deliveries() override { return *store_; }
  void reopen() override {
    close();
    open();
  }
  // What a group that never commits sees on `topic` (each poll returns every record).
  int64_t count_events(const std::string& topic) override {
    SettlingLog counting(counter_.get());
    auto r = counting.poll("count-" + topic, {topic}, 10000, std::chrono::milliseconds(0));
    if (!r) throw std::runtime_error("count_events: " + r.error().message);
    return int64_t(r->size());
  }
  bool global_log_order() const override { return false; }
  bool log_dedups_event_ids() const override { return false; }
  bool produce_atomic_with_store() const override { return false; }
  bool replay_uses_logged_event() const override { return false; }

 private:
  template <class T>
  static std::unique_ptr<T> must(Result<std::unique_ptr<T>> r, const char* what) {
    if (!r) throw std::runtime_error(std::string(what) + ": " + r.error().message);
    return std::move(r.value());
  }
  void open() {
    publisher_ = must(KafkaPublisher::open(ko_), "KafkaPublisher::open");
    PgOptions po;
    po.url = url_;
    po.schema = schema_;
    po.pool_size = 8;
    store_ = must(PgStore::open(po, clock, *publisher_), "PgStore::open");
    dedup_ = must(PgEventDedup::open(po), "PgEventDedup::open");  // as the workers run it
    KafkaStageLogOptions lo;
    lo.kafka = ko_;
    lo.database_groups = {"ledger", "notifier", "test-ledger"};
    lo.sink = store_.get();
    lo.dedup = dedup_.get();
    log_ = must(KafkaStageLog::open(lo), "KafkaStageLog::open");
    settling_.reset(log_.get());
    KafkaStageLogOptions co;
    co.kafka = ko_;
    counter_ = must(KafkaStageLog::open(co), "KafkaStageLog::open (counter)");
    reader_ = must(KafkaDlqReader::open(ko_), "KafkaDlqReader::open");
    dlq_ = std::make_unique<KafkaPgDeadLetters>(*reader_, *store_, clock);
  }
  void close() {
    dlq_.reset();
    reader_.reset();
    if (counter_) counter_->close();
    counter_.reset();
    if (log_) log_->close();
    log_.reset();
    dedup_.reset();
    store_.reset();  // answers intake callbacks still waiting for the publisher
    if (publisher_) publisher_->flush(std::chrono::seconds(5));
    publisher_.reset();
  }

  KafkaOptions ko_;
  std::string url_, schema_;
  std::unique_ptr<KafkaPublisher> publisher_;
  std::unique_ptr<PgStore> store_;
  std::unique_ptr<PgEventDedup> dedup_;
  std::unique_ptr<KafkaStageLog> log_, counter_;
  std::unique_ptr<KafkaDlqReader> reader_;
  std::unique_ptr<KafkaPgDeadLetters> dlq_;
  SettlingLog settling_;
};

}  // namespace

std::vector<HarnessFactory> store_factories() {
  return {HarnessFactory{"Sqlite", [] { return std::unique_ptr<StoreHarness>(new SqliteHarness()); }},
          HarnessFactory{"LogEngine", [] { return std::unique_ptr<StoreHarness>(new LogEngineHarness()); }},
          HarnessFactory{"Distributed", [] { return std::unique_ptr<StoreHarness>(new DistributedHarness()); }}};
}

}  // namespace ps::contract
