// The failover and backoff policy with a clock that moves only when the
// code sleeps or a fake server "takes time": exact attempt orders, pauses
// and give-up times, without a network.
#include "util/retry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace envcrypt {
namespace {

using std::chrono::milliseconds;

class FakeClock : public RetryClock {
 public:
  SteadyTime now() override { return SteadyTime(elapsed); }
  void sleep_for(milliseconds duration) override {
    sleeps.push_back(duration);
    elapsed += duration;
  }
  milliseconds elapsed{0};
  std::vector<milliseconds> sleeps;
};

// How one fake server behaves: it takes `cost` (at most until the attempt's
// deadline, like a hung server cut off by its timeout) and answers `answer`.
struct FakeServer {
  milliseconds cost{0};
  Status answer = OkStatus();
};

Error unreachable(const std::string& server, const std::string& why) {
  return {ErrorCode::kKmsUnreachable, server + ": " + why};
}

class FailoverTest : public ::testing::Test {
 protected:
  FailoverPolicy policy() const {
    FailoverPolicy p;
    p.server_timeout = milliseconds(1000);
    p.deadline = milliseconds(4000);
    p.backoff = {milliseconds(100), milliseconds(400)};
    return p;
  }

  Status call(Failover& failover, const CallContext& context = {}) {
    return failover.run(
        [this](std::size_t server, SteadyTime deadline) -> Status {
          tried.push_back(server);
          given_ms.push_back(
              std::chrono::duration_cast<milliseconds>(deadline - clock.now()).count());
          const FakeServer& fake = servers.at(server);
          clock.elapsed =
              std::min(clock.elapsed + fake.cost,
                       std::chrono::duration_cast<milliseconds>(deadline.time_since_epoch()));
          return fake.answer;
        },
        [](const Error& error) {
          if (error.code() != ErrorCode::kKmsUnreachable) {
            return AttemptFailure::kFinal;
          }
          return error.message().find("certificate") != std::string::npos
                     ? AttemptFailure::kServerRefused
                     : AttemptFailure::kTransient;
        },
        context);
  }

