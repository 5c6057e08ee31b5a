// The review queue: support requests awaiting the signed-in user's decision (a district
// coordinator decides SUBMITTED requests, a province officer ENDORSED ones), oldest first,
// filtered by status, age, commune, category, funding source and collaborator. The filters
// live in the URL and the server applies them (requestFilter.ts), so the count is the exact
// N of CountSupportRequests. What is listed is what the server lets the caller list: scope
// is the server's check.
import { useEffect, useRef, useState } from "preact/hooks";
import { all, errorText, facilities, orgUnits, requests, users } from "../api";
import { OrgUnitLevel, type OrgUnit, type SupportRequest, type User } from "@gen/kcnet/v1/domain_pb";
import {
  categoryName,
  categoryValues,
  formatTime,
  formatVnd,
  fundingName,
  fundingValues,
  statusName,
  statusValues,
  t,
} from "../i18n";
import { filters, me, setFilters } from "../state";
import { tr } from "../i18n-review";
import { changes, liveState } from "../live";
import { BulkBar } from "./Bulk";
import { RequestExportButtons } from "./RecordExport";
import { ageChoices, requestFilter } from "../requestFilter";
import { tf } from "../i18n-filters";
import type {} from "../boot"; // window.kcnetBoot's type
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import {
  CountSupportRequestsResponseSchema,
  ListSupportRequestsRequestSchema,
  ListSupportRequestsResponseSchema,
} from "@gen/kcnet/v1/services_pb";
export { myDecisionStatus } from "../requestFilter";

const listLimit = 5000; // requests read for one view: past it "all matching" is refused

// The communes the caller may see: one GetScopeDirectory call (the units of the caller's
// scope and their ancestors; cached per session).
let communesCache: Promise<OrgUnit[]> | null = null;
async function loadCommunes(): Promise<OrgUnit[]> {
  const directory = await orgUnits.getScopeDirectory({});
  return directory.orgUnits.filter((u) => u.level === OrgUnitLevel.COMMUNE);
}
export function communes(): Promise<OrgUnit[]> {
  communesCache ??= loadCommunes().catch(() => []);
  return communesCache;
}
// The users of the caller's scope, for the collaborator filter (cached per session).
let usersCache: Promise<User[]> | null = null;
function scopeUsers(): Promise<User[]> {
  usersCache ??= all(async (pageToken) => {
    const r = await users.listUsers({ pageSize: 500, pageToken });
    return { items: r.users, next: r.nextPageToken };
  }).catch(() => []);
  return usersCache;
}
export function resetCaches() {
  communesCache = null;
  usersCache = null;
}

interface Row {
  request: SupportRequest;
  facilityName: string;
}

