// The kcnet binary: the field commands against a real kcnet-server (seeded by
// kcnet-admin), then offline once the server is gone (facility add/list/search, a visit, a
// request, a sync that fails keeping the changes); bad command lines answered with one
// actionable line and exit code 2; and `kcnet demo` converging.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client_sdk/cli/child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_tls.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_CLI_PATH
#error "KCNET_CLI_PATH, KCNET_SERVER_PATH and KCNET_ADMIN_PATH name the binaries"
#endif

namespace kcnet::cli {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class KcnetBinaryTest : public ::testing::Test {
 protected:
  // Runs kcnet with `args` on this test's store.
  Result Kcnet(std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60)) {
    args.insert(args.begin(), {KCNET_CLI_PATH, "--store=" + dir_.File("tablet.db")});
    const std::string err = dir_.File(absl::StrCat("run", ++runs_, ".stderr"));
    RunOutput out = RunProgram(args, err, timeout);
    Result run{out.exit_code, out.output, ReadFile(err)};
    // Never a crash, a stack trace or an abort, whatever happened.
    EXPECT_THAT(run.err, Not(HasSubstr("terminate")));
    EXPECT_THAT(run.err, Not(HasSubstr("Abort")));
    EXPECT_THAT(run.err, Not(HasSubstr("Check failed")));
    EXPECT_GE(run.exit_code, 0) << "killed by a signal: " << absl::StrJoin(args, " ");
    return run;
  }

