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

using ::kcnet::v1::OrgUnit;
using ::kcnet::v1::OrgUnitLevel;
using ::kcnet::v1::Role;
using ::kcnet::v1::User;

static_assert(kArgon2OpsLimitInteractive == crypto_pwhash_OPSLIMIT_INTERACTIVE);
static_assert(kArgon2MemLimitInteractive == crypto_pwhash_MEMLIMIT_INTERACTIVE);
static_assert(kArgon2OpsLimitMin == crypto_pwhash_OPSLIMIT_MIN);
static_assert(kArgon2MemLimitMin == crypto_pwhash_MEMLIMIT_MIN);

constexpr size_t kMaxCodeBytes = 32;
constexpr size_t kMaxNameBytes = 200;
constexpr size_t kMinPasswordBytes = 8;
constexpr size_t kMaxPasswordBytes = 1024;
constexpr size_t kMaxTrackedUsernames = 10000;
constexpr int64_t kTokenSweepIntervalMs = 3600 * 1000;
// A failure streak older than this is forgotten.
constexpr int64_t kFailureMemoryMs = 15 * 60 * 1000;
constexpr absl::string_view kBadCredentials = "wrong username or password";

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

OrgUnit ReadOrgUnit(const DirRows& rows, size_t row) {
  OrgUnit unit;
  unit.set_id(rows.Int(row, 0));
  unit.set_code(rows.Text(row, 1));
  unit.set_name(rows.Text(row, 2));
  unit.set_level(static_cast<OrgUnitLevel>(rows.Int(row, 3)));
  unit.set_parent_id(rows.IsNull(row, 4) ? 0 : rows.Int(row, 4));
  unit.set_effective_from_ms(rows.Int(row, 5));
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

Directory::Directory(std::unique_ptr<DirectoryStore> store, DirectoryOptions options)
    : options_(std::move(options)), store_(std::move(store)) {}

Directory::~Directory() = default;

absl::StatusOr<std::unique_ptr<Directory>> Directory::Open(const std::string& path,
                                                           DirectoryOptions options) {
  absl::StatusOr<std::unique_ptr<DirectoryStore>> store = OpenSqliteDirectoryStore(path);
  if (!store.ok()) return store.status();
  return Open(*std::move(store), std::move(options));
}

absl::StatusOr<std::unique_ptr<Directory>> Directory::Open(std::unique_ptr<DirectoryStore> store,
                                                           DirectoryOptions options) {
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock: must not be null");
  if (store == nullptr) return absl::InvalidArgumentError("store: must not be null");
  std::unique_ptr<Directory> directory(new Directory(std::move(store), std::move(options)));
  absl::MutexLock lock(&directory->mu_);
  absl::Status status = directory->store_->Migrate();
  if (!status.ok()) return status;
  status = directory->LoadLocked();
  if (!status.ok()) return status;
  return directory;
}

absl::Status Directory::LoadLocked() {
  // Read the version first: a commit racing with the load then triggers one more reload.
  absl::StatusOr<int64_t> version = store_->Version();
  if (!version.ok()) return version.status();
  last_version_check_ = absl::Now();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx =
      DirTransaction::Begin(store_.get(), /*read_only=*/true);
  if (!tx.ok()) return tx.status();

  units_.clear();
  unit_by_code_.clear();
  children_.clear();
  users_.clear();
  user_by_name_.clear();
  tokens_.clear();

  absl::StatusOr<DirRows> rows =
      store_->Query("SELECT id, code, name, level, parent_id, effective_from_ms FROM org_units");
  if (!rows.ok()) return rows.status();
  for (size_t r = 0; r < rows->size(); ++r) CacheOrgUnitLocked(ReadOrgUnit(*rows, r));

  rows = store_->Query(
      "SELECT id, username, display_name, role, password_hash, active, phone FROM users");
  if (!rows.ok()) return rows.status();
  for (size_t r = 0; r < rows->size(); ++r) {
    UserEntry entry;
    entry.user.set_id(rows->Int(r, 0));
    entry.user.set_username(rows->Text(r, 1));
    entry.user.set_display_name(rows->Text(r, 2));
    entry.user.set_role(static_cast<Role>(rows->Int(r, 3)));
    entry.password_hash = rows->Text(r, 4);
    entry.user.set_active(rows->Int(r, 5) != 0);
    entry.user.set_phone(rows->Text(r, 6));
    user_by_name_[entry.user.username()] = entry.user.id();
    users_[entry.user.id()] = std::move(entry);
  }

  rows = store_->Query(
      "SELECT user_id, org_unit_id FROM user_org_units ORDER BY user_id, org_unit_id");
  if (!rows.ok()) return rows.status();
  for (size_t r = 0; r < rows->size(); ++r) {
    auto it = users_.find(rows->Int(r, 0));
    if (it != users_.end()) it->second.user.add_org_unit_ids(rows->Int(r, 1));
  }

  rows = store_->Query("SELECT hash, user_id, expires_ms FROM tokens WHERE expires_ms > ?1",
                       {DirValue::Int(options_.clock->NowMs())});
  if (!rows.ok()) return rows.status();
  for (size_t r = 0; r < rows->size(); ++r) {
    tokens_[rows->Blob(r, 0)] = TokenEntry{rows->Int(r, 1), rows->Int(r, 2)};
  }
  data_version_ = *version;
  return (*tx)->Commit();
}

absl::Status Directory::RefreshLocked(bool force) {
  // A shared store is asked at most every shared_refresh_interval; a file at every call
  // (PRAGMA data_version reads no page).
  if (store_->shared() && !force) {
    const absl::Time now = absl::Now();
    if (now - last_version_check_ < options_.shared_refresh_interval) return absl::OkStatus();
    last_version_check_ = now;
  }
  absl::StatusOr<int64_t> version = store_->Version();
  if (!version.ok()) return version.status();
  if (*version == data_version_) return absl::OkStatus();
  return LoadLocked();
}

absl::StatusOr<int64_t> Directory::MarkChangeLocked() { return store_->BumpVersion(); }

void Directory::ChangeCommittedLocked(int64_t version) {
  // Our own bump, with nobody else's in between: the caches, updated by the caller, are
  // current. Anything else is seen by the next RefreshLocked().
  if (version > 0 && version == data_version_ + 1) data_version_ = version;
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
  if (!units_.contains(id)) {
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
  auto it = units_.find(id);
  if (it == units_.end()) return absl::NotFoundError(absl::StrCat("org_unit_id: no org unit ", id));
  return it->second;
}

absl::StatusOr<absl::flat_hash_map<int64_t, std::string>> Directory::OrgUnitNames(
    const std::vector<int64_t>& ids) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  const bool all_known =
      std::all_of(ids.begin(), ids.end(), [&](int64_t id) { return units_.contains(id); });
  if (!all_known) {
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
  absl::flat_hash_map<int64_t, std::string> names;
  names.reserve(ids.size());
  for (int64_t id : ids) {
    auto it = units_.find(id);
    if (it != units_.end()) names.emplace(id, it->second.name());
  }
  return names;
}

absl::StatusOr<OrgUnit> Directory::FindByCode(absl::string_view code) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  if (!unit_by_code_.contains(code)) {
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
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
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
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
  absl::StatusOr<DirRows> inserted = store_->Query(
      "INSERT INTO org_units(code, name, level, parent_id, effective_from_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
      {DirValue::Text(code), DirValue::Text(name), DirValue::Int(level),
       parent_id == 0 ? DirValue::Null() : DirValue::Int(parent_id), DirValue::Int(now_ms)});
  if (absl::IsAlreadyExists(inserted.status())) {
    // Another instance on the shared database took the code since our refresh.
    return absl::AlreadyExistsError(absl::StrCat("code: '", code, "' is already used"));
  }
  if (!inserted.ok()) return inserted.status();
  if (inserted->empty()) return absl::InternalError("org_units: INSERT returned no id");
  OrgUnit unit;
  unit.set_id(inserted->Int(0, 0));
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
  absl::Status status = RefreshLocked(/*force=*/true);  // a write: the latest state
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
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<OrgUnit> unit =
      InsertOrgUnitLocked(code, name, level, parent_id, options_.clock->NowMs());
  if (!unit.ok()) return unit.status();
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);
  CacheOrgUnitLocked(*unit);
  return unit;
}

absl::StatusOr<std::vector<OrgUnit>> Directory::AddOrgUnits(const std::vector<NewOrgUnit>& units) {
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked(/*force=*/true);  // a write: the latest state
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

  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
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
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);
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
  absl::StatusOr<int64_t> done =
      store_->Exec("DELETE FROM user_org_units WHERE user_id = ?1", {DirValue::Int(user_id)});
  if (!done.ok()) return done.status();
  for (int64_t unit : units) {
    done = store_->Exec("INSERT INTO user_org_units(user_id, org_unit_id) VALUES (?1, ?2)",
                        {DirValue::Int(user_id), DirValue::Int(unit)});
    if (!done.ok()) return done.status();
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
    status = RefreshLocked(/*force=*/true);
    if (!status.ok()) return status;
    status = CheckAssignmentLocked(role, units);
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::string> hash = HashPassword(password);
  if (!hash.ok()) return hash.status();

  absl::MutexLock lock(&mu_);
  status = RefreshLocked(/*force=*/true);
  if (!status.ok()) return status;
  if (user_by_name_.contains(username)) {
    return absl::AlreadyExistsError(absl::StrCat("username: '", username, "' is already taken"));
  }
  status = CheckAssignmentLocked(role, units);
  if (!status.ok()) return status;

  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  const int64_t now_ms = options_.clock->NowMs();
  absl::StatusOr<DirRows> inserted = store_->Query(
      "INSERT INTO users(username, display_name, role, password_hash, active, created_ms, "
      "updated_ms, phone) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6) RETURNING id",
      {DirValue::Text(username), DirValue::Text(display_name), DirValue::Int(role),
       DirValue::Text(*hash), DirValue::Int(now_ms),
       DirValue::Text(phone)});  // never NULL, also when empty
  if (absl::IsAlreadyExists(inserted.status())) {
    // Another instance on the shared database took the name since our refresh.
    return absl::AlreadyExistsError(absl::StrCat("username: '", username, "' is already taken"));
  }
  if (!inserted.ok()) return inserted.status();
  if (inserted->empty()) return absl::InternalError("users: INSERT returned no id");
  const int64_t id = inserted->Int(0, 0);
  status = WriteAssignmentLocked(id, units);
  if (!status.ok()) return status;
  status = AuditLocked(by, "create_user", id,
                       absl::StrCat("username: ", username, "; role: ", RoleName(role),
                                    "; org_unit_ids: ", UnitList(units)));
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);

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
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id, /*fresh=*/true);
  if (!found.ok()) return found.status();
  status = CheckAssignmentLocked(role, units);
  if (!status.ok()) return status;

  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done = store_->Exec(
        "UPDATE users SET role = ?1, updated_ms = ?2 WHERE id = ?3",
        {DirValue::Int(role), DirValue::Int(options_.clock->NowMs()), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
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
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);

  User& user = (*found)->user;
  user.set_role(role);
  user.clear_org_unit_ids();
  for (int64_t unit : units) user.add_org_unit_ids(unit);
  return user;
}