export function Queue() {
  const f = filters.value;
  const role = me.value?.role;
  const [rows, setRows] = useState<Row[] | null>(null);
  const [error, setError] = useState("");
  const [communeList, setCommuneList] = useState<OrgUnit[]>([]);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [capped, setCapped] = useState(false);
  const [total, setTotal] = useState(0); // the server's exact count for the filter
  const [userList, setUserList] = useState<User[]>([]);
  const [reloads, setReloads] = useState(0);
  // Live: a change in my scope re-reads the list in place (no "loading" flash); a change of
  // the filters starts afresh.
  const tick = changes.value;
  const shownKey = useRef("");
  const knownNames = useRef(new Map<string, string>()); // facility id -> name

  // The filters' communes and collaborators once the first rows are shown: the rows wait
  // for nothing they do not need (a commune's name shows "…" until then).
  const [communesRead, setCommunesRead] = useState(false);
  const rowsShown = rows !== null;
  useEffect(() => {
    if (!rowsShown) return;
    communes().then((list) => (setCommuneList(list), setCommunesRead(true)));
    scopeUsers().then(setUserList);
  }, [rowsShown]);

  useEffect(() => {
    let cancelled = false;
    const key = [f.status, f.commune, f.category, f.funding, f.age, f.author, role].join("|");
    if (key !== shownKey.current) {
      shownKey.current = key;
      setRows(null);
      setSelected(new Set());
    }
    setError("");
    (async () => {
      // The server applies every filter; the count is its exact N.
      const filter = requestFilter(f, role);
      // The first page and the count may be on their way already (boot.ts, the first load).
      const firstRequest = create(ListSupportRequestsRequestSchema, { ...filter, pageSize: 500 });
      const early = await window.kcnetBoot?.takeEarlyQueue(
        toJson(ListSupportRequestsRequestSchema, firstRequest) as Record<string, unknown>,
      );
      const earlyList = early && (await early.list);
      const earlyCount = early && (await early.count);
      const [list, counted] = await Promise.all([
        all(async (pageToken) => {
          const r =
            !pageToken && earlyList
              ? fromJson(ListSupportRequestsResponseSchema, earlyList as JsonValue, { ignoreUnknownFields: true })
              : await requests.listSupportRequests({ ...filter, pageSize: 500, pageToken });
          return { items: r.supportRequests, next: r.nextPageToken };
        }, listLimit),
        earlyCount
          ? fromJson(CountSupportRequestsResponseSchema, earlyCount as JsonValue, { ignoreUnknownFields: true })
          : requests.countSupportRequests(filter),
      ]);
      const kept = list.sort((a, b) => Number(a.updatedMs - b.updatedMs)); // oldest first
      if (cancelled) return;
      // The list shows at once; the facilities' names follow, 500 in one call.
      setCapped(Number(counted.count) > list.length);
      setTotal(Number(counted.count));
      // Names already shown stay meanwhile (a live re-read shows no placeholder).
      const shown = knownNames.current;
      setRows(kept.map((r) => ({ request: r, facilityName: shown.get(r.facilityId) ?? "…" })));
      const ids = [...new Set(kept.map((r) => r.facilityId))];
      const names = new Map<string, string>();
      await Promise.all(
        Array.from({ length: Math.ceil(ids.length / 500) }, async (_, i) => {
          const r = await facilities.listFacilities({ ids: ids.slice(i * 500, (i + 1) * 500) });
          for (const fac of r.facilities) names.set(fac.id, fac.name);
        }),
      );
      if (!cancelled) {
        knownNames.current = names;
        setRows(kept.map((r) => ({ request: r, facilityName: names.get(r.facilityId) ?? "—" })));
      }
    })().catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [f.status, f.commune, f.category, f.funding, f.age, f.author, role, tick, reloads]);

  const communeName = (id: bigint) => communeList.find((c) => c.id === id)?.name ?? (communesRead ? String(id) : "…");
  const select = (
    id: string,
    label: string,
    value: string,
    onChange: (v: string) => void,
    options: [string, string][],
  ) => (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {options.map(([v, text]) => (
          <option value={v} key={v}>
            {text}
          </option>
        ))}
      </select>
    </div>
  );

  return (
    <main id="main">
      <h1 tabIndex={-1}>{t().queue}</h1>
      <p class="help">{t().queueHelp}</p>
      <p class={`live ${liveState.value}`} id="live-state">
        {liveState.value === "offline" ? tr().liveOffline : tr().live}
      </p>
      <form class="filters" aria-label={t().filters} onSubmit={(e) => e.preventDefault()}>
        {select("f-status", t().status, f.status, (v) => setFilters({ status: v }), [
          ["", t().awaitingMe],
          ["all", t().all],
          ...statusValues.map((s): [string, string] => [String(s), statusName(s)]),
        ])}
        {select("f-commune", t().commune, f.commune, (v) => setFilters({ commune: v }), [
          ["", t().all],
          ...communeList.map((c): [string, string] => [String(c.id), c.name]),
        ])}
        {select("f-category", t().category, f.category, (v) => setFilters({ category: v }), [
          ["", t().all],
          ...categoryValues.map((c): [string, string] => [String(c), categoryName(c)]),
        ])}
        {select("f-funding", t().funding, f.funding, (v) => setFilters({ funding: v }), [
          ["", t().all],
          ...fundingValues.map((c): [string, string] => [String(c), fundingName(c)]),
        ])}
        {select("f-age", tf().age, f.age, (v) => setFilters({ age: v }), [
          ["", tf().anyAge],
          ...ageChoices.map((d): [string, string] => [String(d), tf().ageDays(d)]),
        ])}
        {select("f-author", tf().author, f.author, (v) => setFilters({ author: v }), [
          ["", tf().anyone],
          ...userList.map((u): [string, string] => [String(u.id), u.displayName || u.username]),
        ])}
        <button
          type="button"
          class="secondary"
          onClick={() =>
            setFilters({ status: "", commune: "", category: "", funding: "", age: "", author: "" })
          }
        >
          {t().clearFilters}
        </button>
      </form>
      <RequestExportButtons filter={requestFilter(f, role)} />
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      {!error && rows === null && <p aria-live="polite">{t().loading}</p>}
      {rows !== null && (
        <>
          <p aria-live="polite" id="queue-count">
            {t().count(total)}
            {total > rows.length && ` · ${tf().shownOf(rows.length, total)}`}
          </p>
          <BulkBar
            matching={rows}
            total={total}
            filter={requestFilter(f, role)}
            selected={selected}
            capped={capped}
            onDone={() => {
              setSelected(new Set());
              setReloads((n) => n + 1);
            }}
          />
          {rows.length === 0 ? (
            <p>{t().empty}</p>
          ) : (
            <table class="queue">
              <caption class="visually-hidden">{t().queue}</caption>
              <thead>
                <tr>
                  <th scope="col">
                    <input
                      type="checkbox"
                      aria-label={tr().selectAllShown}
                      checked={rows.length > 0 && rows.every((r) => selected.has(r.request.id))}
                      onChange={(e) =>
                        setSelected(
                          (e.target as HTMLInputElement).checked
                            ? new Set(rows.map((r) => r.request.id))
                            : new Set(),
                        )
                      }
                    />
                  </th>
                  <th scope="col">{t().facility}</th>
                  <th scope="col">{t().commune}</th>
                  <th scope="col">{t().category}</th>
                  <th scope="col" class="num">
                    {t().requested}
                  </th>
                  <th scope="col">{t().funding}</th>
                  <th scope="col">{t().status}</th>
                  <th scope="col">{t().submittedAt}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map(({ request: r, facilityName }) => (
                  <tr key={r.id} data-request-id={r.id}>
                    <td>
                      <input
                        type="checkbox"
                        aria-label={tr().selectRow(facilityName)}
                        checked={selected.has(r.id)}
                        onChange={(e) => {
                          const next = new Set(selected);
                          if ((e.target as HTMLInputElement).checked) next.add(r.id);
                          else next.delete(r.id);
                          setSelected(next);
                        }}
                      />
                    </td>
                    <td>
                      <a href={`#/request/${r.id}`}>{facilityName}</a>
                    </td>
                    <td>{communeName(r.communeId)}</td>
                    <td>{categoryName(r.category)}</td>
                    <td class="num">{formatVnd(r.requestedAmountVnd)}</td>
                    <td>{fundingName(r.approvedFunding || r.proposedFunding)}</td>
                    <td>{statusName(r.status)}</td>
                    <td>{formatTime(r.updatedMs)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </main>
  );
}
