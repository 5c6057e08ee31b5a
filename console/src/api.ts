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
} from "@gen/kcnet/v1/services_pb";

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

export { Code, ConnectError };

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
