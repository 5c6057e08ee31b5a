// One support request on one page: the request, its facility, the facility's visits and
// the request's history, the photos and documents of the request, the facility and its
// visits (./Attachments.tsx), and the decisions the signed-in user may make on it now:
// a coordinator endorses, returns or rejects a SUBMITTED request; a province officer
// approves (amount, funding source), returns or rejects an ENDORSED one. Return and reject
// need a reason, which the author's tablet receives with the request (decision_note).
import { useEffect, useState } from "preact/hooks";
import { all, Code, ConnectError, errorText, facilities, requests, users, visits } from "../api";
import {
  AttachmentOwnerType,
  FundingSource,
  RequestStatus,
  Role,
  type Facility,
  type RequestEvent,
  type SupportRequest,
  type Visit,
} from "@gen/kcnet/v1/domain_pb";
import {
  actionName,
  categoryName,
  formatTime,
  formatVnd,
  fundingName,
  fundingValues,
  parseVnd,
  purposeName,
  statusName,
  t,
} from "../i18n";
import { me } from "../state";
import { RequestConflicts } from "./Conflicts";
import { changes } from "../live";
import { AttachmentGallery } from "./Attachments";

interface Loaded {
  request: SupportRequest;
  facility: Facility | null;
  visits: Visit[];
  events: RequestEvent[];
  names: Map<bigint, string>;
}

async function load(id: string): Promise<Loaded> {
  const request = await requests.getSupportRequest({ id });
  const [facility, visitList, events, userList] = await Promise.all([
    facilities.getFacility({ id: request.facilityId }).catch(() => null),
    all(async (pageToken) => {
      const r = await visits.listVisits({ facilityId: request.facilityId, pageSize: 500, pageToken });
      return { items: r.visits, next: r.nextPageToken };
    }).catch(() => [] as Visit[]),
    all(async (pageToken) => {
      const r = await requests.listRequestEvents({ requestId: id, pageSize: 500, pageToken });
      return { items: r.events, next: r.nextPageToken };
    }),
    all(async (pageToken) => {
      const r = await users.listUsers({ pageSize: 500, pageToken });
      return { items: r.users, next: r.nextPageToken };
    }).catch(() => []),
  ]);
  const names = new Map<bigint, string>();
  for (const u of userList) names.set(u.id, u.displayName || u.username);
  if (me.value) names.set(me.value.id, me.value.displayName || me.value.username);
  visitList.sort((a, b) => Number(b.visitedMs - a.visitedMs));
  return { request, facility, visits: visitList, events, names };
}

