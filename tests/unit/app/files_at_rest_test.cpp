// Secrets at rest: the data directory is 0700, the files in it 0600, whatever the umask;
// the admin key is created exclusively (O_EXCL, 0600, fsync'd), never replaced, and
// concurrent first starts agree on one key.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "app/config.hpp"
#include "app/wiring.hpp"
#include "common/files.hpp"

namespace ps::app {
namespace {
namespace fs = std::filesystem;

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// A fresh temp directory (not created) and a permissive umask for the test's duration.
class FilesAtRest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("PAYSTREAM_ADMIN_KEY");
    std::string tmpl = (fs::temp_directory_path() / "ps_files_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    old_umask_ = ::umask(0);   // the most permissive: any 0600/0700 is paystream's doing
  }
  void TearDown() override {
    ::umask(old_umask_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  fs::path root_;
  mode_t old_umask_ = 022;
};

TEST_F(FilesAtRest, DataDirIsCreated0700AndLooseFilesAreTightened) {
  const fs::path dir = root_ / "a" / "data";
  ASSERT_TRUE(prepare_data_dir(dir.string(), {"paystream.db", "admin.key"}).ok());
  EXPECT_EQ(mode_of(dir), 0700u);
  // An existing directory and files from an older version, readable by everyone.
  ::chmod(dir.c_str(), 0755);
  { std::ofstream(dir / "paystream.db") << ""; }
  ::chmod((dir / "paystream.db").c_str(), 0644);
  { std::ofstream(dir / "operator-notes.txt") << "not ours"; }
  ::chmod((dir / "operator-notes.txt").c_str(), 0644);
  ASSERT_TRUE(prepare_data_dir(dir.string(), {"paystream.db", "admin.key"}).ok());
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir / "paystream.db"), 0600u);
  EXPECT_EQ(mode_of(dir / "operator-notes.txt"), 0644u);   // only the named files
  EXPECT_FALSE(fs::exists(dir / "admin.key"));              // missing ones are not created
}

TEST_F(FilesAtRest, CreatePrivateMakesA0600FileAndLeavesAnExistingOneAlone) {
  const fs::path p = root_ / "x.db";
  ASSERT_TRUE(files::create_private(p.string()).ok());
  EXPECT_EQ(mode_of(p), 0600u);
  { std::ofstream(p) << "data"; }
  ASSERT_TRUE(files::create_private(p.string()).ok());
  EXPECT_EQ(fs::file_size(p), 4u);   // not truncated
  EXPECT_TRUE(files::create_private(":memory:").ok());
  EXPECT_FALSE(fs::exists(":memory:"));
}

TEST_F(FilesAtRest, WriteNewPrivateNeverReplacesAndLeavesNoTemporaryFile) {
  const fs::path p = root_ / "secret";
  ASSERT_TRUE(files::write_new_private(p.string(), "one\n").ok());
  EXPECT_EQ(mode_of(p), 0600u);
  auto again = files::write_new_private(p.string(), "two\n");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "file_exists");
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "one");
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(root_)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1u) << "a temporary file was left behind";
}

TEST_F(FilesAtRest, AdminKeyIs0600AndConcurrentFirstStartsAgreeOnOneKey) {
  const fs::path dir = root_ / "data";
  ASSERT_TRUE(prepare_data_dir(dir.string(), {}).ok());
  constexpr int kThreads = 8;
  std::vector<std::string> keys(kThreads);
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) ts.emplace_back([&, i] { keys[i] = load_or_create_admin_key(dir.string()); });
  for (auto& t : ts) t.join();
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), 1u) << "two starts generated different keys";
  EXPECT_EQ(keys[0].rfind("ak_", 0), 0u);
  EXPECT_EQ(mode_of(dir / "admin.key"), 0600u);
  std::ifstream in(dir / "admin.key");
  std::string on_disk;
  std::getline(in, on_disk);
  EXPECT_EQ(on_disk, keys[0]);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u) << "temporary files left in the data dir";
  EXPECT_EQ(load_or_create_admin_key(dir.string()), keys[0]);   // reused, not regenerated
}

TEST_F(FilesAtRest, AnEmptyAdminKeyFileIsAnErrorNotReplaced) {
  const fs::path dir = root_ / "data";
  ASSERT_TRUE(prepare_data_dir(dir.string(), {}).ok());
  { std::ofstream(dir / "admin.key") << ""; }
  EXPECT_THROW(load_or_create_admin_key(dir.string()), std::runtime_error);
  EXPECT_EQ(fs::file_size(dir / "admin.key"), 0u);
}

}  // namespace
}  // namespace ps::app
