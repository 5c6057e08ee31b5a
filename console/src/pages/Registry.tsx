// The facility registry (#/registry) and a facility's page (#/facility/ID).
// The registry searches with ListFacilities' `query`, which the server folds as the SDK's
// search does (no case, no diacritics, đ = d), within an org unit of the caller's scope;
// kind and sector narrow the list on the page. Filters live in the URL (?q=&unit=&kind=
// &sector=), shared with the reports and the map. The list is virtualised
// (@tanstack/virtual-core): only the rows in view are in the DOM, however long it is, and
// only the pages scrolled to are read (the first 100 rows at once, then 500 at a time; the
// count says "100+" while more remain).
// Facilities with the same folded name in the same commune are flagged as possible
// duplicates. A facility's page shows its visits and requests on one timeline, and the
// photos and documents of the facility and its visits (./Attachments.tsx).
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { FacilityExportButtons } from "./RecordExport";
import { elementScroll, observeElementOffset, observeElementRect, Virtualizer } from "@tanstack/virtual-core";
import { Code, ConnectError, errorText, facilities, requests, visits } from "../api";
import { AttachmentOwnerType, type Facility, type SupportRequest, type Visit } from "@gen/kcnet/v1/domain_pb";
import { AttachmentGallery } from "./Attachments";
import { categoryName, formatTime, formatVnd, purposeName, statusName, t } from "../i18n";
import { fold, formatCount, kindName, kindValues, rt, sectorName, sectorValues } from "./reportsText";
import { myUnits, reportParams, setReportParams, type ReportParams, type UnitOption } from "./reportKit";

/** The most facilities a list loads; beyond, the page asks to narrow the search. */
export const kMaxListed = 50_000;
/** The first page is small (the first rows show sooner); the ones after it are larger. */
const kFirstPage = 100;
const kNextPage = 500;
/** Rows left below the view when the next page is asked for. */
const kLoadAhead = 40;

/**
 * One page of the URL's filters (search, org unit, kind, sector) after `token` ("" for
 * the first): its facilities (kind and sector are applied here, so a page may hold fewer,
 * even none) and the next page's token ("" at the end). `signal` aborts the call (a search
 * typed further makes the last one stale). With a search the server answers names that
 * begin with it first.
 */
export async function fetchFacilityPage(
  p: ReportParams,
  token: string,
  signal?: AbortSignal,
): Promise<{ facilities: Facility[]; next: string }> {
  const r = await facilities.listFacilities(
    { orgUnitId: p.unit ? BigInt(p.unit) : 0n, query: p.q, pageSize: token ? kNextPage : kFirstPage, pageToken: token },
    { signal },
  );
  const kept = r.facilities.filter((f) => (!p.kind || f.kind === Number(p.kind)) && (!p.sector || f.sector === Number(p.sector)));
  return { facilities: kept, next: r.nextPageToken };
}

// Each facility's key, folded once (a list of thousands is checked at every page loaded).
const keys = new WeakMap<Facility, string>();
const dupKey = (f: Facility) => {
  let k = keys.get(f);
  if (k === undefined) keys.set(f, (k = `${f.communeId}|${fold(f.name)}`));
  return k;
};

