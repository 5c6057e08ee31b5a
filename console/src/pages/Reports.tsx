// The reports pages (#/reports/KIND): coverage, pipeline, budget vs plan, collaborator
// activity, data quality and outcomes, each a call of ReportService with the filters of
// the URL (org unit, from, to; the year for the budget), shown as tables and a chart, with
// CSV and XLSX downloads of the same filters (ExportReport, in the background). Scope is
// the server's: a report covers the caller's subtrees only. Figures carry `data-figure`
// attributes so the browser test can compare them with the API's answer.
import { useEffect, useState } from "preact/hooks";
import { Code, ConnectError, errorText, reports } from "../api";
import type { OrgUnit } from "@gen/kcnet/v1/domain_pb";
import type {
  ActivityReport,
  BudgetReport,
  CoverageReport,
  MonthValue,
  OutcomesReport,
  PipelineReport,
  QualityReport,
} from "@gen/kcnet/v1/reports_pb";
import { categoryName, formatTime, formatVnd, fundingName, statusName, t } from "../i18n";
import { formatCount, formatShare, planFundingName, rt } from "./reportsText";
import {
  BarChart,
  ExportStatus,
  myUnits,
  reportFilter,
  reportParams,
  setReportParams,
  startExport,
  vietnamYear,
  type ReportParams,
  type UnitOption,
} from "./reportKit";

export const reportKinds = ["coverage", "pipeline", "budget", "activity", "quality", "outcomes"] as const;
export type ReportKind = (typeof reportKinds)[number];
const exportable: ReportKind[] = ["coverage", "pipeline", "activity", "quality"];

type Answer =
  | { kind: "coverage"; r: CoverageReport }
  | { kind: "pipeline"; r: PipelineReport }
  | { kind: "budget"; r: BudgetReport }
  | { kind: "activity"; r: ActivityReport }
  | { kind: "quality"; r: QualityReport }
  | { kind: "outcomes"; r: OutcomesReport };

async function load(kind: ReportKind, p: ReportParams): Promise<Answer> {
  const filter = reportFilter(p);
  switch (kind) {
    case "coverage":
      return { kind, r: await reports.getCoverage({ filter }) };
    case "pipeline":
      return { kind, r: await reports.getPipeline({ filter }) };
    case "budget":
      return { kind, r: await reports.getBudget({ filter, year: Number(p.year) || vietnamYear() }) };
    case "activity":
      return { kind, r: await reports.getActivity({ filter }) };
    case "quality":
      return { kind, r: await reports.getQuality({ filter }) };
    case "outcomes":
      return { kind, r: await reports.getOutcomes({ filter }) };
  }
}

// The next page of a paged report (activity, quality) appended to the rows shown; the
// totals and the token come from the new page.
async function loadMore(answer: Answer, p: ReportParams): Promise<Answer> {
  const filter = reportFilter(p);
  if (answer.kind === "activity") {
    const next = await reports.getActivity({ filter, pageToken: answer.r.nextPageToken });
    return {
      kind: "activity",
      r: {
        ...next,
        collaborators: [...answer.r.collaborators, ...next.collaborators],
        inactiveUserIds: [...answer.r.inactiveUserIds, ...next.inactiveUserIds],
      },
    };
  }
  if (answer.kind === "quality") {
    const next = await reports.getQuality({ filter, pageToken: answer.r.nextPageToken });
    return {
      kind: "quality",
      r: {
        ...next,
        farVisits: [...answer.r.farVisits, ...next.farVisits],
        duplicates: [...answer.r.duplicates, ...next.duplicates],
        approvedWithoutRecentVisitIds: [
          ...answer.r.approvedWithoutRecentVisitIds,
          ...next.approvedWithoutRecentVisitIds,
        ],
      },
    };
  }
  return answer;
}

// "N trên tổng M / N of M" of a paged list, and the button that loads the next page.
function Shown({ id, shown, total, more }: { id: string; shown: number; total: bigint; more?: () => void }) {
  return (
    <p class="help" id={id} data-shown={String(shown)} data-total={String(total)}>
      {rt().shownOf(formatCount(shown), formatCount(total))}
      {more && (
        <>
          {" "}
          <button type="button" class="secondary" onClick={more}>
            {rt().loadMore}
          </button>
        </>
      )}
    </p>
  );
}