  // Seeds a data directory and starts kcnet-server on it; returns its address.
  std::string StartServer(const std::vector<std::string>& extra_flags = {}) {
    const std::string data = dir_.File("data");
    RunOutput seed = RunProgram({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data},
                                dir_.File("admin.err"), absl::Seconds(60));
    EXPECT_EQ(seed.exit_code, 0) << ReadFile(dir_.File("admin.err"));
    for (absl::string_view line : absl::StrSplit(seed.output, '\n')) {
      std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.size() >= 2) passwords_[std::string(words[0])] = std::string(words[1]);
      if (words.size() >= 2 && words[0] == "collab1") password_ = std::string(words[1]);
    }
    return Serve(data, extra_flags);
  }

  // Runs kcnet-admin on `data` with `args`; returns its exit code (stderr in the failure).
  int Admin(const std::string& data, std::vector<std::string> args) {
    args.insert(args.begin(), {KCNET_ADMIN_PATH, "--data_dir=" + data});
    const std::string err = dir_.File(absl::StrCat("admin", ++runs_, ".stderr"));
    RunOutput out = RunProgram(args, err, absl::Seconds(120));
    EXPECT_EQ(out.exit_code, 0) << absl::StrJoin(args, " ") << ": " << ReadFile(err);
    return out.exit_code;
  }

  // Starts kcnet-server on the data directory `data`; returns its address.
  std::string Serve(const std::string& data, const std::vector<std::string>& extra_flags = {}) {
    std::vector<std::string> argv = {KCNET_SERVER_PATH, "--data_dir=" + data,
                                     "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    absl::StatusOr<std::unique_ptr<ChildProcess>> server =
        ChildProcess::Start(argv, dir_.File("server.err"));
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return "";
    server_ = *std::move(server);
    std::optional<std::string> ready = server_->ReadLine(absl::Seconds(30));
    EXPECT_TRUE(ready.has_value()) << ReadFile(dir_.File("server.err"));
    const std::string line = ready.value_or("");
    absl::string_view address = line;
    EXPECT_TRUE(absl::ConsumePrefix(&address, "kcnet-server listening on ")) << address;
    return std::string(address);
  }

  // A file holding collab1's password (StartServer() reads it from seed-demo's table).
  std::string PasswordFile() { return PasswordFile("collab1", password_); }
  std::string PasswordFile(const std::string& user, const std::string& password) {
    const std::string path = dir_.File(user + ".password");
    std::ofstream(path) << password << "\n";
    return path;
  }

  // The word after `prefix` in `text` ("registered facility <id>").
  static std::string After(const std::string& text, const std::string& prefix) {
    const size_t at = text.find(prefix);
    if (at == std::string::npos) return "";
    std::string rest = text.substr(at + prefix.size());
    return rest.substr(0, rest.find_first_of(" \n"));
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<ChildProcess> server_;
  std::string password_;
  std::map<std::string, std::string> passwords_;  // of every seed-demo account
  int runs_ = 0;
};

TEST_F(KcnetBinaryTest, LoginOnceThenWorkOffline) {
  const std::string address = StartServer();
  ASSERT_FALSE(address.empty());
  ASSERT_FALSE(password_.empty());
  Result login =
      Kcnet({"--server=" + address, "login", "collab1", "--password-file=" + PasswordFile()});
  ASSERT_EQ(login.exit_code, 0) << login.err;
  EXPECT_THAT(login.out, HasSubstr("signed in as collab1"));
  // Org units by name and code, from the directory fetched with the sign-in.
  EXPECT_THAT(login.out, HasSubstr("commune_collaborator at Xã An Bình Demo (90101)"));
  Result sync = Kcnet({"sync"});  // the server address is remembered
  ASSERT_EQ(sync.exit_code, 0) << sync.err;
  EXPECT_THAT(sync.out, HasSubstr("synced with " + address));
  Result who = Kcnet({"whoami"});
  EXPECT_EQ(who.exit_code, 0);
  EXPECT_THAT(who.out, HasSubstr("collab1"));
  EXPECT_THAT(who.out, HasSubstr("communes on this device: Xã An Bình Demo (90101): "));

  // The server goes away: everything but login and sync keeps working.
  server_->Stop(absl::Seconds(15));
  Result add = Kcnet({"facility", "add", "--name=Cơ sở bánh đa Nguyễn Văn Tư",
                      "--owner=Nguyễn Văn Tư", "--products=Bánh đa nem", "--workers=8",
                      "--lat=20.1", "--lng=105.5", "--kind=household-business", "--sector=food"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  const std::string facility = After(add.out, "registered facility ");
  ASSERT_EQ(facility.size(), 36u) << add.out;
  Result list = Kcnet({"facility", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(facility));
  EXPECT_THAT(list.out, HasSubstr("An Bình (demo)"));  // seeded, downloaded by the sync
  // Names, not ids, offline too: "Xã An Bình Demo (90101)", never "commune 4".
  EXPECT_THAT(list.out, HasSubstr("(Nguyễn Văn Tư)  Xã An Bình Demo (90101)"));
  EXPECT_THAT(list.out, Not(ContainsRegex("commune [0-9]")));
  EXPECT_THAT(list.err, HasSubstr("facilities in Xã An Bình Demo (90101)\n"));
  Result by_code = Kcnet({"facility", "list", "--commune=90101"});
  EXPECT_EQ(by_code.exit_code, 0) << by_code.err;
  EXPECT_EQ(by_code.out, list.out);
  Result search = Kcnet({"facility", "search", "banh DA"});
  EXPECT_EQ(search.exit_code, 0) << search.err;
  EXPECT_THAT(search.out, HasSubstr(facility));
  Result visit = Kcnet({"visit", "record", "--facility=" + facility, "--purpose=follow-up",
                        "--notes=Cần máy tráng bánh", "--needs=machinery,training", "--workers=12",
                        "--product_lines=3", "--annual_output=1.250.000.000"});
  EXPECT_EQ(visit.exit_code, 0) << visit.err;
  Result visits = Kcnet({"visit", "list", "--facility=" + facility});
  EXPECT_THAT(visits.out, HasSubstr("follow_up"));
  EXPECT_THAT(visits.out, HasSubstr("workers 12, product lines 3, output 1.250.000.000 VND"));
  EXPECT_THAT(visits.out, HasSubstr("  by Nguyễn Văn An (demo)"));
  Result draft = Kcnet({"request", "draft", "--facility=" + facility, "--category=machinery",
                        "--amount=120.000.000", "--description=Máy tráng bánh đa"});
  ASSERT_EQ(draft.exit_code, 0) << draft.err;
  const std::string request = After(draft.out, "drafted request ");
  ASSERT_EQ(request.size(), 36u) << draft.out;
  Result submit = Kcnet({"request", "submit", request});
  EXPECT_EQ(submit.exit_code, 0) << submit.err;
  EXPECT_THAT(submit.out, HasSubstr("submitted"));
  Result show = Kcnet({"request", "show", request});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("120.000.000 VND"));
  EXPECT_THAT(show.out, HasSubstr("draft -> submitted"));
  EXPECT_THAT(show.out, HasSubstr("  commune: Xã An Bình Demo (90101)\n"));
  EXPECT_THAT(show.out, HasSubstr("  author: Nguyễn Văn An (demo)\n"));
  EXPECT_THAT(show.out, HasSubstr("  Nguyễn Văn An (demo)  submit  draft -> submitted"));
  EXPECT_THAT(show.out, Not(ContainsRegex("user [0-9]")));
  Result far = Kcnet({"facility", "add", "--name=X", "--owner=Y", "--lat=95", "--lng=105"});
  EXPECT_EQ(far.exit_code, 1);
  EXPECT_EQ(far.err, "kcnet: facility add: facility.latitude: 95 is outside [-90, 90]\n");
  Result endorse = Kcnet({"request", "endorse", request});  // not a collaborator's to make
  EXPECT_EQ(endorse.exit_code, 1);
  EXPECT_THAT(endorse.err, HasSubstr("kcnet: request endorse: "));
  Result status = Kcnet({"status"});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_THAT(status.out, HasSubstr("pending uploads: 4"));

  Result offline = Kcnet({"sync"});
  EXPECT_EQ(offline.exit_code, 1);
  EXPECT_EQ(offline.err,
            absl::StrCat("kcnet: sync: cannot reach the server at ", address,
                         "; your 4 changes are kept and will upload on the next sync\n"));
  EXPECT_THAT(Kcnet({"status"}).out, HasSubstr("pending uploads: 4"));
  // Signing out with changes not uploaded is refused, and says what to do.
  Result logout = Kcnet({"logout"});
  EXPECT_EQ(logout.exit_code, 1);
  EXPECT_THAT(logout.err, HasSubstr("kcnet sync"));
  EXPECT_THAT(Kcnet({"status"}).out, HasSubstr("pending uploads: 4"));
}

TEST_F(KcnetBinaryTest, BadCommandLinesGetOneActionableLine) {
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"facility", "add", "--owner=X"}, 2, "kcnet: facility add: --name is required\n"},
      {{"facility", "add", "--nmae=X"},
       2,
       "kcnet: facility add: unknown flag --nmae (it takes --address --commune --kind --lat "
       "--lng --name --owner --phone --products --recognition --sector --workers)\n"},
      {{"facility", "add", "--name=X", "--owner=Y", "--workers=many"},
       2,
       "kcnet: facility add: --workers: 'many' is not a whole number (separators only between "
       "groups of three digits: 45.000.000)\n"},
      {{"visit", "record", "--facility=x", "--workers=-3"},
       2,
       "kcnet: visit record: --workers: cannot be negative\n"},
      {{"visit", "record", "--facility=x", "--purpose=party"},
       2,
       "kcnet: visit record: --purpose: 'party' is not one of survey, follow_up, "
       "project_monitoring, policy_outreach\n"},
      {{"request", "approve"},
       2,
       "kcnet: request approve: missing ID (usage: kcnet request approve ID)\n"},
      {{"teleport"},
       2,
       "kcnet: teleport: unknown command 'teleport' (kcnet --help lists the commands)\n"},
      {{"facility", "list", "--commune"}, 2, "kcnet: --commune needs a value (--commune=VALUE)\n"},
      {{"facility", "list"},
       1,
       absl::StrCat("kcnet: facility list: --store: ", dir_.File("tablet.db"),
                    " does not exist (`kcnet login USER` creates a store; check the path)\n")},
      {{"conflicts", "resolve", "x"},
       2,
       "kcnet: conflicts resolve: ID: must be a conflict number from `kcnet conflicts review`\n"},
      {{"conflicts", "review", "--all=maybe"}, 2, "kcnet: conflicts review: --all: yes or no\n"},
      {{"--insecure", "--tls=true", "sync"},
       2,
       "kcnet: sync: --tls=true and --insecure contradict each other\n"},
      {{"--tls=maybe", "status"}, 2, "kcnet: status: --tls: 'maybe' is not true or false\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    Result run = Kcnet(c.args);
    EXPECT_EQ(run.exit_code, c.exit_code);
    EXPECT_EQ(run.err, c.err);
    EXPECT_EQ(run.out, "");
  }
  // `login` would create a store, but not in a folder that does not exist.
  const std::string err = dir_.File("nofolder.stderr");
  std::ofstream(dir_.File("any.password")) << "any password\n";
  RunOutput nofolder = RunProgram({KCNET_CLI_PATH, "--store=" + dir_.File("missing/x.db"), "login",
                                   "collab1", "--password-file=" + dir_.File("any.password")},
                                  err, absl::Seconds(30));
  EXPECT_EQ(nofolder.exit_code, 1);
  EXPECT_EQ(ReadFile(err),
            absl::StrCat("kcnet: login: cannot create the store ", dir_.File("missing/x.db"),
                         ": the folder ", dir_.File("missing"), " does not exist\n"));
  Result help = Kcnet({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("facility add"));
}

// Separators are read only between groups of three digits: "45,5" is not 455 VND and
// "2.5" workers are not 25.
TEST_F(KcnetBinaryTest, NumbersTakeSeparatorsOnlyBetweenGroupsOfThree) {
  struct Case {
    std::vector<std::string> args;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"facility", "add", "--name=X", "--owner=Y", "--workers=2.5"},
       "kcnet: facility add: --workers: '2.5' is not a whole number (separators only between "
       "groups of three digits: 45.000.000)\n"},
      {{"request", "draft", "--facility=f", "--category=training", "--amount=45,5",
        "--description=d"},
       "kcnet: request draft: --amount: '45,5' is not a whole number (separators only between "
       "groups of three digits: 45.000.000)\n"},
      {{"request", "draft", "--facility=f", "--category=training", "--amount=45.000,000",
        "--description=d"},
       "kcnet: request draft: --amount: '45.000,000' is not a whole number (separators only "
       "between groups of three digits: 45.000.000)\n"},
      {{"request", "approve", "x", "--amount=1.0000.000"},
       "kcnet: request approve: --amount: '1.0000.000' is not a whole number (separators only "
       "between groups of three digits: 45.000.000)\n"},
      {{"facility", "list", "--commune=9.0101"},
       "kcnet: facility list: --commune: '9.0101' is not an official code (fixed width, leading "
       "zeros kept: 90101, 00004) or an id; code:90101 or id:4 says which\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    Result run = Kcnet(c.args);
    EXPECT_EQ(run.exit_code, 2);
    EXPECT_EQ(run.err, c.err);
  }
}

// A mistyped --store is an error, not a new empty store; only `login` creates one.
TEST_F(KcnetBinaryTest, MissingStoreIsAnErrorExceptForLogin) {
  const std::string typo = dir_.File("typo.db");
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"whoami"}, {"status"}, {"sync"}, {"facility", "list"}}) {
    SCOPED_TRACE(absl::StrJoin(command, " "));
    std::vector<std::string> argv = {KCNET_CLI_PATH, "--store=" + typo};
    argv.insert(argv.end(), command.begin(), command.end());
    const std::string err = dir_.File(absl::StrCat("typo", argv.size(), argv.back(), ".stderr"));
    RunOutput run = RunProgram(argv, err, absl::Seconds(30));
    EXPECT_EQ(run.exit_code, 1);
    EXPECT_EQ(ReadFile(err),
              absl::StrCat("kcnet: ", absl::StrJoin(command, " "), ": --store: ", typo,
                           " does not exist (`kcnet login USER` creates a "
                           "store; check the path)\n"));
    EXPECT_FALSE(std::filesystem::exists(typo));
    EXPECT_FALSE(std::filesystem::exists(typo + ".settings"));
  }
}

