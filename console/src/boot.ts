// The first thing the page does, from its own small file (assets/boot-HASH.js, which
// index.html loads before the bundle): ask the bridge who the session cookie belongs to
// (AuthService.WhoAmI, the Connect protocol's JSON by hand) and, when the page opened is
// the review queue with no filter in the URL, its first page and its count as soon as the
// role is known. Being its own file of 1 KB, it runs while the bundle (app-HASH.js, 100 KB
// gzipped) is still being fetched, compiled and evaluated: the queue's calls no longer
// wait for any of that (docs/BENCHMARKS.md, cperf3 and cperf4). It hands its promises to
// the bundle as `window.kcnetBoot` (main.tsx, Queue.tsx). index.html loads it `async`, so
// it runs as soon as it arrives, not after the style sheet and the document as the bundle
// does (should it ever come after the bundle ran, main.tsx asks WhoAmI itself). No
// imports on purpose: it must stay this small. Not thread-related: the browser runs this on one thread.

const call = (method: string, body: object): Promise<unknown> =>
  fetch(`/${method}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
    body: JSON.stringify(body),
  })
    .then((res) => (res.ok ? res.json() : null))
    .catch(() => null);

/** WhoAmI's answer as JSON (protobuf's JSON mapping), or null when not signed in or unreachable. */
const earlyWhoAmI: Promise<unknown> = call("kcnet.v1.AuthService/WhoAmI", {});

/** The queue's first calls made early: their request (JSON) and answers (JSON or null). */
export interface EarlyQueue {
  request: Record<string, unknown>; // ListSupportRequestsRequest; the count's is the same less pageSize
  list: Promise<unknown>;
  count: Promise<unknown>;
}

// The queue's default view ("awaiting my decision", no filter), as Queue.tsx's
// requestFilter builds it; Queue.tsx uses these answers only if its own request is equal
// (takeEarlyQueue), so a difference costs the head start, never a wrong list.
const queueOpened = /^(#\/queue)?$/.test(location.hash) &&
  !["status", "commune", "category", "funding", "age", "author"].some((k) => new URLSearchParams(location.search).has(k));
let early: Promise<EarlyQueue | null> | null = !queueOpened
  ? null
  : earlyWhoAmI.then((who) => {
      const role = (who as { user?: { role?: string } } | null)?.user?.role;
      if (!role) return null;
      const status =
        role === "ROLE_DISTRICT_COORDINATOR"
          ? "REQUEST_STATUS_SUBMITTED"
          : role === "ROLE_PROVINCE_OFFICER"
            ? "REQUEST_STATUS_ENDORSED"
            : undefined;
      const filter = status ? { status } : {};
      const request = { ...filter, pageSize: 500 };
      return {
        request,
        list: call("kcnet.v1.SupportRequestService/ListSupportRequests", request),
        count: call("kcnet.v1.SupportRequestService/CountSupportRequests", filter),
      };
    });

/** The early queue calls if they were made for exactly `request` (JSON, keys in any order);
 * once only (a later read is a fresh one, e.g. after a live change). */
async function takeEarlyQueue(request: Record<string, unknown>): Promise<EarlyQueue | null> {
  const made = await early;
  early = null;
  const canonical = (o: Record<string, unknown>) => JSON.stringify(Object.keys(o).sort().map((k) => [k, o[k]]));
  return made && canonical(made.request) === canonical(request) ? made : null;
}

/** What boot.ts hands the bundle. */
export interface Boot {
  whoAmI: Promise<unknown>;
  takeEarlyQueue: (request: Record<string, unknown>) => Promise<EarlyQueue | null>;
}
declare global {
  interface Window {
    kcnetBoot?: Boot;
  }
}
window.kcnetBoot = { whoAmI: earlyWhoAmI, takeEarlyQueue };
