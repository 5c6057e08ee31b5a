// Record-level downloads (RecordExportService.ExportRecords, a server stream read through the
// bridge's download route, api.ts's download): the support
// requests of the review queue's filter, or the facilities and visits of the registry's and
// the map's filter, as CSV or XLSX, one row per record and no row cap. They run in the
// background with their progress (reportKit's ExportStatus) and keep running while the
// user moves between pages. The filter is built by the same functions as the lists'
// (requestFilter.ts; the registry's params), so what downloads is what the page shows.
import { ExportFormat } from "@gen/kcnet/v1/reports_pb";
import { ExportRecordType, RecordExportService, type ExportRecordsRequest } from "@gen/kcnet/v1/record_export_pb";
import { download } from "../api";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv1";
import { ExportStatus, runExport, type ReportParams } from "./reportKit";
import type { RequestFilterFields } from "../requestFilter";
import { tf } from "../i18n-filters";
import { lang } from "../i18n";

type Init = MessageInitShape<GenMessage<ExportRecordsRequest>>;
// The start of a Vietnamese day (YYYY-MM-DD, UTC+7 all year), in ms: the visits' date bounds.
const kDayMs = 86_400_000n;
const vnDayStartMs = (date: string) => BigInt(Date.parse(`${date}T00:00:00Z`) - 7 * 3_600_000);

/**
 * The registry's / map's filter as the fields ExportRecordsRequest and ListMapPointsRequest
 * share (with the queue's filter on the map when the URL carries it). Plain values, no
 * `$typeName`, so either request's init takes them: the map lists and the buttons download
 * exactly the same filter.
 */
export interface FacilityFilterFields {
  requests?: RequestFilterFields;
  orgUnitId: bigint;
  query: string;
  kind: number;
  sector: number;
  visitedFromMs: bigint;
  visitedToMs: bigint;
}
export function facilityFilter(p: ReportParams, requests?: RequestFilterFields): FacilityFilterFields {
  return {
    requests,
    orgUnitId: p.unit ? BigInt(p.unit) : 0n,
    query: p.q,
    kind: Number(p.kind || 0),
    sector: Number(p.sector || 0),
    visitedFromMs: p.from ? vnDayStartMs(p.from) : 0n,
    visitedToMs: p.to ? vnDayStartMs(p.to) + kDayMs : 0n,
  };
}

function start(type: ExportRecordType, format: "csv" | "xlsx", filter: Init, fallback: string) {
  void runExport(`${fallback}.${format}`, format, (progress) =>
    download(
      RecordExportService.method.exportRecords,
      {
        ...filter,
        type,
        format: format === "csv" ? ExportFormat.CSV : ExportFormat.XLSX,
        language: lang.value, // enum values as labels in the console's language
      },
      progress,
    ),
  );
}

/** Download buttons for the queue's requests. */
export function RequestExportButtons(props: { filter: RequestFilterFields }) {
  const filter: Init = { requests: props.filter };
  return (
    <>
      <div class="buttons downloads" role="group" aria-label={tf().exportRequests}>
        <button type="button" class="secondary" id="export-requests-csv"
          onClick={() => start(ExportRecordType.REQUESTS, "csv", filter, "de-nghi-ho-tro")}>
          {tf().exportRequests}: CSV
        </button>
        <button type="button" class="secondary" id="export-requests-xlsx"
          onClick={() => start(ExportRecordType.REQUESTS, "xlsx", filter, "de-nghi-ho-tro")}>
          {tf().exportRequests}: XLSX (Excel)
        </button>
      </div>
      <ExportStatus />
    </>
  );
}

/** Download buttons for the registry's facilities and their visits; on the map also the
 * queue's filter (`requests`), so the files hold exactly the map's points. */
export function FacilityExportButtons(props: { params: ReportParams; requests?: RequestFilterFields }) {
  const filter: Init = facilityFilter(props.params, props.requests);
  return (
    <>
      <div class="buttons downloads" role="group" aria-label={tf().exportFacilities}>
        <button type="button" class="secondary" id="export-facilities-xlsx"
          onClick={() => start(ExportRecordType.FACILITIES, "xlsx", filter, "co-so")}>
          {tf().exportFacilities}: XLSX (Excel)
        </button>
        <button type="button" class="secondary" id="export-facilities-csv"
          onClick={() => start(ExportRecordType.FACILITIES, "csv", filter, "co-so")}>
          {tf().exportFacilities}: CSV
        </button>
        <button type="button" class="secondary" id="export-visits-xlsx"
          onClick={() => start(ExportRecordType.VISITS, "xlsx", filter, "lan-tham")}>
          {tf().exportVisits}: XLSX (Excel)
        </button>
      </div>
      <ExportStatus />
    </>
  );
}
