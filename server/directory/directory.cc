#include "server/directory/directory.h"

#include "server/directory/secrets.h"

#include <sodium.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/directory/secrets.h"
#include "server/directory/text.h"

namespace kcnet::server {
namespace {

using ::kcnet::sync::Db;
using ::kcnet::sync::Statement;
using ::kcnet::sync::Transaction;
using ::kcnet::v1::OrgUnit;
using ::kcnet::v1::OrgUnitLevel;
using ::kcnet::v1::Role;
using ::kcnet::v1::User;

static_assert(kArgon2OpsLimitInteractive == crypto_pwhash_OPSLIMIT_INTERACTIVE);
static_assert(kArgon2MemLimitInteractive == crypto_pwhash_MEMLIMIT_INTERACTIVE);
static_assert(kArgon2OpsLimitMin == crypto_pwhash_OPSLIMIT_MIN);
static_assert(kArgon2MemLimitMin == crypto_pwhash_MEMLIMIT_MIN);

// PRAGMA application_id of a directory file: "KCND".
constexpr int64_t kApplicationId = 0x4b434e44;

// kMigrations[v] takes the layout from version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: org units, users, assignments, tokens.
    "CREATE TABLE org_units("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  code TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  level INTEGER NOT NULL,"
    "  parent_id INTEGER REFERENCES org_units(id),"
    "  effective_from_ms INTEGER NOT NULL);"
    "CREATE INDEX org_units_parent ON org_units(parent_id);"
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  username TEXT NOT NULL UNIQUE,"
    "  display_name TEXT NOT NULL,"
    "  role INTEGER NOT NULL,"
    "  password_hash TEXT NOT NULL,"
    "  active INTEGER NOT NULL,"
    "  phone TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE user_org_units("
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  org_unit_id INTEGER NOT NULL REFERENCES org_units(id),"
    "  PRIMARY KEY(user_id, org_unit_id)) WITHOUT ROWID;"
    "CREATE TABLE tokens("
    "  hash BLOB PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX tokens_user ON tokens(user_id);"
    "CREATE INDEX tokens_expiry ON tokens(expires_ms);",
    // 1 -> 2: the audit trail of account changes, and lock-outs that survive a restart.
    "CREATE TABLE audit("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at_ms INTEGER NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  target_user_id INTEGER NOT NULL,"
    "  details TEXT NOT NULL);"
    "CREATE INDEX audit_target ON audit(target_user_id, id);"
    "CREATE TABLE sign_in_failures("
    "  username TEXT PRIMARY KEY,"
    "  failures INTEGER NOT NULL,"
    "  last_failure_ms INTEGER NOT NULL,"
    "  locked_until_ms INTEGER NOT NULL) WITHOUT ROWID;",
};
static_assert(std::size(kMigrations) == kDirectorySchemaVersion);

constexpr size_t kMaxCodeBytes = 32;
constexpr size_t kMaxNameBytes = 200;
constexpr size_t kMinPasswordBytes = 8;
constexpr size_t kMaxPasswordBytes = 1024;
constexpr size_t kMaxTrackedUsernames = 10000;
constexpr int64_t kTokenSweepIntervalMs = 3600 * 1000;
// A failure streak older than this is forgotten.
constexpr int64_t kFailureMemoryMs = 15 * 60 * 1000;
constexpr absl::string_view kBadCredentials = "wrong username or password";

using internal::ResetOnExit;
absl::Status CheckUsername(absl::string_view username) {
  if (username.size() < 3 || username.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("username: must be 3 to 64 characters, got ", username.size()));
  }
  for (char c : username) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          "username: only lowercase letters a-z, digits, '.', '_' and '-' are allowed");
    }
  }
  return absl::OkStatus();
}

// A human-readable text field: non-empty, bounded, UTF-8, no control characters.
absl::Status CheckText(absl::string_view field, absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": must not be empty"));
  if (text.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": longer than ", kMaxNameBytes, " bytes (", text.size(), ")"));
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not valid UTF-8"));
  }
  if (HasControlCharacter(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": contains a control character"));
  }
  return absl::OkStatus();
}

absl::Status CheckCode(absl::string_view code) {
  if (code.empty()) return absl::InvalidArgumentError("code: must not be empty");
  if (code.size() > kMaxCodeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("code: longer than ", kMaxCodeBytes, " bytes"));
  }
  for (char c : code) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("code: '", code, "' may hold only letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPassword(absl::string_view password) {
  if (password.size() < kMinPasswordBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("password: must be at least ", kMinPasswordBytes, " bytes"));
  }
  if (password.size() > kMaxPasswordBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("password: must be at most ", kMaxPasswordBytes, " bytes"));
  }
  return absl::OkStatus();
}

std::string UnitList(const std::vector<int64_t>& units) {
  return absl::StrCat("[", absl::StrJoin(units, ","), "]");
}

}  // namespace

absl::Status CheckPhone(absl::string_view phone) {
  if (phone.size() > 32 || phone.find_first_not_of("0123456789+- ()") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "phone: at most 32 characters of digits, '+', '-', spaces and parentheses");
  }
  return absl::OkStatus();
}

