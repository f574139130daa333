#pragma once
#include <memory>

#include "app/dist_config.hpp"
#include "ports/event_log.hpp"

namespace ps::app {
// tx.dlq (Kafka) with replay marks in PostgreSQL, for `paystream dlq` in the distributed shape.
Result<std::unique_ptr<DeadLetterStore>> open_distributed_dead_letters(const DistConfig& d);
}  // namespace ps::app
