// Names the calling thread (Linux: at most 15 characters, the rest is cut), so `top -H`,
// perf and /proc/PID/task/*/comm tell the writer from the HTTP threads and the stages.
#pragma once
#include <pthread.h>

#include <string>

namespace ps {

inline void name_this_thread(const std::string& name) {
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace ps
