// The file layer under the segment log (LevelDB's `Env` idea): the log never calls the
// operating system directly, so tests can put a layer underneath that fails writes,
// fills the disk, or drops everything not yet synced at a simulated crash
// (tests/unit/log/fault_fs.hpp).
//
// Errors are values: Error::unavailable with code "disk_full" for ENOSPC/EDQUOT (the
// caller may retry later), Error::internal for any other I/O failure, each with the path
// and the system's message. Thread-safety: a LogFile is used by one thread at a time; a
// LogFs may be called from any thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace ps::wal {

class LogFile {
 public:
  virtual ~LogFile() = default;
  // Writes all of `n` bytes at `offset`. On error some prefix may have been written.
  virtual Result<void> write_at(uint64_t offset, const void* data, size_t n) = 0;
  // Reads up to `n` bytes at `offset`; returns how many were read (0 at end of file).
  virtual Result<size_t> read_at(uint64_t offset, void* data, size_t n) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Result<void> sync() = 0;
  // Sets the file's size (shrinking drops the bytes past it).
  virtual Result<void> truncate(uint64_t size) = 0;
  // Reserves space up to `size` bytes, reading as zeros, without changing the visible
  // data (fallocate). Implementations without it may do nothing.
  virtual Result<void> preallocate(uint64_t size) = 0;
  virtual Result<uint64_t> size() = 0;
};

class LogFs {
 public:
  virtual ~LogFs() = default;
  // Opens `path` for reading and writing, creating it (mode 0600) if `create`.
  virtual Result<std::unique_ptr<LogFile>> open(const std::string& path, bool create) = 0;
  virtual Result<void> create_dir(const std::string& path) = 0;        // mode 0700; ok if it exists
  virtual Result<std::vector<std::string>> list(const std::string& dir) = 0;  // names, not paths
  virtual Result<void> remove(const std::string& path) = 0;
  // Makes the directory's entries (created or removed files) durable.
  virtual Result<void> sync_dir(const std::string& dir) = 0;
};

// The real thing: POSIX files (pwrite, pread, fdatasync, ftruncate, fallocate).
class PosixLogFs final : public LogFs {
 public:
  Result<std::unique_ptr<LogFile>> open(const std::string& path, bool create) override;
  Result<void> create_dir(const std::string& path) override;
  Result<std::vector<std::string>> list(const std::string& dir) override;
  Result<void> remove(const std::string& path) override;
  Result<void> sync_dir(const std::string& dir) override;
};

// The error a failed system call becomes (see the header comment).
Error io_error(const std::string& what, const std::string& path, int errno_value);

}  // namespace ps::wal
