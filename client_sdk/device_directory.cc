#include "client_sdk/device_directory.h"

#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sync/sqlite.h"

namespace kcnet::sdk {
namespace {

// Runs a prepared statement without rows and resets it.
absl::Status RunAndReset(sync::Statement* stmt) {
  absl::Status status = stmt->Run();
  stmt->Reset();
  return status;
}

}  // namespace

std::vector<std::string> DeviceDirectoryTables() {
  return {"_dir_org_units", "_dir_users", "_dir_meta"};
}

absl::StatusOr<std::string> DeviceDirectory::Version() {
  std::string version;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> stmt =
        db.Prepare("SELECT value FROM _dir_meta WHERE key = 'version'");
    if (!stmt.ok()) return stmt.status();
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (row.ok() && *row) version = std::string((*stmt)->ColumnText(0));
    (*stmt)->Reset();
    return row.status();
  });
  if (!status.ok()) return status;
  return version;
}

absl::Status DeviceDirectory::Replace(const kcnet::v1::ScopeDirectory& directory) {
  return store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
    absl::Status status =
        db.Exec("DELETE FROM _dir_org_units; DELETE FROM _dir_users; DELETE FROM _dir_meta;");
    if (!status.ok()) return status;
    absl::StatusOr<sync::Statement*> unit = db.Prepare(
        "INSERT OR REPLACE INTO _dir_org_units(id, parent_id, code, name, level, "
        "effective_from_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!unit.ok()) return unit.status();
    for (const kcnet::v1::OrgUnit& u : directory.org_units()) {
      (*unit)->BindInt(1, u.id());
      (*unit)->BindInt(2, u.parent_id());
      (*unit)->BindText(3, u.code());
      (*unit)->BindText(4, u.name());
      (*unit)->BindInt(5, u.level());
      (*unit)->BindInt(6, u.effective_from_ms());
      status = RunAndReset(*unit);
      if (!status.ok()) return status;
    }
    absl::StatusOr<sync::Statement*> user = db.Prepare(
        "INSERT OR REPLACE INTO _dir_users(id, display_name, role, active) "
        "VALUES (?1, ?2, ?3, ?4)");
    if (!user.ok()) return user.status();
    for (const kcnet::v1::DirectoryUser& u : directory.users()) {
      (*user)->BindInt(1, u.id());
      (*user)->BindText(2, u.display_name());
      (*user)->BindInt(3, u.role());
      (*user)->BindInt(4, u.active() ? 1 : 0);
      status = RunAndReset(*user);
      if (!status.ok()) return status;
    }
    absl::StatusOr<sync::Statement*> meta =
        db.Prepare("INSERT INTO _dir_meta(key, value) VALUES ('version', ?1)");
    if (!meta.ok()) return meta.status();
    (*meta)->BindText(1, directory.version());
    return RunAndReset(*meta);
  });
}

absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> DeviceDirectory::SelectUnits(
    absl::string_view where, const std::function<void(sync::Statement*)>& bind) {
  std::vector<kcnet::v1::OrgUnit> units;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> stmt =
        db.Prepare(absl::StrCat("SELECT id, parent_id, code, name, level, effective_from_ms "
                                "FROM _dir_org_units ",
                                where, " ORDER BY id"));
    if (!stmt.ok()) return stmt.status();
    if (bind) bind(*stmt);
    while (true) {
      absl::StatusOr<bool> row = (*stmt)->Step();
      if (!row.ok() || !*row) {
        (*stmt)->Reset();
        return row.status();
      }
      kcnet::v1::OrgUnit& u = units.emplace_back();
      u.set_id((*stmt)->ColumnInt(0));
      u.set_parent_id((*stmt)->ColumnInt(1));
      u.set_code(std::string((*stmt)->ColumnText(2)));
      u.set_name(std::string((*stmt)->ColumnText(3)));
      const int64_t level = (*stmt)->ColumnInt(4);
      u.set_level(kcnet::v1::OrgUnitLevel_IsValid(static_cast<int>(level))
                      ? static_cast<kcnet::v1::OrgUnitLevel>(level)
                      : kcnet::v1::ORG_UNIT_LEVEL_UNSPECIFIED);
      u.set_effective_from_ms((*stmt)->ColumnInt(5));
    }
  });
  if (!status.ok()) return status;
  return units;
}

absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> DeviceDirectory::OrgUnit(int64_t id) {
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> units =
      SelectUnits("WHERE id = ?1", [id](sync::Statement* stmt) { stmt->BindInt(1, id); });
  if (!units.ok()) return units.status();
  if (units->empty()) return std::nullopt;
  return std::move(units->front());
}

absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> DeviceDirectory::OrgUnitByCode(
    absl::string_view code) {
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> units =
      SelectUnits("WHERE code = ?1", [code](sync::Statement* stmt) { stmt->BindText(1, code); });
  if (!units.ok()) return units.status();
  if (units->empty()) return std::nullopt;
  return std::move(units->front());
}

absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> DeviceDirectory::OrgUnits() {
  return SelectUnits("", nullptr);
}

absl::StatusOr<std::optional<kcnet::v1::User>> DeviceDirectory::User(int64_t id) {
  std::optional<kcnet::v1::User> user;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> stmt =
        db.Prepare("SELECT display_name, role, active FROM _dir_users WHERE id = ?1");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, id);
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (row.ok() && *row) {
      kcnet::v1::User& u = user.emplace();
      u.set_id(id);
      u.set_display_name(std::string((*stmt)->ColumnText(0)));
      const int64_t role = (*stmt)->ColumnInt(1);
      u.set_role(kcnet::v1::Role_IsValid(static_cast<int>(role))
                     ? static_cast<kcnet::v1::Role>(role)
                     : kcnet::v1::ROLE_UNSPECIFIED);
      u.set_active((*stmt)->ColumnInt(2) != 0);
    }
    (*stmt)->Reset();
    return row.status();
  });
  if (!status.ok()) return status;
  return user;
}

}  // namespace kcnet::sdk
