#include "common/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

namespace ps::files {
namespace {

Error io_error(const std::string& what, const std::string& path, int err) {
  return Error::internal(what + " " + path + ": " + std::strerror(err));
}

bool is_special_sqlite_name(const std::string& path) {
  return path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0;
}

Result<void> write_all(int fd, const std::string& content, const std::string& path) {
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error("cannot write", path, n < 0 ? errno : EIO);
    off += size_t(n);
  }
  return ok();
}

}  // namespace

Result<void> create_private(const std::string& path) {
  if (is_special_sqlite_name(path)) return ok();
  // O_EXCL: an existing file is never opened here. Closing a descriptor of a database file
  // drops every POSIX lock this process holds on it (also SQLite's, of a connection that is
  // open already), which could let another process delete the WAL under that connection.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return ok();
    return io_error("cannot create", path, errno);
  }
  ::close(fd);
  return ok();
}

Result<bool> restrict_mode(const std::string& path, mode_t mode) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return io_error("cannot stat", path, errno);
  }
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return false;   // not ours to change
  if ((st.st_mode & 07777 & ~mode) == 0) return false;
  if (::chmod(path.c_str(), mode) != 0) return io_error("cannot chmod", path, errno);
  return true;
}

Result<void> fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open directory", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return io_error("cannot fsync directory", dir, err);
  return ok();
}

Result<void> write_new_private(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
  std::random_device rd;
  const std::string tmp = path + "." + std::to_string(::getpid()) + "." + std::to_string(rd()) + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return io_error("cannot create", tmp, errno);
  auto fail = [&](Error e) -> Result<void> {
    ::unlink(tmp.c_str());
    return e;
  };
  if (::fchmod(fd, 0600) != 0) {   // exactly 0600, whatever the umask took away
    int err = errno;
    ::close(fd);
    return fail(io_error("cannot chmod", tmp, err));
  }
  if (auto w = write_all(fd, content, tmp); !w) {
    ::close(fd);
    return fail(w.error());
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return fail(io_error("cannot fsync", tmp, err));
  }
  if (::close(fd) != 0) return fail(io_error("cannot close", tmp, errno));
  // link() publishes the complete file atomically and, unlike rename(), never replaces
  // an existing one (another process that got there first wins).
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST) return fail(Error::conflict("file_exists", path + " exists"));
    return fail(io_error("cannot link", path, err));
  }
  ::unlink(tmp.c_str());
  return fsync_dir(dir);
}

}  // namespace ps::files