// A password never travels in an argument (it would show in `ps`).
TEST_F(KcnetBinaryTest, PasswordNeverAnArgument) {
  Result given = Kcnet({"login", "collab1", "--password=secret"});
  EXPECT_EQ(given.exit_code, 2);
  EXPECT_EQ(given.err,
            "kcnet: login: --password: a password in an argument shows in `ps`; give "
            "--password-file=PATH, or type it at the prompt (or on stdin)\n");
  Result empty_file = Kcnet({"login", "collab1", "--password-file=" + dir_.File("none")});
  EXPECT_EQ(empty_file.exit_code, 1);
  EXPECT_THAT(empty_file.err, HasSubstr("kcnet: login: --password-file: cannot read "));
  EXPECT_FALSE(std::filesystem::exists(dir_.File("tablet.db")));
  const std::string address = StartServer();
  ASSERT_FALSE(address.empty());
  Result login =
      Kcnet({"--server=" + address, "login", "collab1", "--password_file=" + PasswordFile()});
  EXPECT_EQ(login.exit_code, 0) << login.err;
  EXPECT_THAT(login.out, HasSubstr("signed in as collab1"));
}

// kcnet speaks TLS to a server that serves it, trusting the roots of --ca_file, and
// remembers both beside the store; without those roots the server is not trusted.
TEST_F(KcnetBinaryTest, TlsRoundTripWithCaFile) {
  kcnet::testing::TestCertificates certs(dir_.path());
  if (!certs.ok()) GTEST_SKIP() << certs.error();
  const std::string address =
      StartServer({"--tls_cert=" + certs.server_cert(), "--tls_key=" + certs.server_key()});
  ASSERT_FALSE(address.empty());
  // Loopback defaults to plaintext: --tls=true asks for TLS.
  Result untrusted = Kcnet({"--server=" + address, "--tls=true", "login", "collab1",
                            "--password-file=" + PasswordFile()});
  EXPECT_EQ(untrusted.exit_code, 1);
  EXPECT_THAT(untrusted.err,
              HasSubstr("over TLS (a server with its own certificate authority needs --ca_file"));
  // --ca_file means TLS (as deploy/quickstart.sh uses it).
  Result login = Kcnet({"--server=" + address, "--ca_file=" + certs.ca_cert(), "login", "collab1",
                        "--password-file=" + PasswordFile()});
  ASSERT_EQ(login.exit_code, 0) << login.err;
  Result sync = Kcnet({"sync"});  // the server, TLS and the roots are remembered
  EXPECT_EQ(sync.exit_code, 0) << sync.err;
  Result who = Kcnet({"whoami"});
  EXPECT_THAT(who.out, HasSubstr(absl::StrCat("server ", address, " (TLS, roots from ")));
  // A server that is not on this machine gets TLS without being asked, with the system's
  // roots: what is remembered (--ca_file, --tls) belongs to the other server.
  Result remote = Kcnet({"--server=kcnet.example.vn:443", "whoami"});
  EXPECT_THAT(remote.out, HasSubstr("server kcnet.example.vn:443 (TLS, system roots)"));
  Result local = Kcnet({"--server=127.0.0.1:1", "whoami"});
  EXPECT_THAT(local.out, HasSubstr("server 127.0.0.1:1 (plaintext)"));
  Result plain = Kcnet({"--server=kcnet.example.vn:443", "--insecure", "whoami"});
  EXPECT_THAT(plain.out, HasSubstr("server kcnet.example.vn:443 (plaintext)"));
  Result bad_ca = Kcnet({"--ca_file=" + dir_.File("nope.pem"), "sync"});
  EXPECT_EQ(bad_ca.exit_code, 1);
  EXPECT_THAT(bad_ca.err, HasSubstr("kcnet: sync: --ca_file: cannot read "));
}