/** The keys (commune + folded name) held by more than one facility of `list`. */
export function duplicateKeys(list: Facility[]): Set<string> {
  const seen = new Map<string, number>();
  for (const f of list) {
    const k = dupKey(f);
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  return new Set([...seen].filter(([, n]) => n > 1).map(([k]) => k));
}

function useUnits(): UnitOption[] {
  const [units, setUnits] = useState<UnitOption[]>([]);
  useEffect(() => {
    myUnits().then(setUnits);
  }, []);
  return units;
}

/** The org unit, kind and sector filters (shared by the registry and the map). */
export function FacilityFilters({ units }: { units: UnitOption[] }) {
  const p = reportParams.value;
  const select = (id: string, label: string, value: string, key: keyof ReportParams, options: [string, string][]) => (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => setReportParams({ [key]: (e.target as HTMLSelectElement).value })}>
        {options.map(([v, text]) => (
          <option key={v} value={v}>
            {text}
          </option>
        ))}
      </select>
    </div>
  );
  return (
    <>
      {select("f-unit", rt().orgUnit, p.unit, "unit", [
        ["", rt().allMyUnits],
        ...units.map((u): [string, string] => [String(u.unit.id), "\u00a0\u00a0".repeat(u.depth) + u.unit.name]),
      ])}
      {select("f-kind", rt().kind, p.kind, "kind", [["", t().all], ...kindValues.map((k): [string, string] => [String(k), kindName(k)])])}
      {select("f-sector", rt().sector, p.sector, "sector", [
        ["", t().all],
        ...sectorValues.map((k): [string, string] => [String(k), sectorName(k)]),
      ])}
    </>
  );
}

const kRowHeight = 56;

export function Registry() {
  const p = reportParams.value;
  const units = useUnits();
  const [typed, setTyped] = useState(p.q);
  const [list, setList] = useState<Facility[] | null>(null);
  // The next page's token ("" at the end or at kMaxListed); its call is in flight when `loading`.
  const [next, setNext] = useState("");
  const [loading, setLoading] = useState(false);
  const search = useRef<AbortController | null>(null); // the current search's calls
  const [capped, setCapped] = useState(false); // kMaxListed reached with more to come
  const [loadedQuery, setLoadedQuery] = useState<string | null>(null); // the search `list` answers
  const [error, setError] = useState("");
  const [, setTick] = useState(0);
  const scroller = useRef<HTMLDivElement>(null);
  const virtualizer = useRef<Virtualizer<HTMLDivElement, Element> | null>(null);

  // Typing searches after a short pause; the search is in the URL.
  useEffect(() => {
    if (typed === p.q) return;
    const timer = setTimeout(() => setReportParams({ q: typed.trim() }), 200);
    return () => clearTimeout(timer);
  }, [typed]);

  // Each search (or filter) cancels the one before, its calls in flight included. Only the
  // first page is read at once; the next ones when the list is scrolled near its end
  // (below). Reading them all in the background made the server read pages nobody looked
  // at, and a search typed meanwhile queued behind them (docs/BENCHMARKS.md).
  useEffect(() => {
    const abort = new AbortController();
    search.current = abort;
    setList(null);
    setNext("");
    setCapped(false);
    setLoading(true);
    setLoadedQuery(null);
    setError("");
    fetchFacilityPage(p, "", abort.signal)
      .then((page) => {
        if (abort.signal.aborted) return;
        setList(page.facilities);
        setNext(page.next);
        setLoading(false);
        setLoadedQuery(p.q);
      })
      .catch((e) => !abort.signal.aborted && (setLoading(false), setError(errorText(e))));
    return () => abort.abort();
  }, [p.q, p.unit, p.kind, p.sector]);

  // The next page, when the rows in view come within kLoadAhead of the last one loaded.
  const loadMore = () => {
    const abort = search.current;
    if (!abort || !list || !next || loading) return;
    setLoading(true);
    fetchFacilityPage(p, next, abort.signal)
      .then((page) => {
        if (abort.signal.aborted) return;
        const grown = [...list, ...page.facilities].slice(0, kMaxListed);
        setList(grown);
        setNext(grown.length >= kMaxListed ? "" : page.next);
        setCapped(grown.length >= kMaxListed && page.next !== "");
        setLoading(false);
      })
      .catch((e) => {
        if (abort.signal.aborted) return;
        setNext(""); // no retry loop: the error is shown, a new search starts afresh
        setLoading(false);
        setError(errorText(e));
      });
  };

  const count = list?.length ?? 0;
  virtualizer.current ??= new Virtualizer<HTMLDivElement, Element>({
    count,
    getScrollElement: () => scroller.current,
    estimateSize: () => kRowHeight,
    overscan: 8,
    scrollToFn: elementScroll,
    observeElementRect,
    observeElementOffset,
    onChange: () => setTick((n) => n + 1),
  });
  const v = virtualizer.current;
  v.setOptions({ ...v.options, count });
  useEffect(() => v._didMount(), []);
  useEffect(() => {
    v._willUpdate();
  });

  // Not at every render (the virtual list renders as it scrolls): once per list.
  const dups = useMemo(() => (list ? duplicateKeys(list) : new Set<string>()), [list]);
  const names = new Map(units.map((u) => [u.unit.id, u.unit.name]));
  const items = v.getVirtualItems();
  const lastInView = items.length ? items[items.length - 1].index : -1;
  useEffect(() => {
    if (list && next && !loading && lastInView >= list.length - kLoadAhead) loadMore();
  });
  return (
    <main id="main">
      <h1 tabIndex={-1}>{rt().registry}</h1>
      <p class="help">{rt().registryHelp}</p>
      <form class="filters" role="search" aria-label={rt().search} onSubmit={(e) => (e.preventDefault(), setReportParams({ q: typed.trim() }))}>
        <div class="field">
          <label for="f-q">{rt().search}</label>
          <input id="f-q" type="search" value={typed} autoComplete="off" onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        </div>
        <FacilityFilters units={units} />
        <button type="button" class="secondary" onClick={() => (setTyped(""), setReportParams({ q: "", unit: "", kind: "", sector: "" }))}>
          {t().clearFilters}
        </button>
      </form>
      <FacilityExportButtons params={p} />
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite" id="registry-count" data-q={loadedQuery ?? undefined}>
        {list === null ? (error ? "" : t().loading) : rt().facilitiesFound(formatCount(count), next !== "" || capped)}
        {capped && ` ${rt().tooMany}`}
      </p>
      <div class="vlist" ref={scroller} tabIndex={-1}>
        <ul class="vlist-inner" style={{ height: `${v.getTotalSize()}px` }} aria-label={rt().registry}>
          {list &&
            items.map((item) => {
              const f = list[item.index];
              if (!f) return null;
              const dup = dups.has(dupKey(f));
              return (
                <li key={f.id} class="vrow" data-facility-id={f.id} style={{ transform: `translateY(${item.start}px)`, height: `${kRowHeight}px` }}>
                  <a href={`#/facility/${f.id}`}>{f.name}</a>
                  {dup && <span class="badge">{rt().possibleDuplicate}</span>}
                  <span class="sub">
                    {names.get(f.communeId) ?? String(f.communeId)} · {f.ownerName || "—"} · {kindName(f.kind)}
                  </span>
                </li>
              );
            })}
        </ul>
      </div>
    </main>
  );
}

