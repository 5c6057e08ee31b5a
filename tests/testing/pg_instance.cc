#include "tests/testing/pg_instance.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kcnet::testing {
namespace {

namespace fs = std::filesystem;

bool Executable(const fs::path& p) { return access(p.c_str(), X_OK) == 0; }

// The directory holding both initdb and postgres, or "" when there is none.
std::string FindBinDir() {
  if (const char* env = std::getenv("KCNET_PG_BIN"); env != nullptr && *env != '\0') {
    return Executable(fs::path(env) / "postgres") && Executable(fs::path(env) / "initdb") ? env
                                                                                          : "";
  }
  std::error_code ec;
  std::vector<fs::path> versions;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    versions.push_back(entry.path() / "bin");
  }
  std::sort(versions.begin(), versions.end(), [](const fs::path& a, const fs::path& b) {
    return std::atoi(a.parent_path().filename().c_str()) >
           std::atoi(b.parent_path().filename().c_str());
  });
  for (const fs::path& bin : versions) {
    if (Executable(bin / "postgres") && Executable(bin / "initdb")) return bin.string();
  }
  // $PATH: initdb is often a link into the real bin directory, next to postgres.
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    fs::path initdb = fs::path(dir) / "initdb";
    if (!Executable(initdb)) continue;
    fs::path real = fs::canonical(initdb, ec).parent_path();
    if (!ec && Executable(real / "postgres")) return real.string();
    if (Executable(fs::path(dir) / "postgres")) return dir;
  }
  return "";
}

// The user the server runs as when we are root (PostgreSQL refuses to run as root).
struct RunAs {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

absl::StatusOr<RunAs> ChooseUser() {
  RunAs as;
  if (geteuid() != 0) return as;
  struct passwd* pw = getpwnam("nobody");
  if (pw == nullptr) return absl::FailedPreconditionError("running as root and no user 'nobody'");
  as.drop = true;
  as.uid = pw->pw_uid;
  as.gid = pw->pw_gid;
  return as;
}

// Forks and execs `argv` as `as`, with stdout and stderr appended to `log`. Only
// async-signal-safe calls happen in the child (the test process has threads).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const RunAs& as,
                            const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log));
  if (as.drop && fchown(fd, as.uid, as.gid) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("cannot chown ", log));
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (as.drop) {
      if (setgroups(0, nullptr) != 0 || setgid(as.gid) != 0 || setuid(as.uid) != 0) _exit(126);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fd);
  return pid;
}

std::string Tail(const std::string& file) {
  std::ifstream in(file);
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

// A port nobody listens on now (the server may still lose a race for it: Start retries).
absl::StatusOr<int> FreePort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(s);
    return absl::InternalError("cannot find a free port");
  }
  close(s);
  return ntohs(addr.sin_port);
}

absl::Status Exec(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  absl::Status status;
  if (PQstatus(conn) != CONNECTION_OK) {
    status = absl::UnavailableError(PQerrorMessage(conn));
  } else {
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      status = absl::InternalError(absl::StrCat(sql, ": ", PQerrorMessage(conn)));
    }
    PQclear(res);
  }
  PQfinish(conn);
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PgInstance>> PgInstance::Start() {
  const std::string bin = FindBinDir();
  if (bin.empty()) {
    return absl::NotFoundError(
        "PostgreSQL binaries (initdb, postgres) not found: install Debian's postgresql "
        "package or set KCNET_PG_BIN; the PostgreSQL tests are skipped");
  }
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();

  std::unique_ptr<PgInstance> pg(new PgInstance());
  std::string pattern = (fs::temp_directory_path() / "kcnet-pg-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  pg->dir_ = pattern;
  if (as->drop && chown(pg->dir_.c_str(), as->uid, as->gid) != 0) {
    return absl::InternalError(absl::StrCat("cannot chown ", pg->dir_));
  }
  const std::string data = pg->dir_ + "/data";

  absl::StatusOr<pid_t> initdb = Spawn({bin + "/initdb", "-D", data, "-U", "kcnet", "--auth=trust",
                                        "-E", "UTF8", "--no-locale", "--no-sync"},
                                       *as, pg->dir_ + "/initdb.log");
  if (!initdb.ok()) return initdb.status();
  int wstatus = 0;
  if (waitpid(*initdb, &wstatus, 0) != *initdb || !WIFEXITED(wstatus) ||
      WEXITSTATUS(wstatus) != 0) {
    return absl::InternalError(absl::StrCat("initdb failed:\n", Tail(pg->dir_ + "/initdb.log")));
  }

  pg->bin_ = bin;
  absl::Status launched = pg->Launch();
  if (!launched.ok()) return launched;
  absl::Status created = pg->CreateDatabase("kcnet");
  if (!created.ok()) return created;
  return pg;
}

absl::Status PgInstance::Launch() {
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();
  const std::string data = dir_ + "/data";
  const std::string log = dir_ + "/server.log";
  int wstatus = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<int> port = FreePort();
    if (!port.ok()) return port.status();
    port_ = *port;
    absl::StatusOr<pid_t> pid =
        Spawn({bin_ + "/postgres", "-D", data, "-p", std::to_string(port_), "-k", dir_, "-c",
               "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on", "-c",
               "max_connections=200"},
              *as, log);
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(conninfo("postgres").c_str()) == PQPING_OK) break;
      if (waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        exited = true;
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (exited) continue;  // most likely lost the port to someone else: try another
    if (PQping(conninfo("postgres").c_str()) != PQPING_OK) {
      return absl::DeadlineExceededError(
          absl::StrCat("PostgreSQL did not become ready in 60 s:\n", Tail(log)));
    }
    return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("PostgreSQL did not start:\n", Tail(log)));
}

