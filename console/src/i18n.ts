// Messages in Vietnamese (first) and English, and the Vietnamese formats of money and time.
// No i18n library: a typed catalogue and the browser's Intl. The language is a signal, so
// switching re-renders every page; the choice is kept in the URL (?lang=en), not in storage.
import { signal } from "@preact/signals";

export type Lang = "vi" | "en";
export const lang = signal<Lang>(
  new URLSearchParams(location.search).get("lang") === "en" ? "en" : "vi",
);

const vi = {
  appTitle: "kcnet — Khuyến công",
  skipToMain: "Bỏ qua, tới nội dung chính",
  switchLang: "English",
  switchLangLabel: "Switch to English",
  signIn: "Đăng nhập",
  signOut: "Đăng xuất",
  username: "Tên đăng nhập",
  password: "Mật khẩu",
  signInFailed: "Sai tên đăng nhập hoặc mật khẩu.",
  signInThrottled: "Đăng nhập sai quá nhiều lần; hãy thử lại sau.",
  signedInAs: "Đang đăng nhập:",
  queue: "Hàng chờ duyệt",
  queueHelp: "Đề nghị hỗ trợ chờ tôi quyết định, cũ nhất trước.",
  filters: "Bộ lọc",
  status: "Trạng thái",
  commune: "Xã / phường",
  category: "Nội dung hỗ trợ",
  funding: "Nguồn kinh phí",
  all: "Tất cả",
  awaitingMe: "Chờ tôi quyết định",
  clearFilters: "Xoá bộ lọc",
  facility: "Cơ sở",
  requested: "Đề nghị",
  submittedAt: "Cập nhật",
  count: (n: number) => `${n} đề nghị`,
  empty: "Không có đề nghị nào khớp bộ lọc.",
  loading: "Đang tải…",
  open: "Mở",
  backToQueue: "← Về hàng chờ",
  request: "Đề nghị hỗ trợ",
  description: "Mô tả",
  ownContribution: "Vốn đối ứng",
  proposedFunding: "Nguồn đề xuất",
  approvedAmount: "Số tiền duyệt",
  decisionNote: "Ý kiến quyết định",
  owner: "Chủ cơ sở",
  address: "Địa chỉ",
  workers: "Số lao động",
  products: "Sản phẩm chính",
  productLines: "Số dòng sản phẩm",
  phone: "Điện thoại",
  visits: "Các lần thăm",
  noVisits: "Chưa có lần thăm nào.",
  findings: "Ghi nhận",
  purpose: "Mục đích",
  history: "Lịch sử",
  actor: "Người thực hiện",
  note: "Ghi chú",
  when: "Thời gian",
  action: "Hành động",
  decide: "Quyết định",
  reason: "Lý do (bắt buộc khi trả lại hoặc từ chối)",
  noteOptional: "Ghi chú",
  endorse: "Đồng ý, chuyển tỉnh",
  return: "Trả lại",
  reject: "Từ chối",
  approve: "Phê duyệt",
  amount: "Số tiền (đồng)",
  reasonRequired: "Lý do: bắt buộc khi trả lại hoặc từ chối.",
  amountInvalid: "Số tiền: phải là số nguyên dương, không vượt số đề nghị (ví dụ 45.000.000).",
  fundingRequired: "Nguồn kinh phí: hãy chọn ngân sách địa phương hoặc trung ương.",
  done: "Đã ghi nhận.",
  noDecision: "Bạn không có quyết định nào cho đề nghị ở trạng thái này.",
  notFound: "Không tìm thấy đề nghị này.",
  error: "Lỗi",
  user: (id: string) => `Người dùng #${id}`,
};
type Catalogue = typeof vi;

const en: Catalogue = {
  appTitle: "kcnet — Industrial extension",
  skipToMain: "Skip to main content",
  switchLang: "Tiếng Việt",
  switchLangLabel: "Chuyển sang tiếng Việt",
  signIn: "Sign in",
  signOut: "Sign out",
  username: "Username",
  password: "Password",
  signInFailed: "Wrong username or password.",
  signInThrottled: "Too many failed sign-ins; try again later.",
  signedInAs: "Signed in:",
  queue: "Review queue",
  queueHelp: "Support requests awaiting my decision, oldest first.",
  filters: "Filters",
  status: "Status",
  commune: "Commune",
  category: "Category",
  funding: "Funding source",
  all: "All",
  awaitingMe: "Awaiting my decision",
  clearFilters: "Clear filters",
  facility: "Facility",
  requested: "Requested",
  submittedAt: "Updated",
  count: (n: number) => `${n} request${n === 1 ? "" : "s"}`,
  empty: "No request matches the filters.",
  loading: "Loading…",
  open: "Open",
  backToQueue: "← Back to the queue",
  request: "Support request",
  description: "Description",
  ownContribution: "Own contribution",
  proposedFunding: "Proposed funding",
  approvedAmount: "Approved amount",
  decisionNote: "Decision note",
  owner: "Owner",
  address: "Address",
  workers: "Workers",
  products: "Main products",
  productLines: "Product lines",
  phone: "Phone",
  visits: "Visits",
  noVisits: "No visit yet.",
  findings: "Findings",
  purpose: "Purpose",
  history: "History",
  actor: "By",
  note: "Note",
  when: "When",
  action: "Action",
  decide: "Decision",
  reason: "Reason (required to return or reject)",
  noteOptional: "Note",
  endorse: "Endorse to the province",
  return: "Return",
  reject: "Reject",
  approve: "Approve",
  amount: "Amount (VND)",
  reasonRequired: "Reason: required to return or reject.",
  amountInvalid: "Amount: a whole positive number, at most the requested amount (e.g. 45.000.000).",
  fundingRequired: "Funding source: choose local or national budget.",
  done: "Recorded.",
  noDecision: "You have no decision to make on a request in this status.",
  notFound: "This request was not found.",
  error: "Error",
  user: (id: string) => `User #${id}`,
};

