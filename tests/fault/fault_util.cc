#include "tests/fault/fault_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "server/directory/directory.h"
#include "server/pgstore/pg_directory_store.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "sync/server_store.h"

namespace kcnet::fault {

uint64_t FaultSeed() {
  const char* env = std::getenv("KCNET_FAULT_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  std::random_device random;
  return (uint64_t{random()} << 32 | random()) % 1000000000000ULL;
}

int EnvInt(const char* name, int fallback) {
  const char* env = std::getenv(name);
  int value = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &value)) return value;
  return fallback;
}

// ---- Process --------------------------------------------------------------------------

Process::Process(const std::vector<std::string>& argv, const std::string& stderr_path) {
  // Prepared before fork(): the parent has threads, so the child may only make
  // async-signal-safe calls until execv().
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int out[2];
  if (err < 0) return;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(err);
    return;
  }
  pid_ = fork();
  if (pid_ == 0) {
    // Dies with the test (the forking thread), so that a test killed by its timeout
    // leaves no server or device running.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(err);
  close(out[1]);
  out_ = out[0];
}

Process::~Process() {
  if (pid_ > 0 && !exit_code_.has_value()) Kill9();
  if (out_ >= 0) close(out_);
}

std::optional<std::string> Process::ReadLine(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0 || out_ < 0) return std::nullopt;
    pollfd fd{out_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left_ms)) <= 0) continue;
    char chunk[512];
    const ssize_t n = read(out_, chunk, sizeof(chunk));
    if (n <= 0) return std::nullopt;
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

void Process::Signal(int signal_number) {
  if (pid_ > 0 && !exit_code_.has_value()) kill(pid_, signal_number);
}

std::optional<int> Process::Poll() {
  if (exit_code_.has_value() || pid_ <= 0) return exit_code_;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  return exit_code_;
}

std::optional<int> Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!Poll().has_value()) {
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));  // waitpid cannot time out: poll with a deadline
  }
  return exit_code_;
}

