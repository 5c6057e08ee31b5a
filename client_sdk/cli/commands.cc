// The commands of the `kcnet` field tool (commands.h).
#include "client_sdk/cli/commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/cli/args.h"
#include "client_sdk/cli/demo.h"
#include "client_sdk/cli/print.h"
#include "kcnet/client.h"
#include "kcnet/v1/domain.pb.h"
#include "tools/address.h"
#include "tools/password.h"
#include "tools/table.h"

namespace kcnet::cli {
namespace {

using ::kcnet::sdk::Client;
using ::kcnet::sdk::ClientOptions;

constexpr uint32_t kVisitRecord = 2;  // RecordRef.type of a visit (kcnet/client.h)
namespace v1 = ::kcnet::v1;

constexpr char kDefaultStore[] = "kcnet-store.db";
constexpr char kDefaultServer[] = "127.0.0.1:50051";

constexpr char kUsage[] =
    "usage: kcnet [--store=FILE] [--device=ID] [--server=HOST:PORT] [--ca_file=PEM]\n"
    "             [--tls=false | --insecure] COMMAND [ARGS] [--flags]\n"
    "\n"
    "Account (login and sync need the server; everything else works offline):\n"
    "  login USER [--password-file=PATH]       (else the password is asked for, or read\n"
    "                                           from stdin; never given as an argument)\n"
    "  logout | whoami\n"
    "Facilities:\n"
    "  facility add --name=NAME --owner=NAME [--commune=CODE] [--kind=K] [--sector=S]\n"
    "               [--products=TEXT] [--workers=N] [--lat=DEG --lng=DEG] [--address=TEXT]\n"
    "               [--phone=P] [--recognition=LEVEL]\n"
    "  facility update ID [the same flags: only those given change]\n"
    "  facility list [--commune=CODE] | facility search QUERY | facility show ID\n"
    "Visits:\n"
    "  visit record --facility=ID [--purpose=P] [--notes=TEXT] [--needs=CAT,CAT] [--lat --lng]\n"
    "        [--workers=N] [--product_lines=N] [--annual_output=VND]   (the facility's "
    "indicators)\n"
    "        [--photo=FILE ...] [--caption=TEXT]   (photos: JPEG, PNG, WebP or PDF; repeatable)\n"
    "  visit list --facility=ID\n"
    "Attachments (photos and documents; uploaded by `sync`, after the records):\n"
    "  attachments [list] [--visit=ID]         (state: queued, uploading, uploaded, failed,\n"
    "                                           remote = made on another device)\n"
    "  attachments get ID --out=FILE           (downloads it first when it is not here)\n"
    "Support requests:\n"
    "  request draft --facility=ID --category=C --amount=VND --description=TEXT\n"
    "                [--contribution=VND] [--funding=local|national]\n"
    "  request submit ID | request show ID | request list --facility=ID\n"
    "  request review                          (requests awaiting my review)\n"
    "  request endorse|return|reject|start|complete|cancel|comment ID [--note=TEXT]\n"
    "  request approve ID [--amount=VND] [--funding=local|national] [--note=TEXT]\n"
    "Sync:\n"
    "  sync                                    (upload my changes, download my communes)\n"
    "  status                                  (pending uploads, last sync, last error)\n"
    "  conflicts [--clear=yes]                 (refused writes and conflicts, with reasons)\n"
    "  conflicts review [--all=yes]            (coordinators: conflicts in my communes, online)\n"
    "  conflicts resolve ID [--restore=yes]    (keep the winning value, or restore the other)\n"
    "Demo:\n"
    "  demo [--server_bin=PATH] [--admin_bin=PATH] [--keep=yes]\n"
    "\n"
    "--commune=CODE: the commune's official code, fixed width with its leading zeros as\n"
    "`kcnet whoami` shows it (90101, 00004); an id works too. A value that is the code of\n"
    "one unit and the id of another is refused as ambiguous: write code:90101 or id:4.\n"
    "Org units and users print by name and code (\"Xã An Bình (90101)\"), from the\n"
    "directory the device keeps for offline use; by id only when it does not know them.\n"
    "\n"
    "--store defaults to ./kcnet-store.db; `login` creates it, every other command needs it.\n"
    "The device id, the server address, --ca_file and --tls are remembered beside it\n"
    "(STORE.settings). A server that is not on this machine (127.0.0.0/8, ::1, localhost)\n"
    "is spoken to over TLS, trusting the system's roots or those of --ca_file (PEM);\n"
    "--tls=false (or --insecure) forces plaintext, --tls=true forces TLS.\n";

// --- Settings kept beside the store ------------------------------------------------------

struct Settings {
  std::string device;
  std::string server;
  std::string ca_file;  // an absolute path; empty: the system's roots
  std::string tls;      // "true", "false", or empty: TLS unless the server is on loopback
};

std::string SettingsPath(const std::string& store) { return store + ".settings"; }

Settings ReadSettings(const std::string& store) {
  Settings settings;
  std::ifstream in(SettingsPath(store));
  std::string line;
  while (std::getline(in, line)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    absl::StripAsciiWhitespace(&kv.second);
    if (kv.first == "device") settings.device = kv.second;
    if (kv.first == "server") settings.server = kv.second;
    if (kv.first == "ca_file") settings.ca_file = kv.second;
    if (kv.first == "tls") settings.tls = kv.second;
  }
  return settings;
}

absl::Status WriteSettings(const std::string& store, const Settings& settings) {
  const std::string path = SettingsPath(store);
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << "device=" << settings.device << "\n";
    if (!settings.server.empty()) out << "server=" << settings.server << "\n";
    if (!settings.ca_file.empty()) out << "ca_file=" << settings.ca_file << "\n";
    if (!settings.tls.empty()) out << "tls=" << settings.tls << "\n";
    out.flush();
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", temp));
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path, ": ", error.message()));
  }
  return absl::OkStatus();
}

// "<hostname>-<8 hex digits>": stable once written to the settings.
std::string NewDeviceId() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string name;
  for (const char* p = host; *p != '\0' && name.size() < 48; ++p) {
    const char c = *p;
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_') {
      name.push_back(c);
    }
  }
  if (name.empty()) name = "kcnet";
  std::random_device random;
  return absl::StrFormat("%s-%08x", name, random());
}

// --- The session: flags, settings and the Client ------------------------------------------

class Session {
 public:
  explicit Session(const Args& args) : args_(args) {
    store_ = args.GetOr("store", kDefaultStore);
    settings_ = ReadSettings(store_);
  }

  const Args& args() const { return args_; }
  const std::string& store() const { return store_; }

  // The server address: --server, else the remembered one, else the default.
  std::string server() const {
    if (std::optional<std::string> flag = args_.Get("server")) return *flag;
    return settings_.server.empty() ? kDefaultServer : settings_.server;
  }

  // True unless --server names another server than the remembered one: what is
  // remembered about the transport (--tls, --ca_file) holds for that server only.
  bool RememberedServer() const {
    std::optional<std::string> flag = args_.Get("server");
    return !flag.has_value() || *flag == settings_.server;
  }