absl::Status PgInstance::RunAsServerUser(const std::vector<std::string>& args,
                                         const std::string& log) const {
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();
  absl::StatusOr<pid_t> pid = Spawn(args, *as, log);
  if (!pid.ok()) return pid.status();
  int wstatus = 0;
  if (waitpid(*pid, &wstatus, 0) != *pid || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return absl::InternalError(
        absl::StrCat(args[0], " ", args.size() > 1 ? args[1] : "", " failed:\n", Tail(log)));
  }
  return absl::OkStatus();
}

namespace {

// Copies `script` and the files next to it into `dir`/scripts, owned by the server user:
// the source tree may not be readable by it (a CI clone in a root-only temp directory).
absl::StatusOr<std::string> CopyScripts(const std::string& script, const std::string& dir) {
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();
  const fs::path to = fs::path(dir) / "scripts";
  std::error_code ec;
  fs::create_directories(to, ec);
  for (const auto& entry : fs::directory_iterator(fs::path(script).parent_path(), ec)) {
    if (!entry.is_regular_file()) continue;
    fs::copy_file(entry.path(), to / entry.path().filename(), fs::copy_options::overwrite_existing,
                  ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot copy ", entry.path().string()));
    if (as->drop) (void)!chown((to / entry.path().filename()).c_str(), as->uid, as->gid);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot read ", script, ": ", ec.message()));
  if (as->drop) (void)!chown(to.c_str(), as->uid, as->gid);
  return (to / fs::path(script).filename()).string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PgInstance>> PgInstance::StartStandby(
    const PgInstance& primary, const std::string& setup_script, const std::string& name) {
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();
  std::unique_ptr<PgInstance> pg(new PgInstance());
  pg->bin_ = primary.bin_;
  std::string pattern = (fs::temp_directory_path() / "kcnet-pg-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  pg->dir_ = pattern;
  if (as->drop && chown(pg->dir_.c_str(), as->uid, as->gid) != 0) {
    return absl::InternalError(absl::StrCat("cannot chown ", pg->dir_));
  }
  absl::StatusOr<std::string> script = CopyScripts(setup_script, pg->dir_);
  if (!script.ok()) return script.status();
  absl::Status made =
      pg->RunAsServerUser({"/bin/bash", *script, "--primary", primary.conninfo("postgres"),
                           "--data", pg->dir_ + "/data", "--name", name, "--bin", pg->bin_},
                          pg->dir_ + "/standby.log");
  if (!made.ok()) return made;
  absl::Status launched = pg->Launch();
  if (!launched.ok()) return launched;
  return pg;
}

absl::StatusOr<std::unique_ptr<PgInstance>> PgInstance::StartCopy(const PgInstance& like,
                                                                  const std::string& script,
                                                                  std::vector<std::string> args) {
  absl::StatusOr<RunAs> as = ChooseUser();
  if (!as.ok()) return as.status();
  std::unique_ptr<PgInstance> pg(new PgInstance());
  pg->bin_ = like.bin_;
  std::string pattern = (fs::temp_directory_path() / "kcnet-pg-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  pg->dir_ = pattern;
  if (as->drop && chown(pg->dir_.c_str(), as->uid, as->gid) != 0) {
    return absl::InternalError(absl::StrCat("cannot chown ", pg->dir_));
  }
  args.push_back("--data");
  args.push_back(pg->dir_ + "/data");
  absl::Status made = pg->RunScript(script, std::move(args));
  if (!made.ok()) return made;
  absl::Status launched = pg->Launch();
  if (!launched.ok()) return launched;
  return pg;
}

absl::Status PgInstance::RunScript(const std::string& script, std::vector<std::string> args) const {
  absl::StatusOr<std::string> copy = CopyScripts(script, dir_);
  if (!copy.ok()) return copy.status();
  args.insert(args.begin(), {"/bin/bash", *copy});
  args.push_back("--bin");
  args.push_back(bin_);
  return RunAsServerUser(args, absl::StrCat(dir_, "/", fs::path(script).stem().string(), ".log"));
}

absl::Status PgInstance::Restart() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) return stopped;
  return Launch();
}

absl::StatusOr<bool> PgInstance::InRecovery() const {
  PGconn* conn = PQconnectdb(conninfo("postgres").c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    const std::string error = PQerrorMessage(conn);
    PQfinish(conn);
    return absl::UnavailableError(error);
  }
  PGresult* res = PQexec(conn, "SELECT pg_is_in_recovery()");
  const bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
  const bool recovering = ok && std::string(PQgetvalue(res, 0, 0)) == "t";
  const std::string error = ok ? "" : PQerrorMessage(conn);
  PQclear(res);
  PQfinish(conn);
  if (!ok) return absl::InternalError(error);
  return recovering;
}

absl::Status PgInstance::Promote(const std::string& promote_script) const {
  absl::StatusOr<std::string> script = CopyScripts(promote_script, dir_);
  if (!script.ok()) return script.status();
  return RunAsServerUser({"/bin/bash", *script, "--data", dir_ + "/data", "--conninfo",
                          conninfo("postgres"), "--bin", bin_},
                         dir_ + "/promote.log");
}

void PgInstance::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

PgInstance::~PgInstance() {
  Stop().IgnoreError();
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string PgInstance::conninfo(const std::string& database) const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " user=kcnet dbname=", database,
                      " connect_timeout=10");
}

absl::Status PgInstance::CreateDatabase(const std::string& name) const {
  return Exec(conninfo("postgres"), absl::StrCat("CREATE DATABASE \"", name, "\""));
}

absl::Status PgInstance::Stop() {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGINT);  // fast shutdown: roll back open transactions, checkpoint, exit
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return absl::DeadlineExceededError("PostgreSQL did not stop in 30 s; killed");
}

}  // namespace kcnet::testing