absl::Status Directory::RevokeTokensLocked(int64_t user_id) {
  return store_->Exec("DELETE FROM tokens WHERE user_id = ?1", {DirValue::Int(user_id)}).status();
}

absl::Status Directory::ResetPassword(int64_t user_id, absl::string_view new_password,
                                      const AuditActor& by) {
  absl::Status status = CheckPassword(new_password);
  if (!status.ok()) return status;
  {
    absl::MutexLock lock(&mu_);
    status = RefreshLocked(/*force=*/true);
    if (!status.ok()) return status;
    if (!users_.contains(user_id)) {
      return absl::NotFoundError(absl::StrCat("user_id: no user ", user_id));
    }
  }
  absl::StatusOr<std::string> hash = HashPassword(new_password);
  if (!hash.ok()) return hash.status();

  absl::MutexLock lock(&mu_);
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id, /*fresh=*/true);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done = store_->Exec(
        "UPDATE users SET password_hash = ?1, updated_ms = ?2 WHERE id = ?3",
        {DirValue::Text(*hash), DirValue::Int(options_.clock->NowMs()), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
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
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);

  (*found)->password_hash = *std::move(hash);
  absl::erase_if(tokens_, [user_id](const auto& entry) { return entry.second.user_id == user_id; });
  return absl::OkStatus();
}

