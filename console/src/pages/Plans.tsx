// The plans pages: #/plans lists the extension plans in the caller's scope (ListPlans);
// #/plans/PROVINCE/YEAR shows one plan's lines and its audit history (ListPlanRevisions),
// and lets a province officer of that province create it or revise its lines (CreatePlan,
// RevisePlan with the revision they edited and a required reason). The server decides who
// may do what; the page only hides the editor from roles that may not use it.
import { useEffect, useState } from "preact/hooks";
import { Code, ConnectError, errorText, plans as plansApi } from "../api";
import { Role, type OrgUnit } from "@gen/kcnet/v1/domain_pb";
import type { Plan, PlanLine, PlanRevision } from "@gen/kcnet/v1/plans_pb";
import { categoryName, categoryValues, formatTime, formatVnd, fundingName, parseVnd, t } from "../i18n";
import { me } from "../state";
import { formatCount, planFundingName, rt } from "./reportsText";
import { myUnits, vietnamYear, type UnitOption } from "./reportKit";

const planFundings = [1, 2, 3];
const fundName = (n: number) => planFundingName(n, fundingName);

function useUnits(): Map<bigint, OrgUnit> {
  const [units, setUnits] = useState<UnitOption[]>([]);
  useEffect(() => {
    myUnits().then(setUnits);
  }, []);
  return new Map(units.map((u) => [u.unit.id, u.unit]));
}

