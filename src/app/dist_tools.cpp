// Operator commands of the distributed shape: `paystream migrate`, `paystream topics
// create|produce-raw`, and the dead-letter store behind `paystream dlq` when it runs
// against Kafka and PostgreSQL.
#include <iostream>

#include "adapters/kafka/kafka.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "app/commands.hpp"
#include "app/dist_config.hpp"
#include "app/dist_tools.hpp"
#include "ports/clock.hpp"

namespace ps::app {

KafkaOptions kafka_options(const DistConfig& d, const std::string& role);
PgOptions pg_options(const DistConfig& d);

int run_migrate(const DistConfig& d) {
  if (auto v = d.validate({false, true, false}); !v) {
    std::cerr << "paystream migrate: " << v.error().message << "\n";
    return 2;
  }
  auto r = pg_migrate(d.postgres_url, d.postgres_schema, d.postgres_tls());
  if (!r) {
    std::cerr << "paystream migrate: " << r.error().message << "\n";
    return 1;
  }
  std::cout << "schema " << (d.postgres_schema.empty() ? "public" : d.postgres_schema) << " at version " << *r << "\n";
  return 0;
}

TopicsCreateOptions default_topics_create_options() {
  TopicsCreateOptions o;
  const TopicSettings s;
  o.min_insync_replicas = s.min_insync_replicas;
  o.dlq_retention_ms = s.dlq_retention_ms;
  return o;
}

int run_topics_create(const DistConfig& d, const TopicsCreateOptions& o) {
  if (auto v = d.validate({true, false, false}); !v) {
    std::cerr << "paystream topics: " << v.error().message << "\n";
    return 2;
  }
  TopicSettings settings;
  settings.min_insync_replicas = o.min_insync_replicas;
  settings.dlq_retention_ms = o.dlq_retention_ms;
  auto r = create_topics(kafka_options(d, "admin"), o.partitions, o.replication_factor, settings);
  if (!r) {
    std::cerr << "paystream topics create: " << r.error().message << "\n";
    return 1;
  }
  for (const auto& t : *r) std::cout << "created " << t << "\n";
  if (r->empty()) std::cout << "all topics exist\n";
  return 0;
}

int run_topics_produce_raw(const DistConfig& d, const std::string& topic, const std::string& key,
                           const std::string& value, const std::vector<std::string>& headers) {
  if (auto v = d.validate({true, false, false}); !v) {
    std::cerr << "paystream topics: " << v.error().message << "\n";
    return 2;
  }
  std::vector<std::pair<std::string, std::string>> hs;
  for (const auto& h : headers) {
    auto eq = h.find('=');
    if (eq == std::string::npos) {
      std::cerr << "paystream topics produce-raw: --header must be NAME=VALUE\n";
      return 2;
    }
    hs.emplace_back(h.substr(0, eq), h.substr(eq + 1));
  }
  auto r = produce_raw(kafka_options(d, "admin"), topic, key, value, hs);
  if (!r) {
    std::cerr << "paystream topics produce-raw: " << r.error().message << "\n";
    return 1;
  }
  return 0;
}

// tx.dlq in Kafka, the "replayed" marks in PostgreSQL (a letter is replayed once).
class DistributedDeadLetters final : public DeadLetterStore {
 public:
  DistributedDeadLetters(std::unique_ptr<KafkaDlqReader> reader, std::unique_ptr<KafkaPublisher> publisher,
                         std::unique_ptr<PgStore> store)
      : reader_(std::move(reader)), publisher_(std::move(publisher)), store_(std::move(store)) {}
  ~DistributedDeadLetters() override { store_.reset(); }

  Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) override {
    auto entries = reader_->list(limit);
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
    auto e = reader_->get(position);
    if (!e) return e.error();
    if (!*e) return std::optional<DeadLetterView>();
    auto v = view(std::move(**e));
    if (!v) return v.error();
    return std::optional<DeadLetterView>(std::move(*v));
  }
  // See replay_distributed_dead_letter (dist_tools.hpp): webhook letters are redelivered.
  Result<void> replay_dead_letter(int64_t position) override {
    return replay_distributed_dead_letter(*reader_, *store_, position, clock_.now_ms());
  }

 private:
  Result<DeadLetterView> view(KafkaDlqEntry e) {
    auto replayed = store_->dead_letter_replayed(e.position);
    if (!replayed) return replayed.error();
    return DeadLetterView{e.position, std::move(e.letter), e.created_ms, *replayed};
  }
  std::unique_ptr<KafkaDlqReader> reader_;
  std::unique_ptr<KafkaPublisher> publisher_;  // the store needs one; dlq commands publish nothing through it
  std::unique_ptr<PgStore> store_;
  SystemClock clock_;
};

Result<std::unique_ptr<DeadLetterStore>> open_distributed_dead_letters(const DistConfig& d) {
  if (auto v = d.validate({true, true, false}); !v) return v.error();
  auto ko = kafka_options(d, "dlq");
  auto reader = KafkaDlqReader::open(ko);
  if (!reader) return reader.error();
  auto publisher = KafkaPublisher::open(ko);
  if (!publisher) return publisher.error();
  static SystemClock clock;
  auto store = PgStore::open(pg_options(d), clock, **publisher);
  if (!store) return store.error();
  return std::unique_ptr<DeadLetterStore>(std::make_unique<DistributedDeadLetters>(
      std::move(*reader), std::move(*publisher), std::move(*store)));
}

}  // namespace ps::app
