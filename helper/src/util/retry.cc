#include "util/retry.h"

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

namespace envcrypt {
namespace {

using std::chrono::milliseconds;

class SteadyRetryClock final : public RetryClock {
 public:
  SteadyTime now() override { return std::chrono::steady_clock::now(); }
  void sleep_for(milliseconds duration) override { std::this_thread::sleep_for(duration); }
};

milliseconds ms_between(SteadyTime from, SteadyTime to) {
  return std::chrono::duration_cast<milliseconds>(to - from);
}

}  // namespace

RetryClock& steady_retry_clock() {
  static SteadyRetryClock clock;
  return clock;
}

milliseconds Backoff::after_round(unsigned round) const {
  milliseconds pause = first;
  // Doubling stops at the cap, so the shift never overflows.
  for (unsigned i = 1; i < round && pause < max; ++i) {
    pause *= 2;
  }
  return std::min(pause, max);
}

bool pause_before_next_round(RetryClock& clock, SteadyTime deadline, milliseconds pause) {
  const milliseconds left = ms_between(clock.now(), deadline);
  if (left <= milliseconds::zero()) {
    return false;
  }
  clock.sleep_for(std::min(pause, left));
  return clock.now() < deadline;
}

std::string duration_text(milliseconds duration) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f s", static_cast<double>(duration.count()) / 1000.0);
  return text;
}

Failover::Failover(FailoverPolicy policy, std::vector<std::string> servers, RetryClock& clock)
    : policy_(policy), servers_(std::move(servers)), clock_(clock) {}

std::vector<std::size_t> Failover::round_order(const std::vector<bool>& refused) const {
  std::vector<std::size_t> order;
  if (!refused[preferred_]) {
    order.push_back(preferred_);
  }
  for (std::size_t i = 0; i < servers_.size(); ++i) {
    if (i != preferred_ && !refused[i]) {
      order.push_back(i);
    }
  }
  return order;
}

Status Failover::run(const Attempt& attempt, const Classify& classify, const CallContext& call) {
  const SteadyTime started = clock_.now();
  SteadyTime deadline = started + policy_.deadline;
  if (call.deadline.has_value()) {
    deadline = std::min(deadline, *call.deadline);
  }
  std::vector<std::optional<std::string>> reasons(servers_.size());
  std::vector<bool> refused(servers_.size(), false);
  unsigned attempts = 0;
  for (unsigned round = 1;; ++round) {
    for (const std::size_t server : round_order(refused)) {
      const SteadyTime now = clock_.now();
      if (now >= deadline) {
        return exhausted(reasons, attempts, started, deadline);
      }
      ++attempts;
      Status status = attempt(server, std::min(now + policy_.server_timeout, deadline));
      const AttemptFailure failure =
          status.ok() ? AttemptFailure::kFinal : classify(status.error());
      if (failure == AttemptFailure::kFinal) {
        preferred_ = server;  // it answered, even if the answer is no
        return status;
      }
      // An attempt the call's deadline cut short says only "out of time":
      // the server's own answer from an earlier, whole attempt (a refused
      // connection, say) is the reason worth reporting.
      if (!reasons[server].has_value() || clock_.now() < deadline) {
        reasons[server] = status.error().message();
      }
      refused[server] = failure == AttemptFailure::kServerRefused;
    }
    // Waiting cannot help when every server has refused us.
    if (std::all_of(refused.begin(), refused.end(), [](bool r) { return r; }) ||
        !pause_before_next_round(clock_, deadline, policy_.backoff.after_round(round))) {
      return exhausted(reasons, attempts, started, deadline);
    }
  }
}

Error Failover::exhausted(const std::vector<std::optional<std::string>>& reasons, unsigned attempts,
                          SteadyTime started, SteadyTime deadline) const {
  std::string message;
  for (std::size_t i = 0; i < servers_.size(); ++i) {
    message += (message.empty() ? "" : "; ") +
               reasons[i].value_or(servers_[i] + ": not tried before the deadline");
  }
  message += " (" + std::to_string(servers_.size()) +
             (servers_.size() == 1 ? " server, " : " servers, ") + std::to_string(attempts) +
             (attempts == 1 ? " attempt in " : " attempts in ") +
             std::to_string(ms_between(started, clock_.now()).count()) + " ms; deadline " +
             std::to_string(ms_between(started, deadline).count()) + " ms)";
  return {ErrorCode::kKmsUnreachable, message};
}

}  // namespace envcrypt
