// kcnet-admin: the administrator's command-line tool for the directory file
// (DATA_DIR/directory.db): imports the official org-unit list and manages user accounts;
// `seed-demo` fills a new data directory with a small demo world (seed_demo.h).
// Org units are named by their official code. Errors print one line on stderr and exit
// non-zero (1: the operation failed, 2: the command line is wrong).

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "client_sdk/cli/password_prompt.h"
#include "server/admin/backup.h"
#include "server/admin/seed_demo.h"
#include "server/directory/csv_import.h"
#include "server/directory/directory.h"

ABSL_FLAG(std::string, data_dir, "", "Directory holding directory.db (created if missing)");
ABSL_FLAG(bool, dry_run, false, "import-org-units: report what would change, change nothing");
ABSL_FLAG(std::string, username, "", "The user's login name (3-64 of a-z 0-9 . _ -)");
ABSL_FLAG(std::string, display_name, "", "create-user: the user's full name");
ABSL_FLAG(std::string, role, "",
          "commune_collaborator, district_coordinator, province_officer or administrator");
ABSL_FLAG(std::string, org_units, "", "Official codes of the user's org units, comma-separated");
ABSL_FLAG(std::string, password, "",
          "The password; when empty it is read from stdin (safer: not visible in ps)");
ABSL_FLAG(std::string, parent, "", "list-org-units: the parent's code (default: the roots)");
ABSL_FLAG(std::string, to, "", "backup: a new (or empty) directory to write the backup to");
ABSL_FLAG(std::string, from, "", "restore: the directory of a backup made by `backup`");

namespace kcnet::server {
namespace {

constexpr char kUsage[] =
    "kcnet-admin --data_dir=DIR COMMAND [flags]\n"
    "Commands:\n"
    "  import-org-units FILE [--dry_run]\n"
    "  create-user --username=U --display_name=NAME --role=ROLE --org_units=CODE[,CODE...]\n"
    "              [--password=P, or the password on stdin]\n"
    "  assign-user --username=U --role=ROLE --org_units=CODE[,CODE...]\n"
    "  reset-password --username=U [--password=P, or the password on stdin]\n"
    "  deactivate-user --username=U\n"
    "  list-users\n"
    "  list-org-units [--parent=CODE]\n"
    "  seed-demo      (a new, empty --data_dir only: demo org units, accounts, facilities)\n"
    "  backup --to=DIR      (online: a consistent copy of every database while the server runs)\n"
    "  restore --from=DIR   (the server stopped: the data dir becomes the backup, as a new\n"
    "                        incarnation that every device recovers from; docs/SYNC.md)";

// A wrong command line (exit code 2), as opposed to a failed operation (exit code 1).
absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("usage: ", message));
}

absl::StatusOr<std::string> RequiredFlag(const absl::Flag<std::string>& flag,
                                         absl::string_view name) {
  std::string value = absl::GetFlag(flag);
  if (value.empty()) return UsageError(absl::StrCat("--", name, " is required"));
  return value;
}

absl::StatusOr<std::unique_ptr<Directory>> OpenDirectory() {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return UsageError("--data_dir is required");
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create --data_dir ", data_dir, ": ", error.message()));
  }
  return Directory::Open((std::filesystem::path(data_dir) / "directory.db").string());
}

// The password from --password, or one line from stdin (without echo on a terminal).
absl::StatusOr<std::string> ReadPassword() {
  std::string password = absl::GetFlag(FLAGS_password);
  if (!password.empty()) return password;
  password = kcnet::cli::ReadPasswordFromStdin();
  if (password.empty()) return UsageError("no password: give --password or write it on stdin");
  return password;
}

// The ids of the org units named by comma-separated official codes.
absl::StatusOr<std::vector<int64_t>> ResolveCodes(Directory& directory, absl::string_view codes) {
  std::vector<int64_t> ids;
  for (absl::string_view code : absl::StrSplit(codes, ',', absl::SkipWhitespace())) {
    absl::StatusOr<v1::OrgUnit> unit = directory.FindByCode(code);
    if (!unit.ok()) {
      return absl::Status(unit.status().code(),
                          absl::StrCat("--org_units: no org unit with code '", code, "'"));
    }
    ids.push_back(unit->id());
  }
  if (ids.empty()) return UsageError("--org_units names no org unit");
  return ids;
}

std::string Codes(Directory& directory, const v1::User& user) {
  std::vector<std::string> codes;
  for (int64_t id : user.org_unit_ids()) {
    absl::StatusOr<v1::OrgUnit> unit = directory.GetOrgUnit(id);
    codes.push_back(unit.ok() ? unit->code() : absl::StrCat("#", id));
  }
  return absl::StrJoin(codes, ",");
}