int Process::Kill9() {
  if (pid_ <= 0) return -1;
  if (!exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  return *exit_code_;
}

// ---- ServerProcess --------------------------------------------------------------------

absl::Status ServerProcess::Start() {
  // A restart binds the port the first start picked. Right after a kill the port can be
  // briefly unavailable: retry.
  for (int attempt = 0; attempt < 50; ++attempt) {
    std::vector<std::string> argv = {binary_, "--data_dir=" + data_dir_,
                                     absl::StrCat("--listen=127.0.0.1:", port_),
                                     "--log_format=json", "--storage_threads=2"};
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    process_ = std::make_unique<Process>(argv, log_);
    if (!process_->started()) return absl::InternalError("cannot start kcnet-server");
    const std::optional<std::string> ready = process_->ReadLine(absl::Seconds(30));
    constexpr absl::string_view kReady = "kcnet-server listening on 127.0.0.1:";
    if (ready.has_value() && absl::StartsWith(*ready, kReady)) {
      int port = 0;
      if (!absl::SimpleAtoi(ready->substr(kReady.size()), &port)) {
        return absl::InternalError(absl::StrCat("bad ready line: ", *ready));
      }
      port_ = port;
      return absl::OkStatus();
    }
    process_->Kill9();
    process_.reset();
    if (port_ == 0) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::UnavailableError(absl::StrCat("kcnet-server did not start; see ", log_));
}

void ServerProcess::Kill9() {
  if (process_ != nullptr) process_->Kill9();
  process_.reset();
}

absl::Status ServerProcess::Stop() {
  if (process_ == nullptr) return absl::OkStatus();
  process_->Signal(SIGTERM);
  const std::optional<int> code = process_->Wait(absl::Seconds(30));
  process_.reset();
  if (code != std::optional<int>(0)) {
    return absl::InternalError(absl::StrCat("kcnet-server exit ", code.value_or(-1000)));
  }
  return absl::OkStatus();
}

std::string ServerProcess::target() const { return absl::StrCat("127.0.0.1:", port_); }

// ---- Accounts -------------------------------------------------------------------------

absl::StatusOr<std::vector<Account>> SetUpDirectory(const std::string& data_dir, int devices,
                                                    int coordinators, const std::string& postgres) {
  std::error_code ignored;
  std::filesystem::create_directories(data_dir, ignored);
  server::DirectoryOptions options;
  options.password_ops_limit = server::kArgon2OpsLimitMin;
  options.password_mem_limit = server::kArgon2MemLimitMin;
  absl::StatusOr<std::unique_ptr<server::Directory>> directory;
  if (postgres.empty()) {
    directory = server::Directory::Open(data_dir + "/directory.db", options);
  } else {
    absl::StatusOr<std::unique_ptr<server::DirectoryStore>> shared =
        pgstore::OpenPgDirectoryStore(postgres);
    if (!shared.ok()) return shared.status();
    directory = server::Directory::Open(*std::move(shared), options);
  }
  if (!directory.ok()) return directory.status();
  server::Directory& d = **directory;
  using kcnet::v1::ORG_UNIT_LEVEL_COMMUNE;
  using kcnet::v1::ORG_UNIT_LEVEL_DISTRICT;
  using kcnet::v1::ORG_UNIT_LEVEL_PROVINCE;
  absl::StatusOr<kcnet::v1::OrgUnit> province =
      d.CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0);
  if (!province.ok()) return province.status();
  std::vector<int64_t> districts, communes;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<kcnet::v1::OrgUnit> district =
        d.CreateOrgUnit(absl::StrCat("90", i + 1), absl::StrCat("Huyện ", i + 1),
                        ORG_UNIT_LEVEL_DISTRICT, province->id());
    if (!district.ok()) return district.status();
    districts.push_back(district->id());
    for (int j = 0; j < 2; ++j) {
      absl::StatusOr<kcnet::v1::OrgUnit> commune =
          d.CreateOrgUnit(absl::StrCat("90", i + 1, "0", j + 1), absl::StrCat("Xã ", i, j),
                          ORG_UNIT_LEVEL_COMMUNE, district->id());
      if (!commune.ok()) return commune.status();
      communes.push_back(commune->id());
    }
  }
  std::vector<Account> accounts;
  for (int i = 0; i < devices; ++i) {
    const bool coordinator = i < coordinators;
    Account account;
    account.username = absl::StrCat(coordinator ? "coord" : "collab", i);
    const int64_t unit = coordinator ? districts[i % 2] : communes[i % 4];
    account.commune = coordinator ? communes[(i % 2) * 2] : communes[i % 4];
    absl::StatusOr<kcnet::v1::User> user = d.CreateUser(
        account.username, account.username, "password-123",
        coordinator ? kcnet::v1::ROLE_DISTRICT_COORDINATOR : kcnet::v1::ROLE_COMMUNE_COLLABORATOR,
        {unit});
    if (!user.ok()) return user.status();
    absl::StatusOr<server::LoginResult> login = d.Login(account.username, "password-123");
    if (!login.ok()) return login.status();
    account.user_id = user->id();
    account.token = login->token;
    accounts.push_back(std::move(account));
  }
  return accounts;
}

std::string FacilityId(int device, int64_t n) {
  return absl::StrFormat("%08x-0000-4000-8000-%012x", device, n);
}

std::string OpName(int device, int64_t op) { return absl::StrCat("d", device, "-op", op); }

// ---- Device logs ----------------------------------------------------------------------