  FakeClock clock;
  std::map<std::size_t, FakeServer> servers;
  std::vector<std::size_t> tried;
  std::vector<long long> given_ms;  // time each attempt was given
};

TEST(Backoff, DoublesUpToTheCap) {
  const Backoff backoff{milliseconds(100), milliseconds(1000)};
  EXPECT_EQ(backoff.after_round(1), milliseconds(100));
  EXPECT_EQ(backoff.after_round(2), milliseconds(200));
  EXPECT_EQ(backoff.after_round(4), milliseconds(800));
  EXPECT_EQ(backoff.after_round(5), milliseconds(1000));
  EXPECT_EQ(backoff.after_round(1000000), milliseconds(1000));
}

TEST(PauseBeforeNextRound, NeverSleepsPastTheDeadline) {
  FakeClock clock;
  EXPECT_TRUE(pause_before_next_round(clock, SteadyTime(milliseconds(500)), milliseconds(200)));
  EXPECT_FALSE(pause_before_next_round(clock, SteadyTime(milliseconds(500)), milliseconds(400)));
  EXPECT_EQ(clock.elapsed, milliseconds(500));
  EXPECT_FALSE(pause_before_next_round(clock, SteadyTime(milliseconds(500)), milliseconds(400)));
  EXPECT_EQ(clock.sleeps, (std::vector<milliseconds>{milliseconds(200), milliseconds(300)}));
}

TEST_F(FailoverTest, FirstServerAnswersAlone) {
  servers = {{0, {milliseconds(30), OkStatus()}}, {1, {}}};
  Failover failover(policy(), {"a", "b"}, clock);
  EXPECT_TRUE(call(failover).ok());
  EXPECT_EQ(tried, (std::vector<std::size_t>{0}));
  EXPECT_EQ(given_ms, (std::vector<long long>{1000}));
}

TEST_F(FailoverTest, UnreachableServerFailsOverToTheNextAndIsRememberedAsSecond) {
  servers = {{0, {milliseconds(0), unreachable("a", "connect: Connection refused")}},
             {1, {milliseconds(20), OkStatus()}}};
  Failover failover(policy(), {"a", "b"}, clock);
  EXPECT_TRUE(call(failover).ok());
  EXPECT_EQ(tried, (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(failover.preferred(), 1u);
  // The next call starts with the server that worked.
  tried.clear();
  EXPECT_TRUE(call(failover).ok());
  EXPECT_EQ(tried, (std::vector<std::size_t>{1}));
  EXPECT_TRUE(clock.sleeps.empty());
}

TEST_F(FailoverTest, HungServerIsCutOffAtItsTimeoutThenTheNextAnswers) {
  servers = {{0, {milliseconds(60000), unreachable("a", "TLS handshake: timed out")}},
             {1, {milliseconds(20), OkStatus()}}};
  Failover failover(policy(), {"a", "b"}, clock);
  EXPECT_TRUE(call(failover).ok());
  EXPECT_EQ(clock.elapsed, milliseconds(1020));
}

TEST_F(FailoverTest, DefinitiveAnswerDoesNotFailOver) {
  servers = {{0, {milliseconds(10), Error(ErrorCode::kDenied, "a/7: Permission Denied")}},
             {1, {milliseconds(10), OkStatus()}}};
  Failover failover(policy(), {"a", "b"}, clock);
  const Status status = call(failover);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(status.error().message(), "a/7: Permission Denied");
  EXPECT_EQ(tried, (std::vector<std::size_t>{0}));
}

TEST_F(FailoverTest, AllDownRetriesWithBackoffAndGivesUpExactlyAtTheDeadline) {
  servers = {{0, {milliseconds(0), unreachable("a", "connect: Connection refused")}},
             {1, {milliseconds(1500), unreachable("b", "read: timed out")}}};
  Failover failover(policy(), {"a", "b"}, clock);
  const Status status = call(failover);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kKmsUnreachable);
  // Round 1: a (0 ms), b cut at 1000; pause 100.  Round 2: a, b until 2100;
  // pause 200.  Round 3: a, b until 3300; pause 400.  Round 4: a, b cut by
  // the call's deadline at 4000.
  EXPECT_EQ(clock.elapsed, milliseconds(4000));
  EXPECT_EQ(clock.sleeps,
            (std::vector<milliseconds>{milliseconds(100), milliseconds(200), milliseconds(400)}));
  EXPECT_EQ(tried, (std::vector<std::size_t>{0, 1, 0, 1, 0, 1, 0, 1}));
  EXPECT_EQ(given_ms.back(), 300);
  EXPECT_EQ(status.error().message(),
            "a: connect: Connection refused; b: read: timed out "
            "(2 servers, 8 attempts in 4000 ms; deadline 4000 ms)");
}

// Seen in a booted Debian under load: every connect was refused until the
// last one, which the deadline cut while it waited, and the report said
// "timed out" instead of the refusal the server had given five times.
TEST_F(FailoverTest, AnAttemptCutByTheDeadlineKeepsTheServersEarlierReason) {
  FailoverPolicy p = policy();
  p.deadline = milliseconds(1000);
  p.backoff = {milliseconds(300), milliseconds(300)};
  Failover failover(p, {"a"}, clock);
  unsigned attempt_number = 0;
  const Status status = failover.run(
      [&](std::size_t /*server*/, SteadyTime deadline) -> Status {
        ++attempt_number;
        if (clock.now() + milliseconds(200) < deadline) {
          return unreachable("a", "connect: Connection refused");
        }
        clock.elapsed = std::chrono::duration_cast<milliseconds>(deadline.time_since_epoch());
        return unreachable("a", "connect: timed out");
      },
      [](const Error&) { return AttemptFailure::kTransient; });
  ASSERT_FALSE(status.ok());
  // Refused at 0, 300 and 600 ms; the attempt at 900 ms is cut at 1000.
  EXPECT_EQ(attempt_number, 4U);
  EXPECT_EQ(status.error().message(),
            "a: connect: Connection refused (1 server, 4 attempts in 1000 ms; deadline 1000 ms)");
}

TEST_F(FailoverTest, ServerNotReachedBeforeTheDeadlineIsNamedAsSuch) {
  FailoverPolicy slow = policy();
  slow.server_timeout = milliseconds(5000);
  servers = {{0, {milliseconds(60000), unreachable("a", "TLS handshake: timed out")}},
             {1, {milliseconds(0), OkStatus()}}};
  Failover failover(slow, {"a", "b"}, clock);
  const Status status = call(failover);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "a: TLS handshake: timed out; b: not tried before the deadline "
            "(2 servers, 1 attempt in 4000 ms; deadline 4000 ms)");
}

TEST_F(FailoverTest, ServerThatRefusesOurCertificateIsNotTriedAgain) {
  servers = {{0, {milliseconds(5), unreachable("a", "TLS handshake: certificate unknown")}},
             {1, {milliseconds(0), unreachable("b", "connect: Connection refused")}}};
  Failover failover(policy(), {"a", "b"}, clock);
  const Status status = call(failover);
  ASSERT_FALSE(status.ok());
  // a once; b every round until the deadline.
  EXPECT_EQ(std::count(tried.begin(), tried.end(), 0U), 1);
  EXPECT_GT(std::count(tried.begin(), tried.end(), 1U), 3);
  EXPECT_EQ(clock.elapsed, milliseconds(4000));
}

TEST_F(FailoverTest, WhenEveryServerRefusesUsTheCallEndsWithoutWaiting) {
  servers = {{0, {milliseconds(5), unreachable("a", "TLS handshake: certificate unknown")}},
             {1, {milliseconds(5), unreachable("b", "TLS handshake: bad certificate")}}};
  Failover failover(policy(), {"a", "b"}, clock);
  const Status status = call(failover);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(tried, (std::vector<std::size_t>{0, 1}));
  EXPECT_TRUE(clock.sleeps.empty());
  EXPECT_EQ(status.error().message(),
            "a: TLS handshake: certificate unknown; b: TLS handshake: bad certificate "
            "(2 servers, 2 attempts in 10 ms; deadline 4000 ms)");
}

TEST_F(FailoverTest, TheCallersDeadlineShortensTheCall) {
  servers = {{0, {milliseconds(0), unreachable("a", "connect: Connection refused")}}};
  Failover failover(policy(), {"a"}, clock);
  const Status status = call(failover, CallContext{SteadyTime(milliseconds(250))});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(clock.elapsed, milliseconds(250));
  EXPECT_EQ(status.error().message(),
            "a: connect: Connection refused (1 server, 2 attempts in 250 ms; deadline 250 ms)");
}

TEST_F(FailoverTest, ALaterCallerDeadlineLeavesThePolicysOwn) {
  servers = {{0, {milliseconds(0), unreachable("a", "connect: Connection refused")}}};
  Failover failover(policy(), {"a"}, clock);
  const Status status = call(failover, CallContext{SteadyTime(milliseconds(90000))});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(clock.elapsed, milliseconds(4000));
  EXPECT_NE(status.error().message().find("deadline 4000 ms"), std::string::npos)
      << status.error().message();
}

}  // namespace
}  // namespace envcrypt
