// Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ from
// test-like data: pushes of real domain records (checked against a real ServerStore with
// the business rules), the download batches a device receives for them, CSV code lists
// like the importer's tests, and clock programs.
// Usage: fuzz_seed_gen CORPUS_DIR   (rerun only when the message formats change)
//
// Thread-safety: a single-threaded program.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/device_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/model/rules.h"
#include "sync/page_codec.h"
#include "sync/server_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace kcnet::fuzz {
namespace {

namespace fs = std::filesystem;
using namespace ::kcnet::v1;  // enum constants

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

RecordChange Must(absl::StatusOr<RecordChange> change) {
  KCNET_FUZZ_CHECK(change.ok(), "%s", change.status().ToString().c_str());
  return *change;
}

// The pushes of one collaborator's day: a facility, a visit, a support request, edits.
std::vector<MutationBatch> Pushes() {
  const uint64_t hlc = sync::HlcPack(kNowMs - 60000, 0);
  Facility facility;
  facility.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
  facility.set_commune_id(kCommune);
  facility.set_name("Cơ sở mây tre đan Phú Vinh");
  facility.set_owner_name("Nguyễn Văn An");
  facility.set_latitude(20.95);
  facility.set_longitude(105.75);
  facility.set_workers(25);
  facility.set_created_by(7);
  facility.set_created_ms(kNowMs - 60000);
  Visit visit;
  visit.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e72");
  visit.set_commune_id(kCommune);
  visit.set_facility_id(facility.id());
  visit.set_collaborator_id(7);
  visit.set_visited_ms(kNowMs - 50000);
  visit.set_findings("Cần máy chẻ nan");
  visit.add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  SupportRequest request;
  request.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e71");
  request.set_commune_id(kCommune);
  request.set_facility_id(facility.id());
  request.set_author_id(7);
  request.set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  request.set_description("Hỗ trợ máy chẻ nan");
  request.set_requested_amount_vnd(150000000);
  request.set_own_contribution_vnd(50000000);
  request.set_status(REQUEST_STATUS_DRAFT);
  request.set_created_ms(kNowMs - 40000);

  std::vector<MutationBatch> pushes;
  MutationBatch create;
  Mutation* m = create.add_mutations();
  m->set_seq(1);
  *m->add_changes() = Must(model::ToChange(facility));
  m = create.add_mutations();
  m->set_seq(2);
  *m->add_changes() = Must(model::ToChange(visit));
  m = create.add_mutations();
  m->set_seq(3);
  *m->add_changes() = Must(model::ToChange(request));
  uint64_t tick = 0;
  for (auto& mut : *create.mutable_mutations()) {
    for (auto& c : *mut.mutable_changes()) c.set_hlc(hlc + ++tick);
  }
  pushes.push_back(create);

  MutationBatch edit;  // a later edit of two fields (base op 1) and a deletion
  m = edit.add_mutations();
  m->set_seq(1);
  RecordChange* c = m->add_changes();
  c->set_type(model::kFacilityType);
  c->set_id(create.mutations(0).changes(0).id());
  c->set_hlc(hlc + 100);
  c->set_base_op(1);
  FieldChange* f = c->add_fields();
  f->set_field(10);
  f->mutable_value()->set_int_value(30);
  f = c->add_fields();
  f->set_field(3);
  f->mutable_value()->set_string_value("Cơ sở mây tre đan Phú Vinh 2");
  f->set_hlc(hlc + 101);
  m = edit.add_mutations();
  m->set_seq(2);
  c = m->add_changes();
  c->set_type(model::kVisitType);
  c->set_id(create.mutations(1).changes(0).id());
  c->set_hlc(hlc + 102);
  c->set_deleted(true);
  edit.set_settled_through(1);
  pushes.push_back(edit);
  return pushes;
}

void ServerSeeds(const fs::path& root) {
  const std::vector<MutationBatch> pushes = Pushes();
  const fs::path dir = root / "server_apply_fuzzer";
  // Mode byte: role in bits 0-2, user 7 + bits 3-4, bit 6 a store that already holds
  // records, bit 7 a server-side write.
  const uint8_t modes[] = {ROLE_COMMUNE_COLLABORATOR, ROLE_DISTRICT_COORDINATOR | 0x08,
                           0x80 | ROLE_PROVINCE_OFFICER, 0x40 | ROLE_COMMUNE_COLLABORATOR};
  int n = 0;
  for (const MutationBatch& push : pushes) {
    for (uint8_t mode : modes) {
      SyncClientMessage message;
      *message.mutable_push() = push;
      Write(dir, "push-" + std::to_string(n++),
            std::string(1, static_cast<char>(mode)) + message.SerializeAsString());
    }
  }
  MutationBatch both = pushes[0];  // create and edit in one batch
  for (Mutation m : pushes[1].mutations()) {
    m.set_seq(m.seq() + 3);
    *both.add_mutations() = m;
  }
  SyncClientMessage message;
  *message.mutable_push() = both;
  Write(dir, "push-both", std::string(1, ROLE_COMMUNE_COLLABORATOR) + message.SerializeAsString());
  message.Clear();
  message.mutable_hello()->set_device_id("tablet-1");
  message.mutable_hello()->set_schema_version(SCHEMA_VERSION_1);
  Write(dir, "hello", std::string(1, 0) + message.SerializeAsString());
  BucketCursor* cursor = message.mutable_hello()->add_cursors();
  cursor->set_bucket(kCommune);
  cursor->set_op(1);
  cursor->set_floor(1);
  cursor = message.mutable_hello()->add_cursors();
  cursor->set_bucket(kOtherCommune);
  Write(dir, "hello-cursors", std::string(1, 0x21) + message.SerializeAsString());
  const BucketCursor last = *cursor;
  message.Clear();
  *message.mutable_download_ack()->add_cursors() = last;
  Write(dir, "download-ack", std::string(1, 0x12) + message.SerializeAsString());

  // The same pushes through a real server; the download pages are the device's seeds.
  const sync::Schema& schema = model::KcnetSchema();
  sync::FakeClock clock(kNowMs);
  auto server = sync::ServerStore::Open(":memory:", &schema, {.clock = &clock, .durable = false});
  KCNET_FUZZ_CHECK(server.ok(), "%s", server.status().ToString().c_str());
  model::Actor actor{7, ROLE_COMMUNE_COLLABORATOR, [](int64_t c) { return c == kCommune; }};
  const fs::path device_dir = root / "device_download_fuzzer";
  int page = 0;
  for (const MutationBatch& push : pushes) {
    MutationBatch renumbered = push;
    if (&push != &pushes.front()) {
      for (auto& m : *renumbered.mutable_mutations()) m.set_seq(m.seq() + 3);
    }
    auto ack = (*server)->Apply({"tablet-1", sync::NodeIdFor("tablet-1")}, renumbered,
                                model::ValidatorFor(actor));
    KCNET_FUZZ_CHECK(ack.ok(), "%s", ack.status().ToString().c_str());
    SyncServerMessage ack_message;
    *ack_message.mutable_push_ack() = *ack;
    Write(device_dir, "ack-" + std::to_string(page), ack_message.SerializeAsString());
    for (const auto& r : ack->results()) {
      std::fprintf(stderr, "seq %llu: %s %s\n", static_cast<unsigned long long>(r.seq()),
                   MutationOutcome_Name(r.outcome()).c_str(), r.reason().c_str());
    }
    for (uint64_t floor : {uint64_t{0}, uint64_t{1}}) {
      BucketCursor cursor;
      cursor.set_bucket(kCommune);
      cursor.set_floor(floor);
      cursor.set_op(floor);
      auto batch = (*server)->ChangesSince({cursor}, {.max_changes = 2, .max_bytes = 4096});
      KCNET_FUZZ_CHECK(batch.ok(), "%s", batch.status().ToString().c_str());
      SyncServerMessage message;
      *message.mutable_changes() = *batch;
      Write(device_dir, "page-" + std::to_string(page++), message.SerializeAsString());
      auto all = (*server)->ChangesSince({cursor});
      KCNET_FUZZ_CHECK(all.ok(), "%s", all.status().ToString().c_str());
      *message.mutable_changes() = *all;
      Write(device_dir, "page-" + std::to_string(page++), message.SerializeAsString());
      // The same page as the SDK receives it (Hello.deflate_pages).
      SyncServerMessage deflated;
      deflated.set_deflated_changes(sync::DeflatePage(*all));
      Write(device_dir, "deflated-" + std::to_string(page++), deflated.SerializeAsString());
    }
  }
}

// What the device's first mutation (seq 1) may hear back, and a scope change.
void DeviceAnswerSeeds(const fs::path& root) {
  const fs::path dir = root / "device_download_fuzzer";
  SyncServerMessage message;
  MutationResult* result = message.mutable_push_ack()->add_results();
  result->set_seq(1);
  result->set_outcome(MUTATION_OUTCOME_REFUSED);
  result->set_reason("changes[0].commune_id: outside your communes");
  result->set_field("changes[0].fields[0]");
  result->set_code(7);
  message.mutable_push_ack()->set_last_applied_seq(1);
  message.mutable_push_ack()->set_server_op(4);
  Write(dir, "ack-refused", message.SerializeAsString());
  result->Clear();
  result->set_seq(1);
  result->set_outcome(MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
  result->set_op(5);
  Conflict* conflict = result->add_conflicts();
  conflict->set_type(model::kFacilityType);
  conflict->set_field(3);
  conflict->mutable_winner_value()->set_string_value("Cơ sở A");
  conflict->mutable_loser_value()->set_string_value("Cơ sở B");
  conflict->set_bucket(kCommune);
  Write(dir, "ack-conflict", message.SerializeAsString());
  message.Clear();
  message.mutable_scope_change()->add_added(kOtherCommune + 1);
  message.mutable_scope_change()->add_removed(kOtherCommune);
  Write(dir, "scope-change", message.SerializeAsString());
}

void CsvSeeds(const fs::path& root) {
  const fs::path dir = root / "csv_import_fuzzer";
  Write(dir, "three-tier",
        "code,name,level,parent_code\n"
        "00001,Phường Phúc Xá,commune,001\n"
        "00004,Phường Trúc Bạch,commune,001\n"
        "00037,Phường Phúc Tân,commune,002\n"
        "001,Quận Ba Đình,district,01\n"
        "002,Quận Hoàn Kiếm,district,01\n"
        "01,Thành phố Hà Nội,province,\n");
  Write(dir, "two-tier-crlf-bom",
        "\xEF\xBB\xBF"
        "code,name,level,parent_code\r\n"
        "01,Thành phố Hà Nội,province,\r\n"
        "00004,\"Phường Ba Đình, mới\",commune,01\r\n"
        "00008,\"Phường \"\"Ngọc Hà\"\"\",commune,01\r\n");
  Write(dir, "bad-rows",
        "01,Hà Nội,province,\n"
        "001,,district,01\n"
        "002,Quận X,ward,01\n"
        "003,Quận Y,district,99\n"
        "\"004,Quận Z,district,01\n"
        "01,Hà Nội,province,\n");
}

void ClockSeeds(const fs::path& root) {
  const fs::path dir = root / "clock_merge_fuzzer";
  std::mt19937_64 rng(6);
  for (int i = 0; i < 8; ++i) {
    std::string bytes(32 + 32 * i, '\0');
    for (char& b : bytes) b = static_cast<char>(rng());
    Write(dir, "program-" + std::to_string(i), bytes);
  }
}

}  // namespace
}  // namespace kcnet::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seed_gen CORPUS_DIR\n");
    return 2;
  }
  kcnet::fuzz::ServerSeeds(argv[1]);
  kcnet::fuzz::DeviceAnswerSeeds(argv[1]);
  kcnet::fuzz::CsvSeeds(argv[1]);
  kcnet::fuzz::ClockSeeds(argv[1]);
  return 0;
}