  // TLS or plaintext: --insecure or --tls; else TLS when --ca_file is given (roots are for
  // TLS); else the choice remembered for this server (--tls, or a --ca_file); else TLS
  // unless the server is on this machine's loopback. A usage error for --tls=true
  // --insecure.
  absl::StatusOr<bool> UseTls() const {
    absl::StatusOr<std::optional<bool>> insecure = args_.Bool("insecure");
    if (!insecure.ok()) return insecure.status();
    absl::StatusOr<std::optional<bool>> tls = args_.Bool("tls");
    if (!tls.ok()) return tls.status();
    if (insecure->value_or(false) && tls->value_or(false)) {
      return UsageError("--tls=true and --insecure contradict each other");
    }
    if (insecure->value_or(false)) return false;
    if (tls->has_value()) return **tls;
    if (args_.Has("ca_file")) return true;
    if (RememberedServer()) {
      if (settings_.tls == "true" || settings_.tls == "false") return settings_.tls == "true";
      if (!settings_.ca_file.empty()) return true;
    }
    return !tools::IsLoopbackAddress(server());
  }

  // The PEM roots file: --ca_file, else the one remembered for this server; empty: the
  // system's roots.
  std::string CaFile() const {
    if (std::optional<std::string> flag = args_.Get("ca_file")) return *flag;
    return RememberedServer() ? settings_.ca_file : "";
  }

  // How this store talks to its server, for people: "TLS, roots from ca.pem",
  // "TLS, system roots" or "plaintext".
  std::string TransportText() const {
    absl::StatusOr<bool> tls = UseTls();
    if (!tls.ok()) return "?";
    if (!*tls) return "plaintext";
    const std::string ca = CaFile();
    return ca.empty() ? "TLS, system roots" : absl::StrCat("TLS, roots from ", ca);
  }

  // Opens the store (once). `online`: with the server address (login, sync, the
  // coordinator's conflict review). Only `login` passes `create`: any other command on a
  // store that does not exist (a mistyped --store) is an error, not a new empty store.
  absl::StatusOr<Client*> Open(bool online, bool create = false) {
    if (client_ != nullptr) return client_.get();
    std::string device = args_.GetOr("device", "");
    std::error_code error;
    const bool store_exists = std::filesystem::exists(store_, error);
    if (!store_exists && !create) {
      return absl::NotFoundError(
          absl::StrCat("--store: ", store_,
                       " does not exist (`kcnet login USER` creates a store; check the path)"));
    }
    const std::filesystem::path folder = std::filesystem::path(store_).parent_path();
    if (!store_exists && !folder.empty() && !std::filesystem::is_directory(folder, error)) {
      return absl::NotFoundError(absl::StrCat("cannot create the store ", store_, ": the folder ",
                                              folder.string(), " does not exist"));
    }
    if (device.empty()) device = settings_.device;
    if (device.empty()) {
      if (store_exists) {
        return absl::FailedPreconditionError(
            absl::StrCat("the store ", store_, " exists but its device id is not recorded in ",
                         SettingsPath(store_), ": give it with --device=ID"));
      }
      device = NewDeviceId();
    }
    ClientOptions options;
    options.path = store_;
    options.device_id = device;
    options.server_address = online ? server() : "";
    absl::StatusOr<bool> use_tls = UseTls();
    if (!use_tls.ok()) return use_tls.status();
    const std::string ca_file = CaFile();
    if (online && *use_tls) {
      options.use_tls = true;
      if (!ca_file.empty()) {
        std::ifstream in(ca_file, std::ios::binary);
        std::stringstream pem;
        pem << in.rdbuf();
        if (!in || pem.str().empty()) {
          return absl::NotFoundError(absl::StrCat("--ca_file: cannot read ", ca_file));
        }
        options.tls_root_certs = pem.str();
      }
    }
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(options);
    if (!client.ok()) return client.status();
    client_ = *std::move(client);
    bool changed = false;
    if (settings_.device != device) {
      settings_.device = device;
      changed = true;
    }
    if (online && args_.Has("server") && settings_.server != server()) {
      settings_.server = server();
      settings_.ca_file.clear();  // they were the old server's
      settings_.tls.clear();
      changed = true;
    }
    // --ca_file and --tls / --insecure, once they have worked online, hold for later syncs.
    if (online && args_.Has("ca_file")) {
      std::string absolute = std::filesystem::absolute(ca_file, error).string();
      if (error) absolute = ca_file;
      if (settings_.ca_file != absolute) {
        settings_.ca_file = absolute;
        changed = true;
      }
    }
    if (online && (args_.Has("tls") || args_.Has("insecure"))) {
      const std::string tls = *use_tls ? "true" : "false";
      if (settings_.tls != tls) {
        settings_.tls = tls;
        changed = true;
      }
    }
    if (changed) {
      absl::Status written = WriteSettings(store_, settings_);
      if (!written.ok()) return written;
    }
    return client_.get();
  }

  // Opens the store and checks that somebody is signed in.
  absl::StatusOr<Client*> OpenSignedIn(bool online = false) {
    absl::StatusOr<Client*> client = Open(online);
    if (!client.ok()) return client;
    if (!(*client)->user().has_value()) {
      return absl::FailedPreconditionError(
          "nobody is signed in on this store: run `kcnet login USER` once while online");
    }
    return client;
  }

  // A sync or sign-in failure explained for the person in the field.
  absl::Status Explain(const absl::Status& status) {
    if (status.ok()) return status;
    int64_t pending = 0;
    if (client_ != nullptr) pending = client_->Status().pending_uploads;
    const std::string kept =
        pending == 0 ? "nothing is lost"
                     : absl::StrCat("your ", pending, pending == 1 ? " change is" : " changes are",
                                    " kept and will upload on the next sync");
    switch (status.code()) {
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kDeadlineExceeded: {
        absl::StatusOr<bool> tls = UseTls();
        return absl::Status(
            status.code(),
            absl::StrCat("cannot reach the server at ", server(),
                         tls.ok() && *tls ? " over TLS (a server with its own certificate "
                                            "authority needs --ca_file=PEM; a plaintext one, "
                                            "--insecure)"
                                          : "",
                         "; ", kept));
      }
      case absl::StatusCode::kUnauthenticated:
        return absl::Status(status.code(),
                            absl::StrCat("the server no longer accepts this store's sign-in: "
                                         "run `kcnet login USER` again; ",
                                         kept));
      default:
        return status;
    }
  }

 private:
  const Args& args_;
  std::string store_;
  Settings settings_;
  std::unique_ptr<Client> client_;
};

// --- Reading flags into records -----------------------------------------------------------

template <typename E>
absl::Status SetEnum(const Args& args, absl::string_view flag,
                     const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
                     std::function<void(E)> set, std::vector<std::string>* fields = nullptr,
                     absl::string_view field = "") {
  std::optional<std::string> text = args.Get(flag);
  if (!text.has_value()) return absl::OkStatus();
  absl::StatusOr<int> value = ParseEnum(descriptor, prefix, flag, *text);
  if (!value.ok()) return value.status();
  set(static_cast<E>(*value));
  if (fields != nullptr) fields->emplace_back(field);
  return absl::OkStatus();
}

