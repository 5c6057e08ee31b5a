// wire: bytes on the wire per change, batched, through the real code paths: a device's
// outbox batch (DeviceStore::PendingBatch, what a push carries) and a server download page
// (ServerStore::ChangesSince). Each gRPC message adds 5 bytes of framing (and HTTP/2 9 per
// frame), counted here per batch and amortised.
//  - bytes_per_field_update: one int field of an existing visit changed, 1,000 per batch;
//  - bytes_per_new_visit: a new visit with 10 fields set, 1,000 per batch;
//  - download_*: the same, downloaded.
// The stream negotiates gzip message compression, so the push figures are gzip sizes (zlib
// default level, as gRPC's "gzip"). Download pages go to the SDK deflated at zlib's
// fastest level (Hello.deflate_pages, sync/page_codec.h), so download_* are those sizes;
// download_gzip_* are what a client without deflate_pages gets; uncompressed_* are the raw
// protobuf sizes.
#include <zlib.h>

#include <filesystem>
#include <iostream>

#include "bench/bench_util.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/page_codec.h"
#include "sync/server_store.h"

namespace {

constexpr int kN = 1000;
constexpr double kFraming = 5 + 9;  // gRPC message prefix + one HTTP/2 DATA frame header

// The size of `bytes` after gzip at zlib's default level, as gRPC's negotiated "gzip"
// message compression sends it (header and trailer included).
double GzipSize(const std::string& bytes) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, bytes.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  const double size = static_cast<double>(z.total_out);
  deflateEnd(&z);
  return size;
}

template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::cerr << "wire_bench: " << v.status() << "\n";
    std::exit(1);
  }
  return *std::move(v);
}

}  // namespace

