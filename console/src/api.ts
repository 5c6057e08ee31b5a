// The console's clients of kcnet's gRPC services, spoken to through kcnet-server's HTTP
// bridge with the Connect protocol (JSON). The bridge keeps the bearer token in an
// HttpOnly cookie set at sign-in; this code never sees or stores it (no localStorage).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  AuthService,
  FacilityService,
  OrgUnitService,
  SupportRequestService,
  UserService,
  VisitService,
  WatchService,
} from "@gen/kcnet/v1/services_pb";
import { ReportService } from "@gen/kcnet/v1/reports_pb";
import { PlanService } from "@gen/kcnet/v1/plans_pb";
import { SyncService } from "@gen/kcnet/v1/sync_service_pb";
import { AttachmentService } from "@gen/kcnet/v1/attachments_pb";
import { RecordExportService } from "@gen/kcnet/v1/record_export_pb";
import { create, toJson, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";

const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: false,
  // Same-origin requests carry the cookie; nothing else carries credentials.
  fetch: (input, init) => fetch(input, { ...init, credentials: "same-origin" }),
});

export const auth = createClient(AuthService, transport);
export const orgUnits = createClient(OrgUnitService, transport);
export const users = createClient(UserService, transport);
export const facilities = createClient(FacilityService, transport);
export const visits = createClient(VisitService, transport);
export const requests = createClient(SupportRequestService, transport);
export const reports = createClient(ReportService, transport);
export const plans = createClient(PlanService, transport);
export const watch = createClient(WatchService, transport);
export const syncService = createClient(SyncService, transport); // its conflict RPCs
export const attachments = createClient(AttachmentService, transport); // List, Download
export const recordExports = createClient(RecordExportService, transport);

export { Code, ConnectError };

// A failed answer of one of the bridge's own routes (sign-in, sign-out, downloads) as the
// ConnectError a Connect call would throw: its code and the server's message.
async function errorOf(res: Response): Promise<ConnectError> {
  let code = Code.Unknown;
  let message = res.statusText;
  try {
    const e = (await res.json()) as { code?: string; message?: string };
    const name = (e.code ?? "").replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const key = (name.charAt(0).toUpperCase() + name.slice(1)) as keyof typeof Code;
    if (key in Code) code = Code[key] as Code;
    message = e.message ?? message;
  } catch {
    // Not a Connect error body: keep the HTTP status text.
  }
  return new ConnectError(message, code);
}

/** A downloaded file: its name (the server's) and its bytes. */
export interface DownloadedFile {
  name: string;
  parts: Uint8Array[];
}

/**
 * A server stream of file chunks (RecordExportService.ExportRecords,
 * ReportService.ExportReport) through the bridge's download route, `POST
 * /download/SERVICE/METHOD`: the very same call as over Connect (same token, scope checks
 * and errors), but the answer is the file's bytes themselves, not each chunk as base64 in
 * JSON, so the page neither parses nor decodes them (docs/BENCHMARKS.md, cperf4).
 * `onProgress` gets the bytes so far and the file's size (0 when not known).
 */
export async function download<I extends DescMessage>(
  method: { name: string; parent: { typeName: string }; input: I },
  request: MessageInitShape<I>,
  onProgress: (bytes: number, total: number) => void,
): Promise<DownloadedFile> {
  const res = await fetch(`/download/${method.parent.typeName}/${method.name}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
    body: JSON.stringify(toJson(method.input, create(method.input, request))),
  });
  if (!res.ok || !res.body) throw await errorOf(res);
  // attachment; filename="ascii"; filename*=UTF-8''percent-encoded
  const disposition = res.headers.get("Content-Disposition") ?? "";
  const encoded = /filename\*=UTF-8''([^;]+)/.exec(disposition)?.[1];
  const name = encoded ? decodeURIComponent(encoded) : (/filename="([^"]+)"/.exec(disposition)?.[1] ?? "");
  const total = Number(res.headers.get("Content-Length") ?? 0);
  const parts: Uint8Array[] = [];
  let bytes = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    bytes += value.length;
    onProgress(bytes, total);
  }
  // A stream that failed after its first byte is cut short: never a short "complete" file.
  if (total > 0 && bytes !== total) throw new ConnectError(`download: ${bytes} of ${total} bytes`, Code.DataLoss);
  return { name, parts };
}

// Sign-in and sign-out are the bridge's own two routes (not AuthService calls): the bridge
// calls Login or Logout for the page and sets or clears the HttpOnly cookie, so the token
// never reaches page scripts. The Connect header is the bridge's CSRF check.
async function authPost(path: string, body: object): Promise<void> {
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
    body: JSON.stringify(body),
  });
  if (res.ok) return;
  throw await errorOf(res);
}
export const signIn = (username: string, password: string) =>
  authPost("/auth/sign-in", { username, password });
export const signOut = () => authPost("/auth/sign-out", {});

/** The message of a failed call, for the page (the server's words, which name the field). */
export function errorText(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage || Code[e.code];
  return String(e);
}

/** Every page of a paged list call. */
export async function all<T>(
  fetchPage: (token: string) => Promise<{ items: T[]; next: string }>,
  limit = 5000,
): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  do {
    const page = await fetchPage(token);
    out.push(...page.items);
    token = page.next;
  } while (token && out.length < limit);
  return out;
}