// The facility fields given as flags, and their names for UpdateFacility.
absl::Status FacilityFromFlags(const Args& args, v1::Facility* f,
                               std::vector<std::string>* fields) {
  auto text = [&](absl::string_view flag, absl::string_view field,
                  std::function<void(const std::string&)> set) {
    if (std::optional<std::string> value = args.Get(flag)) {
      set(*value);
      fields->emplace_back(field);
    }
  };
  text("name", "name", [&](const std::string& v) { f->set_name(v); });
  text("owner", "owner_name", [&](const std::string& v) { f->set_owner_name(v); });
  text("address", "address", [&](const std::string& v) { f->set_address(v); });
  text("products", "main_products", [&](const std::string& v) { f->set_main_products(v); });
  text("phone", "contact_phone", [&](const std::string& v) { f->set_contact_phone(v); });
  absl::StatusOr<std::optional<int64_t>> workers = args.Int("workers");
  if (!workers.ok()) return workers.status();
  if (workers->has_value()) {
    if (**workers < 0) return UsageError("--workers: cannot be negative");
    f->set_workers(**workers);
    fields->push_back("workers");
  }
  absl::StatusOr<std::optional<double>> lat = args.Double("lat");
  if (!lat.ok()) return lat.status();
  absl::StatusOr<std::optional<double>> lng = args.Double("lng");
  if (!lng.ok()) return lng.status();
  if (lat->has_value() != lng->has_value()) {
    return UsageError("--lat and --lng go together (a GPS point)");
  }
  if (lat->has_value()) {
    f->set_latitude(**lat);
    f->set_longitude(**lng);
    fields->push_back("latitude");
    fields->push_back("longitude");
  }
  absl::Status s = SetEnum<v1::FacilityKind>(
      args, "kind", v1::FacilityKind_descriptor(), "FACILITY_KIND_",
      [&](v1::FacilityKind k) { f->set_kind(k); }, fields, "kind");
  if (!s.ok()) return s;
  s = SetEnum<v1::Sector>(
      args, "sector", v1::Sector_descriptor(), "SECTOR_", [&](v1::Sector k) { f->set_sector(k); },
      fields, "sector");
  if (!s.ok()) return s;
  return SetEnum<v1::RecognitionLevel>(
      args, "recognition", v1::RecognitionLevel_descriptor(), "RECOGNITION_LEVEL_",
      [&](v1::RecognitionLevel k) { f->set_recognition(k); }, fields, "recognition");
}

const std::set<std::string> kFacilityFlags = {"commune", "name",     "owner", "kind",
                                              "sector",  "address",  "lat",   "lng",
                                              "workers", "products", "phone", "recognition"};

// --commune takes an official code or an id (see kCommuneRule). What was written, checked
// for its form before the store is opened.
struct CommuneValue {
  enum class Kind { kEither, kCode, kId };
  Kind kind = Kind::kEither;
  std::string text;  // digits
};

constexpr char kCommuneRule[] =
    "an official code (fixed width, leading zeros kept: 90101, 00004) or an id; "
    "code:90101 or id:4 says which";

absl::StatusOr<std::optional<CommuneValue>> ParseCommune(const Args& args) {
  std::optional<std::string> value = args.Get("commune");
  if (!value.has_value()) return std::nullopt;
  CommuneValue out;
  absl::string_view text = *value;
  if (absl::ConsumePrefix(&text, "code:")) {
    out.kind = CommuneValue::Kind::kCode;
  } else if (absl::ConsumePrefix(&text, "id:")) {
    out.kind = CommuneValue::Kind::kId;
  }
  const bool digits = !text.empty() && text.size() <= 18 &&
                      std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
  if (!digits || (out.kind == CommuneValue::Kind::kId && text[0] == '0')) {
    return UsageError(absl::StrCat("--commune: '", *value, "' is not ", kCommuneRule));
  }
  out.text = std::string(text);
  return out;
}

// The org unit --commune names, found in the directory on the device:
//   code:C  the unit whose official code is C;  id:N  the unit with id N;
//   a bare value: the unit whose code it is, or whose id it is (ids have no leading zero,
//   so "00004" is only ever a code); a value that is the code of one unit and the id of
//   another is ambiguous (an error naming both). A value that matches nothing is an error,
//   except that a bare number or id:N is taken as an id while the device has no directory
//   yet (signed in with a server that does not send one).
absl::StatusOr<int64_t> ResolveCommune(const CommuneValue& value, Client& client) {
  std::optional<v1::OrgUnit> by_code, by_id;
  if (value.kind != CommuneValue::Kind::kId) {
    absl::StatusOr<v1::OrgUnit> unit = client.FindOrgUnitByCode(value.text);
    if (unit.ok()) by_code = *std::move(unit);
    if (!unit.ok() && !absl::IsNotFound(unit.status())) return unit.status();
  }
  int64_t id = 0;
  const bool may_be_id = value.kind != CommuneValue::Kind::kCode && value.text[0] != '0' &&
                         absl::SimpleAtoi(value.text, &id);
  if (may_be_id) {
    absl::StatusOr<v1::OrgUnit> unit = client.GetOrgUnit(id);
    if (unit.ok()) by_id = *std::move(unit);
    if (!unit.ok() && !absl::IsNotFound(unit.status())) return unit.status();
  }
  const Names names(&client);
  if (by_code.has_value() && by_id.has_value() && by_code->id() != by_id->id()) {
    return UsageError(absl::StrCat("--commune: '", value.text, "' is ambiguous: the code of ",
                                   names.Unit(by_code->id()), " and the id of ",
                                   names.Unit(by_id->id()), "; write code:", value.text,
                                   " or id:", value.text));
  }
  if (by_code.has_value()) return by_code->id();
  if (by_id.has_value()) return by_id->id();
  absl::StatusOr<std::vector<v1::OrgUnit>> known = client.ListOrgUnits();
  if (!known.ok()) return known.status();
  if (known->empty() && may_be_id) return id;  // no directory on this device yet
  return UsageError(absl::StrCat("--commune: no org unit of yours has ",
                                 value.kind == CommuneValue::Kind::kCode ? "the code '"
                                 : value.kind == CommuneValue::Kind::kId ? "the id '"
                                                                         : "the code or id '",
                                 value.text,
                                 "' (`kcnet whoami` lists your communes with their codes)"));
}

// The commune for a new facility: --commune, else the user's only org unit.
absl::StatusOr<int64_t> CommuneFlag(const Args& args, Client& client) {
  absl::StatusOr<std::optional<CommuneValue>> commune = ParseCommune(args);
  if (!commune.ok()) return commune.status();
  if (commune->has_value()) return ResolveCommune(**commune, client);
  std::optional<v1::User> user = client.user();
  if (user.has_value() && user->role() == v1::ROLE_COMMUNE_COLLABORATOR &&
      user->org_unit_ids_size() == 1) {
    return user->org_unit_ids(0);
  }
  return UsageError("--commune is required (see `kcnet whoami` for your communes)");
}

// --- Commands -----------------------------------------------------------------------------

absl::Status Login(Session& session) {
  const Args& args = session.args();
  // --password-file, else the prompt (no echo) or stdin: never an argument (tools/password.h).
  absl::StatusOr<std::string> password = tools::ReadPassword(args.Get("password_file"));
  if (!password.ok()) return password.status();
  absl::StatusOr<Client*> client = session.Open(/*online=*/true, /*create=*/true);
  if (!client.ok()) return client.status();
  absl::Status status = (*client)->SignIn(args.words()[0], *password);
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    return absl::UnauthenticatedError(absl::StrCat("the server refused the sign-in of '",
                                                   args.words()[0],
                                                   "': check the username and the password"));
  }
  if (!status.ok()) return session.Explain(status);
  std::optional<v1::User> user = (*client)->user();
  std::printf("signed in as %s\n",
              user.has_value() ? UserLine(*user, Names(*client)).c_str() : "?");
  std::printf("run `kcnet sync` to download your communes' records\n");
  return absl::OkStatus();
}