namespace {

using internal::Sha256;

bool VerifyPassword(const std::string& hash, absl::string_view password) {
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

OrgUnit ReadOrgUnit(const Statement& stmt) {
  OrgUnit unit;
  unit.set_id(stmt.ColumnInt(0));
  unit.set_code(std::string(stmt.ColumnText(1)));
  unit.set_name(std::string(stmt.ColumnText(2)));
  unit.set_level(static_cast<OrgUnitLevel>(stmt.ColumnInt(3)));
  unit.set_parent_id(stmt.IsNull(4) ? 0 : stmt.ColumnInt(4));
  unit.set_effective_from_ms(stmt.ColumnInt(5));
  return unit;
}

std::vector<int64_t> SortedUnique(std::vector<int64_t> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace

std::string RoleName(Role role) {
  switch (role) {
    case v1::ROLE_COMMUNE_COLLABORATOR:
      return "commune_collaborator";
    case v1::ROLE_DISTRICT_COORDINATOR:
      return "district_coordinator";
    case v1::ROLE_PROVINCE_OFFICER:
      return "province_officer";
    case v1::ROLE_ADMINISTRATOR:
      return "administrator";
    default:
      return "unspecified";
  }
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (Role role : {v1::ROLE_COMMUNE_COLLABORATOR, v1::ROLE_DISTRICT_COORDINATOR,
                    v1::ROLE_PROVINCE_OFFICER, v1::ROLE_ADMINISTRATOR}) {
    if (name == RoleName(role)) return role;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("role: unknown role '", name,
                   "' (expected commune_collaborator, district_coordinator, province_officer "
                   "or administrator)"));
}

std::string LevelName(OrgUnitLevel level) {
  switch (level) {
    case v1::ORG_UNIT_LEVEL_NATION:
      return "nation";
    case v1::ORG_UNIT_LEVEL_PROVINCE:
      return "province";
    case v1::ORG_UNIT_LEVEL_DISTRICT:
      return "district";
    case v1::ORG_UNIT_LEVEL_COMMUNE:
      return "commune";
    default:
      return "unspecified";
  }
}

// ---- Opening and caches --------------------------------------------------------------

Directory::Directory(std::unique_ptr<Db> db, DirectoryOptions options)
    : options_(std::move(options)), db_(std::move(db)) {}

Directory::~Directory() = default;

absl::StatusOr<std::unique_ptr<Directory>> Directory::Open(const std::string& path,
                                                           DirectoryOptions options) {
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock: must not be null");
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(path);
  if (!db.ok()) return db.status();
  std::unique_ptr<Directory> directory(new Directory(*std::move(db), std::move(options)));
  absl::MutexLock lock(&directory->mu_);
  absl::Status status = directory->Migrate();
  if (!status.ok()) return status;
  status = directory->LoadLocked();
  if (!status.ok()) return status;
  return directory;
}

absl::Status Directory::Migrate() {
  return sync::MigrateAppFile(*db_, {.application_id = kApplicationId,
                                     .name = "kcnet directory",
                                     .schema = "directory",
                                     .migrations = kMigrations,
                                     .version = kDirectorySchemaVersion});
}

absl::Status Directory::LoadLocked() {
  // Read the version first: a commit racing with the load then triggers one more reload.
  absl::StatusOr<int64_t> version = db_->QueryInt("PRAGMA data_version");
  if (!version.ok()) return version.status();
  absl::StatusOr<std::unique_ptr<Transaction>> tx =
      Transaction::Begin(db_.get(), Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();

  units_.clear();
  unit_by_code_.clear();
  children_.clear();
  users_.clear();
  user_by_name_.clear();
  tokens_.clear();

  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT id, code, name, level, parent_id, effective_from_ms FROM org_units");
  if (!stmt.ok()) return stmt.status();
  {
    ResetOnExit reset(*stmt);
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      CacheOrgUnitLocked(ReadOrgUnit(**stmt));
    }
  }

  stmt = db_->Prepare(
      "SELECT id, username, display_name, role, password_hash, active, phone FROM users");
  if (!stmt.ok()) return stmt.status();
  {
    ResetOnExit reset(*stmt);
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      UserEntry entry;
      entry.user.set_id((*stmt)->ColumnInt(0));
      entry.user.set_username(std::string((*stmt)->ColumnText(1)));
      entry.user.set_display_name(std::string((*stmt)->ColumnText(2)));
      entry.user.set_role(static_cast<Role>((*stmt)->ColumnInt(3)));
      entry.password_hash = std::string((*stmt)->ColumnText(4));
      entry.user.set_active((*stmt)->ColumnInt(5) != 0);
      entry.user.set_phone(std::string((*stmt)->ColumnText(6)));
      user_by_name_[entry.user.username()] = entry.user.id();
      users_[entry.user.id()] = std::move(entry);
    }
  }

  stmt =
      db_->Prepare("SELECT user_id, org_unit_id FROM user_org_units ORDER BY user_id, org_unit_id");
  if (!stmt.ok()) return stmt.status();
  {
    ResetOnExit reset(*stmt);
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      auto it = users_.find((*stmt)->ColumnInt(0));
      if (it != users_.end()) it->second.user.add_org_unit_ids((*stmt)->ColumnInt(1));
    }
  }

  stmt = db_->Prepare("SELECT hash, user_id, expires_ms FROM tokens WHERE expires_ms > ?1");
  if (!stmt.ok()) return stmt.status();
  {
    ResetOnExit reset(*stmt);
    (*stmt)->BindInt(1, options_.clock->NowMs());
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      tokens_[std::string((*stmt)->ColumnBlob(0))] =
          TokenEntry{(*stmt)->ColumnInt(1), (*stmt)->ColumnInt(2)};
    }
  }
  // Lock-outs stored by this or another server process. Streaks of usernames that do not
  // exist live in memory only, and are forgotten here.
  failures_.clear();
  stmt = db_->Prepare(
      "SELECT username, failures, last_failure_ms, locked_until_ms FROM sign_in_failures");
  if (!stmt.ok()) return stmt.status();
  {
    ResetOnExit reset(*stmt);
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      FailureEntry& entry = failures_[std::string((*stmt)->ColumnText(0))];
      entry.failures = static_cast<int>((*stmt)->ColumnInt(1));
      entry.last_failure_ms = (*stmt)->ColumnInt(2);
      entry.locked_until_ms = (*stmt)->ColumnInt(3);
      entry.stored = true;
    }
  }
  data_version_ = *version;
  return (*tx)->Commit();
}