// --commune takes an official code or an id; a value that is both (the code of one unit,
// the id of another) is refused as ambiguous, and one that matches nothing of the user's
// is refused, each naming the flag.
TEST_F(KcnetBinaryTest, CommuneTakesACodeOrAnId) {
  const std::string address = StartServer();
  ASSERT_FALSE(address.empty());
  // A commune whose code "2" is also the id of a unit of coord1's (the district 901 is the
  // second unit seed-demo creates).
  const std::string csv = dir_.File("extra.csv");
  std::ofstream(csv) << "code,name,level,parent_code\n2,Xã Số Hai,commune,901\n";
  ASSERT_EQ(Admin(dir_.File("data"), {"import-org-units", csv}), 0);
  Result login = Kcnet({"--server=" + address, "login", "coord1",
                        "--password-file=" + PasswordFile("coord1", passwords_["coord1"])});
  ASSERT_EQ(login.exit_code, 0) << login.err;
  EXPECT_THAT(login.out, HasSubstr("district_coordinator at Huyện Đông Demo (901)"));
  ASSERT_EQ(Kcnet({"sync"}).exit_code, 0);

  Result by_code = Kcnet({"facility", "list", "--commune=90102"});
  EXPECT_EQ(by_code.exit_code, 0) << by_code.err;
  EXPECT_THAT(by_code.err, HasSubstr("facilities in Xã Phú Lộc Demo (90102)\n"));
  Result ambiguous = Kcnet({"facility", "list", "--commune=2"});
  EXPECT_EQ(ambiguous.exit_code, 2);
  EXPECT_THAT(ambiguous.err,
              HasSubstr("kcnet: facility list: --commune: '2' is ambiguous: the code of Xã Số "
                        "Hai (2) and the id of "));
  EXPECT_THAT(ambiguous.err, HasSubstr("; write code:2 or id:2\n"));
  Result code = Kcnet({"facility", "list", "--commune=code:2"});
  EXPECT_EQ(code.exit_code, 0) << code.err;
  EXPECT_THAT(code.err, HasSubstr("facilities in Xã Số Hai (2)\n"));
  Result id = Kcnet({"facility", "list", "--commune=id:2"});
  EXPECT_EQ(id.exit_code, 0) << id.err;
  EXPECT_THAT(id.err, Not(HasSubstr("Xã Số Hai")));
  // Another district's commune: not the coordinator's, refused like one that does not exist.
  for (const std::string value : {"90201", "999"}) {
    Result other = Kcnet({"facility", "list", "--commune=" + value});
    EXPECT_EQ(other.exit_code, 2);
    EXPECT_EQ(other.err,
              absl::StrCat("kcnet: facility list: --commune: no org unit of yours has "
                           "the code or id '",
                           value, "' (`kcnet whoami` lists your communes with their codes)\n"));
  }
  Result add =
      Kcnet({"facility", "add", "--name=Lò gốm", "--owner=Trần Văn Gốm", "--commune=90103"});
  EXPECT_EQ(add.exit_code, 0) << add.err;
  EXPECT_THAT(add.out, HasSubstr("  commune: Thị trấn Đông Demo (90103)\n"));
  for (const std::string value : {"id:0004", "abc", "code:", "90-101"}) {
    Result bad = Kcnet({"facility", "list", "--commune=" + value});
    EXPECT_EQ(bad.exit_code, 2);
    EXPECT_EQ(bad.err, absl::StrCat("kcnet: facility list: --commune: '", value,
                                    "' is not an official code (fixed width, leading zeros kept: "
                                    "90101, 00004) or an id; code:90101 or id:4 says which\n"));
  }
}

