// A call that may never return (NCCL's communicator waiting for a rank that never comes, hosts
// that cannot reach each other) given a deadline: past it, one clear line and the process ends,
// so that a bad launch fails instead of hanging (mpirun then ends the other ranks).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace pb {

// f()'s result; if f has not returned within `seconds`, writes "pairbench: <what> did not
// finish within <seconds> s<why>" to stderr and ends the process with exit status 1 (what is
// stuck cannot be interrupted).
template <class F>
auto within_deadline(double seconds, const std::string& what, const std::string& why, F f) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return done; })) return;
    std::fprintf(stderr, "pairbench: %s did not finish within %g s%s\n", what.c_str(), seconds,
                 why.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  });
  struct Release {  // the watchdog told, however f ends
    std::mutex& mu;
    std::condition_variable& cv;
    bool& done;
    std::thread& watchdog;
    ~Release() {
      {
        std::lock_guard<std::mutex> lock(mu);
        done = true;
      }
      cv.notify_one();
      watchdog.join();
    }
  } release{mu, cv, done, watchdog};
  return f();
}

// The seconds in a PAIRBENCH_*_TIMEOUT value: a positive number (default where unset or empty);
// throws std::invalid_argument naming the variable otherwise.
inline double timeout_seconds(const char* name, const char* value, double fallback) {
  if (!value || !*value) return fallback;
  char* end = nullptr;
  const double s = std::strtod(value, &end);
  if (*end != '\0' || !(s > 0) || s > 1e9)
    throw std::invalid_argument(std::string(name) + "=" + value +
                                " is not a positive number of seconds");
  return s;
}

}  // namespace pb
