#include "adapters/sqlite/sqlite_store.hpp"

namespace ps {

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(SqliteOptions opts, const Clock& clock) {
  auto core = sqlite::Core::open(std::move(opts), clock);
  if (!core) return core.error();
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(*core)));
}

SqliteStore::SqliteStore(std::unique_ptr<sqlite::Core> c)
    : SqliteCoreHolder(std::move(c)),
      SqliteStageLog(*core),
      SqliteIntake(*core),
      SqliteQueries(*core),
      SqliteDeliveries(*core),
      projection_(*core) {}

SqliteStore::~SqliteStore() = default;

void SqliteStore::set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn) {
  core->set_terminal_listener(std::move(fn));
}

Result<void> SqliteStore::attach_backlog(PipelineBacklog& backlog) { return core->attach_backlog(backlog); }

}  // namespace ps