// The real official code list: commune codes keep their leading zeros ("00004" is Phường Ba
// Đình, never the unit with id 4). Skipped when ../shared/data/vn_admin is absent.
TEST_F(KcnetBinaryTest, RealCodesWithLeadingZeros) {
  const std::string csv = std::string(KCNET_SHARED_DIR) + "/data/vn_admin/units_2tier_2025.csv";
  if (!std::filesystem::exists(csv)) {
    GTEST_SKIP() << "real-data test skipped: " << csv
                 << " is absent (it lives in ../shared/data/vn_admin beside the source)";
  }
  const std::string data = dir_.File("data");
  ASSERT_EQ(Admin(data, {"import-org-units", csv}), 0);
  ASSERT_EQ(Admin(data, {"create-user", "--username=ctv_ba_dinh", "--display_name=Nguyễn Văn An",
                         "--role=commune_collaborator", "--org_units=00004",
                         "--password-file=" + PasswordFile("ctv_ba_dinh", "mat-khau-ba-dinh")}),
            0);
  const std::string address = Serve(data);
  ASSERT_FALSE(address.empty());
  Result login = Kcnet({"--server=" + address, "login", "ctv_ba_dinh",
                        "--password-file=" + dir_.File("ctv_ba_dinh.password")});
  ASSERT_EQ(login.exit_code, 0) << login.err;
  EXPECT_THAT(login.out, HasSubstr("commune_collaborator at Phường Ba Đình (00004)"));
  Result add = Kcnet(
      {"facility", "add", "--name=Cơ sở may Ba Đình", "--owner=Nguyễn Thị Lan", "--commune=00004"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_THAT(add.out, HasSubstr("  commune: Phường Ba Đình (00004)\n"));
  Result list = Kcnet({"facility", "list", "--commune=00004"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("Cơ sở may Ba Đình  (Nguyễn Thị Lan)  Phường Ba Đình (00004)"));
  // Without its zeros it is not the code (a bare "4" could only be an id).
  Result stripped = Kcnet({"facility", "list", "--commune=code:4"});
  EXPECT_EQ(stripped.exit_code, 2);
  EXPECT_EQ(stripped.err,
            "kcnet: facility list: --commune: no org unit of yours has the code '4' (`kcnet "
            "whoami` lists your communes with their codes)\n");
}

TEST_F(KcnetBinaryTest, DemoConverges) {
  const std::string err = dir_.File("demo.stderr");
  RunOutput demo =
      RunProgram({KCNET_CLI_PATH, "demo", std::string("--server_bin=") + KCNET_SERVER_PATH,
                  std::string("--admin_bin=") + KCNET_ADMIN_PATH},
                 err, absl::Minutes(4));
  const std::string errors = ReadFile(err);
  EXPECT_EQ(demo.exit_code, 0) << demo.output << errors;
  EXPECT_TRUE(absl::EndsWith(demo.output, "\nconverged\n")) << demo.output << errors;
  EXPECT_THAT(demo.output, HasSubstr("endorsed"));
  EXPECT_THAT(demo.output, HasSubstr("returned"));
  EXPECT_THAT(demo.output, HasSubstr("approved"));
  EXPECT_THAT(demo.output, HasSubstr("tablet-a report: conflict"));
  EXPECT_THAT(errors, Not(HasSubstr("terminate")));
}

}  // namespace
}  // namespace kcnet::cli
