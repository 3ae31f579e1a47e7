// Bounded waiting for a KMS that may be down or slow: trying the servers of
// one endpoint in turn (failover) with a timeout each, backing off between
// rounds, and giving up at a deadline.  Time comes from a RetryClock so the
// policy is tested without waiting (retry_test.cc).  Used by the KMIP client
// (kmip/kmip_client.cc) and by attach at boot (boot.cc).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace envcrypt {

using SteadyTime = std::chrono::steady_clock::time_point;

class RetryClock {
 public:
  virtual ~RetryClock() = default;
  virtual SteadyTime now() = 0;
  virtual void sleep_for(std::chrono::milliseconds duration) = 0;
};

// std::chrono::steady_clock and std::this_thread::sleep_for.
RetryClock& steady_retry_clock();

// Exponential backoff between rounds: first, 2 x first, 4 x first, ...,
// never more than `max`.
struct Backoff {
  std::chrono::milliseconds first{100};
  std::chrono::milliseconds max{2000};

  // The pause after round `round` (1 for the pause after the first round).
  [[nodiscard]] std::chrono::milliseconds after_round(unsigned round) const;
};

// Sleeps `pause`, but never past `deadline`.  False when the deadline has
// come, so no further round may start.
bool pause_before_next_round(RetryClock& clock, SteadyTime deadline,
                             std::chrono::milliseconds pause);

// "1.25 s": durations in messages.
std::string duration_text(std::chrono::milliseconds duration);

// What a caller allows one call to a key server: the time by which it must
// be done, if any.  Passed down explicitly, from attach at boot (its attach
// deadline) through the envelope operations (kms.h) to Failover::run, so
// no unwrap outlasts the attach deadline; an empty context leaves a call
// the deadline of its own policy.
struct CallContext {
  std::optional<SteadyTime> deadline;
};

// What a failed attempt means for the rest of the call.
enum class AttemptFailure {
  kFinal,         // the server's own answer (key not found, denied): the call ends with it
  kTransient,     // unreachable for now: try the next server, and this one again next round
  kServerRefused  // this server cannot serve us (a certificate problem): next server, and
                  // not this one again during the call
};

struct FailoverPolicy {
  std::chrono::milliseconds server_timeout{5000};  // one server: connect, TLS, request, response
  std::chrono::milliseconds deadline{5000};        // the whole call, every server and round
  Backoff backoff;
};

// One endpoint's servers, tried in order for each call, the one that
// answered last first.  An attempt gets the server's index and the time it
// must be done by; its errors should name the server, since they are quoted
// in the final error.  `classify` says what each error means
// (AttemptFailure).
class Failover {
 public:
  using Attempt = std::function<Status(std::size_t server, SteadyTime deadline)>;
  using Classify = std::function<AttemptFailure(const Error& error)>;

  Failover(FailoverPolicy policy, std::vector<std::string> servers, RetryClock& clock);

  // OK from the first server that succeeds, the first final error, or, at
  // the deadline (or once every server has refused us), the error
  // ErrorCode::kKmsUnreachable naming every server with its last reason,
  // the number of attempts and the deadline.
  // The call ends by the policy's deadline or `call`'s, whichever is first.
  Status run(const Attempt& attempt, const Classify& classify, const CallContext& call = {});

  // The server tried first by the next call.
  [[nodiscard]] std::size_t preferred() const { return preferred_; }

 private:
  [[nodiscard]] std::vector<std::size_t> round_order(const std::vector<bool>& refused) const;
  [[nodiscard]] Error exhausted(const std::vector<std::optional<std::string>>& reasons,
                                unsigned attempts, SteadyTime started, SteadyTime deadline) const;

  FailoverPolicy policy_;
  std::vector<std::string> servers_;
  RetryClock& clock_;
  std::size_t preferred_ = 0;
};

}  // namespace envcrypt
