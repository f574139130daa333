// The subcommands of the paystream binary. Each returns the process exit code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "app/config.hpp"
#include "app/dist_config.hpp"

namespace ps::app {

int run_serve(const ServeConfig& cfg);                       // paystream serve (embedded)
int run_gateway(const ServeConfig& cfg, const DistConfig& d); // paystream gateway
int run_worker(const ServeConfig& cfg, const DistConfig& d);  // paystream worker --stage ...
int run_migrate(const DistConfig& d);                         // paystream migrate
// `paystream topics create`: the topics' shape and configs (kafka.hpp TopicSettings).
struct TopicsCreateOptions {
  int partitions = 3;
  int replication_factor = 3;
  int min_insync_replicas = 0;   // 0: the adapter's rule
  int64_t dlq_retention_ms = 0;
};
TopicsCreateOptions default_topics_create_options();   // with the Kafka adapter's defaults
int run_topics_create(const DistConfig& d, const TopicsCreateOptions& o);
int run_topics_produce_raw(const DistConfig& d, const std::string& topic, const std::string& key,
                           const std::string& value, const std::vector<std::string>& headers);

struct DlqCommand {
  enum class Action { list, show, replay } action = Action::list;
  int64_t limit = 100;
  int64_t offset = 0;
};
// paystream dlq list|show|replay: the embedded store in `data_dir`, or, with `distributed`,
// tx.dlq in Kafka and the replay marks in PostgreSQL.
int run_dlq(const DlqCommand& cmd, const std::string& data_dir, const DistConfig* distributed);
int run_routes();                                            // paystream routes (JSON)

}  // namespace ps::app