int main() {
  using namespace kcnet;  // NOLINT
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-wire";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const sync::Schema& schema = model::KcnetSchema();
  auto device = Must(sync::DeviceStore::Open(
      dir + "/device.db", &schema, "3f1c9a52-8b7e-4d21-a6f0-5c2e9b8d7a14", {.durable = false}));
  auto server = Must(sync::ServerStore::Open(dir + "/server.db", &schema, {.durable = false}));
  const int64_t commune = 27280;
  std::mt19937_64 rng(3);
  if (!device->Subscribe(commune).ok()) return 1;

  // New visits, varied as real ones are: 50 facilities, 20 collaborators, scattered
  // positions and times, findings from several texts with numbers in them.
  std::vector<std::string> ids, facilities;
  for (int i = 0; i < 50; ++i) facilities.push_back(*sync::UuidToText(bench::RandomUuidBytes(rng)));
  static const char* kFindings[] = {
      "Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại %d kg/ngày",
      "Đề nghị tập huấn an toàn lao động cho %d công nhân",
      "Sản phẩm mây tre đan đạt chất lượng, cần xúc tiến thương mại tại %d hội chợ",
      "Đã lắp đặt máy chế biến, vận hành thử %d giờ",
      "Chưa đăng ký nhãn hiệu; doanh thu khoảng %d triệu đồng/năm"};
  for (int i = 0; i < kN; ++i) {
    v1::Visit v;
    v.set_id(*sync::UuidToText(bench::RandomUuidBytes(rng)));
    v.set_commune_id(commune);
    v.set_facility_id(facilities[rng() % facilities.size()]);
    v.set_collaborator_id(static_cast<int64_t>(rng() % 20 + 1));
    v.set_visited_ms(1764000000000 + static_cast<int64_t>(rng() % (7LL * 86400000)));
    v.set_latitude(20.5 + static_cast<double>(rng() % 1000000) / 1e6);
    v.set_longitude(105.5 + static_cast<double>(rng() % 1000000) / 1e6);
    v.set_purpose(static_cast<v1::VisitPurpose>(rng() % 4 + 1));
    char findings[256];
    std::snprintf(findings, sizeof(findings), kFindings[rng() % 5],
                  static_cast<int>(rng() % 900 + 10));
    v.set_findings(findings);
    v.add_needs(static_cast<v1::SupportCategory>(rng() % 8 + 1));
    v.set_next_visit_due_ms(v.visited_ms() + static_cast<int64_t>(rng() % 60 + 1) * 86400000);
    v1::RecordChange change = Must(model::ToChange(v));
    // A new visit names the fields it sets: drop the empty photo_refs.
    auto* fields = change.mutable_fields();
    for (int k = 0; k < fields->size(); ++k) {
      if (fields->Get(k).field() == v1::Visit::kPhotoRefsFieldNumber) fields->DeleteSubrange(k, 1);
    }
    Must(device->Write({change}));
    ids.push_back(change.id());
  }
  v1::MutationBatch creates = Must(device->PendingBatch(kN));
  const double new_visit = (creates.ByteSizeLong() + kFraming) / kN;
  const double new_visit_gzip = (GzipSize(creates.SerializeAsString()) + kFraming) / kN;
  v1::PushAck ack = Must(server->Apply({device->device_id(), device->node()}, creates));
  Must(device->Acknowledge(ack));
  v1::ChangeBatch down = Must(server->ChangesSince(Must(device->Cursors()), {.max_changes = kN}));
  const double download_new = (down.ByteSizeLong() + kFraming) / kN;
  const double download_new_deflated = (sync::DeflatePage(down).size() + kFraming) / kN;
  const double download_new_gzip = (GzipSize(down.SerializeAsString()) + kFraming) / kN;
  Must(device->ApplyDownload(down));

  // One field of each visit changed.
  for (int i = 0; i < kN; ++i) {
    v1::RecordChange c;
    c.set_type(model::kVisitType);
    c.set_id(ids[i]);
    auto* f = c.add_fields();
    f->set_field(v1::Visit::kNextVisitDueMsFieldNumber);
    f->mutable_value()->set_int_value(1764000000000 +
                                      static_cast<int64_t>(rng() % (90LL * 86400000)));
    Must(device->Write({c}));
  }
  v1::MutationBatch updates = Must(device->PendingBatch(kN));
  const double field_update = (updates.ByteSizeLong() + kFraming) / kN;
  const double field_update_gzip = (GzipSize(updates.SerializeAsString()) + kFraming) / kN;
  ack = Must(server->Apply({device->device_id(), device->node()}, updates));
  Must(device->Acknowledge(ack));
  down = Must(server->ChangesSince(Must(device->Cursors()), {.max_changes = kN}));
  const double download_update = (down.ByteSizeLong() + kFraming) / kN;
  const double download_update_gzip = (GzipSize(down.SerializeAsString()) + kFraming) / kN;
  const double download_update_deflated = (sync::DeflatePage(down).size() + kFraming) / kN;

  // The stream negotiates gzip (both sides set it; gRPC falls back to identity for a peer
  // that does not accept it): the first two figures are what crosses the wire.
  bench::Emit("wire", "bytes_per_field_update", field_update_gzip, "bytes");
  bench::Emit("wire", "bytes_per_new_visit", new_visit_gzip, "bytes");
  bench::Emit("wire", "uncompressed_bytes_per_field_update", field_update, "bytes");
  bench::Emit("wire", "uncompressed_bytes_per_new_visit", new_visit, "bytes");
  bench::Emit("wire", "download_bytes_per_field_update", download_update_deflated, "bytes");
  bench::Emit("wire", "download_bytes_per_new_visit", download_new_deflated, "bytes");
  bench::Emit("wire", "download_gzip_bytes_per_field_update", download_update_gzip, "bytes");
  bench::Emit("wire", "download_gzip_bytes_per_new_visit", download_new_gzip, "bytes");
  bench::Emit("wire", "uncompressed_download_bytes_per_field_update", download_update, "bytes");
  bench::Emit("wire", "uncompressed_download_bytes_per_new_visit", download_new, "bytes");
  std::filesystem::remove_all(dir);
  return 0;
}
