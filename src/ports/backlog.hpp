// Backlog port: how much accepted work the settling stages have not consumed yet, for
// intake admission (SPEC §2.6: "intake admits only what the pipeline can settle: past a
// bounded backlog it answers 503 with Retry-After").
// Contract: cheap (no I/O, a lock at most) and thread-safe; a snapshot may lag the stages
// by one commit.
#pragma once
#include <cstdint>

namespace ps {

struct Backlog {
  uint64_t records = 0;         // records appended and not yet committed past, summed over stages
  int64_t oldest_age_ms = 0;    // age of the oldest of them (0 when there are none)
};

class BacklogProbe {
 public:
  virtual ~BacklogProbe() = default;
  virtual Backlog pipeline_backlog(int64_t now_ms) const = 0;
};

}  // namespace ps