absl::StatusOr<DeviceLog> ReadDeviceLog(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no device log ", path));
  DeviceLog log;
  struct Begun {
    int64_t n = -1;
    std::string id, name;
    bool create = false;
  };
  std::optional<Begun> begun;
  auto unknown = [&] {
    if (!begun.has_value()) return;
    log.maybe_names[begun->id].insert(begun->name);
    if (begun->create) log.maybe_creates.insert(begun->id);
    ++log.unacked_writes;
    begun.reset();
  };
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> w = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (w.empty()) continue;
    auto num = [&](size_t i) {
      int64_t v = 0;
      if (i < w.size()) (void)absl::SimpleAtoi(w[i], &v);
      return v;
    };
    if (w[0] == "start") {
      unknown();
      ++log.starts;
    } else if (w[0] == "I" && w.size() == 5) {
      unknown();
      begun = Begun{num(1), w[2], w[3], w[4] == "1"};
      log.next_op = std::max(log.next_op, num(1) + 1);
    } else if (w[0] == "W" && w.size() == 3) {
      if (!begun.has_value() || begun->n != num(1)) {
        return absl::DataLossError(absl::StrCat(path, ": W without its I: ", line));
      }
      log.acked_name[begun->id] = begun->name;
      log.maybe_names.erase(begun->id);
      if (begun->create) {
        log.acked_creates.insert(begun->id);
        log.maybe_creates.erase(begun->id);
      }
      ++log.acked_writes;
      log.max_acked_seq = std::max<uint64_t>(log.max_acked_seq, static_cast<uint64_t>(num(2)));
      begun.reset();
    } else if (w[0] == "P" && w.size() == 6) {
      ++log.push_acks;
      log.applied += num(1);
      log.duplicate += num(2);
      log.refused += num(3);
      log.conflict += num(4);
      log.out_of_order += num(5);
    } else if (w[0] == "R" && w.size() == 3) {
      ++log.recoveries;
      log.handbacks += num(1);
      log.renumbered += num(2);
    } else if (w[0] == "C") {
      ++log.change_batches;
    } else if (w[0] == "S") {
      (w.size() > 1 && w[1] == "ok" ? log.syncs_ok : log.syncs_failed)++;
    }
    // Anything else is a line cut by a kill: ignored.
  }
  unknown();
  return log;
}

// ---- The final check ------------------------------------------------------------------

CheckReport CheckConvergence(const std::string& data_dir,
                             const std::vector<DeviceUnderCheck>& devices, bool server_restored) {
  absl::StatusOr<std::unique_ptr<sync::ServerStore>> server =
      sync::ServerStore::Open(data_dir + "/kcnet.db", &model::KcnetSchema());
  if (!server.ok()) {
    CheckReport report;
    report.problems.push_back(absl::StrCat("open server store: ", server.status().ToString()));
    return report;
  }
  return CheckConvergence(**server, devices, server_restored);
}

