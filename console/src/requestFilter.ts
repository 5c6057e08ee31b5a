// The review queue's filter as the server applies it: one function turns the URL's filters
// (state.ts) into the fields of ListSupportRequestsRequest, so the queue's list, its exact
// count (CountSupportRequests), bulk actions over "all N matching" and the other views that
// list requests send the very same filter. Scope stays the server's check.
import { FundingSource, RequestStatus, Role, SupportCategory } from "@gen/kcnet/v1/domain_pb";
import type { Filters } from "./state";

/** The status a role decides on, or UNSPECIFIED (none: administrators, collaborators). */
export function myDecisionStatus(role: Role | undefined): RequestStatus {
  if (role === Role.DISTRICT_COORDINATOR) return RequestStatus.SUBMITTED;
  if (role === Role.PROVINCE_OFFICER) return RequestStatus.ENDORSED;
  return RequestStatus.UNSPECIFIED;
}

/** The minimum ages offered by the queue's "waiting at least" filter, in days. */
export const ageChoices = [3, 7, 14, 30, 60, 90];

export interface RequestFilterFields {
  orgUnitId: bigint;
  status: RequestStatus;
  category: SupportCategory;
  funding: FundingSource;
  authorId: bigint;
  communeIds: bigint[];
  minAgeDays: number;
}

const int = (s: string) => (/^\d+$/.test(s) ? Number(s) : 0);
const id = (s: string) => (/^\d+$/.test(s) ? BigInt(s) : 0n);

/** Whether the URL carries any of the queue's filters (then the map and its exports
 * follow them too: the "saved filters shared by the queue, the map and exports"). */
export function hasQueueFilter(f: Filters): boolean {
  return Object.values(f).some((v) => v !== "");
}

export function requestFilter(f: Filters, role: Role | undefined): RequestFilterFields {
  const status =
    f.status === "all"
      ? RequestStatus.UNSPECIFIED
      : f.status
        ? (int(f.status) as RequestStatus)
        : myDecisionStatus(role);
  return {
    orgUnitId: 0n,
    status,
    category: int(f.category) as SupportCategory,
    funding: int(f.funding) as FundingSource,
    authorId: id(f.author),
    communeIds: f.commune ? [id(f.commune)] : [],
    minAgeDays: int(f.age),
  };
}
