// paystream dlq list|show|replay: inspects and replays dead letters in the embedded
// store. Safe while `paystream serve` runs on the same data dir (SQLite WAL, busy
// timeout): a replayed event is picked up by the running stages.
#include <boost/json.hpp>
#include <filesystem>
#include <iostream>

#include "adapters/sqlite/sqlite_store.hpp"
#include "app/commands.hpp"
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

int run_dlq_list(const std::string& data_dir, int64_t limit) {
  auto store = open_store(data_dir);
  if (!store) return fail(store.error());
  auto letters = (*store)->list_dead_letters(size_t(limit));
  if (!letters) return fail(letters.error());
  for (const auto& v : *letters) std::cout << json::serialize(summary(v)) << "\n";
  return 0;
}

int run_dlq_show(const std::string& data_dir, int64_t offset) {
  auto store = open_store(data_dir);
  if (!store) return fail(store.error());
  auto v = (*store)->get_dead_letter(offset);
  if (!v) return fail(v.error());
  if (!*v) return fail(Error::not_found("no dead letter at offset " + std::to_string(offset)));
  auto o = summary(**v);
  o["event"] = json::parse(event_envelope_json((*v)->letter.original.event));
  std::cout << json::serialize(o) << "\n";
  return 0;
}

int run_dlq_replay(const std::string& data_dir, int64_t offset) {
  auto store = open_store(data_dir);
  if (!store) return fail(store.error());
  auto r = (*store)->replay_dead_letter(offset);
  if (!r) return fail(r.error());
  std::cout << "replayed dead letter " << offset << "\n";
  return 0;
}

}  // namespace ps::app
