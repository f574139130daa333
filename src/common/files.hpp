// Files at rest: what paystream writes (its databases, the admin key) is readable by its
// own user only. Small POSIX helpers; errors are values.
// Thread-safety: stateless.
#pragma once
#include <sys/types.h>

#include <string>

#include "common/result.hpp"

namespace ps::files {

// Creates `path` empty with mode 0600 if it does not exist (O_EXCL); an existing file is
// left as it is and is not even opened (that would drop this process's POSIX locks on it). Used before SQLite opens a database: SQLite creates a new file 0644 (less the umask)
// but gives its -wal and -shm files the database file's mode, so all three are private.
// "", ":memory:" and "file:" URIs are ignored.
Result<void> create_private(const std::string& path);

// If `path` exists with permission bits outside `mode`, chmods it to `mode`. Ok(true) if it
// changed something, Ok(false) if nothing was to do (or the file does not exist).
Result<bool> restrict_mode(const std::string& path, mode_t mode);

// fsync of a directory, so a new (or renamed) entry in it survives a crash.
Result<void> fsync_dir(const std::string& dir);

// Writes `content` to a new file `path`: created with O_EXCL and mode 0600 under a unique
// temporary name in the same directory, written, fsync'd, then linked to `path` (which
// fails, leaving `path` untouched, if it exists: Error::conflict "file_exists") and the
// directory fsync'd. Never exposes a partial file at `path`, never replaces one.
Result<void> write_new_private(const std::string& path, const std::string& content);

}  // namespace ps::files
