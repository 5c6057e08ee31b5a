// Messages of the queue's server-side filters and of bulk approval (issue 16), Vietnamese
// first and English. Kept apart from i18n.ts and i18n-review.ts so branches merge cleanly;
// the same rules: a typed catalogue, the language signal, no library.
import { lang } from "./i18n";

const vi = {
  age: "Chờ ít nhất",
  anyAge: "Bất kỳ",
  ageDays: (n: number) => `${n} ngày`,
  author: "Cộng tác viên",
  anyone: "Tất cả",
  matchingCount: (n: number) => `${n} đề nghị khớp bộ lọc`,
  shownOf: (shown: number, n: number) => `Đang hiện ${shown} trong ${n} đề nghị khớp bộ lọc.`,
  approveAmountRule: "Số tiền duyệt",
  approveRequested: "Đúng số tiền mỗi đề nghị xin",
  approveUniform: "Cùng một số tiền cho mọi đề nghị",
  uniformAmount: "Số tiền chung (đồng)",
  overPlanReason: "Lý do vượt kế hoạch (nếu cần)",
  bulkCounting: "Đang đếm chính xác…",
  bulkChanged: (was: number, now: number) =>
    `Số đề nghị khớp bộ lọc vừa đổi (${was} → ${now}): hãy xem lại trước khi thực hiện.`,
  exportRequests: "Tải danh sách đề nghị",
  exportFacilities: "Tải danh sách cơ sở",
  exportVisits: "Tải danh sách lần thăm",
  mapQueueFilter:
    "Theo bộ lọc của hàng đợi đề nghị: chỉ các cơ sở có đề nghị khớp bộ lọc, và lần thăm của các cơ sở đó.",
  clearQueueFilter: "Bỏ bộ lọc của hàng đợi",
};
type Catalogue = typeof vi;

const en: Catalogue = {
  age: "Waiting at least",
  anyAge: "Any",
  ageDays: (n: number) => `${n} days`,
  author: "Collaborator",
  anyone: "All",
  matchingCount: (n: number) => `${n} requests match the filters`,
  shownOf: (shown: number, n: number) => `Showing ${shown} of ${n} matching requests.`,
  approveAmountRule: "Amount to approve",
  approveRequested: "Each request's requested amount",
  approveUniform: "One amount for every request",
  uniformAmount: "Amount for each (đồng)",
  overPlanReason: "Over-plan reason (if needed)",
  bulkCounting: "Counting exactly…",
  bulkChanged: (was: number, now: number) =>
    `The number of matching requests changed (${was} → ${now}): review again before acting.`,
  exportRequests: "Download the requests",
  exportFacilities: "Download the facilities",
  exportVisits: "Download the visits",
  mapQueueFilter:
    "Following the review queue's filters: only facilities with a matching request, and their visits.",
  clearQueueFilter: "Clear the queue's filters",
};

export function tf(): Catalogue {
  return lang.value === "en" ? en : vi;
}
