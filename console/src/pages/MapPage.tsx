// The map (#/map): the facilities and visits of the current filters (the registry's search,
// org unit, kind and sector; the reports' dates for visits; and, when the URL carries them,
// the review queue's filters: only facilities with a matching request and their visits,
// filtered by the server) as points on a plain <canvas>,
// clustered on a grid of screen cells so 50,000 points draw in one pass. No base map and no
// network beyond the console's own server: when the console directory holds a
// `map-base.geojson` (a province's boundaries, say), its lines are drawn under the points.
// Drag or the arrow keys pan, the wheel or the +/- buttons zoom; a click on a point opens
// its record, a click on a cluster zooms in and lists its points below the map (a list
// that keyboard and screen-reader users can use). The points come from one paged call,
// FacilityService.ListMapPoints (ids, type, position; pages of 20,000), not from the lists
// of whole records. One thread: the browser's.
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, facilities as facilitiesApi } from "../api";
import { MapPointType, type MapPoint as PointRecord } from "@gen/kcnet/v1/services_pb";
import { formatTime, t } from "../i18n";
import { formatCount, rt } from "./reportsText";
import { myUnits, reportParams, type UnitOption } from "./reportKit";
import { FacilityFilters } from "./Registry";
import { FacilityExportButtons } from "./RecordExport";
import { filters, me, setFilters } from "../state";
import { hasQueueFilter, requestFilter } from "../requestFilter";
import { tf } from "../i18n-filters";

interface MapPoint {
  lat: number;
  lng: number;
  kind: "facility" | "visit";
  id: string; // the facility's or the visit's id
  facilityId: string;
  label: string;
}
interface View {
  lng: number; // the centre
  lat: number;
  scale: number; // pixels per degree
}
interface Cluster {
  x: number;
  y: number;
  points: MapPoint[];
}

const kCell = 36; // the grid cell of clustering, in CSS pixels
type GeoJson = { features?: { geometry?: { type: string; coordinates: unknown } }[] };

// The start of a Vietnamese day (YYYY-MM-DD, UTC+7 all year), in ms: the visits' date bounds.
const kDayMs = 86_400_000n;
const vnDayStartMs = (date: string) => BigInt(Date.parse(`${date}T00:00:00Z`) - 7 * 3_600_000);

function fit(points: MapPoint[], width: number, height: number): View {
  if (points.length === 0) return { lng: 105.8, lat: 16, scale: 40 };
  let minLat = Infinity, maxLat = -Infinity, minLng = Infinity, maxLng = -Infinity;
  for (const p of points) {
    minLat = Math.min(minLat, p.lat);
    maxLat = Math.max(maxLat, p.lat);
    minLng = Math.min(minLng, p.lng);
    maxLng = Math.max(maxLng, p.lng);
  }
  const span = Math.max(maxLng - minLng, (maxLat - minLat) * 1.1, 0.01);
  return { lng: (minLng + maxLng) / 2, lat: (minLat + maxLat) / 2, scale: (Math.min(width, height) * 0.85) / span };
}

function project(v: View, width: number, height: number, lng: number, lat: number): [number, number] {
  return [width / 2 + (lng - v.lng) * v.scale, height / 2 - (lat - v.lat) * v.scale];
}

/** Groups the points in view by grid cell: one cluster per non-empty cell. */
function clusterPoints(points: MapPoint[], v: View, width: number, height: number): Cluster[] {
  const cells = new Map<number, Cluster>();
  const cols = Math.ceil(width / kCell) + 1;
  for (const p of points) {
    const [x, y] = project(v, width, height, p.lng, p.lat);
    if (x < -kCell || y < -kCell || x > width + kCell || y > height + kCell) continue;
    const key = Math.floor((y + kCell) / kCell) * (cols + 2) + Math.floor((x + kCell) / kCell);
    const c = cells.get(key);
    if (c) {
      c.points.push(p);
      c.x += (x - c.x) / c.points.length; // running mean: the cluster sits at its points' centre
      c.y += (y - c.y) / c.points.length;
    } else {
      cells.set(key, { x, y, points: [p] });
    }
  }
  return [...cells.values()];
}

