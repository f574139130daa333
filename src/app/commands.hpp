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
int run_topics_create(const DistConfig& d, int partitions, int replication_factor);
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