const months = (series: MonthValue[]) => ({
  labels: series.map((m) => m.month),
  values: series.map((m) => Number(m.value)),
});

function Empty({ rows }: { rows: unknown[] }) {
  return rows.length === 0 ? <p>{rt().noRows}</p> : null;
}

function Coverage({ r, unitName }: { r: CoverageReport; unitName: (id: bigint) => string }) {
  const visits = months(r.visitsByMonth);
  const visited = months(r.visitedFacilitiesByMonth);
  return (
    <>
      <table id="coverage-table">
        <caption>{rt().coverage}</caption>
        <thead>
          <tr>
            <th scope="col">{t().commune}</th>
            <th scope="col" class="num">{rt().registered}</th>
            <th scope="col" class="num">{rt().visited}</th>
            <th scope="col" class="num">{rt().share}</th>
          </tr>
        </thead>
        <tbody>
          {r.communes.map((c) => (
            <tr key={String(c.communeId)} data-commune-id={String(c.communeId)}>
              <th scope="row">{c.communeName || unitName(c.communeId)}</th>
              <td class="num" data-figure="registered">{formatCount(c.registeredFacilities)}</td>
              <td class="num" data-figure="visited">{formatCount(c.visitedFacilities)}</td>
              <td class="num">{formatShare(c.share)}</td>
            </tr>
          ))}
        </tbody>
        <tfoot>
          <tr data-commune-id="total">
            <th scope="row">{rt().total}</th>
            <td class="num" data-figure="registered">{formatCount(r.total?.registeredFacilities ?? 0n)}</td>
            <td class="num" data-figure="visited">{formatCount(r.total?.visitedFacilities ?? 0n)}</td>
            <td class="num">{formatShare(r.total?.share ?? 0)}</td>
          </tr>
        </tfoot>
      </table>
      <BarChart
        id="chart-visits"
        title={rt().visitsByMonth}
        labels={visits.labels}
        series={[
          { name: rt().visits, values: visits.values },
          { name: rt().visited, values: visited.values },
        ]}
      />
    </>
  );
}

