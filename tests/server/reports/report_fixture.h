// Test helpers for the reports: a real record store (kcnet.db) and its summaries
// (reports.db) in a temp dir, and writers of domain records through ServerStore::Apply.
#ifndef KCNET_TESTS_SERVER_REPORTS_REPORT_FIXTURE_H_
#define KCNET_TESTS_SERVER_REPORTS_REPORT_FIXTURE_H_

#include <memory>
#include <string>

#include "absl/time/civil_time.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "server/reports/reports_store.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::server::reports {

// Unix ms of a Vietnam local time.
inline int64_t VnMs(int y, int m, int d, int hour = 10, int minute = 0) {
  const int64_t day = absl::CivilDay(y, m, d) - absl::CivilDay(1970, 1, 1);
  return day * 86400000 + (hour - 7) * 3600000LL + minute * 60000LL;
}
inline int64_t Day(int y, int m, int d) {
  return absl::CivilDay(y, m, d) - absl::CivilDay(1970, 1, 1);
}

class RecordWriter {
 public:
  explicit RecordWriter(sync::ServerStore* store) : store_(store) {}

  // Stores `message` (a Facility, Visit, SupportRequest or RequestEvent) as its full new
  // state: created, or overwritten over the op it has now.
  absl::Status Put(const google::protobuf::Message& message) {
    absl::StatusOr<kcnet::v1::RecordChange> change = model::ToChange(message);
    if (!change.ok()) return change.status();
    absl::StatusOr<std::optional<kcnet::v1::RecordChange>> now =
        store_->ReadRecord(change->type(), change->id());
    if (!now.ok()) return now.status();
    if (now->has_value()) change->set_base_op((*now)->op());
    return Apply(*std::move(change));
  }
  absl::Status Delete(uint32_t type, const std::string& id_text) {
    kcnet::v1::RecordChange change;
    change.set_type(type);
    change.set_id(*sync::UuidFromText(id_text));
    absl::StatusOr<std::optional<kcnet::v1::RecordChange>> now =
        store_->ReadRecord(type, change.id());
    if (!now.ok()) return now.status();
    if (now->has_value()) change.set_base_op((*now)->op());
    change.set_deleted(true);
    return Apply(std::move(change));
  }

 private:
  absl::Status Apply(kcnet::v1::RecordChange change) {
    change.set_hlc(store_->clock().Now());
    kcnet::v1::MutationBatch batch;
    *batch.add_mutations()->add_changes() = std::move(change);
    const sync::Writer writer{"", sync::NodeIdFor("user:1"), nullptr};
    absl::StatusOr<kcnet::v1::PushAck> ack = store_->Apply(writer, batch);
    if (!ack.ok()) return ack.status();
    if (ack->results(0).outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED) {
      return absl::InternalError(absl::StrCat("refused: ", ack->results(0).reason()));
    }
    return absl::OkStatus();
  }
  sync::ServerStore* store_;
};

}  // namespace kcnet::server::reports

#endif  // KCNET_TESTS_SERVER_REPORTS_REPORT_FIXTURE_H_
