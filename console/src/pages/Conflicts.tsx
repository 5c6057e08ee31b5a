// The conflicts inbox (#/conflicts): merges that overwrote a concurrent edit by another
// writer, in the caller's scope (SyncService.ListConflicts: coordinators and province
// officers; the server checks the scope). Each shows the record, the field and the two
// values side by side; the reviewer keeps the current value or restores the overwritten one
// (ResolveConflict, written as a new edit that every device receives). RequestConflicts is
// the same list for one support request, on the request page. Re-read on live changes.
import { useEffect, useState } from "preact/hooks";
import type { Conflict, Value } from "@gen/kcnet/v1/sync_pb";
import { FacilitySchema, SupportRequestSchema, VisitSchema } from "@gen/kcnet/v1/domain_pb";
import { all, errorText, facilities, requests, syncService, visits } from "../api";
import { formatTime, t } from "../i18n";
import { tr } from "../i18n-review";
import { changes } from "../live";

const schemas: Record<number, { fields: readonly { number: number; name: string }[] }> = {
  1: FacilitySchema,
  2: VisitSchema,
  3: SupportRequestSchema,
};

/** A record id (16 bytes) as the UUID text the other pages use. */
export function uuidText(bytes: Uint8Array): string {
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (hex.length !== 32) return hex;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function fieldName(c: Conflict): string {
  if (c.field === 0) return tr().deleted;
  const name = schemas[c.type]?.fields.find((f) => f.number === c.field)?.name ?? `#${c.field}`;
  return tr().fieldNames[name] ?? name;
}

// What a record is called on the page: its facility's name (read with the caller's rights:
// a record the caller may not read keeps its short id).
const recordNames = new Map<string, Promise<string>>();
function recordName(type: number, id: string): Promise<string> {
  const key = `${type}/${id}`;
  let name = recordNames.get(key);
  if (!name) {
    const facilityName = (facilityId: string) =>
      facilities.getFacility({ id: facilityId }).then((f) => f.name);
    name = (
      type === 1
        ? facilityName(id)
        : type === 2
          ? visits.getVisit({ id }).then((v) => facilityName(v.facilityId))
          : type === 3
            ? requests.getSupportRequest({ id }).then((r) => facilityName(r.facilityId))
            : Promise.resolve(id.slice(0, 8))
    ).catch(() => id.slice(0, 8));
    recordNames.set(key, name);
  }
  return name;
}

function RecordName(props: { type: number; id: string }) {
  const [name, setName] = useState(props.id.slice(0, 8));
  useEffect(() => {
    recordName(props.type, props.id).then(setName);
  }, [props.type, props.id]);
  return <>{`${tr().typeNames[props.type] ?? props.type}: ${name}`}</>;
}

function valueText(v: Value | undefined): string {
  const k = v?.kind;
  if (!k || k.case === undefined) return tr().empty;
  if (k.case === "bytesValue") return [...k.value].join(", ");
  return String(k.value);
}

const hlcTime = (hlc: bigint) => formatTime(hlc >> 16n);

async function loadConflicts(includeResolved: boolean): Promise<Conflict[]> {
  return all(async (pageToken) => {
    const r = await syncService.listConflicts({ includeResolved, pageSize: 500, pageToken });
    return { items: r.conflicts, next: r.nextPageToken };
  });
}

function ConflictTable(props: { list: Conflict[]; onResolved: () => void }) {
  const [error, setError] = useState("");
  const resolve = async (c: Conflict, restoreLoser: boolean) => {
    setError("");
    try {
      await syncService.resolveConflict({ id: c.id, restoreLoser });
      props.onResolved();
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <table class="queue conflicts">
        <caption class="visually-hidden">{tr().conflicts}</caption>
        <thead>
          <tr>
            <th scope="col">{tr().record}</th>
            <th scope="col">{tr().field}</th>
            <th scope="col">{tr().winner}</th>
            <th scope="col">{tr().loser}</th>
            <th scope="col">{t().decide}</th>
          </tr>
        </thead>
        <tbody>
          {props.list.map((c) => {
            const id = uuidText(c.recordId);
            const name = <RecordName type={c.type} id={id} />;
            return (
              <tr key={String(c.id)} data-conflict-id={String(c.id)}>
                <td>{c.type === 3 ? <a href={`#/request/${id}`}>{name}</a> : name}</td>
                <td>{fieldName(c)}</td>
                <td class="winner">
                  {valueText(c.winnerValue)}
                  <br />
                  <small>{hlcTime(c.winnerHlc)}</small>
                </td>
                <td class="loser">
                  {valueText(c.loserValue)}
                  <br />
                  <small>{hlcTime(c.loserHlc)}</small>
                </td>
                <td>
                  {c.resolved ? (
                    tr().resolved
                  ) : (
                    <>
                      <button type="button" class="secondary" onClick={() => resolve(c, false)}>
                        {tr().keepWinner}
                      </button>{" "}
                      <button type="button" onClick={() => resolve(c, true)}>
                        {tr().restoreLoser}
                      </button>
                    </>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

export function Conflicts() {
  const [includeResolved, setIncludeResolved] = useState(false);
  const [list, setList] = useState<Conflict[] | null>(null);
  const [error, setError] = useState("");
  const [reloads, setReloads] = useState(0);
  const tick = changes.value;
  useEffect(() => {
    let cancelled = false;
    loadConflicts(includeResolved)
      .then((l) => !cancelled && (setList(l), setError("")))
      .catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [includeResolved, tick, reloads]);
  return (
    <main id="main">
      <h1 tabIndex={-1}>{tr().conflicts}</h1>
      <p class="help">{tr().conflictsHelp}</p>
      <label>
        <input
          type="checkbox"
          checked={includeResolved}
          onChange={(e) => setIncludeResolved((e.target as HTMLInputElement).checked)}
        />{" "}
        {tr().includeResolved}
      </label>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      {!error && list === null && <p aria-live="polite">{t().loading}</p>}
      {list !== null && (
        <>
          <p aria-live="polite" id="conflict-count">
            {tr().conflictCount(list.length)}
          </p>
          {list.length === 0 ? (
            <p>{tr().noConflicts}</p>
          ) : (
            <ConflictTable list={list} onResolved={() => setReloads((n) => n + 1)} />
          )}
        </>
      )}
    </main>
  );
}

/** The conflicts of one support request, for its page (nothing when it has none). */
export function RequestConflicts(props: { id: string }) {
  const [list, setList] = useState<Conflict[]>([]);
  const [reloads, setReloads] = useState(0);
  const tick = changes.value;
  useEffect(() => {
    let cancelled = false;
    loadConflicts(true)
      .then((l) => !cancelled && setList(l.filter((c) => c.type === 3 && uuidText(c.recordId) === props.id)))
      .catch(() => !cancelled && setList([])); // e.g. a collaborator: no conflict review
    return () => {
      cancelled = true;
    };
  }, [props.id, tick, reloads]);
  if (list.length === 0) return null;
  return (
    <section aria-labelledby="request-conflicts" id="request-conflicts-section">
      <h2 id="request-conflicts">{tr().requestConflicts}</h2>
      <ConflictTable list={list} onResolved={() => setReloads((n) => n + 1)} />
    </section>
  );
}