// Signing out releases the tablet for another user (at once, or at the next connection
// when the server cannot be reached) and clears this user's data from the store; it is
// refused while changes wait for upload.
absl::Status Logout(Session& session) {
  absl::StatusOr<Client*> client = session.Open(true);
  if (!client.ok()) return client.status();
  absl::Status status = (*client)->SignOut();
  if (absl::IsFailedPrecondition(status)) {
    return absl::FailedPreconditionError(
        absl::StrCat(status.message(), " (run `kcnet sync` first, then `kcnet logout`)"));
  }
  if (!status.ok()) return session.Explain(status);
  std::printf("signed out; this tablet's data is cleared and it may be used by another user\n");
  return absl::OkStatus();
}

absl::Status WhoAmI(Session& session) {
  absl::StatusOr<Client*> client = session.Open(false);
  if (!client.ok()) return client.status();
  std::optional<v1::User> user = (*client)->user();
  if (!user.has_value()) {
    std::printf("nobody is signed in (kcnet login USER)\n");
    return absl::OkStatus();
  }
  std::printf("%s\n", UserLine(*user, Names(*client)).c_str());
  absl::StatusOr<std::vector<v1::BucketCheckpoint>> buckets = (*client)->Checkpoints();
  if (buckets.ok() && !buckets->empty()) {
    std::vector<std::string> communes;
    const Names names(*client);
    for (const v1::BucketCheckpoint& b : *buckets) {
      communes.push_back(
          absl::StrCat(names.Unit(b.bucket(), "commune"), ": ", b.records(), " records"));
    }
    std::printf("communes on this device: %s\n", absl::StrJoin(communes, ", ").c_str());
  }
  std::printf("store %s, server %s (%s)\n", session.store().c_str(), session.server().c_str(),
              session.TransportText().c_str());
  return absl::OkStatus();
}

absl::Status FacilityAdd(Session& session) {
  const Args& args = session.args();
  absl::StatusOr<std::string> name = args.Required("name");
  if (!name.ok()) return name.status();
  absl::StatusOr<std::string> owner = args.Required("owner");
  if (!owner.ok()) return owner.status();
  v1::Facility facility;
  std::vector<std::string> fields;
  absl::Status parsed = FacilityFromFlags(args, &facility, &fields);
  if (!parsed.ok()) return parsed;
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<int64_t> commune = CommuneFlag(args, **client);
  if (!commune.ok()) return commune.status();
  facility.set_commune_id(*commune);
  if (!args.Has("kind")) facility.set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
  absl::StatusOr<v1::Facility> added = (*client)->RegisterFacility(facility);
  if (!added.ok()) return added.status();
  std::printf("registered facility %s\n%s", added->id().c_str(),
              FacilityDetails(*added, Names(*client)).c_str());
  return absl::OkStatus();
}

absl::Status FacilityUpdate(Session& session) {
  const Args& args = session.args();
  v1::Facility facility;
  std::vector<std::string> fields;
  absl::Status parsed = FacilityFromFlags(args, &facility, &fields);
  if (!parsed.ok()) return parsed;
  if (args.Has("commune")) return UsageError("--commune: a facility's commune never changes");
  if (fields.empty()) return UsageError("nothing to change: give the fields to set as flags");
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  facility.set_id(args.words()[0]);
  absl::StatusOr<v1::Facility> updated = (*client)->UpdateFacility(facility, fields);
  if (!updated.ok()) return updated.status();
  std::printf("updated facility %s\n%s", updated->id().c_str(),
              FacilityDetails(*updated, Names(*client)).c_str());
  return absl::OkStatus();
}

absl::Status FacilityList(Session& session) {
  absl::StatusOr<std::optional<CommuneValue>> commune_flag = ParseCommune(session.args());
  if (!commune_flag.ok()) return commune_flag.status();  // a bad value before the store
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  // --commune, else the collaborator's commune, else every commune on this device.
  std::vector<int64_t> communes;
  absl::StatusOr<int64_t> commune = CommuneFlag(session.args(), **client);
  if (commune.ok()) {
    communes.push_back(*commune);
  } else if (session.args().Has("commune")) {
    return commune.status();
  } else {
    absl::StatusOr<std::vector<v1::BucketCheckpoint>> held = (*client)->Checkpoints();
    if (!held.ok()) return held.status();
    for (const v1::BucketCheckpoint& b : *held) communes.push_back(b.bucket());
    if (communes.empty()) {
      return absl::FailedPreconditionError(
          "no commune on this device yet: run `kcnet sync`, or give --commune=CODE");
    }
  }
  const Names names(*client);
  size_t total = 0;
  for (int64_t id : communes) {
    absl::StatusOr<std::vector<v1::Facility>> list = (*client)->FacilitiesOfCommune(id);
    if (!list.ok()) return list.status();
    for (const v1::Facility& f : *list)
      std::printf("%s\n", FacilityLine(f, Names(*client)).c_str());
    total += list->size();
  }
  std::vector<std::string> named;
  for (int64_t id : communes) named.push_back(names.Unit(id, "commune"));
  std::fprintf(stderr, "%zu facilities in %s\n", total, absl::StrJoin(named, ", ").c_str());
  return absl::OkStatus();
}

absl::Status FacilitySearch(Session& session) {
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  const std::string query = absl::StrJoin(session.args().words(), " ");
  absl::StatusOr<std::vector<sdk::FacilityHit>> hits = (*client)->SearchFacilities(query);
  if (!hits.ok()) return hits.status();
  for (const sdk::FacilityHit& hit : *hits)
    std::printf("%s\n", FacilityLine(hit.facility, Names(*client)).c_str());
  std::fprintf(stderr, "%zu facilities match '%s'\n", hits->size(), query.c_str());
  return absl::OkStatus();
}

absl::Status FacilityShow(Session& session) {
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::Facility> f = (*client)->GetFacility(session.args().words()[0]);
  if (!f.ok()) return f.status();
  std::printf("facility %s\n%s", f->id().c_str(), FacilityDetails(*f, Names(*client)).c_str());
  return absl::OkStatus();
}

absl::Status CheckPhotoFile(const std::string& path);
std::string AttachmentLine(const sdk::AttachmentInfo& a);

