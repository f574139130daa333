// Versioned schema of the SQLite store. migrate() brings a database to the latest
// version inside one transaction per step, recording it in PRAGMA user_version; running
// it again on a migrated database changes nothing. Not thread-safe: call at open, before
// other connections write.
#pragma once
#include "adapters/sqlite/sqlite_db.hpp"
#include "common/result.hpp"

namespace ps::sqlite {

inline constexpr int kSchemaVersion = 4;
Result<void> migrate(Db& db);

}  // namespace ps::sqlite