function Pipeline({ r, unitName }: { r: PipelineReport; unitName: (id: bigint) => string }) {
  const created = months(r.createdByMonth);
  return (
    <>
      <table id="pipeline-table">
        <caption>{rt().pipeline}</caption>
        <thead>
          <tr>
            <th scope="col">{t().status}</th>
            <th scope="col" class="num">{rt().requests}</th>
            <th scope="col" class="num">{rt().overdue}</th>
            <th scope="col" class="num">{rt().maxAge}</th>
          </tr>
        </thead>
        <tbody>
          {r.statuses.map((s) => (
            <tr key={s.status} data-status={s.status}>
              <th scope="row">{statusName(s.status)}</th>
              <td class="num" data-figure="requests">{formatCount(s.requests)}</td>
              <td class="num" data-figure="overdue">{formatCount(s.overdue)}</td>
              <td class="num">{formatCount(s.maxAgeDays)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Empty rows={r.statuses} />
      <BarChart id="chart-created" title={rt().createdByMonth} labels={created.labels}
        series={[{ name: rt().requests, values: created.values }]} />
      <h2>{rt().oldest}</h2>
      <Empty rows={r.oldest} />
      {r.oldest.length > 0 && (
        <table id="pipeline-oldest">
          <caption class="visually-hidden">{rt().oldest}</caption>
          <thead>
            <tr>
              <th scope="col">{t().request}</th>
              <th scope="col">{t().commune}</th>
              <th scope="col">{t().status}</th>
              <th scope="col">{rt().since}</th>
              <th scope="col" class="num">{rt().ageDays}</th>
              <th scope="col">{rt().overdue}</th>
            </tr>
          </thead>
          <tbody>
            {r.oldest.map((i) => (
              <tr key={i.requestId} data-request-id={i.requestId}>
                <td>
                  <a href={`#/request/${i.requestId}`}>{i.requestId.slice(0, 8)}</a>
                </td>
                <td>{unitName(i.communeId)}</td>
                <td>{statusName(i.status)}</td>
                <td>{i.sinceDate}</td>
                <td class="num">{formatCount(i.ageDays)}</td>
                <td>{i.overdue ? rt().yes : rt().no}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function Budget({ r }: { r: BudgetReport }) {
  const label = (row: BudgetReport["rows"][number]) =>
    `${categoryName(row.category)} · ${planFundingName(row.fundingSource, fundingName)}`;
  const sum = (f: (row: BudgetReport["rows"][number]) => bigint) => r.rows.reduce((a, row) => a + f(row), 0n);
  return (
    <>
      <p>{r.hasPlan ? rt().planRevision(String(r.planRevision)) : rt().noPlan}</p>
      <table id="budget-table">
        <caption>{rt().budget} — {r.year}</caption>
        <thead>
          <tr>
            <th scope="col">{t().category}</th>
            <th scope="col">{t().funding}</th>
            <th scope="col" class="num">{rt().planned}</th>
            <th scope="col" class="num">{rt().approved}</th>
            <th scope="col" class="num">{rt().disbursed}</th>
            <th scope="col" class="num">{rt().remaining}</th>
            <th scope="col" class="num">{rt().plannedFacilities}</th>
            <th scope="col" class="num">{rt().approvedRequests}</th>
          </tr>
        </thead>
        <tbody>
          {r.rows.map((row) => (
            <tr key={`${row.category}-${row.fundingSource}`} data-line={`${row.category}-${row.fundingSource}`}>
              <th scope="row">{categoryName(row.category)}</th>
              <td>{planFundingName(row.fundingSource, fundingName)}</td>
              <td class="num" data-figure="planned">{formatVnd(row.plannedVnd)}</td>
              <td class="num" data-figure="approved">{formatVnd(row.approvedVnd)}</td>
              <td class="num" data-figure="disbursed">{formatVnd(row.disbursedVnd)}</td>
              <td class="num" data-figure="remaining">{formatVnd(row.remainingVnd)}</td>
              <td class="num">{formatCount(row.plannedFacilities)}</td>
              <td class="num">{formatCount(row.approvedRequests)}</td>
            </tr>
          ))}
        </tbody>
        <tfoot>
          <tr data-line="total">
            <th scope="row" colSpan={2}>{rt().total}</th>
            <td class="num" data-figure="planned">{formatVnd(sum((x) => x.plannedVnd))}</td>
            <td class="num" data-figure="approved">{formatVnd(sum((x) => x.approvedVnd))}</td>
            <td class="num" data-figure="disbursed">{formatVnd(sum((x) => x.disbursedVnd))}</td>
            <td class="num" data-figure="remaining">{formatVnd(sum((x) => x.remainingVnd))}</td>
            <td class="num">{formatCount(sum((x) => x.plannedFacilities))}</td>
            <td class="num">{formatCount(sum((x) => x.approvedRequests))}</td>
          </tr>
        </tfoot>
      </table>
      <BarChart
        id="chart-budget"
        title={`${rt().planned} / ${rt().approved} (${t().amount})`}
        labels={r.rows.map(label)}
        series={[
          { name: rt().planned, values: r.rows.map((x) => Number(x.plannedVnd)) },
          { name: rt().approved, values: r.rows.map((x) => Number(x.approvedVnd)) },
        ]}
      />
    </>
  );
}

function Activity({ r, more }: { r: ActivityReport; more?: () => void }) {
  const visits = months(r.visitsByMonth);
  return (
    <>
      <Shown id="activity-shown" shown={r.collaborators.length} total={r.totalCollaborators} more={more} />
      <table id="activity-table">
        <caption>{rt().activity}</caption>
        <thead>
          <tr>
            <th scope="col">{rt().collaborator}</th>
            <th scope="col" class="num">{rt().visitsCount}</th>
            <th scope="col" class="num">{rt().requests}</th>
            <th scope="col">{rt().lastActivity}</th>
            <th scope="col">{rt().inactive}</th>
            <th scope="col">{rt().devices}</th>
          </tr>
        </thead>
        <tbody>
          {r.collaborators.map((c) => (
            <tr key={String(c.userId)} data-user-id={String(c.userId)}>
              <th scope="row">{c.displayName || t().user(String(c.userId))}</th>
              <td class="num" data-figure="visits">{formatCount(c.visits)}</td>
              <td class="num" data-figure="requests">{formatCount(c.requests)}</td>
              <td>{c.lastActivityDate || rt().never}</td>
              <td>{c.inactive ? rt().yes : rt().no}</td>
              <td>
                {c.devices.map((d) => `${d.deviceId.slice(0, 8)} (${formatTime(d.lastSyncMs)}, ${d.pendingWrites})`).join("; ") || "—"}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Empty rows={r.collaborators} />
      <BarChart id="chart-activity" title={rt().visitsByMonth} labels={visits.labels}
        series={[{ name: rt().visits, values: visits.values }]} />
    </>
  );
}

function Quality({ r, unitName, more }: { r: QualityReport; unitName: (id: bigint) => string; more?: () => void }) {
  const noGps = months(r.visitsWithoutGpsByMonth);
  const facts: [string, string, bigint][] = [
    ["visits", rt().visits, r.visits],
    ["visits_without_gps", rt().withoutGps, r.visitsWithoutGps],
    ["visits_far_from_facility", rt().farFromFacility, r.visitsFarFromFacility],
    ["approved_without_recent_visit", rt().approvedWithoutVisit, r.approvedWithoutRecentVisit],
  ];
  return (
    <>
      <dl class="facts" id="quality-facts">
        {facts.flatMap(([key, label, value]) => [
          <dt key={key + "-t"}>{label}</dt>,
          <dd key={key} data-figure={key}>
            {formatCount(value)}
          </dd>,
        ])}
      </dl>
      <BarChart id="chart-quality" title={rt().withoutGpsByMonth} labels={noGps.labels}
        series={[{ name: rt().withoutGps, values: noGps.values }]} />
      <h2>{rt().duplicates}</h2>
      <Shown id="duplicates-shown" shown={r.duplicates.length} total={r.duplicateGroups} />
      <Empty rows={r.duplicates} />
      {r.duplicates.length > 0 && (
        <table id="quality-duplicates">
          <caption class="visually-hidden">{rt().duplicates}</caption>
          <thead>
            <tr>
              <th scope="col">{t().commune}</th>
              <th scope="col">{t().facility}</th>
              <th scope="col" class="num">{rt().total}</th>
            </tr>
          </thead>
          <tbody>
            {r.duplicates.map((d) => (
              <tr key={`${d.communeId}-${d.foldedName}`}>
                <td>{unitName(d.communeId)}</td>
                <td>{d.foldedName}</td>
                <td class="num">{d.facilityIds.length}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>{rt().farVisits}</h2>
      <Shown id="far-shown" shown={r.farVisits.length} total={r.visitsFarFromFacility} more={more} />
      <Empty rows={r.farVisits} />
      {r.farVisits.length > 0 && (
        <table id="quality-far">
          <caption class="visually-hidden">{rt().farVisits}</caption>
          <thead>
            <tr>
              <th scope="col">{t().visits}</th>
              <th scope="col">{t().commune}</th>
              <th scope="col" class="num">{rt().distanceKm}</th>
            </tr>
          </thead>
          <tbody>
            {r.farVisits.map((v) => (
              <tr key={v.visitId}>
                <td>{v.visitId.slice(0, 8)}</td>
                <td>{unitName(v.communeId)}</td>
                <td class="num">{v.distanceKm.toFixed(1)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function Outcomes({ r }: { r: OutcomesReport }) {
  return (
    <>
      <table id="outcomes-table">
        <caption>{rt().outcomes}</caption>
        <thead>
          <tr>
            <th scope="col">{t().request}</th>
            <th scope="col" class="num">{t().workers}</th>
            <th scope="col" class="num">{t().productLines}</th>
          </tr>
        </thead>
        <tbody>
          {r.rows.map((o) => (
            <tr key={o.requestId}>
              <td>
                <a href={`#/request/${o.requestId}`}>{o.requestId.slice(0, 8)}</a>
              </td>
              <td class="num">
                {formatCount(o.workersBefore)} → {formatCount(o.workersAfter)}
              </td>
              <td class="num">
                {formatCount(o.productLinesBefore)} → {formatCount(o.productLinesAfter)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Empty rows={r.rows} />
    </>
  );
}

export function Reports({ kind }: { kind: ReportKind }) {
  const p = reportParams.value;
  const [answer, setAnswer] = useState<Answer | null>(null);
  const [error, setError] = useState("");
  const [notYet, setNotYet] = useState(false);
  const [units, setUnits] = useState<UnitOption[]>([]);
  useEffect(() => {
    myUnits().then(setUnits);
  }, []);
  useEffect(() => {
    let cancelled = false;
    setAnswer(null);
    setError("");
    setNotYet(false);
    load(kind, p)
      .then((a) => !cancelled && setAnswer(a))
      .catch((e) => {
        if (cancelled) return;
        if (e instanceof ConnectError && e.code === Code.Unimplemented) setNotYet(true);
        else setError(errorText(e));
      });
    return () => {
      cancelled = true;
    };
  }, [kind, p.unit, p.from, p.to, p.year]);

  // The next page of a paged report, when its answer has one.
  const more =
    answer && (answer.kind === "activity" || answer.kind === "quality") && answer.r.nextPageToken
      ? () =>
          loadMore(answer, p)
            .then(setAnswer)
            .catch((e) => setError(errorText(e)))
      : undefined;
  const names = new Map<bigint, OrgUnit>(units.map((u) => [u.unit.id, u.unit]));
  const unitName = (id: bigint) => names.get(id)?.name ?? String(id);
  const title = rt()[kind];
  const dateField = (id: string, label: string, value: string, key: "from" | "to") => (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} type="date" value={value}
        onChange={(e) => setReportParams({ [key]: (e.target as HTMLInputElement).value })} />
    </div>
  );
  return (
    <main id="main" class="reports">
      <h1 tabIndex={-1}>
        {rt().reports}: {title}
      </h1>
      <nav aria-label={rt().reportKinds} class="tabs">
        {reportKinds.map((k) => (
          <a key={k} href={`#/reports/${k}`} aria-current={k === kind ? "page" : undefined}>
            {rt()[k]}
          </a>
        ))}
      </nav>
      <form class="filters" aria-label={t().filters} onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="r-unit">{rt().orgUnit}</label>
          <select id="r-unit" value={p.unit} onChange={(e) => setReportParams({ unit: (e.target as HTMLSelectElement).value })}>
            <option value="">{rt().allMyUnits}</option>
            {units.map((u) => (
              <option key={String(u.unit.id)} value={String(u.unit.id)}>
                {"\u00a0\u00a0".repeat(u.depth)}
                {u.unit.name}
              </option>
            ))}
          </select>
        </div>
        {kind === "budget" ? (
          <div class="field">
            <label for="r-year">{rt().year}</label>
            <input id="r-year" type="number" min={2000} max={2100} value={p.year || String(vietnamYear())}
              onChange={(e) => setReportParams({ year: (e.target as HTMLInputElement).value })} />
          </div>
        ) : (
          <>
            {dateField("r-from", rt().fromDate, p.from, "from")}
            {dateField("r-to", rt().toDate, p.to, "to")}
          </>
        )}
        <button type="button" class="secondary" onClick={() => setReportParams({ unit: "", from: "", to: "", year: "" })}>
          {t().clearFilters}
        </button>
      </form>
      {exportable.includes(kind) && (
        <div class="buttons downloads" role="group" aria-label={rt().download}>
          <button type="button" class="secondary" onClick={() => startExport(kind, "csv", p)}>
            {rt().downloadCsv}
          </button>
          <button type="button" class="secondary" onClick={() => startExport(kind, "xlsx", p)}>
            {rt().downloadXlsx}
          </button>
        </div>
      )}
      <ExportStatus />
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      {notYet && (
        <p class="help" id="report-not-yet">
          {rt().notYet}
        </p>
      )}
      {!error && !notYet && answer === null && <p aria-live="polite">{t().loading}</p>}
      {answer && (
        <section aria-live="polite" id="report" data-kind={answer.kind} data-as-of={String(answer.r.asOfOp)}>
          <p class="help">{rt().asOf(String(answer.r.asOfOp))}</p>
          {answer.kind === "coverage" && <Coverage r={answer.r} unitName={unitName} />}
          {answer.kind === "pipeline" && <Pipeline r={answer.r} unitName={unitName} />}
          {answer.kind === "budget" && <Budget r={answer.r} />}
          {answer.kind === "activity" && <Activity r={answer.r} more={more} />}
          {answer.kind === "quality" && <Quality r={answer.r} unitName={unitName} more={more} />}
          {answer.kind === "outcomes" && <Outcomes r={answer.r} />}
        </section>
      )}
    </main>
  );
}
