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
  const std::string log = pg->dir_ + "/server.log";

  absl::StatusOr<pid_t> initdb = Spawn({bin + "/initdb", "-D", data, "-U", "kcnet", "--auth=trust",
                                        "-E", "UTF8", "--no-locale", "--no-sync"},
                                       *as, pg->dir_ + "/initdb.log");
  if (!initdb.ok()) return initdb.status();
  int wstatus = 0;
  if (waitpid(*initdb, &wstatus, 0) != *initdb || !WIFEXITED(wstatus) ||
      WEXITSTATUS(wstatus) != 0) {
    return absl::InternalError(absl::StrCat("initdb failed:\n", Tail(pg->dir_ + "/initdb.log")));
  }

  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<int> port = FreePort();
    if (!port.ok()) return port.status();
    pg->port_ = *port;
    absl::StatusOr<pid_t> pid =
        Spawn({bin + "/postgres", "-D", data, "-p", std::to_string(pg->port_), "-k", pg->dir_, "-c",
               "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on", "-c",
               "max_connections=200"},
              *as, log);
    if (!pid.ok()) return pid.status();
    pg->pid_ = *pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(pg->conninfo("postgres").c_str()) == PQPING_OK) break;
      if (waitpid(pg->pid_, &wstatus, WNOHANG) == pg->pid_) {
        exited = true;
        pg->pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (exited) continue;  // most likely lost the port to someone else: try another
    if (PQping(pg->conninfo("postgres").c_str()) != PQPING_OK) {
      return absl::DeadlineExceededError(
          absl::StrCat("PostgreSQL did not become ready in 60 s:\n", Tail(log)));
    }
    absl::Status created = pg->CreateDatabase("kcnet");
    if (!created.ok()) return created;
    return pg;
  }
  return absl::InternalError(absl::StrCat("PostgreSQL did not start:\n", Tail(log)));
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
