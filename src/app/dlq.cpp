// paystream dlq list|show|replay: inspects and replays dead letters, in the embedded store
// (safe while `paystream serve` runs on the same data dir: SQLite WAL, busy timeout; a
// replayed event is picked up by the running stages) or in the distributed shape (tx.dlq
// in Kafka; a letter's position there is partition * 10^12 + offset).
#include <boost/json.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <iostream>

#include "adapters/sqlite/sqlite_store.hpp"
#include "app/commands.hpp"
#include "app/dist_tools.hpp"
#include "ports/clock.hpp"

namespace ps::app {
namespace json = boost::json;
namespace {

Result<std::unique_ptr<SqliteStore>> open_store(const std::string& data_dir) {
  auto path = std::filesystem::path(data_dir) / "paystream.db";
  if (!std::filesystem::exists(path))
    return Error::not_found("no paystream database at " + path.string());
  static SystemClock clock;
  return SqliteStore::open(SqliteOptions{path.string()}, clock);
}

json::object summary(const DeadLetterView& v) {
  json::object o;
  o["offset"] = v.offset;
  o["topic"] = v.letter.original.topic;
  o["partition"] = v.letter.original.partition;
  o["original_offset"] = v.letter.original.offset;
  o["error"] = v.letter.error;
  o["attempts"] = v.letter.attempts;
  o["event_id"] = v.letter.original.event.id;
  o["event_type"] = v.letter.original.event.type;
  o["replayed"] = v.replayed;
  o["created"] = v.created_ms;
  return o;
}

int fail(const Error& e) {
  std::cerr << "paystream dlq: " << e.message << "\n";
  return e.kind == ErrorKind::not_found ? 3 : e.kind == ErrorKind::conflict ? 4 : 1;
}

}  // namespace

int run_dlq_list(DeadLetterStore& store, int64_t limit) {
  auto letters = store.list_dead_letters(size_t(limit));
  if (!letters) return fail(letters.error());
  for (const auto& v : *letters) std::cout << json::serialize(summary(v)) << "\n";
  return 0;
}

int run_dlq_show(DeadLetterStore& store, int64_t offset) {
  auto v = store.get_dead_letter(offset);
  if (!v) return fail(v.error());
  if (!*v) return fail(Error::not_found("no dead letter at offset " + std::to_string(offset)));
  auto o = summary(**v);
  o["event"] = json::parse(event_envelope_json((*v)->letter.original.event));
  std::cout << json::serialize(o) << "\n";
  return 0;
}

int run_dlq_replay(DeadLetterStore& store, int64_t offset) {
  auto r = store.replay_dead_letter(offset);
  if (!r) return fail(r.error());
  std::cout << "replayed dead letter " << offset << "\n";
  return 0;
}

// With --engine log the running engine holds the stages' bus, so the replay is asked of
// it through the store (it looks for requests every 200 ms) and this waits for the
// answer: the letter marked replayed, or the request dropped (refused: the reason is in
// the server's log). A stopped engine takes the request when it starts again.
int run_engine_dlq_replay(SqliteStore& store, int64_t offset) {
  auto v = store.get_dead_letter(offset);
  if (!v) return fail(v.error());
  if (!*v) return fail(Error::not_found("no dead letter at offset " + std::to_string(offset)));
  if ((*v)->replayed)
    return fail(Error::conflict("already_replayed", "dead letter " + std::to_string(offset) + " was already replayed"));
  static SystemClock clock;
  if (auto r = store.projection().request_replay(offset, clock.now_ms()); !r) return fail(r.error());
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto now = store.get_dead_letter(offset);
    if (now && *now && (*now)->replayed) {
      std::cout << "replayed dead letter " << offset << "\n";
      return 0;
    }
    auto pending = store.projection().replay_requests();
    if (pending && std::find(pending->begin(), pending->end(), offset) == pending->end())
      return fail(Error::unprocessable("dead_letter_not_replayable",
                                       "the engine refused to replay dead letter " + std::to_string(offset) +
                                           " (the reason is in the server log)"));
  }
  std::cout << "replay of dead letter " << offset
            << " requested; no running engine took it within 10 s: it is replayed when paystream serve starts\n";
  return 0;
}

int run_dlq(const DlqCommand& cmd, const std::string& data_dir, const DistConfig* distributed) {
  std::unique_ptr<DeadLetterStore> store;
  if (distributed) {
    auto r = open_distributed_dead_letters(*distributed);
    if (!r) return fail(r.error());
    store = std::move(*r);
  } else {
    auto r = open_store(data_dir);
    if (!r) return fail(r.error());
    if (cmd.action == DlqCommand::Action::replay && std::filesystem::exists(std::filesystem::path(data_dir) / "engine-log"))
      return run_engine_dlq_replay(**r, cmd.offset);
    store = std::move(*r);
  }
  switch (cmd.action) {
    case DlqCommand::Action::list: return run_dlq_list(*store, cmd.limit);
    case DlqCommand::Action::show: return run_dlq_show(*store, cmd.offset);
    case DlqCommand::Action::replay: return run_dlq_replay(*store, cmd.offset);
  }
  return 2;
}

}  // namespace ps::app
