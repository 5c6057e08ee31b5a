// Pieces the reports, plans, registry and map pages share: their filters in the URL
// (?unit=&from=&to=&year=&q=&kind=&sector=),
// the org units the caller may pick from, a bar chart (plain SVG: no chart library, no
// inline style, so the strict CSP holds) and the background export of a report as CSV or
// XLSX through ReportService.ExportReport (a server stream, read through the bridge's
// download route: api.ts's download). The browser runs all of this
// on one thread.
import { signal } from "@preact/signals";
import { all, download, errorText, orgUnits, type DownloadedFile } from "../api";
import { OrgUnitLevel, type OrgUnit } from "@gen/kcnet/v1/domain_pb";
import { ExportFormat, ReportService } from "@gen/kcnet/v1/reports_pb";
import { formatCount, rt } from "./reportsText";
import { lang } from "../i18n";

// ---------------------------------------------------------------------------------------
// Filters in the URL, shared by the reports, the registry and the map. The queue's filters (state.ts) keep their own keys; these are added
// beside them, so a link carries both and the queue's filters survive a visit to a report.

export interface ReportParams {
  unit: string; // org unit id, "" = all of mine
  from: string; // YYYY-MM-DD, "" = no lower bound
  to: string; // YYYY-MM-DD, "" = today
  year: string; // budget and plans, "" = this year
  q: string; // registry search
  kind: string; // registry: FacilityKind number
  sector: string; // registry: Sector number
}
const paramKeys: (keyof ReportParams)[] = ["unit", "from", "to", "year", "q", "kind", "sector"];

function readParams(): ReportParams {
  const q = new URLSearchParams(location.search);
  const get = (k: keyof ReportParams) => q.get(k) ?? "";
  return { unit: get("unit"), from: get("from"), to: get("to"), year: get("year"), q: get("q"), kind: get("kind"), sector: get("sector") };
}
export const reportParams = signal<ReportParams>(readParams());
addEventListener("popstate", () => (reportParams.value = readParams()));

export function setReportParams(next: Partial<ReportParams>) {
  const merged = { ...reportParams.value, ...next };
  const q = new URLSearchParams(location.search);
  for (const k of paramKeys) {
    if (merged[k]) q.set(k, merged[k]);
    else q.delete(k);
  }
  const search = q.toString();
  history.replaceState(null, "", `${location.pathname}${search ? "?" + search : ""}${location.hash}`);
  reportParams.value = readParams();
}

/** The ReportFilter of the current URL (the same object feeds the page and its exports). */
export function reportFilter(p: ReportParams) {
  return { orgUnitId: p.unit ? BigInt(p.unit) : 0n, fromDate: p.from, toDate: p.to };
}