type TimelineEntry =
  | { at: bigint; kind: "visit"; visit: Visit }
  | { at: bigint; kind: "request"; request: SupportRequest };

export function FacilityPage({ id }: { id: string }) {
  const units = useUnits();
  const [facility, setFacility] = useState<Facility | null>(null);
  const [timeline, setTimeline] = useState<TimelineEntry[] | null>(null);
  const [twins, setTwins] = useState<Facility[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    let cancelled = false;
    (async () => {
      const f = await facilities.getFacility({ id });
      if (cancelled) return;
      setFacility(f);
      const [vs, rs, same] = await Promise.all([
        visits.listVisits({ facilityId: id, pageSize: 500 }),
        requests.listSupportRequests({ facilityId: id, pageSize: 500 }),
        facilities.listFacilities({ orgUnitId: f.communeId, query: f.name.slice(0, 60), pageSize: 200 }),
      ]);
      if (cancelled) return;
      const entries: TimelineEntry[] = [
        ...vs.visits.map((v): TimelineEntry => ({ at: v.visitedMs, kind: "visit", visit: v })),
        ...rs.supportRequests.map((r): TimelineEntry => ({ at: r.createdMs, kind: "request", request: r })),
      ].sort((a, b) => Number(b.at - a.at)); // newest first
      setTimeline(entries);
      setTwins(same.facilities.filter((o) => o.id !== f.id && fold(o.name) === fold(f.name)));
    })().catch((e) => {
      if (cancelled) return;
      if (e instanceof ConnectError && e.code === Code.NotFound) setError(rt().facilityNotFound);
      else setError(errorText(e));
    });
    return () => {
      cancelled = true;
    };
  }, [id]);
  const unitName = (uid: bigint) => units.find((u) => u.unit.id === uid)?.unit.name ?? String(uid);
  return (
    <main id="main">
      <p>
        <a href="#/registry">{rt().backToRegistry}</a>
      </p>
      <h1 tabIndex={-1}>{facility?.name ?? t().facility}</h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {!error && !facility && <p aria-live="polite">{t().loading}</p>}
      {facility && (
        <dl class="facts" id="facility-facts">
          <dt>{t().commune}</dt>
          <dd>{unitName(facility.communeId)}</dd>
          <dt>{t().owner}</dt>
          <dd>{facility.ownerName || "—"}</dd>
          <dt>{rt().kind}</dt>
          <dd>{kindName(facility.kind)}</dd>
          <dt>{rt().sector}</dt>
          <dd>{sectorName(facility.sector)}</dd>
          <dt>{t().address}</dt>
          <dd>{facility.address || "—"}</dd>
          <dt>{t().workers}</dt>
          <dd>{formatCount(facility.workers)}</dd>
          <dt>{t().products}</dt>
          <dd>{facility.mainProducts || "—"}</dd>
          <dt>{t().phone}</dt>
          <dd>{facility.contactPhone || "—"}</dd>
          <dt>{rt().location}</dt>
          <dd>{facility.latitude || facility.longitude ? `${facility.latitude.toFixed(5)}, ${facility.longitude.toFixed(5)}` : "—"}</dd>
        </dl>
      )}
      {twins.length > 0 && (
        <section aria-labelledby="h-twins" id="facility-duplicates">
          <h2 id="h-twins">{rt().duplicatesOf}</h2>
          <ul>
            {twins.map((o) => (
              <li key={o.id}>
                <a href={`#/facility/${o.id}`}>{o.name}</a> · {o.ownerName || "—"}
              </li>
            ))}
          </ul>
        </section>
      )}
      {facility && timeline && (
        <AttachmentGallery
          owners={[
            { type: AttachmentOwnerType.FACILITY, id: facility.id, label: facility.name },
            ...timeline.flatMap((e) =>
              e.kind === "visit" ? [{ type: AttachmentOwnerType.VISIT, id: e.visit.id, label: formatTime(e.visit.visitedMs) }] : [],
            ),
          ]}
        />
      )}
      {timeline && (
        <section aria-labelledby="h-timeline">
          <h2 id="h-timeline">{rt().timeline}</h2>
          {timeline.length === 0 && <p>{rt().noEvents}</p>}
          <ol class="timeline" id="facility-timeline">
            {timeline.map((e) =>
              e.kind === "visit" ? (
                <li key={e.visit.id} data-kind="visit">
                  <time>{formatTime(e.at)}</time> <strong>{rt().visitEvent}</strong>: {purposeName(e.visit.purpose)}
                  {e.visit.findings && ` — ${e.visit.findings}`}
                </li>
              ) : (
                <li key={e.request.id} data-kind="request">
                  <time>{formatTime(e.at)}</time> <strong>{rt().requestEvent}</strong>:{" "}
                  <a href={`#/request/${e.request.id}`}>{categoryName(e.request.category)}</a>, {formatVnd(e.request.requestedAmountVnd)} —{" "}
                  {statusName(e.request.status)}
                </li>
              ),
            )}
          </ol>
        </section>
      )}
    </main>
  );
}