absl::Status Directory::RefreshLocked() {
  absl::StatusOr<int64_t> version = db_->QueryInt("PRAGMA data_version");
  if (!version.ok()) return version.status();
  if (*version == data_version_) return absl::OkStatus();
  return LoadLocked();
}

void Directory::CacheOrgUnitLocked(const OrgUnit& unit) {
  unit_by_code_[unit.code()] = unit.id();
  children_[unit.parent_id()].push_back(unit.id());
  units_[unit.id()] = unit;
}

// ---- Org units -----------------------------------------------------------------------

absl::StatusOr<OrgUnit> Directory::GetOrgUnit(int64_t id) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  auto it = units_.find(id);
  if (it == units_.end()) return absl::NotFoundError(absl::StrCat("org_unit_id: no org unit ", id));
  return it->second;
}

absl::StatusOr<OrgUnit> Directory::FindByCode(absl::string_view code) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  auto it = unit_by_code_.find(code);
  if (it == unit_by_code_.end()) {
    return absl::NotFoundError(absl::StrCat("code: no org unit with code '", code, "'"));
  }
  return units_.at(it->second);
}

absl::StatusOr<std::vector<OrgUnit>> Directory::ListChildren(int64_t parent_id) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  if (parent_id != 0 && !units_.contains(parent_id)) {
    return absl::NotFoundError(absl::StrCat("parent_id: no org unit ", parent_id));
  }
  std::vector<OrgUnit> result;
  auto it = children_.find(parent_id);
  if (it != children_.end()) {
    for (int64_t child : it->second) result.push_back(units_.at(child));
  }
  std::sort(result.begin(), result.end(),
            [](const OrgUnit& a, const OrgUnit& b) { return a.code() < b.code(); });
  return result;
}

bool Directory::IsWithinLocked(int64_t unit_id, int64_t root_id) {
  if (!units_.contains(root_id)) return false;
  // Levels grow strictly downwards, so the walk up ends after a few steps.
  int64_t current = unit_id;
  while (current != 0) {
    if (current == root_id) return true;
    auto it = units_.find(current);
    if (it == units_.end()) return false;
    current = it->second.parent_id();
  }
  return false;
}

bool Directory::IsWithin(int64_t unit_id, int64_t root_id) {
  absl::MutexLock lock(&mu_);
  // On a storage error the cached tree is still the best answer.
  RefreshLocked().IgnoreError();
  return IsWithinLocked(unit_id, root_id);
}

std::vector<int64_t> Directory::SubtreeLocked(const std::vector<int64_t>& roots) {
  std::vector<int64_t> result;
  std::vector<int64_t> pending(roots.begin(), roots.end());
  absl::flat_hash_set<int64_t> seen;
  while (!pending.empty()) {
    const int64_t id = pending.back();
    pending.pop_back();
    if (!seen.insert(id).second) continue;
    result.push_back(id);
    auto it = children_.find(id);
    if (it != children_.end()) pending.insert(pending.end(), it->second.begin(), it->second.end());
  }
  std::sort(result.begin(), result.end());
  return result;
}

absl::StatusOr<std::vector<int64_t>> Directory::Subtree(const std::vector<int64_t>& roots) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  for (int64_t root : roots) {
    if (!units_.contains(root)) {
      return absl::NotFoundError(absl::StrCat("org_unit_ids: no org unit ", root));
    }
  }
  return SubtreeLocked(roots);
}

absl::StatusOr<std::vector<int64_t>> Directory::Communes(const std::vector<int64_t>& roots) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  for (int64_t root : roots) {
    if (!units_.contains(root)) {
      return absl::NotFoundError(absl::StrCat("org_unit_ids: no org unit ", root));
    }
  }
  std::vector<int64_t> result;
  for (int64_t id : SubtreeLocked(roots)) {
    if (units_.at(id).level() == v1::ORG_UNIT_LEVEL_COMMUNE) result.push_back(id);
  }
  return result;
}

size_t Directory::OrgUnitCount() {
  absl::MutexLock lock(&mu_);
  RefreshLocked().IgnoreError();
  return units_.size();
}