export function PlanList() {
  const [list, setList] = useState<Plan[] | null>(null);
  const [error, setError] = useState("");
  const units = useUnits();
  const user = me.value;
  useEffect(() => {
    plansApi
      .listPlans({ pageSize: 200 })
      .then((r) => setList(r.plans))
      .catch((e) => setError(errorText(e)));
  }, []);
  const year = vietnamYear();
  const officerProvince = user?.role === Role.PROVINCE_OFFICER ? user.orgUnitIds[0] : undefined;
  return (
    <main id="main">
      <h1 tabIndex={-1}>{rt().plans}</h1>
      <p class="help">{rt().plansHelp}</p>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      {list === null && !error && <p aria-live="polite">{t().loading}</p>}
      {list !== null && list.length === 0 && <p>{rt().noPlans}</p>}
      {list !== null && list.length > 0 && (
        <table id="plans-table">
          <caption class="visually-hidden">{rt().plans}</caption>
          <thead>
            <tr>
              <th scope="col">{rt().year}</th>
              <th scope="col">{rt().province}</th>
              <th scope="col" class="num">{rt().planned}</th>
              <th scope="col" class="num">{rt().revision}</th>
              <th scope="col">{rt().updated}</th>
            </tr>
          </thead>
          <tbody>
            {list.map((p) => (
              <tr key={`${p.provinceId}-${p.year}`} data-plan={`${p.provinceId}-${p.year}`}>
                <td>
                  <a href={`#/plans/${p.provinceId}/${p.year}`}>{rt().planOf(p.year)}</a>
                </td>
                <td>{units.get(p.provinceId)?.name ?? String(p.provinceId)}</td>
                <td class="num">{formatVnd(p.lines.reduce((a, l) => a + l.plannedAmountVnd, 0n))}</td>
                <td class="num">{String(p.revision)}</td>
                <td>{formatTime(p.updatedMs || p.createdMs)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {officerProvince !== undefined && (
        <p>
          <a href={`#/plans/${officerProvince}/${year + 1}`}>
            {rt().newPlan} {year + 1}
          </a>
        </p>
      )}
    </main>
  );
}

// A line being edited: the amount as typed, so a bad one can be named before sending.
interface DraftLine {
  category: number;
  funding: number;
  amount: string;
  facilities: string;
}
const toDraft = (l: PlanLine): DraftLine => ({
  category: l.category,
  funding: l.funding,
  amount: formatVnd(l.plannedAmountVnd).replace(/\s?₫$/, ""),
  facilities: String(l.plannedFacilities),
});

// What a revision changed, one line per plan line added, removed or changed.
function changesText(before: PlanLine[], after: PlanLine[]): string {
  const key = (l: PlanLine) => `${l.category}-${l.funding}`;
  const show = (l: PlanLine | undefined) =>
    l ? `${formatVnd(l.plannedAmountVnd)}, ${formatCount(l.plannedFacilities)}` : "—";
  const old = new Map(before.map((l) => [key(l), l]));
  const now = new Map(after.map((l) => [key(l), l]));
  const out: string[] = [];
  for (const k of new Set([...old.keys(), ...now.keys()])) {
    const a = old.get(k);
    const b = now.get(k);
    if (a && b && a.plannedAmountVnd === b.plannedAmountVnd && a.plannedFacilities === b.plannedFacilities) continue;
    const l = (b ?? a)!;
    out.push(`${categoryName(l.category)} · ${fundName(l.funding)}: ${show(a)} → ${show(b)}`);
  }
  return out.join("\n");
}

export function PlanPage({ provinceId, year }: { provinceId: bigint; year: number }) {
  const [plan, setPlan] = useState<Plan | null | undefined>(undefined); // null: none yet
  const [history, setHistory] = useState<PlanRevision[]>([]);
  const [draft, setDraft] = useState<DraftLine[]>([]);
  const [note, setNote] = useState("");
  const [error, setError] = useState("");
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const units = useUnits();
  const user = me.value;
  const canEdit = user?.role === Role.PROVINCE_OFFICER && user.orgUnitIds.includes(provinceId);

  const reload = async () => {
    try {
      const p = await plansApi.getPlan({ provinceId, year });
      setPlan(p);
      setDraft(p.lines.map(toDraft));
      const h = await plansApi.listPlanRevisions({ provinceId, year, pageSize: 200 });
      setHistory(h.revisions);
    } catch (e) {
      if (e instanceof ConnectError && e.code === Code.NotFound) {
        setPlan(null);
        setHistory([]);
        setDraft([]);
      } else {
        setError(errorText(e));
      }
    }
  };
  useEffect(() => {
    reload();
  }, [provinceId, year]);

  const setLine = (i: number, change: Partial<DraftLine>) =>
    setDraft(draft.map((l, k) => (k === i ? { ...l, ...change } : l)));

  const save = async () => {
    setError("");
    setMessage("");
    const lines: { category: number; funding: number; plannedAmountVnd: bigint; plannedFacilities: bigint }[] = [];
    const seen = new Set<string>();
    for (const [i, l] of draft.entries()) {
      const amount = parseVnd(l.amount);
      if (amount === null) return setError(rt().amountBad(i + 1));
      if (!/^\d+$/.test(l.facilities.trim())) return setError(rt().facilitiesBad(i + 1));
      const key = `${l.category}-${l.funding}`;
      if (seen.has(key)) return setError(rt().duplicateLine(i + 1));
      seen.add(key);
      lines.push({ category: l.category, funding: l.funding, plannedAmountVnd: amount, plannedFacilities: BigInt(l.facilities.trim()) });
    }
    if (plan && !note.trim()) return setError(rt().noteRequired);
    setBusy(true);
    try {
      const saved = plan
        ? await plansApi.revisePlan({ plan: { provinceId, year, lines }, expectedRevision: plan.revision, note: note.trim() })
        : await plansApi.createPlan({ plan: { provinceId, year, lines }, note: note.trim() });
      setNote("");
      await reload();
      setMessage(rt().saved(String(saved.revision)));
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const total = plan ? plan.lines.reduce((a, l) => a + l.plannedAmountVnd, 0n) : 0n;
  return (
    <main id="main">
      <p>
        <a href="#/plans">{rt().backToPlans}</a>
      </p>
      <h1 tabIndex={-1}>
        {rt().planOf(year)} — {units.get(provinceId)?.name ?? String(provinceId)}
      </h1>
      {plan === undefined && !error && <p aria-live="polite">{t().loading}</p>}
      {plan === null && !canEdit && (
        <p role="alert" class="error">
          {rt().planNotFound}
        </p>
      )}
      {plan && (
        <>
          <p id="plan-revision">
            {rt().revision}: <strong>{String(plan.revision)}</strong> · {rt().updated}: {formatTime(plan.updatedMs || plan.createdMs)} ·{" "}
            {rt().total}: <strong id="plan-total">{formatVnd(total)}</strong>
          </p>
          {!canEdit && (
            <table id="plan-lines">
              <caption>{rt().lines}</caption>
              <thead>
                <tr>
                  <th scope="col">{t().category}</th>
                  <th scope="col">{t().funding}</th>
                  <th scope="col" class="num">{rt().planned}</th>
                  <th scope="col" class="num">{rt().plannedFacilities}</th>
                </tr>
              </thead>
              <tbody>
                {plan.lines.map((l) => (
                  <tr key={`${l.category}-${l.funding}`}>
                    <td>{categoryName(l.category)}</td>
                    <td>{fundName(l.funding)}</td>
                    <td class="num">{formatVnd(l.plannedAmountVnd)}</td>
                    <td class="num">{formatCount(l.plannedFacilities)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {!canEdit && <p class="help">{rt().readOnly}</p>}
        </>
      )}
      {canEdit && plan !== undefined && (
        <form class="plan-editor" aria-label={rt().lines} onSubmit={(e) => (e.preventDefault(), save())}>
          <table id="plan-lines">
            <caption>{rt().lines}</caption>
            <thead>
              <tr>
                <th scope="col">{t().category}</th>
                <th scope="col">{t().funding}</th>
                <th scope="col">{rt().plannedAmount}</th>
                <th scope="col">{rt().plannedFacilities}</th>
                <th scope="col">
                  <span class="visually-hidden">{rt().removeLine}</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {draft.map((l, i) => (
                <tr key={i} data-line={i + 1}>
                  <td>
                    <select aria-label={`${t().category} ${i + 1}`} value={String(l.category)}
                      onChange={(e) => setLine(i, { category: Number((e.target as HTMLSelectElement).value) })}>
                      {categoryValues.map((c) => (
                        <option key={c} value={String(c)}>{categoryName(c)}</option>
                      ))}
                    </select>
                  </td>
                  <td>
                    <select aria-label={`${t().funding} ${i + 1}`} value={String(l.funding)}
                      onChange={(e) => setLine(i, { funding: Number((e.target as HTMLSelectElement).value) })}>
                      {planFundings.map((f) => (
                        <option key={f} value={String(f)}>{fundName(f)}</option>
                      ))}
                    </select>
                  </td>
                  <td>
                    <input aria-label={`${rt().plannedAmount} ${i + 1}`} inputMode="numeric" value={l.amount}
                      onInput={(e) => setLine(i, { amount: (e.target as HTMLInputElement).value })} />
                  </td>
                  <td>
                    <input aria-label={`${rt().plannedFacilities} ${i + 1}`} inputMode="numeric" size={6} value={l.facilities}
                      onInput={(e) => setLine(i, { facilities: (e.target as HTMLInputElement).value })} />
                  </td>
                  <td>
                    <button type="button" class="link" aria-label={`${rt().removeLine} ${i + 1}`}
                      onClick={() => setDraft(draft.filter((_, k) => k !== i))}>
                      {rt().removeLine}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p>
            <button type="button" class="secondary"
              onClick={() => setDraft([...draft, { category: 1, funding: 1, amount: "0", facilities: "0" }])}>
              {rt().addLine}
            </button>
          </p>
          <div class="field">
            <label for="plan-note">{plan ? rt().reasonForRevision : rt().noteCreate}</label>
            <textarea id="plan-note" rows={2} value={note} onInput={(e) => setNote((e.target as HTMLTextAreaElement).value)} />
          </div>
          <button type="submit" disabled={busy}>
            {plan ? rt().save : rt().create}
          </button>
        </form>
      )}
      {error && (
        <p class="error" role="alert" id="plan-error">
          {t().error}: {error}
        </p>
      )}
      {message && (
        <p class="ok" aria-live="polite" id="plan-message">
          {message}
        </p>
      )}
      {history.length > 0 && (
        <>
          <h2>{rt().planHistory}</h2>
          <table id="plan-history">
            <caption class="visually-hidden">{rt().planHistory}</caption>
            <thead>
              <tr>
                <th scope="col">{rt().revision}</th>
                <th scope="col">{t().when}</th>
                <th scope="col">{t().actor}</th>
                <th scope="col">{t().note}</th>
                <th scope="col">{rt().changes}</th>
              </tr>
            </thead>
            <tbody>
              {history.map((h) => (
                <tr key={String(h.revision)} data-revision={String(h.revision)}>
                  <td class="num">{String(h.revision)}</td>
                  <td>{formatTime(h.atMs)}</td>
                  <td>{h.actor}</td>
                  <td>{h.note}</td>
                  <td class="pre">
                    {h.before.length ? changesText(h.before, h.after) : `${rt().created}: ${h.after.length}`}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </main>
  );
}
