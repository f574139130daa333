// FaultFs: an in-memory LogFs for fault injection, in the manner of LevelDB's
// FaultInjectionTestEnv. Each file keeps what was written and what was last synced;
// crash() freezes the file system (every later call fails with EIO, as if the machine
// had stopped) and builds the image a real disk could hold afterwards: every synced byte,
// plus, for each 4 KiB page written since the last sync, either the new or the old
// content, chosen by the seed (write-back persists pages in any order). revive() puts
// that image in place, as after a reboot. Files whose creation was never made durable by
// sync_dir are gone after a crash.
// Injected errors: the next N writes fail with an errno after writing half their bytes;
// the next N syncs fail.
#pragma once
#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "adapters/log/log_fs.hpp"

namespace ps::wal::testing {

class FaultFs final : public LogFs {
 public:
  struct State {
    std::string data;
    std::string synced;
    bool entry_durable = false;
  };

  Result<std::unique_ptr<LogFile>> open(const std::string& path, bool create) override {
    std::lock_guard lk(mu_);
    if (dead_) return io_error("open", path, EIO);
    auto it = files_.find(path);
    if (it == files_.end()) {
      if (!create) return io_error("open", path, ENOENT);
      it = files_.emplace(path, std::make_shared<State>()).first;
    }
    return std::unique_ptr<LogFile>(std::make_unique<File>(*this, path, it->second));
  }
  Result<void> create_dir(const std::string&) override { return ok(); }
  Result<std::vector<std::string>> list(const std::string& dir) override {
    std::lock_guard lk(mu_);
    if (dead_) return io_error("list", dir, EIO);
    std::vector<std::string> names;
    for (const auto& [p, _] : files_)
      if (p.rfind(dir + "/", 0) == 0) names.push_back(p.substr(dir.size() + 1));
    return names;
  }
  Result<void> remove(const std::string& path) override {
    std::lock_guard lk(mu_);
    if (dead_) return io_error("unlink", path, EIO);
    files_.erase(path);
    return ok();
  }
  Result<void> sync_dir(const std::string& dir) override {
    std::lock_guard lk(mu_);
    if (dead_) return io_error("fsync", dir, EIO);
    for (auto& [p, st] : files_)
      if (p.rfind(dir + "/", 0) == 0) st->entry_durable = true;
    return ok();
  }

  // --- faults ---
  void fail_writes(int n, int errno_value) {
    std::lock_guard lk(mu_);
    fail_writes_ = n;
    write_errno_ = errno_value;
  }
  void fail_syncs(int n) {
    std::lock_guard lk(mu_);
    fail_syncs_ = n;
  }
  void crash(uint64_t seed) {
    std::lock_guard lk(mu_);
    dead_ = true;
    std::mt19937_64 rng(seed);
    image_.clear();
    for (auto& [path, st] : files_) {
      if (!st->entry_durable) continue;
      std::string img = st->synced;
      const size_t n = std::max(st->data.size(), st->synced.size());
      for (size_t page = 0; page < n; page += 4096) {
        const size_t end = std::min(n, page + 4096);
        if (rng() % 2 == 0) continue;   // this page kept its synced content
        if (img.size() < end) img.resize(std::min(end, st->data.size()), '\0');
        for (size_t i = page; i < end && i < st->data.size() && i < img.size(); ++i) img[i] = st->data[i];
      }
      image_[path] = std::move(img);
    }
  }
  void revive() {
    std::lock_guard lk(mu_);
    files_.clear();
    for (auto& [path, img] : image_) {
      auto st = std::make_shared<State>();
      st->data = img;
      st->synced = img;
      st->entry_durable = true;
      files_[path] = st;
    }
    dead_ = false;
  }
  std::shared_ptr<State> state(const std::string& path) {
    std::lock_guard lk(mu_);
    auto it = files_.find(path);
    return it == files_.end() ? nullptr : it->second;
  }

 private:
  class File final : public LogFile {
   public:
    File(FaultFs& fs, std::string path, std::shared_ptr<State> st) : fs_(fs), path_(std::move(path)), st_(std::move(st)) {}
    Result<void> write_at(uint64_t offset, const void* data, size_t n) override {
      std::lock_guard lk(fs_.mu_);
      if (fs_.dead_) return io_error("write", path_, EIO);
      size_t todo = n;
      int err = 0;
      if (fs_.fail_writes_ > 0) {
        --fs_.fail_writes_;
        todo = n / 2;
        err = fs_.write_errno_;
      }
      if (st_->data.size() < offset + todo) st_->data.resize(offset + todo, '\0');
      st_->data.replace(offset, todo, static_cast<const char*>(data), todo);
      if (err) return io_error("write", path_, err);
      return ok();
    }
    Result<size_t> read_at(uint64_t offset, void* data, size_t n) override {
      std::lock_guard lk(fs_.mu_);
      if (fs_.dead_) return io_error("read", path_, EIO);
      if (offset >= st_->data.size()) return size_t(0);
      size_t k = std::min(n, st_->data.size() - size_t(offset));
      st_->data.copy(static_cast<char*>(data), k, offset);
      return k;
    }
    Result<void> sync() override {
      std::lock_guard lk(fs_.mu_);
      if (fs_.dead_) return io_error("fdatasync", path_, EIO);
      if (fs_.fail_syncs_ > 0) {
        --fs_.fail_syncs_;
        return io_error("fdatasync", path_, EIO);
      }
      st_->synced = st_->data;
      return ok();
    }
    Result<void> truncate(uint64_t size) override {
      std::lock_guard lk(fs_.mu_);
      if (fs_.dead_) return io_error("ftruncate", path_, EIO);
      st_->data.resize(size, '\0');
      return ok();
    }
    Result<void> preallocate(uint64_t) override { return ok(); }
    Result<uint64_t> size() override {
      std::lock_guard lk(fs_.mu_);
      if (fs_.dead_) return io_error("fstat", path_, EIO);
      return uint64_t(st_->data.size());
    }

   private:
    FaultFs& fs_;
    std::string path_;
    std::shared_ptr<State> st_;
  };

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<State>> files_;
  std::map<std::string, std::string> image_;
  bool dead_ = false;
  int fail_writes_ = 0;
  int write_errno_ = ENOSPC;
  int fail_syncs_ = 0;
};

}  // namespace ps::wal::testing