export function RequestPage({ id }: { id: string }) {
  const [data, setData] = useState<Loaded | null>(null);
  const [error, setError] = useState("");
  const [version, setVersion] = useState(0);
  const tick = changes.value; // live: another officer's decision shows without a reload

  useEffect(() => {
    let cancelled = false;
    load(id)
      .then((d) => !cancelled && setData(d))
      .catch((e) => {
        if (cancelled) return;
        const notFound = e instanceof ConnectError && (e.code === Code.NotFound || e.code === Code.PermissionDenied);
        setError(notFound ? t().notFound : errorText(e));
      });
    return () => {
      cancelled = true;
    };
  }, [id, version, tick]);

  if (error) {
    return (
      <main id="main">
        <p>
          <a href="#/queue">{t().backToQueue}</a>
        </p>
        <h1 tabIndex={-1}>{t().request}</h1>
        <p class="error" role="alert">
          {error}
        </p>
      </main>
    );
  }
  if (!data) {
    return (
      <main id="main">
        <h1 tabIndex={-1}>{t().request}</h1>
        <p aria-live="polite">{t().loading}</p>
      </main>
    );
  }
  const { request: r, facility: fac } = data;
  const who = (uid: bigint) => data.names.get(uid) ?? t().user(String(uid));
  return (
    <main id="main">
      <p>
        <a href="#/queue">{t().backToQueue}</a>
      </p>
      <h1 tabIndex={-1}>
        {t().request}: {fac?.name ?? r.facilityId}
      </h1>
      <section aria-labelledby="h-request">
        <h2 id="h-request">{categoryName(r.category)}</h2>
        <dl class="facts">
          <dt>{t().status}</dt>
          <dd id="request-status">{statusName(r.status)}</dd>
          <dt>{t().requested}</dt>
          <dd>{formatVnd(r.requestedAmountVnd)}</dd>
          <dt>{t().ownContribution}</dt>
          <dd>{formatVnd(r.ownContributionVnd)}</dd>
          <dt>{t().proposedFunding}</dt>
          <dd>{fundingName(r.proposedFunding)}</dd>
          {r.approvedAmountVnd > 0n && (
            <>
              <dt>{t().approvedAmount}</dt>
              <dd id="approved-amount">
                {formatVnd(r.approvedAmountVnd)} — {fundingName(r.approvedFunding)}
              </dd>
            </>
          )}
          {r.decisionNote && (
            <>
              <dt>{t().decisionNote}</dt>
              <dd id="decision-note">{r.decisionNote}</dd>
            </>
          )}
          <dt>{t().description}</dt>
          <dd>{r.description || "—"}</dd>
        </dl>
      </section>
      <Decision request={r} onDone={() => setVersion(version + 1)} />
      {fac && (
        <section aria-labelledby="h-facility">
          <h2 id="h-facility">
            {t().facility}: {fac.name}
          </h2>
          <dl class="facts">
            <dt>{t().owner}</dt>
            <dd>{fac.ownerName || "—"}</dd>
            <dt>{t().address}</dt>
            <dd>{fac.address || "—"}</dd>
            <dt>{t().products}</dt>
            <dd>{fac.mainProducts || "—"}</dd>
            <dt>{t().workers}</dt>
            <dd>{String(fac.workers)}</dd>
            <dt>{t().phone}</dt>
            <dd>{fac.contactPhone || "—"}</dd>
          </dl>
        </section>
      )}
      <section aria-labelledby="h-visits">
        <h2 id="h-visits">{t().visits}</h2>
        {data.visits.length === 0 ? (
          <p>{t().noVisits}</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">{t().when}</th>
                <th scope="col">{t().purpose}</th>
                <th scope="col">{t().actor}</th>
                <th scope="col">{t().findings}</th>
              </tr>
            </thead>
            <tbody>
              {data.visits.map((v) => (
                <tr key={v.id}>
                  <td>{formatTime(v.visitedMs)}</td>
                  <td>{purposeName(v.purpose)}</td>
                  <td>{who(v.collaboratorId)}</td>
                  <td>{v.findings}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <AttachmentGallery
        who={who}
        owners={[
          { type: AttachmentOwnerType.SUPPORT_REQUEST, id: r.id },
          ...(fac ? [{ type: AttachmentOwnerType.FACILITY, id: fac.id, label: fac.name }] : []),
          ...data.visits.map((v) => ({ type: AttachmentOwnerType.VISIT, id: v.id, label: formatTime(v.visitedMs) })),
        ]}
      />
      <section aria-labelledby="h-history">
        <h2 id="h-history">{t().history}</h2>
        <table id="history">
          <thead>
            <tr>
              <th scope="col">{t().when}</th>
              <th scope="col">{t().action}</th>
              <th scope="col">{t().actor}</th>
              <th scope="col">{t().note}</th>
            </tr>
          </thead>
          <tbody>
            {data.events.map((e) => (
              <tr key={e.id}>
                <td>{formatTime(e.atMs)}</td>
                <td>
                  {actionName(e.action)}
                  {e.amountVnd > 0n ? ` (${formatVnd(e.amountVnd)})` : ""}
                </td>
                <td>{who(e.actorId)}</td>
                <td>{e.note}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <RequestConflicts id={r.id} />
    </main>
  );
}

type Act = "endorse" | "return" | "reject" | "approve";

function Decision({ request: r, onDone }: { request: SupportRequest; onDone: () => void }) {
  const role = me.value?.role;
  const acts: Act[] =
    role === Role.DISTRICT_COORDINATOR && r.status === RequestStatus.SUBMITTED
      ? ["endorse", "return", "reject"]
      : role === Role.PROVINCE_OFFICER && r.status === RequestStatus.ENDORSED
        ? ["approve", "return", "reject"]
        : [];
  const [note, setNote] = useState("");
  const [amount, setAmount] = useState(formatVnd(r.requestedAmountVnd).replace(/\s*₫$/, ""));
  const [funding, setFunding] = useState(String(r.proposedFunding || ""));
  const [error, setError] = useState("");
  const [done, setDone] = useState("");
  const [busy, setBusy] = useState(false);

  if (acts.length === 0) {
    return (
      <section aria-labelledby="h-decide">
        <h2 id="h-decide">{t().decide}</h2>
        <p>{done || t().noDecision}</p>
      </section>
    );
  }

  async function act(a: Act) {
    setError("");
    setDone("");
    const reason = note.trim();
    if ((a === "return" || a === "reject") && !reason) {
      setError(t().reasonRequired);
      document.getElementById("decision-reason")?.focus();
      return;
    }
    let approved: bigint | null = null;
    if (a === "approve") {
      approved = parseVnd(amount);
      if (approved === null || approved <= 0n || approved > r.requestedAmountVnd) {
        setError(t().amountInvalid);
        document.getElementById("decision-amount")?.focus();
        return;
      }
      if (!funding) {
        setError(t().fundingRequired);
        document.getElementById("decision-funding")?.focus();
        return;
      }
    }
    setBusy(true);
    try {
      const body = { id: r.id, note: reason };
      if (a === "endorse") await requests.endorseSupportRequest(body);
      else if (a === "return") await requests.returnSupportRequest(body);
      else if (a === "reject") await requests.rejectSupportRequest(body);
      else
        await requests.approveSupportRequest({
          ...body,
          approvedAmountVnd: approved!,
          funding: Number(funding) as FundingSource,
        });
      setDone(t().done);
      setNote("");
      onDone();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="h-decide">
      <h2 id="h-decide">{t().decide}</h2>
      <form class="decision" onSubmit={(e) => e.preventDefault()}>
        {acts.includes("approve") && (
          <div class="row">
            <div class="field">
              <label for="decision-amount">{t().amount}</label>
              <input
                id="decision-amount"
                inputMode="numeric"
                value={amount}
                onInput={(e) => {
                  setAmount((e.target as HTMLInputElement).value);
                  setError("");
                }}
              />
            </div>
            <div class="field">
              <label for="decision-funding">{t().funding}</label>
              <select
                id="decision-funding"
                value={funding}
                onChange={(e) => setFunding((e.target as HTMLSelectElement).value)}
              >
                <option value="">—</option>
                {fundingValues.map((v) => (
                  <option value={String(v)} key={v}>
                    {fundingName(v)}
                  </option>
                ))}
              </select>
            </div>
          </div>
        )}
        <div class="field">
          <label for="decision-reason">{t().reason}</label>
          <textarea
            id="decision-reason"
            rows={3}
            value={note}
            onInput={(e) => {
              setNote((e.target as HTMLTextAreaElement).value);
              setError("");
            }}
          />
        </div>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {done && (
          <p class="ok" role="status">
            {done}
          </p>
        )}
        <div class="buttons">
          {acts.map((a) => (
            <button
              type="button"
              key={a}
              disabled={busy}
              class={a === "reject" ? "danger" : a === "return" ? "secondary" : ""}
              onClick={() => act(a)}
            >
              {t()[a]}
            </button>
          ))}
        </div>
      </form>
    </section>
  );
}