absl::Status VisitRecord(Session& session) {
  const Args& args = session.args();
  absl::StatusOr<std::string> facility = args.Required("facility");
  if (!facility.ok()) return facility.status();
  v1::Visit visit;
  visit.set_facility_id(*facility);
  visit.set_findings(args.GetOr("notes", ""));
  absl::Status s =
      SetEnum<v1::VisitPurpose>(args, "purpose", v1::VisitPurpose_descriptor(), "VISIT_PURPOSE_",
                                [&](v1::VisitPurpose p) { visit.set_purpose(p); });
  if (!s.ok()) return s;
  if (!args.Has("purpose")) visit.set_purpose(v1::VISIT_PURPOSE_SURVEY);
  if (std::optional<std::string> needs = args.Get("needs")) {
    for (absl::string_view need : absl::StrSplit(*needs, ',', absl::SkipWhitespace())) {
      absl::StatusOr<int> category =
          ParseEnum(v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_", "needs", need);
      if (!category.ok()) return category.status();
      visit.add_needs(static_cast<v1::SupportCategory>(*category));
    }
  }
  absl::StatusOr<std::optional<double>> lat = args.Double("lat");
  if (!lat.ok()) return lat.status();
  absl::StatusOr<std::optional<double>> lng = args.Double("lng");
  if (!lng.ok()) return lng.status();
  if (lat->has_value() != lng->has_value()) {
    return UsageError("--lat and --lng go together (a GPS point)");
  }
  if (lat->has_value()) {
    visit.set_latitude(**lat);
    visit.set_longitude(**lng);
  }
  // The facility's indicators seen at this visit (the outcomes report: docs/REPORTS.md).
  struct Indicator {
    const char* flag;
    void (v1::Visit::*set)(int64_t);
  };
  for (const Indicator& indicator :
       {Indicator{"workers", &v1::Visit::set_workers},
        Indicator{"product_lines", &v1::Visit::set_product_lines},
        Indicator{"annual_output", &v1::Visit::set_annual_output_vnd}}) {
    absl::StatusOr<std::optional<int64_t>> value = args.Int(indicator.flag);
    if (!value.ok()) return value.status();
    if (!value->has_value()) continue;
    if (**value < 0) return UsageError(absl::StrCat("--", indicator.flag, ": cannot be negative"));
    (visit.*indicator.set)(**value);
  }
  // The photos are checked before the visit is recorded: a bad one changes nothing.
  const std::vector<std::string> photos = args.GetAll("photo");
  for (const std::string& photo : photos) {
    absl::Status checked = CheckPhotoFile(photo);
    if (!checked.ok()) return checked;
  }
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::Visit> recorded = (*client)->RecordVisit(visit);
  if (!recorded.ok()) return recorded.status();
  std::printf("recorded visit %s\n%s\n", recorded->id().c_str(),
              VisitLine(*recorded, Names(*client)).c_str());
  for (const std::string& photo : photos) {
    sdk::NewAttachment a;
    a.owner_type = kVisitRecord;
    a.owner_id = recorded->id();
    a.file_path = photo;
    a.caption = args.GetOr("caption", "");
    if (lat->has_value()) {
      a.latitude = **lat;
      a.longitude = **lng;
    }
    absl::StatusOr<sdk::AttachmentInfo> added = (*client)->AddAttachment(a);
    if (!added.ok()) {
      return absl::Status(added.status().code(),
                          absl::StrCat(photo, ": ", added.status().message()));
    }
    std::printf("attached %s: %s\n", photo.c_str(), AttachmentLine(*added).c_str());
  }
  return absl::OkStatus();
}

// A photo named on the command line: readable, a JPEG, PNG, WebP or PDF by its first bytes,
// not over the limit. (AddAttachment checks again; this keeps a bad photo from leaving a
// visit without it.)
absl::Status CheckPhotoFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return UsageError(absl::StrCat("--photo: cannot read '", path, "'"));
  std::string head(16, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (sdk::SniffMediaTypeOf(head).empty()) {
    return UsageError(
        absl::StrCat("--photo: '", path, "' is not a JPEG, PNG, WebP or PDF (by its first bytes)"));
  }
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  const int64_t limit = sdk::ClientOptions{}.max_attachment_bytes;
  if (size > limit) {
    return UsageError(absl::StrCat("--photo: '", path, "' has ", size, " bytes; the limit is ",
                                   limit, " (downscale it first)"));
  }
  return absl::OkStatus();
}

// "ID  uploaded  1,234,567 B  image/jpeg  \"caption\"".
std::string AttachmentLine(const sdk::AttachmentInfo& a) {
  std::string state = sdk::AttachmentStateName(a.state);
  if (a.state == sdk::AttachmentState::kUploading) {
    absl::StrAppend(&state, " ", a.bytes_sent, "/", a.size);
  }
  if (a.state == sdk::AttachmentState::kFailed) absl::StrAppend(&state, " (", a.failure, ")");
  return absl::StrCat(a.id, "  ", state, "  ", a.size, " B  ", a.media_type,
                      a.local ? "" : "  (not on this device)",
                      a.caption.empty() ? "" : absl::StrCat("  \"", a.caption, "\""));
}

absl::Status AttachmentsList(Session& session) {
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<sdk::AttachmentInfo>> list =
      session.args().Has("visit")
          ? (*client)->AttachmentsOf(kVisitRecord, *session.args().Get("visit"))
          : (*client)->ListAttachments();
  if (!list.ok()) return list.status();
  for (const sdk::AttachmentInfo& a : *list) std::printf("%s\n", AttachmentLine(a).c_str());
  std::fprintf(stderr, "%zu attachments\n", list->size());
  return absl::OkStatus();
}

absl::Status AttachmentsGet(Session& session) {
  absl::StatusOr<std::string> out = session.args().Required("out");
  if (!out.ok()) return out.status();
  absl::StatusOr<Client*> client = session.OpenSignedIn(/*online=*/true);
  if (!client.ok()) return client.status();
  const std::string id = session.args().words()[0];
  absl::StatusOr<std::string> path = (*client)->OpenAttachment(id);
  if (!path.ok()) return session.Explain(path.status());
  std::error_code error;
  std::filesystem::copy_file(*path, *out, std::filesystem::copy_options::overwrite_existing, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("--out: cannot write '", *out, "': ", error.message()));
  }
  absl::StatusOr<sdk::AttachmentInfo> info = (*client)->GetAttachment(id);
  std::printf("wrote %s (%s)\n", out->c_str(),
              info.ok() ? absl::StrCat(info->size, " bytes, ", info->media_type).c_str() : "");
  return absl::OkStatus();
}

absl::Status VisitList(Session& session) {
  absl::StatusOr<std::string> facility = session.args().Required("facility");
  if (!facility.ok()) return facility.status();
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<v1::Visit>> visits = (*client)->VisitsOfFacility(*facility);
  if (!visits.ok()) return visits.status();
  for (const v1::Visit& v : *visits) std::printf("%s\n", VisitLine(v, Names(*client)).c_str());
  std::fprintf(stderr, "%zu visits\n", visits->size());
  return absl::OkStatus();
}

absl::Status FundingFlag(const Args& args, v1::FundingSource* funding) {
  return SetEnum<v1::FundingSource>(args, "funding", v1::FundingSource_descriptor(),
                                    "FUNDING_SOURCE_", [&](v1::FundingSource f) { *funding = f; });
}

