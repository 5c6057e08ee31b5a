// store_apply: applies 100,000 new visit records (10 fields each) into an empty server
// replica store, and in the same run inserts the same rows into a plain SQLite table with
// the same columns and indexes. Both use WAL, synchronous=FULL and one transaction per
// 1,000 records (the store's batch size), prepared statements, on the same disk.
//
// Metrics: records_per_s, plain_records_per_s, ratio_vs_plain (store / plain speed),
// metadata_ratio = (store file bytes - plain file bytes) / plain file bytes, from dbstat
// (every page of every table and index: the per-field clocks, ops, the (bucket, op) index,
// node and bucket tables: everything the sync adds).
//
// Usage: store_apply_bench [records]   (default 100000)
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "bench/bench_util.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "sync/sqlite.h"

namespace kcnet::bench {
namespace {

using kcnet::v1::Visit;

constexpr int kBatch = 1000;

std::vector<Visit> MakeVisits(int n) {
  std::mt19937_64 rng(42);
  std::vector<std::string> facilities;
  for (int i = 0; i < 500; ++i) {
    facilities.push_back(*sync::UuidToText(RandomUuidBytes(rng)));
  }
  static const char* kFindings[] = {"Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại thấp",
                                    "Đề nghị tập huấn an toàn lao động cho 12 công nhân",
                                    "Sản phẩm mây tre đan đạt chất lượng, cần xúc tiến thương mại",
                                    "Đã lắp đặt máy chế biến, đang vận hành thử"};
  std::vector<Visit> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    Visit v;
    v.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
    v.set_commune_id(1000 + static_cast<int64_t>(rng() % 20));
    v.set_facility_id(facilities[rng() % facilities.size()]);
    v.set_collaborator_id(static_cast<int64_t>(rng() % 50 + 1));
    v.set_visited_ms(1764000000000 + static_cast<int64_t>(rng() % 86400000));
    v.set_latitude(20.5 + static_cast<double>(rng() % 10000) / 10000.0);
    v.set_longitude(105.5 + static_cast<double>(rng() % 10000) / 10000.0);
    v.set_purpose(static_cast<kcnet::v1::VisitPurpose>(rng() % 4 + 1));
    v.set_findings(kFindings[rng() % 4]);
    v.add_needs(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
    v.add_needs(kcnet::v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    v.set_next_visit_due_ms(v.visited_ms() + 30LL * 86400000);
    out.push_back(std::move(v));
  }
  return out;
}

int64_t FileBytes(const std::string& path) {
  auto db = sync::Db::Open(path);
  if (!db.ok()) return -1;
  (*db)->Exec("PRAGMA wal_checkpoint(TRUNCATE)").IgnoreError();
  return (*db)->QueryInt("SELECT sum(pgsize) FROM dbstat").value_or(-1);
}

double RunStore(const std::vector<Visit>& visits, const std::string& path) {
  const sync::Schema& schema = model::KcnetSchema();
  auto store = sync::ServerStore::Open(path, &schema);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    std::exit(1);
  }
  std::vector<kcnet::v1::MutationBatch> batches;
  sync::HybridClock clock(sync::SystemClock());
  uint64_t seq = 0;
  for (size_t i = 0; i < visits.size(); i += kBatch) {
    kcnet::v1::MutationBatch& batch = batches.emplace_back();
    for (size_t j = i; j < std::min(visits.size(), i + kBatch); ++j) {
      kcnet::v1::Mutation* m = batch.add_mutations();
      m->set_seq(++seq);
      kcnet::v1::RecordChange change = *model::ToChange(visits[j]);
      change.set_hlc(clock.Now());
      // photo_refs stays null: a new visit names the fields it sets.
      auto* fields = change.mutable_fields();
      for (int k = 0; k < fields->size(); ++k) {
        if (fields->Get(k).field() == Visit::kPhotoRefsFieldNumber) {
          fields->DeleteSubrange(k, 1);
          break;
        }
      }
      *m->add_changes() = std::move(change);
    }
  }
  const sync::Writer writer{"bench-tablet", sync::NodeIdFor("bench-tablet")};
  Timer timer;
  for (const auto& batch : batches) {
    auto ack = (*store)->Apply(writer, batch);
    if (!ack.ok() || ack->last_applied_seq() == 0) {
      std::cerr << "apply failed: " << ack.status() << "\n";
      std::exit(1);
    }
  }
  return timer.Seconds();
}

double RunPlain(const std::vector<Visit>& visits, const std::string& path) {
  auto db = sync::Db::Open(path);
  if (!db.ok()) std::exit(1);
  sync::Db& d = **db;
  auto ok = d.Exec(
      "CREATE TABLE visit(id TEXT PRIMARY KEY NOT NULL, commune_id INTEGER, facility_id TEXT, "
      "collaborator_id INTEGER, visited_ms INTEGER, latitude REAL, longitude REAL, purpose "
      "INTEGER, findings TEXT, needs BLOB, next_visit_due_ms INTEGER, photo_refs TEXT);"
      "CREATE INDEX visit_commune ON visit(commune_id);"
      "CREATE INDEX visit_facility_id ON visit(facility_id);");
  if (!ok.ok()) std::exit(1);
  Timer timer;
  for (size_t i = 0; i < visits.size(); i += kBatch) {
    auto txn = sync::Transaction::Begin(&d);
    auto stmt = d.Prepare("INSERT INTO visit VALUES (?,?,?,?,?,?,?,?,?,?,?,?)");
    for (size_t j = i; j < std::min(visits.size(), i + kBatch); ++j) {
      const Visit& v = visits[j];
      sync::Statement* s = *stmt;
      s->BindText(1, v.id());
      s->BindInt(2, v.commune_id());
      s->BindText(3, v.facility_id());
      s->BindInt(4, v.collaborator_id());
      s->BindInt(5, v.visited_ms());
      s->BindDouble(6, v.latitude());
      s->BindDouble(7, v.longitude());
      s->BindInt(8, v.purpose());
      s->BindText(9, v.findings());
      std::string needs;
      for (int n : v.needs()) needs.push_back(static_cast<char>(n));
      s->BindBlob(10, needs);
      s->BindInt(11, v.next_visit_due_ms());
      s->BindNull(12);
      if (!s->Run().ok()) std::exit(1);
      s->Reset();
    }
    if (!(*txn)->Commit().ok()) std::exit(1);
  }
  return timer.Seconds();
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-store-apply";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto visits = MakeVisits(n);
  const double plain_s = RunPlain(visits, dir + "/plain.db");
  const double store_s = RunStore(visits, dir + "/store.db");
  const int64_t plain_bytes = FileBytes(dir + "/plain.db");
  const int64_t store_bytes = FileBytes(dir + "/store.db");
  Emit("store_apply", "records_per_s", n / store_s, "records/s");
  Emit("store_apply", "plain_records_per_s", n / plain_s, "records/s");
  Emit("store_apply", "ratio_vs_plain", plain_s / store_s, "ratio");
  Emit("store_apply", "metadata_ratio",
       static_cast<double>(store_bytes - plain_bytes) / static_cast<double>(plain_bytes), "ratio");
  std::filesystem::remove_all(dir);
  return 0;
}