absl::Status Directory::DeactivateUser(int64_t user_id, const AuditActor& by) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id, /*fresh=*/true);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done =
        store_->Exec("UPDATE users SET active = 0, updated_ms = ?1 WHERE id = ?2",
                     {DirValue::Int(options_.clock->NowMs()), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
  }
  status = RevokeTokensLocked(user_id);
  if (!status.ok()) return status;
  status = AuditLocked(by, "deactivate_user", user_id, "active: true -> false; tokens revoked");
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);

  (*found)->user.set_active(false);
  absl::erase_if(tokens_, [user_id](const auto& entry) { return entry.second.user_id == user_id; });
  return absl::OkStatus();
}

absl::Status Directory::ActivateUser(int64_t user_id, const AuditActor& by) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id, /*fresh=*/true);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done =
        store_->Exec("UPDATE users SET active = 1, updated_ms = ?1 WHERE id = ?2",
                     {DirValue::Int(options_.clock->NowMs()), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
  }
  status =
      AuditLocked(by, "activate_user", user_id,
                  absl::StrCat("active: ", (*found)->user.active() ? "true" : "false", " -> true"));
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);
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
  absl::StatusOr<UserEntry*> found = FindUserLocked(user_id, /*fresh=*/true);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done = store_->Exec(
        "UPDATE users SET display_name = ?1, phone = ?2, updated_ms = ?3 WHERE id = ?4",
        {DirValue::Text(display_name), DirValue::Text(phone),
         DirValue::Int(options_.clock->NowMs()), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
  }
  status = AuditLocked(
      by, "update_profile", user_id,
      absl::StrCat("display_name: '", (*found)->user.display_name(), "' -> '", display_name,
                   "'; phone: '", (*found)->user.phone(), "' -> '", phone, "'"));
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> version = MarkChangeLocked();
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);
  (*found)->user.set_display_name(std::string(display_name));
  (*found)->user.set_phone(std::string(phone));
  return (*found)->user;
}

