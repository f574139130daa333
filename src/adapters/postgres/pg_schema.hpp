// Internal to the PostgreSQL adapter: the versioned schema. pg_migrate() (pg_store.hpp)
// applies the steps; stored_version() reads what a database has.
#pragma once
#include "adapters/postgres/pg_conn.hpp"
#include "common/result.hpp"

namespace ps::pg {

inline constexpr int kSchemaVersion = 3;
// The highest applied migration in the connection's search_path (0: none).
Result<int> stored_version(Conn& c);

}  // namespace ps::pg
