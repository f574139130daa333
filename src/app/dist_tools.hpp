#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "adapters/kafka/kafka.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "app/dist_config.hpp"
#include "ports/event_log.hpp"

namespace ps::app {
// tx.dlq (Kafka) with replay marks in PostgreSQL, for `paystream dlq` in the distributed shape.
Result<std::unique_ptr<DeadLetterStore>> open_distributed_dead_letters(const DistConfig& d);

// DeadLetterStore::replay_dead_letter of the distributed shape (inline so that the
// contract tests run this very code without linking the app). A letter is replayed once:
// the mark in PostgreSQL is taken first and given back if the replay itself failed.
// * A pipeline dead letter: its event is appended again to its original topic.
// * A webhook dead letter: the embedded store re-appends the logged pipeline event, and
//   the notifier then turns the failed delivery back into a pending one. Kafka has no
//   lookup by event id and the letter carries the webhook body, so republishing it would
//   only dead-letter it again (the notifier cannot decode it). The effect wanted is the
//   delivery, so the event is redelivered directly in PostgreSQL (DeliveryStore::redeliver,
//   what POST /v1/events/{id}/redeliver does): every enabled endpoint of the merchant that
//   wants the event type gets a pending delivery due now, attempts reset. Unlike the
//   embedded path this also re-sends to endpoints that had succeeded; receivers
//   deduplicate by webhook-id, and the ledger does not see the event a second time.
inline Result<void> replay_distributed_dead_letter(KafkaDlqReader& reader, PgStore& store, int64_t position,
                                                   int64_t now_ms) {
  auto e = reader.get(position);
  if (!e) return e.error();
  if (!*e) return Error::not_found("no dead letter at position " + std::to_string(position));
  const DeadLetter& letter = (*e)->letter;
  std::optional<std::string> merchant;
  if (is_webhook_dead_letter(letter)) {
    auto m = store.merchant_of_event(letter.original.event.id);
    if (!m) return m.error();
    if (!*m)
      return Error::unprocessable("dead_letter_not_replayable", "dead letter " + std::to_string(position) +
                                                                    " is for event " + letter.original.event.id +
                                                                    ", which is not stored");
    merchant = std::move(**m);
  }
  auto marked = store.mark_dead_letter_replayed(position, now_ms);
  if (!marked) return marked.error();
  if (!*marked)
    return Error::conflict("already_replayed", "dead letter " + std::to_string(position) + " was replayed already");
  Result<void> done;
  if (merchant) {
    auto r = store.redeliver(*merchant, letter.original.event.id, now_ms);
    if (!r) done = r.error();
    else if (!*r) done = Error::internal("event " + letter.original.event.id + " vanished during the replay");
  } else {
    done = reader.republish(letter);
  }
  if (!done) (void)store.unmark_dead_letter_replayed(position);  // nothing happened: allow a retry
  return done;
}
}  // namespace ps::app