absl::Status Directory::RefreshOnMissLocked() {
  if (!store_->shared()) return absl::OkStatus();  // a file is checked at every call
  return RefreshLocked(/*force=*/true);
}

absl::StatusOr<Directory::UserEntry*> Directory::FindUserLocked(int64_t user_id, bool fresh) {
  absl::Status status = RefreshLocked(fresh);
  if (!status.ok()) return status;
  if (!users_.contains(user_id)) {
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
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
  if (!user_by_name_.contains(username)) {
    status = RefreshOnMissLocked();
    if (!status.ok()) return status;
  }
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

int64_t Directory::LockedUntilMs(int failures, int64_t now_ms) const {
  if (failures < options_.lockout_after_failures) return 0;
  const int doublings = std::min(failures - options_.lockout_after_failures, 30);
  const absl::Duration window =
      std::min(options_.lockout_initial * (int64_t{1} << doublings), options_.lockout_max);
  return now_ms + absl::ToInt64Milliseconds(window);
}

absl::StatusOr<int64_t> Directory::RecordFailureLocked(const std::string& username,
                                                       int64_t now_ms) {
  if (!user_by_name_.contains(username)) {
    // A made-up username: counted in memory only (this instance), so that a flood of
    // them does not grow the store.
    if (failures_.size() >= kMaxTrackedUsernames) {
      absl::erase_if(failures_, [now_ms](const auto& entry) {
        return now_ms - entry.second.last_failure_ms > kFailureMemoryMs &&
               entry.second.locked_until_ms <= now_ms;
      });
    }
    FailureEntry& entry = failures_[username];
    if (entry.locked_until_ms > now_ms) return entry.locked_until_ms;
    if (now_ms - entry.last_failure_ms > kFailureMemoryMs) entry = FailureEntry{};
    ++entry.failures;
    entry.last_failure_ms = now_ms;
    const int64_t until = LockedUntilMs(entry.failures, now_ms);
    if (until != 0) entry.locked_until_ms = until;
    return 0;
  }
  // An account: the streak lives in the store, counted by one atomic upsert, so that every
  // server instance on a shared store sees the same count and lock-out. An attempt while
  // locked is not counted; a streak whose last failure is old and not locked restarts.
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<DirRows> rows = store_->Query(
      "INSERT INTO sign_in_failures(username, failures, last_failure_ms, locked_until_ms) "
      "VALUES (?1, 1, ?2, 0) ON CONFLICT(username) DO UPDATE SET "
      "failures = CASE WHEN sign_in_failures.locked_until_ms > ?2 "
      "  THEN sign_in_failures.failures "
      "  WHEN ?2 - sign_in_failures.last_failure_ms > ?3 THEN 1 "
      "  ELSE sign_in_failures.failures + 1 END, "
      "last_failure_ms = CASE WHEN sign_in_failures.locked_until_ms > ?2 "
      "  THEN sign_in_failures.last_failure_ms ELSE ?2 END "
      "RETURNING failures, locked_until_ms",
      {DirValue::Text(username), DirValue::Int(now_ms), DirValue::Int(kFailureMemoryMs)});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return absl::InternalError("sign_in_failures: upsert returned no row");
  if (rows->Int(0, 1) > now_ms) return rows->Int(0, 1);  // locked meanwhile
  const int64_t until = LockedUntilMs(static_cast<int>(rows->Int(0, 0)), now_ms);
  if (until != 0) {
    absl::StatusOr<int64_t> done =
        store_->Exec("UPDATE sign_in_failures SET locked_until_ms = ?1 WHERE username = ?2",
                     {DirValue::Int(until), DirValue::Text(username)});
    if (!done.ok()) return done.status();
  }
  absl::Status status = (*tx)->Commit();
  if (!status.ok()) return status;
  return 0;
}

absl::Status Directory::ClearFailuresLocked(const std::string& username) {
  failures_.erase(username);
  if (!user_by_name_.contains(username)) return absl::OkStatus();
  return store_
      ->Exec("DELETE FROM sign_in_failures WHERE username = ?1", {DirValue::Text(username)})
      .status();
}

absl::Status Directory::AuditLocked(const AuditActor& by, absl::string_view action, int64_t target,
                                    absl::string_view details) {
  return store_
      ->Exec(
          "INSERT INTO audit(at_ms, actor_id, actor, action, target_user_id, details) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
          {DirValue::Int(options_.clock->NowMs()), DirValue::Int(by.user_id),
           DirValue::Text(by.username), DirValue::Text(action), DirValue::Int(target),
           DirValue::Text(details)})
      .status();
}

absl::StatusOr<std::vector<AuditEntry>> Directory::ListAudit(int64_t after_id, size_t limit) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<DirRows> rows = store_->Query(
      "SELECT id, at_ms, actor_id, actor, action, target_user_id, details FROM audit "
      "WHERE id > ?1 ORDER BY id LIMIT ?2",
      {DirValue::Int(after_id),
       DirValue::Int(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)))});
  if (!rows.ok()) return rows.status();
  std::vector<AuditEntry> out;
  for (size_t r = 0; r < rows->size(); ++r) {
    AuditEntry e;
    e.id = rows->Int(r, 0);
    e.at_ms = rows->Int(r, 1);
    e.actor_id = rows->Int(r, 2);
    e.actor = rows->Text(r, 3);
    e.action = rows->Text(r, 4);
    e.target_user_id = rows->Int(r, 5);
    e.details = rows->Text(r, 6);
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status Directory::DeleteExpiredTokensLocked(int64_t now_ms) {
  absl::StatusOr<int64_t> done =
      store_->Exec("DELETE FROM tokens WHERE expires_ms <= ?1", {DirValue::Int(now_ms)});
  if (!done.ok()) return done.status();
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
    if (!user_by_name_.contains(key) && store_->shared()) {
      // Perhaps created on another instance within the refresh interval.
      status = RefreshLocked(/*force=*/true);
      if (!status.ok()) return status;
    }
    const int64_t now_ms = options_.clock->NowMs();
    // Counted now, before the hash: parallel guesses each see the ones before them, so at
    // most lockout_after_failures of them reach the password check. A right password
    // clears the streak below. While locked out, the attempt is refused uncounted.
    absl::StatusOr<int64_t> locked_until = RecordFailureLocked(key, now_ms);
    if (!locked_until.ok()) return locked_until.status();
    if (*locked_until > now_ms) {
      const absl::Time until = absl::FromUnixMillis(*locked_until);
      const int64_t wait_s = (*locked_until - now_ms + 999) / 1000;
      return absl::ResourceExhaustedError(
          absl::StrCat("too many failed sign-ins for '", key, "'; try again after ",
                       absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", until, absl::UTCTimeZone()), " (in ",
                       wait_s, " s)"));
    }
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

  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<int64_t> done = store_->Exec(
        "INSERT INTO tokens(hash, user_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        {DirValue::Blob(token_hash), DirValue::Int(user_id), DirValue::Int(now_ms),
         DirValue::Int(result.expires_ms)});
    if (!done.ok()) return done.status();
  }
  if (!new_hash.empty()) {
    absl::StatusOr<int64_t> done = store_->Exec("UPDATE users SET password_hash = ?1 WHERE id = ?2",
                                                {DirValue::Text(new_hash), DirValue::Int(user_id)});
    if (!done.ok()) return done.status();
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
  if (it == tokens_.end() && store_->shared()) {
    // Issued by another instance since our last load: accepted at once.
    status = LookUpTokenLocked(token_hash);
    if (!status.ok()) return status;
    it = tokens_.find(token_hash);
  }
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

absl::Status Directory::LookUpTokenLocked(const std::string& token_hash) {
  absl::StatusOr<DirRows> rows =
      store_->Query("SELECT user_id, expires_ms FROM tokens WHERE hash = ?1 AND expires_ms > ?2",
                    {DirValue::Blob(token_hash), DirValue::Int(options_.clock->NowMs())});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return absl::OkStatus();
  const int64_t user_id = rows->Int(0, 0);
  // A user created since our last load: reload everything (the token comes with it).
  if (!users_.contains(user_id)) return LoadLocked();
  tokens_[token_hash] = TokenEntry{user_id, rows->Int(0, 1)};
  return absl::OkStatus();
}

absl::Status Directory::Logout(absl::string_view token) {
  const std::string token_hash = Sha256(token);
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> deleted =
      store_->Exec("DELETE FROM tokens WHERE hash = ?1", {DirValue::Blob(token_hash)});
  if (!deleted.ok()) return deleted.status();
  // Other instances of a shared store must drop the token from their caches.
  absl::StatusOr<int64_t> version = *deleted > 0 ? MarkChangeLocked() : int64_t{-1};
  if (!version.ok()) return version.status();
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  ChangeCommittedLocked(*version);
  tokens_.erase(token_hash);
  return absl::OkStatus();
}

}  // namespace kcnet::server
