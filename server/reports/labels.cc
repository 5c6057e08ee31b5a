#include "server/reports/labels.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kcnet::server::reports {
namespace {

struct Label {
  const char* vi;
  const char* en;
};
using Key = std::pair<std::string, int>;  // the enum's full name, the value's number

const std::map<Key, Label>& Labels() {
  static const auto* labels = new std::map<Key, Label>{
      {{"kcnet.v1.RequestStatus", 1}, {"Nháp", "Draft"}},
      {{"kcnet.v1.RequestStatus", 2}, {"Đã gửi", "Submitted"}},
      {{"kcnet.v1.RequestStatus", 3}, {"Huyện đã đồng ý", "Endorsed"}},
      {{"kcnet.v1.RequestStatus", 4}, {"Đã phê duyệt", "Approved"}},
      {{"kcnet.v1.RequestStatus", 5}, {"Đang thực hiện", "In progress"}},
      {{"kcnet.v1.RequestStatus", 6}, {"Hoàn thành", "Completed"}},
      {{"kcnet.v1.RequestStatus", 7}, {"Trả lại", "Returned"}},
      {{"kcnet.v1.RequestStatus", 8}, {"Từ chối", "Rejected"}},
      {{"kcnet.v1.RequestStatus", 9}, {"Đã huỷ", "Cancelled"}},
      {{"kcnet.v1.RequestAction", 1}, {"Tạo", "Created"}},
      {{"kcnet.v1.RequestAction", 2}, {"Gửi", "Submitted"}},
      {{"kcnet.v1.RequestAction", 3}, {"Đồng ý", "Endorsed"}},
      {{"kcnet.v1.RequestAction", 4}, {"Trả lại", "Returned"}},
      {{"kcnet.v1.RequestAction", 5}, {"Từ chối", "Rejected"}},
      {{"kcnet.v1.RequestAction", 6}, {"Phê duyệt", "Approved"}},
      {{"kcnet.v1.RequestAction", 7}, {"Bắt đầu", "Started"}},
      {{"kcnet.v1.RequestAction", 8}, {"Hoàn thành", "Completed"}},
      {{"kcnet.v1.RequestAction", 9}, {"Huỷ", "Cancelled"}},
      {{"kcnet.v1.RequestAction", 10}, {"Ý kiến", "Comment"}},
      {{"kcnet.v1.SupportCategory", 1}, {"Mô hình trình diễn", "Demonstration model"}},
      {{"kcnet.v1.SupportCategory", 2}, {"Máy móc, công nghệ", "Machinery and technology"}},
      {{"kcnet.v1.SupportCategory", 3}, {"Đào tạo nghề", "Training"}},
      {{"kcnet.v1.SupportCategory", 4}, {"Tư vấn quản lý", "Management consulting"}},
      {{"kcnet.v1.SupportCategory", 5}, {"Phát triển sản phẩm", "Product development"}},
      {{"kcnet.v1.SupportCategory", 6}, {"Xúc tiến thương mại", "Trade promotion"}},
      {{"kcnet.v1.SupportCategory", 7}, {"Sản xuất sạch hơn", "Cleaner production"}},
      {{"kcnet.v1.SupportCategory", 8}, {"Khác", "Other"}},
      {{"kcnet.v1.FundingSource", 1}, {"Ngân sách địa phương", "Local budget"}},
      {{"kcnet.v1.FundingSource", 2}, {"Ngân sách trung ương", "National budget"}},
      {{"kcnet.v1.FundingSource", 3}, {"Vốn đối ứng", "Counterpart funds"}},
      {{"kcnet.v1.FacilityKind", 1}, {"Hộ kinh doanh", "Household business"}},
      {{"kcnet.v1.FacilityKind", 2}, {"Tổ hợp tác", "Cooperative group"}},
      {{"kcnet.v1.FacilityKind", 3}, {"Hợp tác xã", "Cooperative"}},
      {{"kcnet.v1.FacilityKind", 4}, {"Doanh nghiệp", "Enterprise"}},
      {{"kcnet.v1.Sector", 1}, {"Chế biến nông lâm thuỷ sản", "Food processing"}},
      {{"kcnet.v1.Sector", 2}, {"Thủ công mỹ nghệ", "Handicrafts"}},
      {{"kcnet.v1.Sector", 3}, {"Dệt may", "Textiles and garments"}},
      {{"kcnet.v1.Sector", 4}, {"Chế biến gỗ", "Wood processing"}},
      {{"kcnet.v1.Sector", 5}, {"Cơ khí", "Mechanical"}},
      {{"kcnet.v1.Sector", 6}, {"Vật liệu xây dựng", "Construction materials"}},
      {{"kcnet.v1.Sector", 7}, {"Hoá chất", "Chemicals"}},
      {{"kcnet.v1.Sector", 8}, {"Khác", "Other"}},
      {{"kcnet.v1.VisitPurpose", 1}, {"Khảo sát", "Survey"}},
      {{"kcnet.v1.VisitPurpose", 2}, {"Thăm lại", "Follow-up"}},
      {{"kcnet.v1.VisitPurpose", 3}, {"Giám sát dự án", "Project monitoring"}},
      {{"kcnet.v1.VisitPurpose", 4}, {"Tuyên truyền chính sách", "Policy outreach"}},
      {{"kcnet.v1.Role", 1}, {"Cộng tác viên xã", "Commune collaborator"}},
      {{"kcnet.v1.Role", 2}, {"Điều phối viên huyện", "District coordinator"}},
      {{"kcnet.v1.Role", 3}, {"Cán bộ Sở", "Province officer"}},
      {{"kcnet.v1.Role", 4}, {"Quản trị viên", "Administrator"}},
  };
  return *labels;
}

}  // namespace

absl::StatusOr<Language> ParseLanguage(absl::string_view field, absl::string_view text) {
  if (text.empty() || text == "vi") return Language::kVietnamese;
  if (text == "en") return Language::kEnglish;
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": \"vi\" or \"en\", got \"", text.substr(0, 16), "\" / ngôn ngữ phải là vi hoặc en"));
}

std::string EnumLabel(const google::protobuf::EnumDescriptor* type, int value, Language language) {
  if (value == 0) return "";
  auto it = Labels().find(Key(std::string(type->full_name()), value));
  if (it == Labels().end()) return absl::StrCat(value);
  return language == Language::kEnglish ? it->second.en : it->second.vi;
}

}  // namespace kcnet::server::reports
