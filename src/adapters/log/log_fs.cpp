#include "adapters/log/log_fs.hpp"

#include "common/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ps::wal {

Error io_error(const std::string& what, const std::string& path, int errno_value) {
  std::string msg = what + " " + path + ": " + std::strerror(errno_value);
  if (errno_value == ENOSPC || errno_value == EDQUOT) return Error::unavailable("disk_full", msg);
  return Error::internal(msg);
}

namespace {

class PosixFile final : public LogFile {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }

  Result<void> write_at(uint64_t offset, const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::pwrite(fd_, p, n, off_t(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return io_error("write", path_, errno);
      }
      if (w == 0) return io_error("write", path_, EIO);
      p += w;
      n -= size_t(w);
      offset += uint64_t(w);
    }
    return ok();
  }
  Result<size_t> read_at(uint64_t offset, void* data, size_t n) override {
    size_t done = 0;
    char* p = static_cast<char*>(data);
    while (done < n) {
      ssize_t r = ::pread(fd_, p + done, n - done, off_t(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return io_error("read", path_, errno);
      }
      if (r == 0) break;
      done += size_t(r);
    }
    return done;
  }
  Result<void> sync() override {
    if (::fdatasync(fd_) != 0) return io_error("fdatasync", path_, errno);
    return ok();
  }
  Result<void> truncate(uint64_t size) override {
    if (::ftruncate(fd_, off_t(size)) != 0) return io_error("ftruncate", path_, errno);
    return ok();
  }
  Result<void> preallocate(uint64_t size) override {
    // FALLOC_FL_KEEP_SIZE: the blocks are reserved but the visible size (where recovery
    // stops reading) does not move, so an append inside the reservation changes only the
    // size, never the block map.
    if (::fallocate(fd_, FALLOC_FL_KEEP_SIZE, 0, off_t(size)) != 0) {
      if (errno == EOPNOTSUPP) return ok();
      return io_error("fallocate", path_, errno);
    }
    return ok();
  }
  Result<uint64_t> size() override {
    struct stat st{};
    if (::fstat(fd_, &st) != 0) return io_error("fstat", path_, errno);
    return uint64_t(st.st_size);
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

Result<std::unique_ptr<LogFile>> PosixLogFs::open(const std::string& path, bool create) {
  int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) return io_error("open", path, errno);
  return std::unique_ptr<LogFile>(std::make_unique<PosixFile>(fd, path));
}

Result<void> PosixLogFs::create_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return io_error("mkdir", path, errno);
  return ok();
}

Result<std::vector<std::string>> PosixLogFs::list(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return io_error("opendir", dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

Result<void> PosixLogFs::remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return io_error("unlink", path, errno);
  return ok();
}

Result<void> PosixLogFs::sync_dir(const std::string& dir) { return files::fsync_dir(dir); }

}  // namespace ps::wal
