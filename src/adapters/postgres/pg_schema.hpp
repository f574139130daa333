// Internal to the PostgreSQL adapter: the versioned schema. pg_migrate() (pg_store.hpp)
// applies the steps; stored_version() reads what a database has.
#pragma once
#include "adapters/postgres/pg_conn.hpp"
#include "common/result.hpp"

namespace ps::pg {

inline constexpr int kSchemaVersion = 4;
// The highest applied migration in the connection's search_path (0: none).
Result<int> stored_version(Conn& c);
// pg_migrate() up to `to_version` only (tests of a migration's backfill).
Result<int> migrate_to(const std::string& url, const std::string& schema, const PgTls& tls, int to_version);

}  // namespace ps::pg