function draw(ctx: CanvasRenderingContext2D, clusters: Cluster[], v: View, width: number, height: number, base: GeoJson | null) {
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#f7f9fb";
  ctx.fillRect(0, 0, width, height);
  if (base?.features) {
    ctx.strokeStyle = "#9aa5b1";
    ctx.lineWidth = 1;
    const ring = (coords: number[][]) => {
      ctx.beginPath();
      coords.forEach(([lng, lat], i) => {
        const [x, y] = project(v, width, height, lng, lat);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    for (const f of base.features) {
      const g = f.geometry;
      if (!g) continue;
      if (g.type === "LineString") ring(g.coordinates as number[][]);
      else if (g.type === "Polygon" || g.type === "MultiLineString") (g.coordinates as number[][][]).forEach(ring);
      else if (g.type === "MultiPolygon") (g.coordinates as number[][][][]).forEach((p) => p.forEach(ring));
    }
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.font = "bold 12px system-ui, 'DejaVu Sans', sans-serif";
  for (const c of clusters) {
    if (c.points.length === 1) {
      const p = c.points[0];
      ctx.fillStyle = p.kind === "facility" ? "#0b5394" : "#b35c00";
      ctx.beginPath();
      ctx.arc(c.x, c.y, 5, 0, Math.PI * 2);
      ctx.fill();
      continue;
    }
    const r = Math.min(22, 9 + Math.log2(c.points.length) * 2);
    ctx.fillStyle = "rgba(11, 83, 148, 0.85)";
    ctx.beginPath();
    ctx.arc(c.x, c.y, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = "#ffffff";
    ctx.fillText(c.points.length > 9999 ? `${Math.round(c.points.length / 1000)}k` : String(c.points.length), c.x, c.y);
  }
}

export function MapPage() {
  const p = reportParams.value;
  // The queue's filters, when the URL carries them (the same fields the queue sends).
  const f = filters.value;
  const queueFilter = hasQueueFilter(f) ? requestFilter(f, me.value?.role) : undefined;
  const [units, setUnits] = useState<UnitOption[]>([]);
  const [showFacilities, setShowFacilities] = useState(true);
  const [showVisits, setShowVisits] = useState(true);
  const [facilityList, setFacilityList] = useState<PointRecord[] | null>(null);
  const [visitList, setVisitList] = useState<PointRecord[] | null>(null);
  const [base, setBase] = useState<GeoJson | null>(null);
  const [picked, setPicked] = useState<MapPoint[]>([]);
  const [error, setError] = useState("");
  const canvas = useRef<HTMLCanvasElement>(null);
  const view = useRef<View | null>(null);
  const clusters = useRef<Cluster[]>([]);
  const frame = useRef(0);

  useEffect(() => {
    myUnits().then(setUnits);
    // A province-supplied base map, if the console directory has one; none is fine.
    fetch("map-base.geojson", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then(setBase)
      .catch(() => setBase(null));
  }, []);

  useEffect(() => {
    let cancelled = false;
    setFacilityList(null);
    setVisitList(null);
    setError("");
    view.current = null;
    (async () => {
      // The facilities of the filter, then the visits in the dates, in pages of 20,000.
      const facilityPoints: PointRecord[] = [];
      const visitPoints: PointRecord[] = [];
      let pageToken = "";
      do {
        const r = await facilitiesApi.listMapPoints({
          orgUnitId: p.unit ? BigInt(p.unit) : 0n,
          query: p.q,
          kind: Number(p.kind || 0),
          sector: Number(p.sector || 0),
          visitedFromMs: p.from ? vnDayStartMs(p.from) : 0n,
          visitedToMs: p.to ? vnDayStartMs(p.to) + kDayMs : 0n,
          requests: queueFilter,
          pageSize: 20000,
          pageToken,
        });
        if (cancelled) return;
        for (const pt of r.points) (pt.type === MapPointType.FACILITY ? facilityPoints : visitPoints).push(pt);
        pageToken = r.nextPageToken;
      } while (pageToken);
      setFacilityList(facilityPoints);
      // Visits of the listed facilities only (the search, kind and sector).
      const ids = new Set(facilityPoints.map((f) => f.id));
      setVisitList(visitPoints.filter((v) => ids.has(v.facilityId)));
    })().catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [p.q, p.unit, p.kind, p.sector, p.from, p.to, f.status, f.commune, f.category, f.funding, f.age, f.author, me.value?.role]);

  // The points, from the lists and the layer switches.
  const byId = new Map((facilityList ?? []).map((f) => [f.id, f]));
  const points: MapPoint[] = [];
  if (showFacilities) {
    for (const f of facilityList ?? []) {
      if (f.latitude || f.longitude) {
        points.push({ lat: f.latitude, lng: f.longitude, kind: "facility", id: f.id, facilityId: f.id, label: f.name });
      }
    }
  }
  if (showVisits) {
    for (const v of visitList ?? []) {
      const f = byId.get(v.facilityId);
      const lat = v.latitude || f?.latitude || 0;
      const lng = v.longitude || f?.longitude || 0;
      if (lat || lng) {
        points.push({ lat, lng, kind: "visit", id: v.id, facilityId: v.facilityId, label: `${f?.name ?? ""} — ${formatTime(v.visitedMs)}` });
      }
    }
  }

  const redraw = () => {
    const c = canvas.current;
    if (!c) return;
    const width = c.clientWidth;
    const height = c.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    if (c.width !== Math.round(width * ratio)) c.width = Math.round(width * ratio);
    if (c.height !== Math.round(height * ratio)) c.height = Math.round(height * ratio);
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    // Fitted to the points once they are there; kept while the user pans and zooms.
    const v = view.current ?? fit(points, width, height);
    if (points.length > 0) view.current = v;
    const started = performance.now();
    clusters.current = clusterPoints(points, v, width, height);
    draw(ctx, clusters.current, v, width, height, base);
    // For the benchmark and the test: how long the last frame took, how many points.
    c.dataset.renderMs = (performance.now() - started).toFixed(1);
    c.dataset.points = String(points.length);
    c.dataset.facilities = facilityList === null ? "" : String(facilityList.length); // loaded, with a place or not
    c.dataset.clusters = String(clusters.current.length);
    c.dataset.view = JSON.stringify(v);
  };
  // Always the latest render's redraw (its points), also for listeners added once.
  const latestRedraw = useRef(redraw);
  latestRedraw.current = redraw;
  const schedule = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => latestRedraw.current());
  };
  useEffect(() => {
    redraw();
  });
  useEffect(() => {
    addEventListener("resize", schedule);
    return () => removeEventListener("resize", schedule);
  }, []);

  // Panning and zooming change the view only; the next frame draws it.
  const pan = (dx: number, dy: number) => {
    if (!view.current) return;
    view.current = { ...view.current, lng: view.current.lng - dx / view.current.scale, lat: view.current.lat + dy / view.current.scale };
    schedule();
  };
  const zoom = (factor: number, x?: number, y?: number) => {
    const c = canvas.current;
    if (!view.current || !c) return;
    const v = view.current;
    const px = x ?? c.clientWidth / 2;
    const py = y ?? c.clientHeight / 2;
    // Keep the point under the pointer where it is.
    const lng = v.lng + (px - c.clientWidth / 2) / v.scale;
    const lat = v.lat - (py - c.clientHeight / 2) / v.scale;
    const scale = Math.min(1e7, Math.max(1, v.scale * factor));
    view.current = { scale, lng: lng - (px - c.clientWidth / 2) / scale, lat: lat + (py - c.clientHeight / 2) / scale };
    schedule();
  };
  const drag = useRef<{ x: number; y: number; moved: boolean } | null>(null);
  const onPointerDown = (e: PointerEvent) => {
    drag.current = { x: e.clientX, y: e.clientY, moved: false };
    (e.target as Element).setPointerCapture?.(e.pointerId);
  };
  const onPointerMove = (e: PointerEvent) => {
    const d = drag.current;
    if (!d) return;
    const dx = e.clientX - d.x;
    const dy = e.clientY - d.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) d.moved = true;
    d.x = e.clientX;
    d.y = e.clientY;
    if (d.moved) pan(dx, dy);
  };
  const onPointerUp = (e: PointerEvent) => {
    const d = drag.current;
    drag.current = null;
    if (!d || d.moved) return;
    const rect = canvas.current!.getBoundingClientRect();
    const x = e.clientX - rect.left;
    const y = e.clientY - rect.top;
    let best: Cluster | null = null;
    let bestDist = 24 * 24;
    for (const c of clusters.current) {
      const dist = (c.x - x) ** 2 + (c.y - y) ** 2;
      if (dist < bestDist) {
        best = c;
        bestDist = dist;
      }
    }
    if (!best) return;
    // One point, or a facility and its visits at the same place (zooming never parts
    // them): open the facility.
    const first = best.points[0].facilityId;
    if (best.points.every((pt) => pt.facilityId === first)) {
      location.hash = `#/facility/${first}`;
      return;
    }
    setPicked(best.points.slice(0, 200));
    zoom(3, best.x, best.y);
  };
  const onKey = (e: KeyboardEvent) => {
    const step = 60;
    const moves: Record<string, [number, number]> = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[e.key]) {
      e.preventDefault();
      pan(...moves[e.key]);
    } else if (e.key === "+" || e.key === "=") zoom(1.5);
    else if (e.key === "-") zoom(1 / 1.5);
  };

  const loading = facilityList === null || visitList === null;
  return (
    <main id="main" class="map-page">
      <h1 tabIndex={-1}>{rt().map}</h1>
      <p class="help">
        {rt().mapHelp} {!base && rt().noBaseMap}
      </p>
      <form class="filters" aria-label={t().filters} onSubmit={(e) => e.preventDefault()}>
        <FacilityFilters units={units} />
        <fieldset class="layers">
          <legend>{rt().layers}</legend>
          <label>
            <input type="checkbox" checked={showFacilities} onChange={(e) => setShowFacilities((e.target as HTMLInputElement).checked)} />{" "}
            {rt().showFacilities}
          </label>
          <label>
            <input type="checkbox" checked={showVisits} onChange={(e) => setShowVisits((e.target as HTMLInputElement).checked)} />{" "}
            {rt().showVisits}
          </label>
        </fieldset>
      </form>
      {queueFilter && (
        <p class="help" id="map-queue-filter">
          {tf().mapQueueFilter}{" "}
          <button
            type="button"
            class="secondary"
            onClick={() => setFilters({ status: "", commune: "", category: "", funding: "", age: "", author: "" })}
          >
            {tf().clearQueueFilter}
          </button>
        </p>
      )}
      {p.q && (
        <p class="help">
          {rt().search}: <strong>{p.q}</strong>
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite" id="map-count">
        {loading ? t().loading : rt().points(formatCount(points.length))}
      </p>
      <div class="buttons map-tools">
        <button type="button" class="secondary" aria-label={rt().zoomIn} onClick={() => zoom(1.5)}>
          +
        </button>
        <button type="button" class="secondary" aria-label={rt().zoomOut} onClick={() => zoom(1 / 1.5)}>
          −
        </button>
        <button type="button" class="secondary" onClick={() => ((view.current = null), setPicked([]), schedule())}>
          {rt().resetView}
        </button>
      </div>
      <canvas
        id="map-canvas"
        class="map"
        ref={canvas}
        tabIndex={0}
        role="img"
        aria-label={`${rt().mapCanvas}. ${rt().points(formatCount(points.length))}`}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onWheel={(e) => {
          e.preventDefault();
          const rect = canvas.current!.getBoundingClientRect();
          zoom(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - rect.left, e.clientY - rect.top);
        }}
        onKeyDown={onKey}
      />
      <FacilityExportButtons params={p} requests={queueFilter} />
      {picked.length > 0 && (
        <section aria-labelledby="h-picked">
          <h2 id="h-picked">{rt().nearby}</h2>
          <ul id="map-picked">
            {picked.map((pt) => (
              <li key={pt.kind + pt.id}>
                <a href={`#/facility/${pt.facilityId}`}>{pt.label}</a> ({pt.kind === "facility" ? rt().showFacilities : rt().showVisits})
              </li>
            ))}
          </ul>
        </section>
      )}
    </main>
  );
}
