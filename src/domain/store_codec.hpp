// The JSON shapes both durable stores (SQLite, PostgreSQL) keep in text columns, and the
// balance check every store runs before it writes a journal entry — one definition, so
// the two shapes store and refuse exactly the same things.
#pragma once
#include <string>
#include <vector>

#include "common/result.hpp"
#include "domain/model.hpp"
#include "ports/event_log.hpp"  // DeadLetter (a plain struct)

namespace ps {

std::string metadata_to_json(const Metadata& m);
Metadata metadata_from_json(const std::string& s);          // bad JSON: empty
std::string strings_to_json(const std::vector<std::string>& xs);
std::vector<std::string> strings_from_json(const std::string& s);  // bad JSON: empty

// {"topic","partition","offset","error","attempts","event":<event envelope>}
std::string encode_dead_letter(const DeadLetter& d);
Result<DeadLetter> decode_dead_letter(const std::string& s);

// Postings non-empty and summing to zero per currency (no overflow); internal error if not.
Result<void> check_balanced(const JournalEntry& e);

}  // namespace ps