absl::Status Directory::CheckNewOrgUnitLocked(absl::string_view code, absl::string_view name,
                                              OrgUnitLevel level, const OrgUnit* parent) {
  absl::Status status = CheckCode(code);
  if (!status.ok()) return status;
  status = CheckText("name", name);
  if (!status.ok()) return status;
  if (!v1::OrgUnitLevel_IsValid(level) || level == v1::ORG_UNIT_LEVEL_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat("level: unknown level ", level));
  }
  if (parent != nullptr && level <= parent->level()) {
    return absl::InvalidArgumentError(
        absl::StrCat("level: a ", LevelName(level), " cannot be placed under a ",
                     LevelName(parent->level()), " ('", parent->code(), "')"));
  }
  auto it = unit_by_code_.find(code);
  if (it != unit_by_code_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("code: '", code, "' is already used by org unit ",
                                                 it->second, " (", units_.at(it->second).name(),
                                                 ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<OrgUnit> Directory::InsertOrgUnitLocked(absl::string_view code,
                                                       absl::string_view name, OrgUnitLevel level,
                                                       int64_t parent_id, int64_t now_ms) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "INSERT INTO org_units(code, name, level, parent_id, effective_from_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!stmt.ok()) return stmt.status();
  ResetOnExit reset(*stmt);
  (*stmt)->BindText(1, code);
  (*stmt)->BindText(2, name);
  (*stmt)->BindInt(3, level);
  if (parent_id == 0) {
    (*stmt)->BindNull(4);
  } else {
    (*stmt)->BindInt(4, parent_id);
  }
  (*stmt)->BindInt(5, now_ms);
  absl::Status status = (*stmt)->Run();
  if (!status.ok()) return status;
  OrgUnit unit;
  unit.set_id(db_->LastInsertRowId());
  unit.set_parent_id(parent_id);
  unit.set_code(std::string(code));
  unit.set_name(std::string(name));
  unit.set_level(level);
  unit.set_effective_from_ms(now_ms);
  return unit;
}

absl::StatusOr<OrgUnit> Directory::CreateOrgUnit(absl::string_view code, absl::string_view name,
                                                 OrgUnitLevel level, int64_t parent_id) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  const OrgUnit* parent = nullptr;
  if (parent_id != 0) {
    auto it = units_.find(parent_id);
    if (it == units_.end()) {
      return absl::NotFoundError(absl::StrCat("parent_id: no org unit ", parent_id));
    }
    parent = &it->second;
  }
  status = CheckNewOrgUnitLocked(code, name, level, parent);
  if (!status.ok()) return status;
  absl::StatusOr<OrgUnit> unit =
      InsertOrgUnitLocked(code, name, level, parent_id, options_.clock->NowMs());
  if (!unit.ok()) return unit.status();
  CacheOrgUnitLocked(*unit);
  return unit;
}

absl::StatusOr<std::vector<OrgUnit>> Directory::AddOrgUnits(const std::vector<NewOrgUnit>& units) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;

  absl::flat_hash_map<absl::string_view, size_t> index;
  for (size_t i = 0; i < units.size(); ++i) {
    if (!index.emplace(units[i].code, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("org unit '", units[i].code, "': code: listed twice"));
    }
  }

  // Parents first: walk each unit's chain of parents inside the batch. State 1 marks the
  // chain being walked (meeting it again is a cycle), 2 a unit already ordered.
  std::vector<int> state(units.size(), 0);
  std::vector<size_t> order;
  order.reserve(units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    std::vector<size_t> chain;
    size_t current = i;
    bool cycle = false;
    while (true) {
      if (state[current] == 2) break;
      if (state[current] == 1) {
        cycle = true;
        break;
      }
      state[current] = 1;
      chain.push_back(current);
      auto it = index.find(units[current].parent_code);
      if (units[current].parent_code.empty() || it == index.end()) break;
      current = it->second;
    }
    if (cycle) {
      return absl::InvalidArgumentError(absl::StrCat("org unit '", units[current].code,
                                                     "': parent_code: its parents form a cycle"));
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      state[*it] = 2;
      order.push_back(*it);
    }
  }

  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  const int64_t now_ms = options_.clock->NowMs();
  std::vector<OrgUnit> added(units.size());
  for (size_t i : order) {
    const NewOrgUnit& spec = units[i];
    const OrgUnit* parent = nullptr;
    if (!spec.parent_code.empty()) {
      auto in_batch = index.find(spec.parent_code);
      if (in_batch != index.end()) {
        parent = &added[in_batch->second];
      } else {
        auto in_directory = unit_by_code_.find(spec.parent_code);
        if (in_directory == unit_by_code_.end()) {
          return absl::NotFoundError(absl::StrCat("org unit '", spec.code,
                                                  "': parent_code: no org unit with code '",
                                                  spec.parent_code, "'"));
        }
        parent = &units_.at(in_directory->second);
      }
    }
    status = CheckNewOrgUnitLocked(spec.code, spec.name, spec.level, parent);
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("org unit '", spec.code, "': ", status.message()));
    }
    absl::StatusOr<OrgUnit> unit = InsertOrgUnitLocked(
        spec.code, spec.name, spec.level, parent == nullptr ? 0 : parent->id(), now_ms);
    if (!unit.ok()) return unit.status();
    added[i] = *std::move(unit);
  }
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  for (size_t i : order) CacheOrgUnitLocked(added[i]);
  return added;
}

// ---- Users ---------------------------------------------------------------------------

absl::StatusOr<std::string> Directory::HashPassword(absl::string_view password) const {
  char hash[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(hash, password.data(), password.size(), options_.password_ops_limit,
                        options_.password_mem_limit) != 0) {
    return absl::ResourceExhaustedError("password hashing ran out of memory");
  }
  return std::string(hash);
}

const std::string& Directory::DummyHash() {
  std::call_once(dummy_once_, [this] {
    absl::StatusOr<std::string> hash = HashPassword("no password matches this one");
    dummy_hash_ = hash.ok() ? *std::move(hash) : std::string();
  });
  return dummy_hash_;
}

