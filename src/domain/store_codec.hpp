// The JSON shapes both durable stores (SQLite, PostgreSQL) keep in text columns, and the
// checks every store runs on a stage's outcomes before it writes them — one definition,
// so the two shapes store and refuse exactly the same things.
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

// A terminal outcome is well formed: terminal status, an entry iff succeeded, of the right
// kind and subject (internal error if not: nothing is written). Its entry must balance:
// an unbalanced one stops the process (assert_balanced, domain/ledger_rules.hpp).
Result<void> check_outcome(const PaymentOutcome& o);
Result<void> check_outcome(const RefundOutcome& o);

}  // namespace ps
