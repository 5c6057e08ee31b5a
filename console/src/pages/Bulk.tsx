// Bulk actions of the review queue: one decision (endorse, return, reject, approve) over the selected
// requests or over all N that match the filters. The exact set is frozen when the user asks
// to review it: the confirmation names the action and the exact count, and only those ids are
// acted on. Return and reject need a reason (it reaches each author's tablet, as on the
// request page). Each request is one call of the same RPC as the request page, so each is
// checked by the server (scope, state, role) on its own: the result lists every request as
// applied or refused with the server's reason. Over "all N matching" the server counts the
// filter again (CountSupportRequests) before the confirmation, so N is exact. Approval (a
// province officer's) takes one funding source and either each request's requested amount or
// one amount for all; each approval draws on its plan line as on the request page, and one
// beyond what remains is refused with the line's remaining amount unless an over-plan
// reason is given.
import { useState } from "preact/hooks";
import { FundingSource, Role, type SupportRequest } from "@gen/kcnet/v1/domain_pb";
import { errorText, requests } from "../api";
import { fundingName, fundingValues, parseVnd, t } from "../i18n";
import { tr } from "../i18n-review";
import { tf } from "../i18n-filters";
import type { RequestFilterFields } from "../requestFilter";
import { me } from "../state";

export interface BulkRow {
  request: SupportRequest;
  facilityName: string;
}

type Action = "endorse" | "return" | "reject" | "approve";

function actionsFor(role: Role | undefined): Action[] {
  if (role === Role.DISTRICT_COORDINATOR) return ["endorse", "return", "reject"];
  if (role === Role.PROVINCE_OFFICER) return ["approve", "return", "reject"];
  return [];
}

interface Outcome {
  row: BulkRow;
  ok: boolean;
  message: string;
}