absl::StatusOr<v1::User> FindUserFlag(Directory& directory) {
  absl::StatusOr<std::string> username = RequiredFlag(FLAGS_username, "username");
  if (!username.ok()) return username.status();
  return directory.FindUser(*username);
}

absl::Status ImportOrgUnitsCommand(const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("import-org-units FILE [--dry_run]");
  std::ifstream in(args[0], std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", args[0]));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  const bool dry_run = absl::GetFlag(FLAGS_dry_run);
  const ImportReport report =
      ImportOrgUnits(**directory, text.str(), dry_run ? ImportMode::kDryRun : ImportMode::kApply);
  if (!report.status.ok()) return report.status;
  std::printf("%s %s\n",
              dry_run ? "dry run, nothing changed:" : "imported:", report.Summary().c_str());
  return absl::OkStatus();
}

absl::Status CreateUserCommand() {
  absl::StatusOr<std::string> username = RequiredFlag(FLAGS_username, "username");
  if (!username.ok()) return username.status();
  absl::StatusOr<std::string> display_name = RequiredFlag(FLAGS_display_name, "display_name");
  if (!display_name.ok()) return display_name.status();
  absl::StatusOr<std::string> role_name = RequiredFlag(FLAGS_role, "role");
  if (!role_name.ok()) return role_name.status();
  absl::StatusOr<v1::Role> role = ParseRole(*role_name);
  if (!role.ok()) return role.status();
  absl::StatusOr<std::string> codes = RequiredFlag(FLAGS_org_units, "org_units");
  if (!codes.ok()) return codes.status();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<int64_t>> units = ResolveCodes(**directory, *codes);
  if (!units.ok()) return units.status();
  absl::StatusOr<std::string> password = ReadPassword();
  if (!password.ok()) return password.status();
  absl::StatusOr<v1::User> user =
      (*directory)->CreateUser(*username, *display_name, *password, *role, *units);
  if (!user.ok()) return user.status();
  std::printf("created user %s (id %lld, %s at %s)\n", user->username().c_str(),
              static_cast<long long>(user->id()), RoleName(user->role()).c_str(),
              Codes(**directory, *user).c_str());
  return absl::OkStatus();
}

absl::Status AssignUserCommand() {
  absl::StatusOr<std::string> role_name = RequiredFlag(FLAGS_role, "role");
  if (!role_name.ok()) return role_name.status();
  absl::StatusOr<v1::Role> role = ParseRole(*role_name);
  if (!role.ok()) return role.status();
  absl::StatusOr<std::string> codes = RequiredFlag(FLAGS_org_units, "org_units");
  if (!codes.ok()) return codes.status();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(**directory);
  if (!user.ok()) return user.status();
  absl::StatusOr<std::vector<int64_t>> units = ResolveCodes(**directory, *codes);
  if (!units.ok()) return units.status();
  absl::StatusOr<v1::User> updated = (*directory)->AssignUser(user->id(), *role, *units);
  if (!updated.ok()) return updated.status();
  std::printf("assigned user %s: %s at %s\n", updated->username().c_str(),
              RoleName(updated->role()).c_str(), Codes(**directory, *updated).c_str());
  return absl::OkStatus();
}

absl::Status ResetPasswordCommand() {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(**directory);
  if (!user.ok()) return user.status();
  absl::StatusOr<std::string> password = ReadPassword();
  if (!password.ok()) return password.status();
  absl::Status status = (*directory)->ResetPassword(user->id(), *password);
  if (!status.ok()) return status;
  std::printf("reset the password of %s; its sessions are signed out\n", user->username().c_str());
  return absl::OkStatus();
}

absl::Status DeactivateUserCommand() {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(**directory);
  if (!user.ok()) return user.status();
  absl::Status status = (*directory)->DeactivateUser(user->id());
  if (!status.ok()) return status;
  std::printf("deactivated %s; its sessions are signed out\n", user->username().c_str());
  return absl::OkStatus();
}

absl::Status ListUsersCommand() {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<v1::User>> users = (*directory)->ListUsers();
  if (!users.ok()) return users.status();
  for (const v1::User& user : *users) {
    std::printf("%s\t%s\t%s\t%s\t%s\n", user.username().c_str(), RoleName(user.role()).c_str(),
                user.active() ? "active" : "inactive", Codes(**directory, user).c_str(),
                user.display_name().c_str());
  }
  std::fprintf(stderr, "%zu users\n", users->size());
  return absl::OkStatus();
}

absl::Status ListOrgUnitsCommand() {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory();
  if (!directory.ok()) return directory.status();
  int64_t parent_id = 0;
  const std::string parent_code = absl::GetFlag(FLAGS_parent);
  if (!parent_code.empty()) {
    absl::StatusOr<v1::OrgUnit> parent = (*directory)->FindByCode(parent_code);
    if (!parent.ok()) {
      return absl::Status(parent.status().code(),
                          absl::StrCat("--parent: no org unit with code '", parent_code, "'"));
    }
    parent_id = parent->id();
  }
  absl::StatusOr<std::vector<v1::OrgUnit>> units = (*directory)->ListChildren(parent_id);
  if (!units.ok()) return units.status();
  for (const v1::OrgUnit& unit : *units) {
    std::printf("%s\t%s\t%s\n", unit.code().c_str(), LevelName(unit.level()).c_str(),
                unit.name().c_str());
  }
  std::fprintf(stderr, "%zu org units\n", units->size());
  return absl::OkStatus();
}

absl::Status SeedDemoCommand() {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<DemoSeed> seed = SeedDemo(data_dir);
  if (!seed.ok()) return seed.status();
  std::printf("seeded %s: %d org units (province 90 \"Tỉnh Demo\"), %d facilities\n",
              data_dir.c_str(), seed->org_units, seed->facilities);
  std::printf("demo accounts (change these passwords before any real use):\n");
  std::printf("  %-10s %-22s %-22s %s\n", "USERNAME", "PASSWORD", "ROLE", "ORG UNIT");
  for (const DemoAccount& account : seed->accounts) {
    std::printf("  %-10s %-22s %-22s %s\n", account.username.c_str(), account.password.c_str(),
                account.role.c_str(), account.org_unit_code.c_str());
  }
  return absl::OkStatus();
}

absl::Status BackupCommand() {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<std::string> to = RequiredFlag(FLAGS_to, "to");
  if (!to.ok()) return to.status();
  absl::StatusOr<std::vector<CopiedDatabase>> copied = BackupDataDir(data_dir, *to);
  if (!copied.ok()) return copied.status();
  for (const CopiedDatabase& db : *copied) {
    std::printf("backed up %s: %lld bytes in %.3f s\n", db.name.c_str(),
                static_cast<long long>(db.bytes), db.seconds);
  }
  return absl::OkStatus();
}

absl::Status RestoreCommand() {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<std::string> from = RequiredFlag(FLAGS_from, "from");
  if (!from.ok()) return from.status();
  absl::StatusOr<std::vector<CopiedDatabase>> copied = RestoreDataDir(data_dir, *from);
  if (!copied.ok()) return copied.status();
  for (const CopiedDatabase& db : *copied) {
    std::printf("restored %s: %lld bytes in %.3f s\n", db.name.c_str(),
                static_cast<long long>(db.bytes), db.seconds);
  }
  std::printf("the record store is a new incarnation: devices recover at their next sync\n");
  return absl::OkStatus();
}

absl::Status Run(const std::vector<std::string>& positional) {
  if (positional.empty()) return UsageError("no command given (see --help)");
  const std::string& command = positional[0];
  const std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (command == "import-org-units") return ImportOrgUnitsCommand(args);
  if (!args.empty()) {
    return UsageError(
        absl::StrCat(command, " takes no arguments besides flags, got '", args[0], "'"));
  }
  if (command == "create-user") return CreateUserCommand();
  if (command == "assign-user") return AssignUserCommand();
  if (command == "reset-password") return ResetPasswordCommand();
  if (command == "deactivate-user") return DeactivateUserCommand();
  if (command == "list-users") return ListUsersCommand();
  if (command == "list-org-units") return ListOrgUnitsCommand();
  if (command == "seed-demo") return SeedDemoCommand();
  if (command == "backup") return BackupCommand();
  if (command == "restore") return RestoreCommand();
  return UsageError(absl::StrCat("unknown command '", command, "' (see --help)"));
}

}  // namespace
}  // namespace kcnet::server

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kcnet::server::kUsage);
  std::vector<char*> parsed = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> positional(parsed.begin() + 1, parsed.end());
  const absl::Status status = kcnet::server::Run(positional);
  if (status.ok()) return 0;
  // One line, whatever the message holds.
  const std::string message = absl::StrReplaceAll(status.message(), {{"\r", " "}, {"\n", " "}});
  std::fprintf(stderr, "kcnet-admin: %s\n", message.c_str());
  return absl::StartsWith(message, "usage: ") ? 2 : 1;
}