/** Vietnam's current year (UTC+7), whatever the browser's zone. */
export function vietnamYear(): number {
  return Number(new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Ho_Chi_Minh", year: "numeric" }).format(new Date()));
}

// ---------------------------------------------------------------------------------------
// The org units the caller may see, in tree order (province, its districts, their communes),
// walked down from the caller's roots with ListOrgUnits; cached for the session.

export interface UnitOption {
  unit: OrgUnit;
  depth: number;
}
let unitsCache: Promise<UnitOption[]> | null = null;
async function walk(parent: bigint, depth: number, out: UnitOption[]) {
  if (depth > 4) return;
  const units = await all(async (pageToken) => {
    const r = await orgUnits.listOrgUnits({ parentId: parent, pageSize: 500, pageToken });
    return { items: r.orgUnits, next: r.nextPageToken };
  });
  for (const u of units) {
    out.push({ unit: u, depth });
    if (u.level !== OrgUnitLevel.COMMUNE) await walk(u.id, depth + 1, out);
  }
}
export function myUnits(): Promise<UnitOption[]> {
  unitsCache ??= (async () => {
    const out: UnitOption[] = [];
    await walk(0n, 0, out);
    return out;
  })().catch(() => []);
  return unitsCache;
}
export function resetReportCaches() {
  unitsCache = null;
}

// ---------------------------------------------------------------------------------------
// A bar chart: one or two series over labelled categories (months, or budget lines). The
// numbers are in the table next to it; the chart has a title and a text alternative.

const compact = new Intl.NumberFormat("vi-VN", { notation: "compact", maximumFractionDigits: 1 });

export interface Series {
  name: string;
  values: number[];
}
export function BarChart({ title, labels, series, id }: { title: string; labels: string[]; series: Series[]; id: string }) {
  const width = 640;
  const height = 200;
  const left = 56;
  const bottom = 36;
  const top = 12;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const band = labels.length ? (width - left - 8) / labels.length : 0;
  const barWidth = Math.min(36, Math.max(2, (band * 0.8) / Math.max(1, series.length)));
  const groupStart = (i: number) => left + i * band + (band - barWidth * series.length) / 2;
  const y = (v: number) => top + (height - top - bottom) * (1 - v / max);
  const summary = series
    .map((s) => `${s.name}: ${labels.map((l, i) => `${l} ${formatCount(s.values[i] ?? 0)}`).join(", ")}`)
    .join("; ");
  return (
    <figure class="chart" id={id}>
      <figcaption>{title}</figcaption>
      {labels.length === 0 ? (
        <p>{rt().noRows}</p>
      ) : (
        <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${rt().chartOf(title)}. ${summary}`}>
          <line x1={left} y1={y(0)} x2={width - 4} y2={y(0)} class="axis" />
          <text x={left - 4} y={y(max) + 4} class="tick" text-anchor="end">
            {compact.format(max)}
          </text>
          <text x={left - 4} y={y(0)} class="tick" text-anchor="end">
            0
          </text>
          {labels.map((label, i) => (
            <g key={label + i}>
              {series.map((s, k) => (
                <rect
                  key={s.name}
                  class={`bar s${k}`}
                  x={groupStart(i) + k * barWidth}
                  y={y(s.values[i] ?? 0)}
                  width={barWidth}
                  height={Math.max(0, y(0) - y(s.values[i] ?? 0))}
                >
                  <title>{`${s.name}, ${label}: ${formatCount(s.values[i] ?? 0)}`}</title>
                </rect>
              ))}
              {(labels.length <= 12 || i % Math.ceil(labels.length / 12) === 0) && (
                <text x={left + i * band + band / 2} y={height - bottom + 16} class="tick" text-anchor="middle">
                  {label.length > 10 ? label.slice(0, 9) + "…" : label}
                </text>
              )}
            </g>
          ))}
        </svg>
      )}
      {series.length > 1 && (
        <ul class="legend">
          {series.map((s, k) => (
            <li key={s.name}>
              <span class={`swatch s${k}`} aria-hidden="true" /> {s.name}
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}

// ---------------------------------------------------------------------------------------
// Exports run in the background: the chunks of ExportReport are gathered while the user
// keeps working (the job survives moving between pages), its progress is shown, and the
// file is handed to the browser as a download when the stream ends. No row cap: the
// server writes the whole report.

export interface ExportJob {
  key: number;
  name: string; // the report's name, e.g. "coverage.xlsx" once the first chunk names it
  bytes: number;
  total: number; // the file's size from the first chunk (0: not known yet)
  state: "running" | "done" | "failed";
  error: string;
}
export const exportJobs = signal<ExportJob[]>([]);
let nextJob = 1;

function update(key: number, change: Partial<ExportJob>) {
  exportJobs.value = exportJobs.value.map((j) => (j.key === key ? { ...j, ...change } : j));
}

export async function startExport(report: string, format: "csv" | "xlsx", p: ReportParams) {
  await runExport(`${report}.${format}`, format, (progress) =>
    download(
      ReportService.method.exportReport,
      {
        report,
        format: format === "csv" ? ExportFormat.CSV : ExportFormat.XLSX,
        filter: reportFilter(p),
        language: lang.value,
      },
      progress,
    ),
  );
}

/** Runs one export as a background job (progress in ExportStatus), then hands the file to
 * the browser as a download. `fetchFile` reads it (api.ts's download: the file's bytes
 * as they come, no JSON). Used by the reports and the record exports. */
export async function runExport(
  fallbackName: string,
  format: "csv" | "xlsx",
  fetchFile: (progress: (bytes: number, total: number) => void) => Promise<DownloadedFile>,
) {
  const key = nextJob++;
  exportJobs.value = [...exportJobs.value, { key, name: fallbackName, bytes: 0, total: 0, state: "running", error: "" }];
  try {
    // The progress shown at most every 100 ms (a 10 MB file comes in hundreds of reads).
    let shownAt = 0;
    const file = await fetchFile((bytes, total) => {
      const now = performance.now();
      if (now - shownAt < 100) return;
      shownAt = now;
      update(key, { bytes, total });
    });
    const name = file.name || fallbackName;
    const bytes = file.parts.reduce((n, part) => n + part.length, 0);
    const type =
      format === "csv" ? "text/csv;charset=utf-8" : "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    const url = URL.createObjectURL(new Blob(file.parts as BlobPart[], { type }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    update(key, { name, bytes, total: bytes, state: "done" });
  } catch (e) {
    update(key, { state: "failed", error: errorText(e) });
  }
}

export function ExportStatus() {
  const jobs = exportJobs.value;
  if (jobs.length === 0) return null;
  const kb = (n: number) => formatCount(Math.ceil(n / 1024));
  return (
    <ul class="exports" aria-live="polite" id="exports">
      {jobs.map((j) => (
        <li key={j.key} data-export-state={j.state}>
          {j.state === "running" && (
            <>
              {rt().exporting(j.name, kb(j.bytes))}{" "}
              {j.total > 0 ? (
                <progress aria-label={j.name} max={j.total} value={j.bytes} />
              ) : (
                <progress aria-label={j.name} />
              )}
            </>
          )}
          {j.state === "done" && <span class="ok">{rt().exported(j.name, kb(j.bytes))}</span>}
          {j.state === "failed" && (
            <span class="error" role="alert">
              {rt().exportFailed(j.name)}: {j.error}
            </span>
          )}
        </li>
      ))}
    </ul>
  );
}