absl::Status RequestDraft(Session& session) {
  const Args& args = session.args();
  absl::StatusOr<std::string> facility = args.Required("facility");
  if (!facility.ok()) return facility.status();
  absl::StatusOr<std::string> category_text = args.Required("category");
  if (!category_text.ok()) return category_text.status();
  absl::StatusOr<int> category =
      ParseEnum(v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_", "category", *category_text);
  if (!category.ok()) return category.status();
  absl::StatusOr<std::optional<int64_t>> amount = args.Int("amount");
  if (!amount.ok()) return amount.status();
  if (!amount->has_value()) return UsageError("--amount is required (whole VND)");
  absl::StatusOr<std::string> description = args.Required("description");
  if (!description.ok()) return description.status();
  absl::StatusOr<std::optional<int64_t>> contribution = args.Int("contribution");
  if (!contribution.ok()) return contribution.status();
  v1::SupportRequest request;
  request.set_facility_id(*facility);
  request.set_category(static_cast<v1::SupportCategory>(*category));
  request.set_requested_amount_vnd(**amount);
  request.set_description(*description);
  request.set_own_contribution_vnd(contribution->value_or(0));
  v1::FundingSource funding = v1::FUNDING_SOURCE_LOCAL;
  absl::Status s = FundingFlag(args, &funding);
  if (!s.ok()) return s;
  request.set_proposed_funding(funding);
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::SupportRequest> drafted = (*client)->DraftRequest(request);
  if (!drafted.ok()) return drafted.status();
  std::printf("drafted request %s\n%s\nsubmit it with: kcnet request submit %s\n",
              drafted->id().c_str(), RequestLine(*drafted).c_str(), drafted->id().c_str());
  return absl::OkStatus();
}

absl::Status RequestShow(Session& session) {
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  const std::string& id = session.args().words()[0];
  absl::StatusOr<v1::SupportRequest> request = (*client)->GetRequest(id);
  if (!request.ok()) return request.status();
  absl::StatusOr<std::vector<v1::RequestEvent>> events = (*client)->RequestEvents(id);
  if (!events.ok()) return events.status();
  std::printf("request %s\n%s", id.c_str(), RequestDetails(*request, Names(*client)).c_str());
  std::printf("events:\n");
  for (const v1::RequestEvent& e : *events)
    std::printf("  %s\n", EventLine(e, Names(*client)).c_str());
  return absl::OkStatus();
}

absl::Status RequestList(Session& session) {
  absl::StatusOr<std::string> facility = session.args().Required("facility");
  if (!facility.ok()) return facility.status();
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<v1::SupportRequest>> list = (*client)->RequestsOfFacility(*facility);
  if (!list.ok()) return list.status();
  for (const v1::SupportRequest& r : *list) std::printf("%s\n", RequestLine(r).c_str());
  std::fprintf(stderr, "%zu requests\n", list->size());
  return absl::OkStatus();
}

absl::Status RequestReview(Session& session) {
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<v1::SupportRequest>> list = (*client)->RequestsAwaitingMyReview();
  if (!list.ok()) return list.status();
  for (const v1::SupportRequest& r : *list) std::printf("%s\n", RequestLine(r).c_str());
  std::fprintf(stderr, "%zu requests await your review\n", list->size());
  return absl::OkStatus();
}

// submit, endorse, return, reject, approve, start, complete, cancel, comment.
absl::Status RequestAct(Session& session, const std::string& verb) {
  const Args& args = session.args();
  absl::StatusOr<int> action =
      ParseEnum(v1::RequestAction_descriptor(), "REQUEST_ACTION_", "action", verb);
  if (!action.ok() || *action == v1::REQUEST_ACTION_CREATE) {
    return UsageError(absl::StrCat("unknown request action '", verb, "'"));
  }
  const std::string& id = args.words()[0];
  const std::string note = args.GetOr("note", "");
  if (*action == v1::REQUEST_ACTION_COMMENT && note.empty()) {
    return UsageError("--note is required (the comment's text)");
  }
  absl::StatusOr<std::optional<int64_t>> amount = args.Int("amount");
  if (!amount.ok()) return amount.status();
  v1::FundingSource funding = v1::FUNDING_SOURCE_UNSPECIFIED;
  absl::Status s = FundingFlag(args, &funding);
  if (!s.ok()) return s;
  if (*action != v1::REQUEST_ACTION_APPROVE && (amount->has_value() || args.Has("funding"))) {
    return UsageError("--amount and --funding go with `request approve` only");
  }
  absl::StatusOr<Client*> client = session.OpenSignedIn();
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::SupportRequest> result;
  if (*action == v1::REQUEST_ACTION_APPROVE) {
    absl::StatusOr<v1::SupportRequest> current = (*client)->GetRequest(id);
    if (!current.ok()) return current.status();
    const int64_t approved = amount->value_or(current->requested_amount_vnd());
    if (funding == v1::FUNDING_SOURCE_UNSPECIFIED) funding = current->proposed_funding();
    if (funding == v1::FUNDING_SOURCE_UNSPECIFIED) funding = v1::FUNDING_SOURCE_LOCAL;
    result = (*client)->Approve(id, approved, funding, note);
  } else {
    result = (*client)->Act(id, static_cast<v1::RequestAction>(*action), note);
  }
  if (!result.ok()) return result.status();
  std::printf("%s: %s\n", *action == v1::REQUEST_ACTION_COMMENT ? "commented" : "done",
              RequestLine(*result).c_str());
  return absl::OkStatus();
}

// A progress bar on stderr for downloads that take a while (only on a terminal).
class ProgressBar {
 public:
  ProgressBar() : terminal_(isatty(STDERR_FILENO) != 0), start_(absl::Now()) {}
  ~ProgressBar() { Finish(); }

  void Update(const sdk::SyncProgress& p) {
    if (!terminal_) return;
    const absl::Time now = absl::Now();
    if (now - start_ < absl::Milliseconds(400) || now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 28;
    const double fraction =
        p.buckets_total > 0 ? static_cast<double>(p.buckets_complete) / p.buckets_total : 0;
    const int filled = static_cast<int>(fraction * kWidth);
    std::fprintf(
        stderr, "\r[%s%s] %lld/%lld communes, %lld records received, %lld sent ",
        std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
        static_cast<long long>(p.buckets_complete), static_cast<long long>(p.buckets_total),
        static_cast<long long>(p.received_changes), static_cast<long long>(p.pushed_mutations));
    std::fflush(stderr);
    shown_ = true;
  }

  void Finish() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  const bool terminal_;
  const absl::Time start_;
  absl::Time last_ = absl::InfinitePast();
  bool shown_ = false;
};

absl::Status Sync(Session& session) {
  absl::StatusOr<Client*> client = session.Open(/*online=*/true);
  if (!client.ok()) return client.status();
  if (!(*client)->user().has_value()) {
    return absl::FailedPreconditionError(
        "nobody is signed in on this store: run `kcnet login USER` first");
  }
  ProgressBar bar;
  absl::StatusOr<sdk::SyncSummary> summary =
      (*client)->SyncNow([&bar](const sdk::SyncProgress& p) { bar.Update(p); });
  bar.Finish();
  if (!summary.ok()) return session.Explain(summary.status());
  std::printf("synced with %s: %lld changes uploaded, %lld records received\n",
              session.server().c_str(), static_cast<long long>(summary->pushed_mutations),
              static_cast<long long>(summary->received_changes));
  for (const sdk::Report& report : summary->reports) {
    std::printf("%s\n", ReportLine(**client, report).c_str());
  }
  if (!summary->reports.empty()) {
    std::printf("%zu reports: see `kcnet conflicts`\n", summary->reports.size());
  }
  const sdk::AttachmentUploadSummary& a = summary->attachments;
  if (a.uploaded + a.failed + a.remaining > 0 || !summary->attachments_error.ok()) {
    std::printf(
        "attachments: %lld uploaded (%lld payload bytes), %lld failed, %lld left%s\n",
        static_cast<long long>(a.uploaded), static_cast<long long>(a.payload_bytes),
        static_cast<long long>(a.failed), static_cast<long long>(a.remaining),
        summary->attachments_error.ok()
            ? ""
            : absl::StrCat(" (", OneLine(summary->attachments_error.message()), ")").c_str());
  }
  return absl::OkStatus();
}

absl::Status StatusCommand(Session& session) {
  absl::StatusOr<Client*> client = session.Open(false);
  if (!client.ok()) return client.status();
  std::optional<v1::User> user = (*client)->user();
  const sdk::SyncStatus status = (*client)->Status();
  tools::Table table;
  table.AddRow({"user:", user.has_value() ? UserLine(*user, Names(*client)) : "nobody signed in"});
  table.AddRow({"server:", absl::StrCat(session.server(), " (", session.TransportText(), ")")});
  table.AddRow({"pending uploads:", absl::StrCat(status.pending_uploads)});
  table.AddRow({"unconfirmed:", absl::StrCat(status.unconfirmed)});
  table.AddRow(
      {"last sync:", status.last_success.has_value() ? TimeText(*status.last_success) : "never"});
  if (status.last_attempt.has_value()) {
    table.AddRow({"last attempt:", TimeText(*status.last_attempt)});
  }
  table.AddRow(
      {"last error:", status.last_error.ok() ? "none" : OneLine(status.last_error.message())});
  table.AddRow({"reports:", absl::StrCat(status.reports,
                                         status.reports > 0 ? " (see `kcnet conflicts`)" : "")});
  absl::StatusOr<std::vector<sdk::AttachmentInfo>> attachments = (*client)->ListAttachments();
  if (attachments.ok()) {
    int waiting = 0, failed = 0;
    for (const sdk::AttachmentInfo& a : *attachments) {
      waiting +=
          a.state == sdk::AttachmentState::kQueued || a.state == sdk::AttachmentState::kUploading;
      failed += a.state == sdk::AttachmentState::kFailed;
    }
    table.AddRow({"attachments:", absl::StrCat(waiting, " to upload, ", failed, " failed",
                                               " (see `kcnet attachments`)")});
  }
  std::fputs(table.Render().c_str(), stdout);
  absl::StatusOr<std::vector<sdk::PendingUpload>> pending = (*client)->PendingUploads();
  if (pending.ok()) {
    for (const sdk::PendingUpload& p : *pending) {
      std::printf("  #%llu %s%s\n", static_cast<unsigned long long>(p.seq),
                  RecordsText(p.records).c_str(), p.sent ? " (sent, awaiting download)" : "");
    }
  }
  return absl::OkStatus();
}

absl::Status Conflicts(Session& session) {
  const Args& args = session.args();
  const std::string clear = absl::AsciiStrToLower(args.GetOr("clear", "no"));
  if (clear != "yes" && clear != "no") return UsageError("--clear: yes or no");
  absl::StatusOr<Client*> client = session.Open(false);
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<sdk::Report>> reports =
      clear == "yes" ? (*client)->TakeReports() : (*client)->ListReports();
  if (!reports.ok()) return reports.status();
  for (const sdk::Report& report : *reports) {
    std::printf("%s\n", ReportLine(**client, report).c_str());
    for (const v1::Conflict& c : report.result.conflicts()) {
      std::printf("    %s\n", ConflictLine(c).c_str());
    }
  }
  std::fprintf(stderr, "%zu reports%s\n", reports->size(),
               clear == "yes" ? " (cleared)" : "; `kcnet conflicts --clear=yes` clears them");
  return absl::OkStatus();
}

absl::Status ConflictsReview(Session& session) {
  const std::string all = absl::AsciiStrToLower(session.args().GetOr("all", "no"));
  if (all != "yes" && all != "no") return UsageError("--all: yes or no");
  absl::StatusOr<Client*> client = session.OpenSignedIn(/*online=*/true);
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<v1::Conflict>> conflicts =
      (*client)->ListConflicts(0, /*include_resolved=*/all == "yes");
  if (!conflicts.ok()) return session.Explain(conflicts.status());
  for (const v1::Conflict& c : *conflicts) {
    std::printf("#%llu %s%s\n", static_cast<unsigned long long>(c.id()), ConflictLine(c).c_str(),
                c.resolved() ? " (resolved)" : "");
  }
  std::fprintf(stderr, "%zu conflicts; `kcnet conflicts resolve ID [--restore=yes]`\n",
               conflicts->size());
  return absl::OkStatus();
}

absl::Status ConflictsResolve(Session& session) {
  uint64_t id = 0;
  if (!absl::SimpleAtoi(session.args().words().back(), &id) || id == 0) {
    return UsageError("ID: must be a conflict number from `kcnet conflicts review`");
  }
  const std::string restore = absl::AsciiStrToLower(session.args().GetOr("restore", "no"));
  if (restore != "yes" && restore != "no") return UsageError("--restore: yes or no");
  absl::StatusOr<Client*> client = session.OpenSignedIn(/*online=*/true);
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::Conflict> c = (*client)->ResolveConflict(id, restore == "yes");
  if (!c.ok()) return session.Explain(c.status());
  std::printf("#%llu resolved: %s\n", static_cast<unsigned long long>(c->id()),
              restore == "yes" ? "the overwritten value is written back (run `kcnet sync`)"
                               : "the winning value stays");
  return absl::OkStatus();
}

// --- Dispatch -----------------------------------------------------------------------------

struct Command {
  const char* name;  // "facility add"
  int min_words;     // words after the command name
  int max_words;     // -1: any
  const char* words_usage;
  std::set<std::string> flags;
  std::function<absl::Status(Session&)> run;
};

std::vector<Command> Commands() {
  std::vector<Command> commands = {
      {"login", 1, 1, "USER", {"password_file"}, Login},
      {"logout", 0, 0, "", {}, Logout},
      {"whoami", 0, 0, "", {}, WhoAmI},
      {"facility add", 0, 0, "", kFacilityFlags, FacilityAdd},
      {"facility update", 1, 1, "ID", kFacilityFlags, FacilityUpdate},
      {"facility list", 0, 0, "", {"commune"}, FacilityList},
      {"facility search", 1, -1, "QUERY", {}, FacilitySearch},
      {"facility show", 1, 1, "ID", {}, FacilityShow},
      {"visit record",
       0,
       0,
       "",
       {"facility", "purpose", "notes", "needs", "lat", "lng", "photo", "caption", "workers",
        "product_lines", "annual_output"},
       VisitRecord},
      {"visit list", 0, 0, "", {"facility"}, VisitList},
      {"request draft",
       0,
       0,
       "",
       {"facility", "category", "amount", "description", "contribution", "funding"},
       RequestDraft},
      {"request show", 1, 1, "ID", {}, RequestShow},
      {"request list", 0, 0, "", {"facility"}, RequestList},
      {"request review", 0, 0, "", {}, RequestReview},
      {"attachments list", 0, 0, "", {"visit"}, AttachmentsList},
      {"attachments get", 1, 1, "ID", {"out"}, AttachmentsGet},
      {"attachments", 0, 0, "", {"visit"}, AttachmentsList},
      {"sync", 0, 0, "", {}, Sync},
      {"status", 0, 0, "", {}, StatusCommand},
      // Two-word forms first: the first name that matches the command line wins.
      {"conflicts review", 0, 0, "", {"all"}, ConflictsReview},
      {"conflicts resolve", 1, 1, "ID", {"restore"}, ConflictsResolve},
      {"conflicts", 0, 0, "", {"clear"}, Conflicts},
  };
  return commands;
}

// The request actions (their names are built, so they live outside the table above).
const std::vector<std::string>& RequestVerbs() {
  static const auto* verbs = new std::vector<std::string>{
      "submit", "endorse", "return", "reject", "approve", "start", "complete", "cancel", "comment"};
  return *verbs;
}

absl::Status Dispatch(const Args& args, const std::string& self_path, std::string* label) {
  const std::vector<std::string>& words = args.words();
  if (words.empty()) {
    if (args.help()) {
      std::printf("%s", kUsage);
      return absl::OkStatus();
    }
    return UsageError("no command given (kcnet --help lists them)");
  }
  if (words[0] == "help") {
    std::printf("%s", kUsage);
    return absl::OkStatus();
  }
  if (words[0] == "demo") {
    *label = "demo";
    if (args.help()) {
      std::printf("usage: kcnet demo [--server_bin=PATH] [--admin_bin=PATH] [--keep=yes]\n");
      return absl::OkStatus();
    }
    absl::Status flags = args.CheckFlags({"server_bin", "admin_bin", "keep"}, GlobalFlags());
    if (!flags.ok()) return flags;
    if (words.size() > 1) return UsageError("demo takes no arguments");
    return RunDemo(args, self_path);
  }

  // Find the command: one word ("sync") or two ("facility add", "request endorse").
  struct Found {
    std::string name;
    int min_words = 0, max_words = 0;
    std::string words_usage;
    std::set<std::string> flags;
    std::function<absl::Status(Session&)> run;
  };
  std::optional<Found> found;
  size_t used = 1;
  for (const Command& c : Commands()) {
    if (c.name == nullptr) continue;
    std::vector<std::string> parts = absl::StrSplit(c.name, ' ');
    if (parts.size() > words.size()) continue;
    bool match = true;
    for (size_t i = 0; i < parts.size(); ++i) match = match && parts[i] == words[i];
    if (match) {
      found = Found{c.name, c.min_words, c.max_words, c.words_usage, c.flags, c.run};
      used = parts.size();
      break;
    }
  }
  if (!found.has_value() && words[0] == "request" && words.size() >= 2) {
    for (const std::string& verb : RequestVerbs()) {
      if (words[1] != verb) continue;
      std::set<std::string> flags = {"note"};
      if (verb == "approve") flags = {"note", "amount", "funding"};
      found = Found{absl::StrCat("request ", verb), 1, 1, "ID", flags, [verb](Session& s) {
                      return RequestAct(s, verb);
                    }};
      used = 2;
    }
  }
  if (!found.has_value()) {
    *label = words[0];
    if (words[0] == "facility" || words[0] == "visit" || words[0] == "request") {
      return UsageError(
          words.size() < 2
              ? std::string("which one? (kcnet --help lists the commands)")
              : absl::StrCat("unknown command '", words[1], "' (kcnet --help lists the commands)"));
    }
    return UsageError(
        absl::StrCat("unknown command '", words[0], "' (kcnet --help lists the commands)"));
  }
  *label = found->name;
  const std::string usage = absl::StrCat("kcnet ", found->name,
                                         found->words_usage.empty() ? "" : " ", found->words_usage);
  if (args.help()) {
    std::vector<std::string> flags;
    for (const std::string& f : found->flags) flags.push_back(absl::StrCat("[--", f, "]"));
    std::printf("usage: %s %s\n", usage.c_str(), absl::StrJoin(flags, " ").c_str());
    // The names each enum flag takes.
    struct EnumFlag {
      const char* flag;
      const google::protobuf::EnumDescriptor* descriptor;
      const char* prefix;
    };
    const EnumFlag enums[] = {
        {"kind", v1::FacilityKind_descriptor(), "FACILITY_KIND_"},
        {"sector", v1::Sector_descriptor(), "SECTOR_"},
        {"recognition", v1::RecognitionLevel_descriptor(), "RECOGNITION_LEVEL_"},
        {"purpose", v1::VisitPurpose_descriptor(), "VISIT_PURPOSE_"},
        {"needs", v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_"},
        {"category", v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_"},
        {"funding", v1::FundingSource_descriptor(), "FUNDING_SOURCE_"},
    };
    for (const EnumFlag& e : enums) {
      if (found->flags.count(e.flag) == 0) continue;
      std::vector<std::string> names;
      for (int i = 0; i < e.descriptor->value_count(); ++i) {
        if (absl::EndsWith(e.descriptor->value(i)->name(), "_UNSPECIFIED")) continue;
        names.push_back(EnumName(e.descriptor, e.prefix, e.descriptor->value(i)->number()));
      }
      std::printf("  --%s: %s\n", e.flag, absl::StrJoin(names, ", ").c_str());
    }
    return absl::OkStatus();
  }
  // A password in an argument would show in `ps`: refused whatever the command.
  if (args.Has("password")) return tools::PasswordArgumentError();
  absl::Status flags = args.CheckFlags(found->flags, GlobalFlags());
  if (!flags.ok()) return flags;
  const int given = static_cast<int>(words.size() - used);
  if (given < found->min_words || (found->max_words >= 0 && given > found->max_words)) {
    return UsageError(given < found->min_words
                          ? absl::StrCat("missing ", found->words_usage, " (usage: ", usage, ")")
                          : absl::StrCat("unexpected '", words[used + found->max_words],
                                         "' (usage: ", usage, ")"));
  }
  // The command's own words only.
  std::vector<std::string> rest(words.begin() + static_cast<std::ptrdiff_t>(used), words.end());
  std::vector<std::string> argv = rest;
  for (const std::string& name : found->flags) {
    for (const std::string& value : args.GetAll(name)) {
      argv.push_back(absl::StrCat("--", name, "=", value));
    }
  }
  for (const std::string& name : GlobalFlags()) {
    if (std::optional<std::string> value = args.Get(name)) {
      argv.push_back(absl::StrCat("--", name, "=", *value));
    }
  }
  absl::StatusOr<Args> own = Args::Parse(argv, BooleanFlags(), RepeatableFlags());
  if (!own.ok()) return own.status();
  Session session(*own);
  // A bad --tls or --insecure is a wrong command line, whatever the command and the store.
  absl::StatusOr<bool> tls = session.UseTls();
  if (!tls.ok()) return tls.status();
  return found->run(session);
}

}  // namespace

int RunKcnet(const std::vector<std::string>& argv, const std::string& self_path) {
  std::string label;
  absl::Status status;
  try {
    absl::StatusOr<Args> args = Args::Parse(argv, BooleanFlags(), RepeatableFlags());
    if (!args.ok()) {
      status = args.status();
    } else {
      status = Dispatch(*args, self_path, &label);
    }
  } catch (const std::exception& e) {  // a safety net: one line, never a terminate()
    status = absl::InternalError(absl::StrCat("internal error: ", e.what()));
  }
  if (status.ok()) return 0;
  // The SDK's messages may start with the path inside the upload ("changes[0].fields[6]: "),
  // which says nothing to a collaborator: the record's field follows it.
  absl::string_view message = status.message();
  if (absl::StartsWith(message, "changes[")) {
    const size_t colon = message.find(": ");
    if (colon != absl::string_view::npos) message.remove_prefix(colon + 2);
  }
  std::fprintf(stderr, "kcnet: %s%s%s\n", label.c_str(), label.empty() ? "" : ": ",
               OneLine(message).c_str());
  return IsUsageError(status) ? 2 : 1;
}

}  // namespace kcnet::cli
