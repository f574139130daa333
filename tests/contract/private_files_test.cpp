// Files at rest of the SQLite adapters: a database the adapter creates is 0600 and so are
// its -wal and -shm files (SQLite gives them the database file's mode), whatever the
// process umask. Covers the store's Db::open and the acquirer simulator's own file.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "adapters/sim/acquirer_simulator.hpp"
#include "adapters/sqlite/sqlite_db.hpp"

namespace ps::contract {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class PrivateFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ps_private_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    old_umask_ = ::umask(0);   // nothing masked: the modes below are the adapters' own
  }
  void TearDown() override {
    ::umask(old_umask_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static mode_t mode_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 0777;
  }
  void expect_private(const fs::path& db) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::path p = db;
      p += suffix;
      ASSERT_TRUE(fs::exists(p)) << p;
      EXPECT_EQ(mode_of(p), 0600u) << p;
    }
  }
  fs::path dir_;
  mode_t old_umask_ = 022;
};

TEST_F(PrivateFiles, StoreDatabaseAndItsWalAndShmAre0600) {
  const fs::path db = dir_ / "paystream.db";
  auto conn = sqlite::Db::open(db.string());
  ASSERT_TRUE(conn->configure(true, 1000).ok());
  ASSERT_TRUE(conn->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1)").ok());
  expect_private(db);
}

// Regression: creating the file must not open an existing one. Closing any descriptor of
// it drops this process's POSIX locks, also those of a connection already open, and then
// another process closing its connection takes the exclusive lock and deletes the WAL
// under the first connection (a replay appended by `paystream dlq replay` was lost so).
TEST_F(PrivateFiles, ReopeningInTheSameProcessKeepsTheOpenConnectionsLocks) {
  const fs::path db = dir_ / "paystream.db";
  auto first = sqlite::Db::open(db.string());
  ASSERT_TRUE(first->configure(true, 1000).ok());
  ASSERT_TRUE(first->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1)").ok());
  auto second = sqlite::Db::open(db.string());   // as the store's checkpointer does
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {   // another process opens and closes the database (a CLI command)
    // exec, not SQLite in the forked child: the child would inherit the parent's SQLite
    // lock bookkeeping. The sqlite3 shell is installed with the dependencies.
    int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, 1);
    ::execlp("sqlite3", "sqlite3", db.c_str(), "SELECT count(*) FROM t;", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  fs::path wal = db;
  wal += "-wal";
  EXPECT_TRUE(fs::exists(wal)) << "the WAL was deleted under an open connection";
}

TEST_F(PrivateFiles, SimulatorDatabaseAndItsWalAndShmAre0600) {
  const fs::path db = dir_ / "acquirer-sim.db";
  AcquirerSimOptions o;
  o.db_path = db.string();
  AcquirerSimulator sim(o);
  ASSERT_TRUE(sim.charge({"pay_1", 100, "EUR", "tok_approve"}, 1s).ok());
  expect_private(db);
}

}  // namespace
}  // namespace ps::contract