absl::Status Directory::CheckAssignmentLocked(Role role, const std::vector<int64_t>& units) {
  if (!v1::Role_IsValid(role) || role == v1::ROLE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat("role: must be one of commune_collaborator, "
                     "district_coordinator, province_officer, "
                     "administrator (got ",
                     role, ")"));
  }
  if (units.empty()) {
    return absl::InvalidArgumentError("org_unit_ids: at least one org unit is required");
  }
  for (int64_t id : units) {
    if (!units_.contains(id)) {
      return absl::NotFoundError(absl::StrCat("org_unit_ids: no org unit ", id));
    }
  }
  return absl::OkStatus();
}

absl::Status Directory::WriteAssignmentLocked(int64_t user_id, const std::vector<int64_t>& units) {
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM user_org_units WHERE user_id = ?1");
  if (!del.ok()) return del.status();
  {
    ResetOnExit reset(*del);
    (*del)->BindInt(1, user_id);
    absl::Status status = (*del)->Run();
    if (!status.ok()) return status;
  }
  absl::StatusOr<Statement*> insert =
      db_->Prepare("INSERT INTO user_org_units(user_id, org_unit_id) VALUES (?1, ?2)");
  if (!insert.ok()) return insert.status();
  for (int64_t unit : units) {
    ResetOnExit reset(*insert);
    (*insert)->BindInt(1, user_id);
    (*insert)->BindInt(2, unit);
    absl::Status status = (*insert)->Run();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<User> Directory::CreateUser(absl::string_view username,
                                           absl::string_view display_name,
                                           absl::string_view password, Role role,
                                           const std::vector<int64_t>& org_unit_ids,
                                           absl::string_view phone, const AuditActor& by) {
  absl::Status status = CheckUsername(username);
  if (!status.ok()) return status;
  status = CheckText("display_name", display_name);
  if (!status.ok()) return status;
  status = CheckPassword(password);
  if (!status.ok()) return status;
  status = CheckPhone(phone);
  if (!status.ok()) return status;
  const std::vector<int64_t> units = SortedUnique(org_unit_ids);
  {
    // Fail fast, before the slow hashing.
    absl::MutexLock lock(&mu_);
    status = RefreshLocked();
    if (!status.ok()) return status;
    status = CheckAssignmentLocked(role, units);
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::string> hash = HashPassword(password);
  if (!hash.ok()) return hash.status();

  absl::MutexLock lock(&mu_);
  status = RefreshLocked();
  if (!status.ok()) return status;
  if (user_by_name_.contains(username)) {
    return absl::AlreadyExistsError(absl::StrCat("username: '", username, "' is already taken"));
  }
  status = CheckAssignmentLocked(role, units);
  if (!status.ok()) return status;

  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  const int64_t now_ms = options_.clock->NowMs();
  absl::StatusOr<Statement*> insert = db_->Prepare(
      "INSERT INTO users(username, display_name, role, password_hash, active, created_ms, "
      "updated_ms, phone) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6)");
  if (!insert.ok()) return insert.status();
  {
    ResetOnExit reset(*insert);
    (*insert)->BindText(1, username);
    (*insert)->BindText(2, display_name);
    (*insert)->BindInt(3, role);
    (*insert)->BindText(4, *hash);
    (*insert)->BindInt(5, now_ms);
    (*insert)->BindText(6, std::string(phone));  // never NULL, also when empty
    status = (*insert)->Run();
    if (!status.ok()) return status;
  }
  const int64_t id = db_->LastInsertRowId();
  status = WriteAssignmentLocked(id, units);
  if (!status.ok()) return status;
  status = AuditLocked(by, "create_user", id,
                       absl::StrCat("username: ", username, "; role: ", RoleName(role),
                                    "; org_unit_ids: ", UnitList(units)));
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;

  UserEntry entry;
  entry.user.set_id(id);
  entry.user.set_username(std::string(username));
  entry.user.set_display_name(std::string(display_name));
  entry.user.set_role(role);
  entry.user.set_phone(std::string(phone));
  entry.user.set_active(true);
  for (int64_t unit : units) entry.user.add_org_unit_ids(unit);
  entry.password_hash = *std::move(hash);
  user_by_name_[entry.user.username()] = id;
  User result = entry.user;
  users_[id] = std::move(entry);
  return result;
}

absl::StatusOr<User> Directory::AssignUser(int64_t user_id, Role role,
                                           const std::vector<int64_t>& org_unit_ids,
                                           const AuditActor& by) {
  const std::vector<int64_t> units = SortedUnique(org_unit_ids);
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id);
  if (!found.ok()) return found.status();
  status = CheckAssignmentLocked(role, units);
  if (!status.ok()) return status;

  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> update =
      db_->Prepare("UPDATE users SET role = ?1, updated_ms = ?2 WHERE id = ?3");
  if (!update.ok()) return update.status();
  {
    ResetOnExit reset(*update);
    (*update)->BindInt(1, role);
    (*update)->BindInt(2, options_.clock->NowMs());
    (*update)->BindInt(3, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status = WriteAssignmentLocked(user_id, units);
  if (!status.ok()) return status;
  {
    const User& before = (*found)->user;
    const std::vector<int64_t> old_units(before.org_unit_ids().begin(),
                                         before.org_unit_ids().end());
    status =
        AuditLocked(by, "assign_user", user_id,
                    absl::StrCat("role: ", RoleName(before.role()), " -> ", RoleName(role),
                                 "; org_unit_ids: ", UnitList(old_units), " -> ", UnitList(units)));
    if (!status.ok()) return status;
  }
  status = (*tx)->Commit();
  if (!status.ok()) return status;

  User& user = (*found)->user;
  user.set_role(role);
  user.clear_org_unit_ids();
  for (int64_t unit : units) user.add_org_unit_ids(unit);
  return user;
}

absl::Status Directory::RevokeTokensLocked(int64_t user_id) {
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM tokens WHERE user_id = ?1");
  if (!del.ok()) return del.status();
  ResetOnExit reset(*del);
  (*del)->BindInt(1, user_id);
  return (*del)->Run();
}

absl::Status Directory::ResetPassword(int64_t user_id, absl::string_view new_password,
                                      const AuditActor& by) {
  absl::Status status = CheckPassword(new_password);
  if (!status.ok()) return status;
  {
    absl::MutexLock lock(&mu_);
    status = RefreshLocked();
    if (!status.ok()) return status;
    if (!users_.contains(user_id)) {
      return absl::NotFoundError(absl::StrCat("user_id: no user ", user_id));
    }
  }
  absl::StatusOr<std::string> hash = HashPassword(new_password);
  if (!hash.ok()) return hash.status();

  absl::MutexLock lock(&mu_);
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> update =
      db_->Prepare("UPDATE users SET password_hash = ?1, updated_ms = ?2 WHERE id = ?3");
  if (!update.ok()) return update.status();
  {
    ResetOnExit reset(*update);
    (*update)->BindText(1, *hash);
    (*update)->BindInt(2, options_.clock->NowMs());
    (*update)->BindInt(3, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status = RevokeTokensLocked(user_id);
  if (!status.ok()) return status;
  // A tablet that knew the old password must not renew its tokens for months either.
  absl::StatusOr<int> credentials = RevokeDeviceCredentialsLocked("", user_id, by.user_id);
  if (!credentials.ok()) return credentials.status();
  status = ClearFailuresLocked((*found)->user.username());
  if (!status.ok()) return status;
  status = AuditLocked(by, "reset_password", user_id,
                       absl::StrCat("password replaced; tokens and ", *credentials,
                                    " device credential(s) revoked"));
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;

  (*found)->password_hash = *std::move(hash);
  absl::erase_if(tokens_, [user_id](const auto& entry) { return entry.second.user_id == user_id; });
  return absl::OkStatus();
}

absl::Status Directory::DeactivateUser(int64_t user_id, const AuditActor& by) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> update =
      db_->Prepare("UPDATE users SET active = 0, updated_ms = ?1 WHERE id = ?2");
  if (!update.ok()) return update.status();
  {
    ResetOnExit reset(*update);
    (*update)->BindInt(1, options_.clock->NowMs());
    (*update)->BindInt(2, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status = RevokeTokensLocked(user_id);
  if (!status.ok()) return status;
  status = AuditLocked(by, "deactivate_user", user_id, "active: true -> false; tokens revoked");
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;

  (*found)->user.set_active(false);
  absl::erase_if(tokens_, [user_id](const auto& entry) { return entry.second.user_id == user_id; });
  return absl::OkStatus();
}

absl::Status Directory::ActivateUser(int64_t user_id, const AuditActor& by) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> update =
      db_->Prepare("UPDATE users SET active = 1, updated_ms = ?1 WHERE id = ?2");
  if (!update.ok()) return update.status();
  {
    ResetOnExit reset(*update);
    (*update)->BindInt(1, options_.clock->NowMs());
    (*update)->BindInt(2, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status =
      AuditLocked(by, "activate_user", user_id,
                  absl::StrCat("active: ", (*found)->user.active() ? "true" : "false", " -> true"));
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  (*found)->user.set_active(true);
  return absl::OkStatus();
}

absl::StatusOr<User> Directory::UpdateProfile(int64_t user_id, absl::string_view display_name,
                                              absl::string_view phone, const AuditActor& by) {
  absl::Status status = CheckText("display_name", display_name);
  if (!status.ok()) return status;
  status = CheckPhone(phone);
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> update =
      db_->Prepare("UPDATE users SET display_name = ?1, phone = ?2, updated_ms = ?3 WHERE id = ?4");
  if (!update.ok()) return update.status();
  {
    ResetOnExit reset(*update);
    (*update)->BindText(1, display_name);
    (*update)->BindText(2, std::string(phone));
    (*update)->BindInt(3, options_.clock->NowMs());
    (*update)->BindInt(4, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status = AuditLocked(
      by, "update_profile", user_id,
      absl::StrCat("display_name: '", (*found)->user.display_name(), "' -> '", display_name,
                   "'; phone: '", (*found)->user.phone(), "' -> '", phone, "'"));
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  (*found)->user.set_display_name(std::string(display_name));
  (*found)->user.set_phone(std::string(phone));
  return (*found)->user;
}

absl::StatusOr<Directory::UserEntry*> Directory::FindUserLocked(int64_t user_id) {
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  auto it = users_.find(user_id);
  if (it == users_.end()) return absl::NotFoundError(absl::StrCat("user_id: no user ", user_id));
  return &it->second;
}

absl::StatusOr<User> Directory::GetUser(int64_t id) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(id);
  if (!found.ok()) return found.status();
  return (*found)->user;
}

absl::StatusOr<User> Directory::FindUser(absl::string_view username) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  auto it = user_by_name_.find(username);
  if (it == user_by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("username: no user '", username, "'"));
  }
  return users_.at(it->second).user;
}

absl::StatusOr<std::vector<User>> Directory::ListUsers(const UserFilter& filter) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  for (int64_t root : filter.within) {
    if (!units_.contains(root)) {
      return absl::NotFoundError(absl::StrCat("within: no org unit ", root));
    }
  }
  std::vector<User> result;
  for (const auto& [id, entry] : users_) {
    if (!filter.include_inactive && !entry.user.active()) continue;
    bool inside = filter.within.empty();
    for (int64_t unit : entry.user.org_unit_ids()) {
      for (int64_t root : filter.within) inside = inside || IsWithinLocked(unit, root);
    }
    if (inside) result.push_back(entry.user);
  }
  std::sort(result.begin(), result.end(),
            [](const User& a, const User& b) { return a.username() < b.username(); });
  return result;
}

// ---- Sign-in and tokens --------------------------------------------------------------

absl::Status Directory::RecordFailureLocked(const std::string& username, int64_t now_ms) {
  if (failures_.size() >= kMaxTrackedUsernames) {
    absl::erase_if(failures_, [now_ms](const auto& entry) {
      return now_ms - entry.second.last_failure_ms > kFailureMemoryMs &&
             entry.second.locked_until_ms <= now_ms;
    });
  }
  FailureEntry& entry = failures_[username];
  if (now_ms - entry.last_failure_ms > kFailureMemoryMs && entry.locked_until_ms <= now_ms) {
    entry = FailureEntry{.stored = entry.stored};
  }
  ++entry.failures;
  entry.last_failure_ms = now_ms;
  if (entry.failures < options_.lockout_after_failures) return absl::OkStatus();
  const int doublings = std::min(entry.failures - options_.lockout_after_failures, 30);
  const absl::Duration window =
      std::min(options_.lockout_initial * (int64_t{1} << doublings), options_.lockout_max);
  entry.locked_until_ms = now_ms + absl::ToInt64Milliseconds(window);
  // Only a lock-out is written (a short streak may be forgotten at a restart), and only
  // for an existing account: a flood of made-up usernames must not grow the file.
  if (!user_by_name_.contains(username)) return absl::OkStatus();
  absl::StatusOr<Statement*> upsert = db_->Prepare(
      "INSERT OR REPLACE INTO sign_in_failures(username, failures, last_failure_ms, "
      "locked_until_ms) VALUES (?1, ?2, ?3, ?4)");
  if (!upsert.ok()) return upsert.status();
  ResetOnExit reset(*upsert);
  (*upsert)->BindText(1, username);
  (*upsert)->BindInt(2, entry.failures);
  (*upsert)->BindInt(3, entry.last_failure_ms);
  (*upsert)->BindInt(4, entry.locked_until_ms);
  absl::Status status = (*upsert)->Run();
  if (!status.ok()) return status;
  entry.stored = true;
  return absl::OkStatus();
}

absl::Status Directory::ClearFailuresLocked(const std::string& username) {
  auto it = failures_.find(username);
  if (it == failures_.end()) return absl::OkStatus();
  if (it->second.stored) {
    absl::StatusOr<Statement*> del =
        db_->Prepare("DELETE FROM sign_in_failures WHERE username = ?1");
    if (!del.ok()) return del.status();
    ResetOnExit reset(*del);
    (*del)->BindText(1, username);
    absl::Status status = (*del)->Run();
    if (!status.ok()) return status;
  }
  failures_.erase(it);
  return absl::OkStatus();
}

absl::Status Directory::AuditLocked(const AuditActor& by, absl::string_view action, int64_t target,
                                    absl::string_view details) {
  absl::StatusOr<Statement*> insert = db_->Prepare(
      "INSERT INTO audit(at_ms, actor_id, actor, action, target_user_id, details) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!insert.ok()) return insert.status();
  ResetOnExit reset(*insert);
  (*insert)->BindInt(1, options_.clock->NowMs());
  (*insert)->BindInt(2, by.user_id);
  (*insert)->BindText(3, by.username);
  (*insert)->BindText(4, action);
  (*insert)->BindInt(5, target);
  (*insert)->BindText(6, details);
  return (*insert)->Run();
}

absl::StatusOr<std::vector<AuditEntry>> Directory::ListAudit(int64_t after_id, size_t limit) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "SELECT id, at_ms, actor_id, actor, action, target_user_id, details FROM audit "
      "WHERE id > ?1 ORDER BY id LIMIT ?2");
  if (!stmt.ok()) return stmt.status();
  ResetOnExit reset(*stmt);
  (*stmt)->BindInt(1, after_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<AuditEntry> out;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    AuditEntry e;
    e.id = (*stmt)->ColumnInt(0);
    e.at_ms = (*stmt)->ColumnInt(1);
    e.actor_id = (*stmt)->ColumnInt(2);
    e.actor = std::string((*stmt)->ColumnText(3));
    e.action = std::string((*stmt)->ColumnText(4));
    e.target_user_id = (*stmt)->ColumnInt(5);
    e.details = std::string((*stmt)->ColumnText(6));
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status Directory::DeleteExpiredTokensLocked(int64_t now_ms) {
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM tokens WHERE expires_ms <= ?1");
  if (!del.ok()) return del.status();
  ResetOnExit reset(*del);
  (*del)->BindInt(1, now_ms);
  absl::Status status = (*del)->Run();
  if (!status.ok()) return status;
  absl::erase_if(tokens_,
                 [now_ms](const auto& entry) { return entry.second.expires_ms <= now_ms; });
  return absl::OkStatus();
}

absl::StatusOr<LoginResult> Directory::Login(absl::string_view username,
                                             absl::string_view password) {
  // Lock-out entries are keyed by at most 64 bytes of what was typed.
  const std::string key(username.substr(0, 64));
  std::string stored_hash;
  int64_t user_id = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::Status status = RefreshLocked();
    if (!status.ok()) return status;
    const int64_t now_ms = options_.clock->NowMs();
    auto failure = failures_.find(key);
    if (failure != failures_.end() && failure->second.locked_until_ms > now_ms) {
      const absl::Time until = absl::FromUnixMillis(failure->second.locked_until_ms);
      const int64_t wait_s = (failure->second.locked_until_ms - now_ms + 999) / 1000;
      return absl::ResourceExhaustedError(
          absl::StrCat("too many failed sign-ins for '", key, "'; try again after ",
                       absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", until, absl::UTCTimeZone()), " (in ",
                       wait_s, " s)"));
    }
    // Counted now, before the hash: parallel guesses each see the ones before them, so at
    // most lockout_after_failures of them reach the password check. A right password
    // clears the streak below.
    status = RecordFailureLocked(key, now_ms);
    if (!status.ok()) return status;
    auto it = user_by_name_.find(username);
    if (it != user_by_name_.end()) {
      user_id = it->second;
      stored_hash = users_.at(user_id).password_hash;
    }
  }

  // The slow part, outside the lock. Unknown usernames verify against a dummy hash, so
  // that they take as long as known ones.
  const bool known = user_id != 0;
  const bool password_ok = VerifyPassword(known ? stored_hash : DummyHash(), password) && known;
  std::string new_hash;
  if (password_ok &&
      crypto_pwhash_str_needs_rehash(stored_hash.c_str(), options_.password_ops_limit,
                                     options_.password_mem_limit) != 0) {
    absl::StatusOr<std::string> rehash = HashPassword(password);
    if (rehash.ok()) new_hash = *std::move(rehash);
  }

  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  const int64_t now_ms = options_.clock->NowMs();
  auto user = users_.find(user_id);
  // The password must still be the one checked (a reset may have raced with us).
  if (!password_ok || user == users_.end() || user->second.password_hash != stored_hash) {
    return absl::UnauthenticatedError(kBadCredentials);  // counted before the hash
  }
  status = ClearFailuresLocked(key);
  if (!status.ok()) return status;
  if (!user->second.user.active()) {
    return absl::UnauthenticatedError(
        absl::StrCat("account '", user->second.user.username(), "' is deactivated"));
  }

  if (now_ms - last_token_sweep_ms_ > kTokenSweepIntervalMs) {
    status = DeleteExpiredTokensLocked(now_ms);
    if (!status.ok()) return status;
    last_token_sweep_ms_ = now_ms;
  }
  LoginResult result;
  result.token = internal::NewSecret();
  result.expires_ms = now_ms + absl::ToInt64Milliseconds(options_.token_ttl);
  const std::string token_hash = Sha256(result.token);

  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> insert = db_->Prepare(
      "INSERT INTO tokens(hash, user_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)");
  if (!insert.ok()) return insert.status();
  {
    ResetOnExit reset(*insert);
    (*insert)->BindBlob(1, token_hash);
    (*insert)->BindInt(2, user_id);
    (*insert)->BindInt(3, now_ms);
    (*insert)->BindInt(4, result.expires_ms);
    status = (*insert)->Run();
    if (!status.ok()) return status;
  }
  if (!new_hash.empty()) {
    absl::StatusOr<Statement*> update =
        db_->Prepare("UPDATE users SET password_hash = ?1 WHERE id = ?2");
    if (!update.ok()) return update.status();
    ResetOnExit reset(*update);
    (*update)->BindText(1, new_hash);
    (*update)->BindInt(2, user_id);
    status = (*update)->Run();
    if (!status.ok()) return status;
  }
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  if (!new_hash.empty()) user->second.password_hash = std::move(new_hash);
  tokens_[token_hash] = TokenEntry{user_id, result.expires_ms};
  result.user = user->second.user;
  return result;
}

absl::StatusOr<Principal> Directory::Authenticate(absl::string_view token) {
  if (token.empty()) return absl::UnauthenticatedError("missing token");
  const std::string token_hash = Sha256(token);
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  auto it = tokens_.find(token_hash);
  if (it == tokens_.end()) {
    return absl::UnauthenticatedError("invalid token (unknown, revoked or signed out)");
  }
  if (it->second.expires_ms <= options_.clock->NowMs()) {
    return absl::UnauthenticatedError("token expired; sign in again");
  }
  auto user = users_.find(it->second.user_id);
  if (user == users_.end() || !user->second.user.active()) {
    return absl::UnauthenticatedError("the token's user is deactivated");
  }
  Principal principal;
  principal.user_id = user->second.user.id();
  principal.username = user->second.user.username();
  principal.role = user->second.user.role();
  principal.org_unit_ids.assign(user->second.user.org_unit_ids().begin(),
                                user->second.user.org_unit_ids().end());
  return principal;
}

absl::Status Directory::Logout(absl::string_view token) {
  const std::string token_hash = Sha256(token);
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM tokens WHERE hash = ?1");
  if (!del.ok()) return del.status();
  {
    ResetOnExit reset(*del);
    (*del)->BindBlob(1, token_hash);
    status = (*del)->Run();
    if (!status.ok()) return status;
  }
  tokens_.erase(token_hash);
  return absl::OkStatus();
}

}  // namespace kcnet::server
