// Messages of the review pages (live updates, bulk actions, the conflicts inbox), Vietnamese
// first and English, kept apart from i18n.ts so that pages built at the same time merge
// cleanly. Same rules as i18n.ts: a typed catalogue, the language signal, no library.
import { lang } from "./i18n";

const vi = {
  live: "Cập nhật trực tiếp",
  liveOffline: "Mất kết nối, đang thử lại…",
  select: "Chọn",
  selectRow: (name: string) => `Chọn đề nghị: ${name}`,
  selectAllShown: "Chọn tất cả đề nghị đang hiện",
  bulk: "Xử lý hàng loạt",
  bulkAction: "Thao tác",
  bulkScope: "Áp dụng cho",
  bulkSelected: (n: number) => `${n} đề nghị đã chọn`,
  bulkAllMatching: (n: number) => `tất cả ${n} đề nghị khớp bộ lọc`,
  bulkTooMany: "Quá nhiều đề nghị khớp bộ lọc: hãy lọc hẹp hơn.",
  bulkNoneSelected: "Chưa chọn đề nghị nào.",
  bulkReview: "Xem lại trước khi thực hiện",
  bulkConfirm: (action: string, n: number) => `Xác nhận: ${action} đúng ${n} đề nghị`,
  bulkConfirmQuestion: (action: string, n: number) =>
    `Bạn sắp ${action.toLowerCase()} ${n} đề nghị. Hành động này ghi vào lịch sử từng đề nghị.`,
  bulkCancel: "Huỷ",
  bulkRunning: (done: number, n: number) => `Đang xử lý ${done}/${n}…`,
  bulkResult: (ok: number, refused: number) => `Xong: ${ok} đã thực hiện, ${refused} bị từ chối.`,
  applied: "Đã thực hiện",
  refused: "Bị từ chối",
  result: "Kết quả",
  conflicts: "Xung đột dữ liệu",
  conflictsHelp:
    "Hai người sửa cùng một trường khi chưa đồng bộ: giá trị sau thắng, giá trị bị ghi đè được giữ ở đây để chọn.",
  includeResolved: "Hiện cả xung đột đã xử lý",
  noConflicts: "Không có xung đột nào.",
  conflictCount: (n: number) => `${n} xung đột`,
  record: "Bản ghi",
  field: "Trường",
  winner: "Giá trị hiện tại",
  loser: "Giá trị bị ghi đè",
  keepWinner: "Giữ giá trị hiện tại",
  restoreLoser: "Khôi phục giá trị bị ghi đè",
  resolved: "Đã xử lý",
  empty: "(trống)",
  deleted: "(bản ghi đã xoá)",
  typeNames: { 1: "Cơ sở", 2: "Lần thăm", 3: "Đề nghị hỗ trợ", 4: "Sự kiện" } as Record<number, string>,
  requestConflicts: "Xung đột của đề nghị này",
};
type Catalogue = typeof vi;

const en: Catalogue = {
  live: "Live updates",
  liveOffline: "Connection lost, retrying…",
  select: "Select",
  selectRow: (name: string) => `Select request: ${name}`,
  selectAllShown: "Select every request shown",
  bulk: "Bulk actions",
  bulkAction: "Action",
  bulkScope: "Apply to",
  bulkSelected: (n: number) => `${n} selected requests`,
  bulkAllMatching: (n: number) => `all ${n} requests matching the filters`,
  bulkTooMany: "Too many requests match the filters: narrow them.",
  bulkNoneSelected: "No request is selected.",
  bulkReview: "Review before acting",
  bulkConfirm: (action: string, n: number) => `Confirm: ${action} exactly ${n} requests`,
  bulkConfirmQuestion: (action: string, n: number) =>
    `You are about to ${action.toLowerCase()} ${n} requests. Each request's history records it.`,
  bulkCancel: "Cancel",
  bulkRunning: (done: number, n: number) => `Working ${done}/${n}…`,
  bulkResult: (ok: number, refused: number) => `Done: ${ok} applied, ${refused} refused.`,
  applied: "Applied",
  refused: "Refused",
  result: "Result",
  conflicts: "Data conflicts",
  conflictsHelp:
    "Two people edited the same field before syncing: the later value won; the overwritten one is kept here to choose.",
  includeResolved: "Show resolved conflicts too",
  noConflicts: "No conflicts.",
  conflictCount: (n: number) => `${n} conflicts`,
  record: "Record",
  field: "Field",
  winner: "Current value",
  loser: "Overwritten value",
  keepWinner: "Keep the current value",
  restoreLoser: "Restore the overwritten value",
  resolved: "Resolved",
  empty: "(empty)",
  deleted: "(record deleted)",
  typeNames: { 1: "Facility", 2: "Visit", 3: "Support request", 4: "Event" },
  requestConflicts: "This request's conflicts",
};

export function tr(): Catalogue {
  return lang.value === "en" ? en : vi;
}