CheckReport CheckConvergence(sync::ServerStore& server_store,
                             const std::vector<DeviceUnderCheck>& devices, bool server_restored) {
  CheckReport report;
  auto problem = [&](std::string text) {
    if (report.problems.size() < 50) report.problems.push_back(std::move(text));
  };
  const sync::Schema* schema = &model::KcnetSchema();
  sync::ServerStore* server = &server_store;
  // Every facility on the server, by creator.
  std::vector<kcnet::v1::BucketCursor> cursors;
  std::set<int64_t> buckets;
  for (const DeviceUnderCheck& device : devices) buckets.insert(device.account.commune);
  for (int64_t bucket : buckets) cursors.emplace_back().set_bucket(bucket);
  // Communes nobody writes to are still compared below through the devices' cursors.
  std::map<int64_t, std::map<std::string, std::string>> names_by_creator;  // user -> id -> name
  std::map<std::string, int> seen;
  while (true) {
    absl::StatusOr<kcnet::v1::ChangeBatch> batch =
        server->ChangesSince(cursors, {.max_changes = 100000, .max_bytes = 1 << 30});
    if (!batch.ok()) {
      problem(absl::StrCat("server ChangesSince: ", batch.status().ToString()));
      return report;
    }
    for (const kcnet::v1::RecordChange& change : batch->changes()) {
      if (change.type() != model::kFacilityType || change.deleted()) continue;
      kcnet::v1::Facility facility;
      if (absl::Status s = model::FromChange(change, &facility); !s.ok()) {
        problem(absl::StrCat("server record: ", s.ToString()));
        continue;
      }
      ++seen[facility.id()];
      names_by_creator[facility.created_by()][facility.id()] = facility.name();
      ++report.server_records;
    }
    if (!batch->more()) break;
    cursors.assign(batch->cursors().begin(), batch->cursors().end());
  }
  for (const auto& [id, count] : seen) {
    if (count != 1) problem(absl::StrCat("record ", id, " served ", count, " times"));
  }

  for (const DeviceUnderCheck& device : devices) {
    const std::string who = absl::StrCat(device.device_id, ": ");
    const DeviceLog& log = device.log;
    const std::map<std::string, std::string>& mine = names_by_creator[device.account.user_id];
    // Nothing lost, nothing extra, latest value.
    for (const std::string& id : log.acked_creates) {
      if (!mine.contains(id)) problem(absl::StrCat(who, "acknowledged record ", id, " lost"));
    }
    for (const auto& [id, name] : mine) {
      if (!log.acked_creates.contains(id)) {
        if (log.maybe_creates.contains(id)) {
          ++report.unacked_but_stored;
        } else {
          problem(absl::StrCat(who, "server has record ", id, " the device never created"));
          continue;
        }
      }
      const auto acked = log.acked_name.find(id);
      const auto maybe = log.maybe_names.find(id);
      const bool ok = (acked != log.acked_name.end() && acked->second == name) ||
                      (maybe != log.maybe_names.end() && maybe->second.contains(name));
      if (!ok) {
        problem(absl::StrCat(who, "record ", id, " is '", name, "', acknowledged '",
                             acked == log.acked_name.end() ? "" : acked->second, "'"));
      }
    }
    report.checked_writes += log.acked_writes;
    if (log.refused > 0 || log.conflict > 0) {
      problem(absl::StrCat(who, log.refused, " refused and ", log.conflict,
                           " conflicting push results"));
    }
    absl::StatusOr<uint64_t> last_seq = server->LastAppliedSeq(device.device_id);
    if (!last_seq.ok() || (!server_restored && *last_seq < log.max_acked_seq)) {
      problem(absl::StrCat(who, "server's last applied seq ",
                           last_seq.ok() ? absl::StrCat(*last_seq) : last_seq.status().ToString(),
                           " < acknowledged ", log.max_acked_seq));
    }

    // The replica.
    absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store =
        sync::DeviceStore::Open(device.store_path, schema, device.device_id);
    if (!store.ok()) {
      problem(absl::StrCat(who, "open store: ", store.status().ToString()));
      continue;
    }
    absl::StatusOr<int64_t> pending = (*store)->PendingCount();
    absl::StatusOr<int64_t> unconfirmed = (*store)->UnconfirmedCount();
    if (pending.value_or(-1) != 0 || unconfirmed.value_or(-1) != 0) {
      problem(absl::StrCat(who, "pending ", pending.value_or(-1), ", unconfirmed ",
                           unconfirmed.value_or(-1)));
    }
    absl::StatusOr<std::vector<sync::Report>> reports = (*store)->ListReports();
    if (!reports.ok() || !reports->empty()) {
      problem(absl::StrCat(
          who, "reports: ", reports.ok() ? reports->size() : 0,
          reports.ok() && !reports->empty() ? reports->front().result.ShortDebugString() : ""));
    }
    absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> device_cursors = (*store)->Cursors();
    if (!device_cursors.ok() || device_cursors->empty()) {
      problem(absl::StrCat(who, "no buckets"));
      continue;
    }
    for (const kcnet::v1::BucketCursor& cursor : *device_cursors) {
      absl::StatusOr<kcnet::v1::BucketCheckpoint> want = server->Checkpoint(cursor.bucket());
      absl::StatusOr<kcnet::v1::BucketCheckpoint> running = (*store)->Checkpoint(cursor.bucket());
      absl::StatusOr<kcnet::v1::BucketCheckpoint> recomputed =
          (*store)->RecomputeCheckpoint(cursor.bucket());
      ++report.checked_buckets;
      if (!want.ok() || !running.ok() || !recomputed.ok()) {
        problem(absl::StrCat(who, "bucket ", cursor.bucket(), ": checkpoint failed"));
        continue;
      }
      if (running->checksum() != want->checksum() || running->records() != want->records() ||
          recomputed->checksum() != want->checksum() || recomputed->records() != want->records()) {
        problem(absl::StrCat(who, "bucket ", cursor.bucket(), " diverged: device ",
                             running->ShortDebugString(), " recomputed ",
                             recomputed->ShortDebugString(), " server ", want->ShortDebugString()));
      }
    }
  }
  return report;
}

}  // namespace kcnet::fault
