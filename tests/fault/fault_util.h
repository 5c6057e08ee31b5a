// Helpers of the fault tests (tests/fault): child processes that can be killed with
// SIGKILL, the real kcnet-server binary started and restarted on one data directory and
// port, a small org tree with one account per device, the fault seed, and the final check
// that every device's writes are on the server exactly once and every replica converged.
//
// Thread-safety: Process and ServerProcess are thread-compatible (one thread drives
// each); the free functions are thread-safe.
#ifndef KCNET_TESTS_FAULT_FAULT_UTIL_H_
#define KCNET_TESTS_FAULT_FAULT_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sync/server_store.h"

namespace kcnet::fault {

// The seed of a fault test: $KCNET_FAULT_SEED when set, else a random one. Printed as
// "seed=N" by the tests so that a failure replays with KCNET_FAULT_SEED=N.
uint64_t FaultSeed();
// A count from the environment variable `name`, else `fallback`.
int EnvInt(const char* name, int fallback);

// A child process; stdout on a pipe (ReadLine), stderr appended to a file. SIGKILLed and
// reaped at destruction if still running.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& stderr_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // The next line of stdout, or nullopt when none comes within `timeout` or it closed.
  std::optional<std::string> ReadLine(absl::Duration timeout);
  void Signal(int signal_number);
  // Reaps without waiting: the exit code (or -signal) once exited, else nullopt.
  std::optional<int> Poll();
  // Like Poll() but waits up to `timeout`.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGKILL and reap; returns the exit code (-9 unless it had exited already).
  int Kill9();

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::optional<int> exit_code_;
};

// The real kcnet-server on `data_dir`. The first Start() picks a free port; restarts
// listen on the same one, so that clients keep their address.
class ServerProcess {
 public:
  ServerProcess(std::string binary, std::string data_dir, std::string log_path)
      : binary_(std::move(binary)), data_dir_(std::move(data_dir)), log_(std::move(log_path)) {}
  // More command-line arguments for every start, e.g. "--store=postgres:CONNINFO".
  void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }
  // Starts the server and waits for its "listening" line.
  absl::Status Start();
  // kill -9 (no shutdown at all).
  void Kill9();
  // SIGTERM and wait for a clean exit (code 0).
  absl::Status Stop();
  int port() const { return port_; }
  std::string target() const;
  bool running() const { return process_ != nullptr; }
  // The running server's process id (its memory is read from /proc by a benchmark); -1.
  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }

 private:
  std::string binary_, data_dir_, log_;
  std::vector<std::string> extra_args_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

// One device's account.
struct Account {
  std::string username;
  int64_t user_id = 0;
  int64_t commune = 0;  // the bucket its new records go to
  std::string token;
};

// Creates DATA_DIR/directory.db with province 90, districts 901 and 902 with two communes
// each, and one account per device: device i is a district coordinator when
// i < coordinators (district i % 2), else a commune collaborator (commune i % 4). Tokens
// are made with Directory::Login and survive server restarts. Cheap password hashing.
// With `postgres` (a libpq connection string) the directory is made in that database, as
// kcnet-server --store=postgres:CONNINFO keeps it, instead of DATA_DIR/directory.db.
absl::StatusOr<std::vector<Account>> SetUpDirectory(const std::string& data_dir, int devices,
                                                    int coordinators,
                                                    const std::string& postgres = "");

// The facility id (UUID text) of device `device`'s `n`-th record.
std::string FacilityId(int device, int64_t n);
// The name device `device` gives a record in its `op`-th write.
std::string OpName(int device, int64_t op);

// What a device's log file says (see fault_device.cc for the format).
struct DeviceLog {
  // Per record id (UUID text): the name of the last write whose Write() returned, and
  // the names of later writes begun but not known to have returned (killed in between).
  std::map<std::string, std::string> acked_name;
  std::map<std::string, std::set<std::string>> maybe_names;
  std::set<std::string> acked_creates;  // ids whose creation Write() returned
  std::set<std::string> maybe_creates;  // creations begun, return unknown
  int64_t acked_writes = 0;
  // Writes begun whose Write() return is unknown (killed in between): creations and
  // renames; any of them may have committed locally and be pushed (and APPLIED) later.
  int64_t unacked_writes = 0;
  uint64_t max_acked_seq = 0;
  // Outcomes of the push results the device received.
  int64_t applied = 0, duplicate = 0, refused = 0, conflict = 0, out_of_order = 0;
  int64_t push_acks = 0, change_batches = 0, syncs_ok = 0, syncs_failed = 0;
  int64_t starts = 0;
  // Recoveries from a server restore (SyncResult.recovery): how many, the records handed
  // back and the mutations renumbered.
  int64_t recoveries = 0, handbacks = 0, renumbered = 0;
  int64_t next_op = 0;  // one past the highest write number begun
};
absl::StatusOr<DeviceLog> ReadDeviceLog(const std::string& path);

// One device for the final check: its store, its account and its log.
struct DeviceUnderCheck {
  std::string device_id;
  std::string store_path;
  int index = 0;
  Account account;
  DeviceLog log;
};

// What the final check found; empty `problems` means the guarantees hold.
struct CheckReport {
  std::vector<std::string> problems;
  int64_t server_records = 0;      // facility records on the server
  int64_t checked_writes = 0;      // acknowledged device writes found on the server
  int64_t checked_buckets = 0;     // device buckets compared with the server
  int64_t unacked_but_stored = 0;  // writes begun before a kill that reached the server
};

// With the server stopped: opens DATA_DIR/kcnet.db and every device store and checks that
// every acknowledged write of every device is on the server exactly once with its latest
// value (nothing lost, no record twice, no other record created by that device), that
// nothing is pending, unconfirmed or reported (refusals, conflicts) on any device, that the
// server's last applied sequence of each device is its last write, and that every bucket
// of every device has the server's checksum and record count (running and recomputed).
// With `server_restored` (the server was restored from a backup during the run), the
// sequence check is left out: recovering devices renumber their unsettled mutations after
// the restored server's last applied sequence (docs/SYNC.md, "Server restore").
CheckReport CheckConvergence(const std::string& data_dir,
                             const std::vector<DeviceUnderCheck>& devices,
                             bool server_restored = false);
// The same checks against an open server store (e.g. a PostgreSQL one).
CheckReport CheckConvergence(sync::ServerStore& server,
                             const std::vector<DeviceUnderCheck>& devices,
                             bool server_restored = false);

}  // namespace kcnet::fault

#endif  // KCNET_TESTS_FAULT_FAULT_UTIL_H_
