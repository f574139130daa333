// Event publisher port: how the gateway (and the outbox relay) appends events to the
// event bus outside a stage's consume-transform-produce cycle.
//
// Durability: the callback reports success only once every event is durable on the bus
// (Kafka: acknowledged with acks=all by the idempotent producer). Each event goes to
// topic_for(event.type) with event.key (the payment id) as its key, so per-payment order
// holds. A publish may be retried after an error: consumers deduplicate by event id.
// Thread-safety: implementations are thread-safe; callbacks run on a publisher thread
// and must not block.
#pragma once
#include <functional>
#include <vector>

#include "common/result.hpp"
#include "domain/event.hpp"
#include "ports/event_log.hpp"  // DeadLetter

namespace ps {

class EventPublisher {
 public:
  using Callback = std::function<void(Result<void>)>;
  virtual ~EventPublisher() = default;
  virtual void publish(std::vector<Event> events, Callback cb) = 0;
  // Appends a dead letter to tx.dlq (original topic, partition, offset, error, attempts).
  virtual void publish_dead_letter(DeadLetter letter, Callback cb) = 0;
};

}  // namespace ps