export function BulkBar(props: {
  matching: BulkRow[];
  total: number; // the server's exact count of the filter
  filter: RequestFilterFields; // the filter the rows were listed with
  selected: Set<string>;
  capped: boolean; // the list stopped at its limit: "all matching" would not be exact
  onDone: () => void;
}) {
  const actions = actionsFor(me.value?.role);
  const [action, setAction] = useState<Action>(actions[0] ?? "return");
  const [scope, setScope] = useState<"selected" | "all">("selected");
  const [reason, setReason] = useState("");
  const [error, setError] = useState("");
  const [frozen, setFrozen] = useState<BulkRow[] | null>(null); // under review
  const [progress, setProgress] = useState<number | null>(null);
  const [total, setTotal] = useState(0);
  const [outcomes, setOutcomes] = useState<Outcome[] | null>(null);
  const [amountRule, setAmountRule] = useState<"requested" | "uniform">("requested");
  const [uniform, setUniform] = useState("");
  const [funding, setFunding] = useState("");
  const [overPlan, setOverPlan] = useState("");
  const [approval, setApproval] = useState<{ amount: bigint | null; funding: FundingSource } | null>(
    null,
  );
  if (actions.length === 0) return null;

  const label = (a: Action) =>
    a === "endorse" ? t().endorse : a === "return" ? t().return : a === "reject" ? t().reject : t().approve;
  const chosen = () =>
    scope === "all" ? props.matching : props.matching.filter((r) => props.selected.has(r.request.id));

  const review = async () => {
    setOutcomes(null);
    setError("");
    if (scope === "all" && props.capped) return setError(tr().bulkTooMany);
    const rows = chosen();
    if (rows.length === 0) return setError(tr().bulkNoneSelected);
    if ((action === "return" || action === "reject") && !reason.trim()) {
      return setError(t().reasonRequired);
    }
    if (action === "approve") {
      if (!funding) return setError(t().fundingRequired);
      let amount: bigint | null = null;
      if (amountRule === "uniform") {
        amount = parseVnd(uniform);
        if (amount === null || amount <= 0n) return setError(t().amountInvalid);
      }
      setApproval({ amount, funding: Number(funding) as FundingSource });
    }
    if (scope === "all") {
      // The exact N: the server counts the same filter again; a change since the list was
      // read (another officer, a tablet) asks for a new look rather than acting on a guess.
      setError(tf().bulkCounting);
      try {
        const n = Number((await requests.countSupportRequests(props.filter)).count);
        if (n !== rows.length) return setError(tf().bulkChanged(rows.length, n));
      } catch (e) {
        return setError(errorText(e));
      }
      setError("");
    }
    setFrozen(rows);
  };

  const run = async () => {
    const rows = frozen ?? [];
    setFrozen(null);
    setTotal(rows.length);
    setProgress(0);
    const out: Outcome[] = [];
    for (const row of rows) {
      const call = { id: row.request.id, note: reason.trim() };
      try {
        if (action === "endorse") await requests.endorseSupportRequest(call);
        else if (action === "approve") {
          await requests.approveSupportRequest({
            id: row.request.id,
            note: reason.trim(),
            approvedAmountVnd: approval?.amount ?? row.request.requestedAmountVnd,
            funding: approval?.funding ?? FundingSource.UNSPECIFIED,
            overPlanReason: overPlan.trim(),
          });
        } else if (action === "return") await requests.returnSupportRequest(call);
        else await requests.rejectSupportRequest(call);
        out.push({ row, ok: true, message: "" });
      } catch (e) {
        out.push({ row, ok: false, message: errorText(e) });
      }
      setProgress(out.length);
    }
    setProgress(null);
    setOutcomes(out);
    setReason("");
    props.onDone();
  };

  const okCount = outcomes?.filter((o) => o.ok).length ?? 0;
  return (
    <section class="bulk" aria-labelledby="bulk-heading">
      <h2 id="bulk-heading">{tr().bulk}</h2>
      <div class="filters">
        <div class="field">
          <label for="bulk-action">{tr().bulkAction}</label>
          <select
            id="bulk-action"
            value={action}
            onChange={(e) => {
              setAction((e.target as HTMLSelectElement).value as Action);
              setFrozen(null);
            }}
          >
            {actions.map((a) => (
              <option value={a} key={a}>
                {label(a)}
              </option>
            ))}
          </select>
        </div>
        <fieldset class="field">
          <legend>{tr().bulkScope}</legend>
          <label>
            <input
              type="radio"
              name="bulk-scope"
              value="selected"
              checked={scope === "selected"}
              onChange={() => {
                setScope("selected");
                setFrozen(null);
              }}
            />{" "}
            {tr().bulkSelected(props.selected.size)}
          </label>{" "}
          <label>
            <input
              type="radio"
              name="bulk-scope"
              value="all"
              checked={scope === "all"}
              onChange={() => {
                setScope("all");
                setFrozen(null);
              }}
            />{" "}
            {tr().bulkAllMatching(props.total)}
          </label>
        </fieldset>
        {action === "approve" && (
          <>
            <fieldset class="field">
              <legend>{tf().approveAmountRule}</legend>
              <label>
                <input
                  type="radio"
                  name="bulk-amount"
                  value="requested"
                  checked={amountRule === "requested"}
                  onChange={() => {
                    setAmountRule("requested");
                    setFrozen(null);
                  }}
                />{" "}
                {tf().approveRequested}
              </label>{" "}
              <label>
                <input
                  type="radio"
                  name="bulk-amount"
                  value="uniform"
                  checked={amountRule === "uniform"}
                  onChange={() => {
                    setAmountRule("uniform");
                    setFrozen(null);
                  }}
                />{" "}
                {tf().approveUniform}
              </label>
            </fieldset>
            {amountRule === "uniform" && (
              <div class="field">
                <label for="bulk-amount-value">{tf().uniformAmount}</label>
                <input
                  id="bulk-amount-value"
                  type="text"
                  inputMode="numeric"
                  value={uniform}
                  onInput={(e) => {
                    setUniform((e.target as HTMLInputElement).value);
                    setFrozen(null);
                  }}
                />
              </div>
            )}
            <div class="field">
              <label for="bulk-funding">{t().funding}</label>
              <select
                id="bulk-funding"
                value={funding}
                onChange={(e) => {
                  setFunding((e.target as HTMLSelectElement).value);
                  setFrozen(null);
                }}
              >
                <option value="">—</option>
                {fundingValues.map((v) => (
                  <option value={String(v)} key={v}>
                    {fundingName(v)}
                  </option>
                ))}
              </select>
            </div>
            <div class="field grow">
              <label for="bulk-over-plan">{tf().overPlanReason}</label>
              <input
                id="bulk-over-plan"
                type="text"
                value={overPlan}
                onInput={(e) => setOverPlan((e.target as HTMLInputElement).value)}
              />
            </div>
          </>
        )}
        <div class="field grow">
          <label for="bulk-reason">{t().reason}</label>
          <input
            id="bulk-reason"
            type="text"
            value={reason}
            onInput={(e) => setReason((e.target as HTMLInputElement).value)}
          />
        </div>
        <button type="button" id="bulk-review" onClick={review} disabled={progress !== null}>
          {tr().bulkReview}
        </button>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {frozen && (
        <div class="confirm" role="group" aria-labelledby="bulk-question">
          <p id="bulk-question">{tr().bulkConfirmQuestion(label(action), frozen.length)}</p>
          <button type="button" id="bulk-confirm" onClick={run}>
            {tr().bulkConfirm(label(action), frozen.length)}
          </button>{" "}
          <button type="button" class="secondary" onClick={() => setFrozen(null)}>
            {tr().bulkCancel}
          </button>
        </div>
      )}
      <p aria-live="polite" id="bulk-status">
        {progress !== null && tr().bulkRunning(progress, total)}
        {outcomes && tr().bulkResult(okCount, outcomes.length - okCount)}
      </p>
      {outcomes && outcomes.length > 0 && (
        <table class="queue" id="bulk-results">
          <caption class="visually-hidden">{tr().result}</caption>
          <thead>
            <tr>
              <th scope="col">{t().facility}</th>
              <th scope="col">{tr().result}</th>
            </tr>
          </thead>
          <tbody>
            {outcomes.map((o) => (
              <tr key={o.row.request.id} data-result-id={o.row.request.id} data-ok={String(o.ok)}>
                <td>
                  <a href={`#/request/${o.row.request.id}`}>{o.row.facilityName}</a>
                </td>
                <td>{o.ok ? tr().applied : `${tr().refused}: ${o.message}`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
