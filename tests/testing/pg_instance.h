// A throwaway PostgreSQL server for tests: its own cluster in a temporary directory,
// never a pre-existing service.
//
// Start() finds the PostgreSQL binaries (initdb, postgres: $KCNET_PG_BIN, then
// /usr/lib/postgresql/<newest>/bin, then $PATH), runs initdb in a fresh temporary
// directory (as the unprivileged user "nobody" when the test runs as root, with the
// directory handed to it), starts `postgres` on 127.0.0.1 and a free port with its socket
// directory inside the temporary directory and fsync on, waits until it accepts
// connections and creates the database "kcnet". The destructor stops the server by its
// pid (fast shutdown, then SIGKILL if it lingers) and removes the directory.
//
// When the binaries are absent Start() fails with NOT_FOUND; tests then skip:
//   auto pg = PgInstance::Start();
//   if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
//
// Thread-safety: Start() is thread-safe; an instance's accessors are const and may be
// called from any thread; destruction must not race with their use.
#ifndef KCNET_TESTS_TESTING_PG_INSTANCE_H_
#define KCNET_TESTS_TESTING_PG_INSTANCE_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kcnet::testing {

class PgInstance {
 public:
  // Starts a new server (see above). NOT_FOUND: no PostgreSQL binaries on this machine.
  static absl::StatusOr<std::unique_ptr<PgInstance>> Start();

  // Starts a standby of `primary` named `name`: runs `setup_script` (deploy/postgres/
  // standby.sh: pg_basebackup, slot, synchronous_standby_names on the primary) as the server
  // user into a new temporary directory, then starts the copy on a free port. It follows
  // `primary` by streaming replication and serves reads only until Promote().
  static absl::StatusOr<std::unique_ptr<PgInstance>> StartStandby(const PgInstance& primary,
                                                                  const std::string& setup_script,
                                                                  const std::string& name);
  // Starts a server on a copy made by `script` (e.g. deploy/postgres/pitr.sh): runs it as
  // the server user with `args` plus "--data NEWDIR --bin BIN" into a new temporary
  // directory, then starts the copy on a free port (it may still be recovering when this
  // returns: see InRecovery()).
  static absl::StatusOr<std::unique_ptr<PgInstance>> StartCopy(const PgInstance& like,
                                                               const std::string& script,
                                                               std::vector<std::string> args);
  // Runs `promote_script` (deploy/postgres/promote.sh) on this standby, as the server user.
  absl::Status Promote(const std::string& promote_script) const;
  // Runs `script` (one of deploy/postgres/*.sh) as the server user with `args` plus
  // "--bin BIN"; its output goes to dir()/NAME.log.
  absl::Status RunScript(const std::string& script, std::vector<std::string> args) const;
  // Stops the server (fast shutdown) and starts it again on the same data, e.g. for a
  // setting that needs a restart (archive_mode).
  absl::Status Restart();
  // Whether the server is still replaying WAL (pg_is_in_recovery()).
  absl::StatusOr<bool> InRecovery() const;
  // Kills the server with SIGKILL (a machine lost, not a shutdown) and waits for it.
  void Kill();

  ~PgInstance();
  PgInstance(const PgInstance&) = delete;
  PgInstance& operator=(const PgInstance&) = delete;

  // A libpq connection string for the database "kcnet" (or `database`).
  std::string conninfo(const std::string& database = "kcnet") const;
  // Creates another empty database on this server.
  absl::Status CreateDatabase(const std::string& name) const;
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // The folder of the PostgreSQL binaries this server runs (pg_dump, pg_restore, ...).
  const std::string& bin() const { return bin_; }
  const std::string& dir() const { return dir_; }

  // Stops the server (fast shutdown) and waits for it; idempotent.
  absl::Status Stop();

 private:
  PgInstance() = default;
  // Starts `postgres` on dir_/data and a free port and waits until it is ready.
  absl::Status Launch();
  // Runs `args` as the server user and waits: the log and exit status in the error.
  absl::Status RunAsServerUser(const std::vector<std::string>& args, const std::string& log) const;
  std::string bin_;  // the PostgreSQL binaries
  std::string dir_;  // the temporary directory: data/ and the socket
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace kcnet::testing

#endif  // KCNET_TESTS_TESTING_PG_INSTANCE_H_