/** The catalogue of the current language (read inside a render to follow switches). */
export function t(): Catalogue {
  return lang.value === "en" ? en : vi;
}

// Enum labels, by the enum's number, [vi, en].
const statusNames: Record<number, [string, string]> = {
  1: ["Nháp", "Draft"],
  2: ["Đã gửi", "Submitted"],
  3: ["Huyện đã đồng ý", "Endorsed"],
  4: ["Đã phê duyệt", "Approved"],
  5: ["Đang thực hiện", "In progress"],
  6: ["Hoàn thành", "Completed"],
  7: ["Trả lại", "Returned"],
  8: ["Từ chối", "Rejected"],
  9: ["Đã huỷ", "Cancelled"],
};
const categoryNames: Record<number, [string, string]> = {
  1: ["Mô hình trình diễn", "Demonstration model"],
  2: ["Máy móc, công nghệ", "Machinery and technology"],
  3: ["Đào tạo nghề", "Training"],
  4: ["Tư vấn quản lý", "Management consulting"],
  5: ["Phát triển sản phẩm", "Product development"],
  6: ["Xúc tiến thương mại", "Trade promotion"],
  7: ["Sản xuất sạch hơn", "Cleaner production"],
  8: ["Khác", "Other"],
};
const fundingNames: Record<number, [string, string]> = {
  1: ["Ngân sách địa phương", "Local budget"],
  2: ["Ngân sách trung ương", "National budget"],
};
const actionNames: Record<number, [string, string]> = {
  1: ["Tạo", "Created"],
  2: ["Gửi", "Submitted"],
  3: ["Đồng ý", "Endorsed"],
  4: ["Trả lại", "Returned"],
  5: ["Từ chối", "Rejected"],
  6: ["Phê duyệt", "Approved"],
  7: ["Bắt đầu", "Started"],
  8: ["Hoàn thành", "Completed"],
  9: ["Huỷ", "Cancelled"],
  10: ["Ý kiến", "Comment"],
};
const purposeNames: Record<number, [string, string]> = {
  1: ["Khảo sát", "Survey"],
  2: ["Thăm lại", "Follow-up"],
  3: ["Giám sát dự án", "Project monitoring"],
  4: ["Tuyên truyền chính sách", "Policy outreach"],
};

function pick(table: Record<number, [string, string]>, n: number): string {
  const names = table[n];
  if (!names) return "—";
  return lang.value === "en" ? names[1] : names[0];
}
export const statusName = (n: number) => pick(statusNames, n);
export const categoryName = (n: number) => pick(categoryNames, n);
export const fundingName = (n: number) => pick(fundingNames, n);
export const actionName = (n: number) => pick(actionNames, n);
export const purposeName = (n: number) => pick(purposeNames, n);
export const statusValues = Object.keys(statusNames).map(Number);
export const categoryValues = Object.keys(categoryNames).map(Number);
export const fundingValues = Object.keys(fundingNames).map(Number);

// Money is whole đồng: `45.000.000 ₫` in both languages (a Vietnamese amount).
const vnd = new Intl.NumberFormat("vi-VN", { style: "currency", currency: "VND" });
export function formatVnd(amount: bigint | number): string {
  return vnd.format(amount).replace(/\u00a0/g, " ");
}

/** Parses `45.000.000`, `45,000,000` or `45000000` (groups of three only), or null. */
export function parseVnd(text: string): bigint | null {
  const s = text.trim().replace(/\s|₫|đ/g, "");
  if (/^\d+$/.test(s)) return BigInt(s);
  if (/^\d{1,3}(\.\d{3})+$/.test(s) || /^\d{1,3}(,\d{3})+$/.test(s)) {
    return BigInt(s.replace(/[.,]/g, ""));
  }
  return null;
}

// Times are shown in Vietnam's local time whatever the browser's zone. One formatter per
// language, made once: making one costs far more than using it (a list of rows formats
// one time each).
const timeFormats = new Map<string, Intl.DateTimeFormat>();
export function formatTime(ms: bigint | number): string {
  const n = Number(ms);
  if (!n) return "—";
  const locale = lang.value === "en" ? "en-GB" : "vi-VN";
  let format = timeFormats.get(locale);
  if (!format) {
    format = new Intl.DateTimeFormat(locale, {
      timeZone: "Asia/Ho_Chi_Minh",
      day: "2-digit",
      month: "2-digit",
      year: "numeric",
      hour: "2-digit",
      minute: "2-digit",
    });
    timeFormats.set(locale, format);
  }
  return format.format(new Date(n));
}
