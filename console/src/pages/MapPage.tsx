// The map (#/map): the facilities and visits of the current filters (the registry's search,
// org unit, kind and sector; the reports' dates for visits; and, when the URL carries them,
// the review queue's filters: only facilities with a matching request and their visits,
// filtered by the server) as points on a plain <canvas>. No base map and no network beyond
// the console's own server: when the console directory holds a `map-base.geojson` (a
// province's boundaries, say), its lines are drawn under the points.
//
// Built for a whole province (1.2 M points): the points come from one paged call,
// FacilityService.ListMapPoints (ids, type, position; pages of 20,000; facilities first),
// and are drawn as each page arrives, so the province's clusters show after the first
// page. They are kept in flat arrays (no object per point) and clustered on a grid
// anchored to the map, not to the screen: level L cuts the world into cells of
// kTopCellDeg / 2^L degrees, and a view uses the level whose cells are 18-36 pixels wide.
// A level's grid (a count and a mean position per non-empty cell) costs one pass over the
// points when first needed and is kept, so a pan only draws the cells in view, and a zoom
// within a level only projects them again (docs/CONSOLE.md, "Map").
// Drag or the arrow keys pan, the wheel or the +/- buttons zoom; a click on a point opens
// its record, a click on a cluster zooms in and lists its points below the map (a list
// that keyboard and screen-reader users can use). One thread: the browser's.
import { useEffect, useRef, useState } from "preact/hooks";
import { Code, ConnectError, errorText, facilities as facilitiesApi } from "../api";
import { MapPointType, type MapPoint } from "@gen/kcnet/v1/services_pb";
import { formatTime, t } from "../i18n";
import { formatCount, rt } from "./reportsText";
import { myUnits, reportParams, type UnitOption } from "./reportKit";
import { FacilityFilters } from "./Registry";
import { FacilityExportButtons, facilityFilter } from "./RecordExport";
import { filters, me, setFilters } from "../state";
import { hasQueueFilter, requestFilter } from "../requestFilter";
import { tf } from "../i18n-filters";
import { changes, liveState } from "../live";
import { tr } from "../i18n-review";

/** The loaded points as parallel arrays: an entry per facility and per visit, no objects. */
class Points {
  // Facilities (every one the server sent, with a place or not: visits need their ids).
  fIds: string[] = [];
  fNames: string[] = [];
  fLat: number[] = [];
  fLng: number[] = [];
  fIndex = new Map<string, number>();
  // Visits of those facilities: their facility's index, their place (or the facility's).
  vFacility: number[] = [];
  vLat: number[] = [];
  vLng: number[] = [];
  vMs: number[] = [];
  // A visit's key (visitKey: 48 bits of its UUID), to find it again for a live patch.
  vKey: number[] = [];
  facilitiesPlaced = 0;
  visitsPlaced = 0;
  facilitiesGone = 0; // removed by live patches (their entries stay, unplaced)
  // The placed points by cell of level kBucketLevel, with each layer's count and sums.
  buckets = new Map<number, Bucket>();
  minLat = Infinity;
  maxLat = -Infinity;
  minLng = Infinity;
  maxLng = -Infinity;

  private grow(lat: number, lng: number) {
    if (lat < this.minLat) this.minLat = lat;
    if (lat > this.maxLat) this.maxLat = lat;
    if (lng < this.minLng) this.minLng = lng;
    if (lng > this.maxLng) this.maxLng = lng;
  }
  addFacility(id: string, name: string, lat: number, lng: number) {
    this.fIndex.set(id, this.fIds.length);
    this.fIds.push(id);
    this.fNames.push(name);
    this.fLat.push(lat);
    this.fLng.push(lng);
    if (lat || lng) {
      this.facilitiesPlaced++;
      this.grow(lat, lng);
      const b = this.bucket(lng, lat);
      const i = this.fIds.length - 1;
      b.facilities.push(i);
      addPart(b.f, 1, lng, lat, i, false);
    }
  }
  /** A visit of a listed facility (others are left out: the search, kind and sector). */
  addVisit(id: string, facilityId: string, lat: number, lng: number, visitedMs: number) {
    const f = this.fIndex.get(facilityId);
    if (f === undefined) return;
    if (!lat && !lng) {
      lat = this.fLat[f]; // a visit without GPS sits at its facility
      lng = this.fLng[f];
    }
    this.vFacility.push(f);
    this.vLat.push(lat);
    this.vLng.push(lng);
    this.vMs.push(visitedMs);
    this.vKey.push(visitKey(id));
    if (lat || lng) {
      this.visitsPlaced++;
      this.grow(lat, lng);
      const b = this.bucket(lng, lat);
      b.visits.push(this.vFacility.length - 1);
      addPart(b.v, 1, lng, lat, f, false);
    }
  }
  /** Facilities listed now (loaded, placed or not, and not removed since). */
  get facilityCount() {
    return this.fIds.length - this.facilitiesGone;
  }

  // Live patches (ListMapPoints with changed_since). An entry removed stays in the arrays,
  // unplaced and out of its bucket (a visit's facility -1), so no index moves.

  /** A facility of the patch: added, or moved / renamed in place. Its index. */
  putFacility(id: string, name: string, lat: number, lng: number): number {
    const i = this.fIndex.get(id);
    if (i === undefined) {
      this.addFacility(id, name, lat, lng);
      return this.fIds.length - 1;
    }
    this.unplaceFacility(i);
    this.fNames[i] = name;
    this.fLat[i] = lat;
    this.fLng[i] = lng;
    if (lat || lng) {
      this.facilitiesPlaced++;
      this.grow(lat, lng);
      const b = this.bucket(lng, lat);
      b.facilities.push(i);
      addPart(b.f, 1, lng, lat, i, false);
    }
    return i;
  }
  /** A facility no longer on the map (deleted or out of the filter); its visits go too. */
  removeFacility(id: string): number | undefined {
    const i = this.fIndex.get(id);
    if (i === undefined) return undefined;
    this.unplaceFacility(i);
    this.fIndex.delete(id);
    this.fLat[i] = 0;
    this.fLng[i] = 0;
    this.facilitiesGone++;
    return i;
  }
  removeVisit(v: number) {
    if (this.vFacility[v] < 0) return;
    const lat = this.vLat[v], lng = this.vLng[v];
    if (lat || lng) {
      const b = this.bucket(lng, lat);
      const at = b.visits.indexOf(v);
      if (at >= 0) b.visits.splice(at, 1);
      this.recount(b);
      this.visitsPlaced--;
    }
    this.vFacility[v] = -1;
    this.vLat[v] = 0;
    this.vLng[v] = 0;
  }
  private unplaceFacility(i: number) {
    const lat = this.fLat[i], lng = this.fLng[i];
    if (!lat && !lng) return;
    const b = this.bucket(lng, lat);
    const at = b.facilities.indexOf(i);
    if (at >= 0) b.facilities.splice(at, 1);
    this.recount(b);
    this.facilitiesPlaced--;
  }
  /** A bucket's parts again from its points (after a removal: a few hundred at most). */
  private recount(b: Bucket) {
    b.f = emptyPart();
    for (const i of b.facilities) addPart(b.f, 1, this.fLng[i], this.fLat[i], i, false);
    b.v = emptyPart();
    for (const i of b.visits) addPart(b.v, 1, this.vLng[i], this.vLat[i], this.vFacility[i], false);
  }
  private bucket(lng: number, lat: number): Bucket {
    const deg = cellDeg(kBucketLevel);
    const col = Math.floor((lng + 180) / deg), row = Math.floor((lat + 90) / deg);
    const key = col * kKeyRows + row;
    let b = this.buckets.get(key);
    if (!b) {
      b = { col, row, facilities: [], visits: [], f: emptyPart(), v: emptyPart() };
      this.buckets.set(key, b);
    }
    return b;
  }
}

/**
 * 48 bits of a UUID (its first 12 hex digits) as a number: a visit's key for live patches.
 * Random (version 4) ids make a false match about 1 in 2^48 / visits per look-up (3e-9 for
 * a million visits), and 8 bytes a visit instead of a string's 60.
 */
function visitKey(id: string): number {
  return parseInt(id.slice(0, 8), 16) * 65536 + parseInt(id.slice(9, 13), 16);
}

/** Applies a live patch (ListMapPoints with changed_since) to `pts`. */
function applyPatch(pts: Points, points: MapPoint[], removed: MapPoint[]) {
  // Facilities first (their visits need them), then one pass over the visits: those of
  // removed facilities go, those the patch names are taken out and put back as they are now.
  const goneFacilities = new Set<number>();
  const goneVisits = new Set<number>();
  for (const r of removed) {
    if (r.type === MapPointType.FACILITY) {
      const i = pts.removeFacility(r.id);
      if (i !== undefined) goneFacilities.add(i);
    } else goneVisits.add(visitKey(r.id));
  }
  const visits: MapPoint[] = [];
  for (const pt of points) {
    if (pt.type === MapPointType.FACILITY) pts.putFacility(pt.id, pt.name, pt.latitude, pt.longitude);
    else {
      visits.push(pt);
      goneVisits.add(visitKey(pt.id));
    }
  }
  if (goneFacilities.size > 0 || goneVisits.size > 0) {
    const n = pts.vFacility.length;
    for (let v = 0; v < n; v++) {
      const f = pts.vFacility[v];
      if (f >= 0 && (goneFacilities.has(f) || goneVisits.has(pts.vKey[v]))) pts.removeVisit(v);
    }
  }
  for (const pt of visits) pts.addVisit(pt.id, pt.facilityId, pt.latitude, pt.longitude, Number(pt.visitedMs));
}

interface View {
  lng: number; // the centre
  lat: number;
  scale: number; // pixels per degree
}
/** Some points of a cell: how many, their sums (for the mean) and whose. */
interface Part {
  n: number;
  sumLng: number;
  sumLat: number;
  facility: number; // the facility of its first point (-1: none yet)
  mixed: boolean; // points of more than one facility
}
const emptyPart = (): Part => ({ n: 0, sumLng: 0, sumLat: 0, facility: -1, mixed: false });
function addPart(to: Part, n: number, sumLng: number, sumLat: number, facility: number, mixed: boolean) {
  if (to.n === 0) to.facility = facility;
  else if (mixed || facility !== to.facility) to.mixed = true;
  to.mixed ||= mixed;
  to.n += n;
  to.sumLng += sumLng;
  to.sumLat += sumLat;
}
/** A cell of level kBucketLevel: its points (indices) and each layer's part. */
interface Bucket {
  col: number;
  row: number;
  facilities: number[];
  visits: number[];
  f: Part;
  v: Part;
}
/** A non-empty cell of a level's grid. */
interface Cell extends Part {
  key: number;
  kind: 0 | 1; // of its first point: 0 facility, 1 visit
}
/** A cluster as drawn in the last frame. */
interface Drawn {
  x: number;
  y: number;
  cell: Cell;
}
/** A point of a cluster's list below the map. */
interface Picked {
  kind: "facility" | "visit";
  index: number; // in Points' facility or visit arrays
  facilityId: string;
  label: string;
}

const kCell = 36; // the largest cluster cell, in CSS pixels
const kTopCellDeg = 64; // level 0's cell, in degrees
const kMaxLevel = 22; // cells of 1.5e-5 degrees (1.7 m); keys stay below 2^53
const kKeyRows = 2 ** 25; // cell keys: column * kKeyRows + row
// The level of the buckets (cells of 0.004 degrees, about 430 m): the grids of coarser levels
// are sums of buckets (a few thousand for a province), finer levels cluster the points of
// the buckets in view, frame by frame (a view at those levels holds a few percent of a
// province).
const kBucketLevel = 14;
type GeoJson = { features?: { geometry?: { type: string; coordinates: unknown } }[] };

/** The level whose cells are 18-36 pixels wide at `scale` pixels per degree. */
function levelFor(scale: number): number {
  return Math.max(0, Math.min(kMaxLevel, Math.ceil(Math.log2((kTopCellDeg * scale) / kCell))));
}
const cellDeg = (level: number) => kTopCellDeg / 2 ** level;
const cellKey = (lng: number, lat: number, deg: number) =>
  Math.floor((lng + 180) / deg) * kKeyRows + Math.floor((lat + 90) / deg);

/** A coarse level's grid (kBucketLevel or coarser): the buckets' parts added up. */
function buildGrid(pts: Points, level: number, facilities: boolean, visits: boolean): Map<number, Cell> {
  const shift = kBucketLevel - level;
  const cells = new Map<number, Cell>();
  const add = (key: number, part: Part, kind: 0 | 1) => {
    const c = cells.get(key);
    if (c) addPart(c, part.n, part.sumLng, part.sumLat, part.facility, part.mixed);
    else cells.set(key, { key, kind, ...part });
  };
  for (const b of pts.buckets.values()) {
    const key = Math.floor(b.col / 2 ** shift) * kKeyRows + Math.floor(b.row / 2 ** shift);
    if (facilities && b.f.n > 0) add(key, b.f, 0);
    if (visits && b.v.n > 0) add(key, b.v, 1);
  }
  return cells;
}

/** A fine level's grid (finer than kBucketLevel) of the points in the buckets in view. */
function gridInView(pts: Points, level: number, v: View, width: number, height: number, facilities: boolean, visits: boolean): Map<number, Cell> {
  const deg = cellDeg(level);
  const cells = new Map<number, Cell>();
  const add = (lng: number, lat: number, facility: number, kind: 0 | 1) => {
    const key = cellKey(lng, lat, deg);
    const c = cells.get(key);
    if (c) addPart(c, 1, lng, lat, facility, false);
    else cells.set(key, { key, kind, n: 1, sumLng: lng, sumLat: lat, facility, mixed: false });
  };
  const bdeg = cellDeg(kBucketLevel);
  const c0 = Math.floor((v.lng - width / 2 / v.scale + 180) / bdeg) - 1;
  const c1 = Math.floor((v.lng + width / 2 / v.scale + 180) / bdeg) + 1;
  const r0 = Math.floor((v.lat - height / 2 / v.scale + 90) / bdeg) - 1;
  const r1 = Math.floor((v.lat + height / 2 / v.scale + 90) / bdeg) + 1;
  for (let col = c0; col <= c1; col++) {
    for (let row = r0; row <= r1; row++) {
      const b = pts.buckets.get(col * kKeyRows + row);
      if (!b) continue;
      if (facilities) for (const i of b.facilities) add(pts.fLng[i], pts.fLat[i], i, 0);
      if (visits) for (const i of b.visits) add(pts.vLng[i], pts.vLat[i], pts.vFacility[i], 1);
    }
  }
  return cells;
}

function fit(pts: Points, width: number, height: number): View {
  if (!(pts.minLat <= pts.maxLat)) return { lng: 105.8, lat: 16, scale: 40 };
  const span = Math.max(pts.maxLng - pts.minLng, (pts.maxLat - pts.minLat) * 1.1, 0.01);
  return { lng: (pts.minLng + pts.maxLng) / 2, lat: (pts.minLat + pts.maxLat) / 2, scale: (Math.min(width, height) * 0.85) / span };
}

function project(v: View, width: number, height: number, lng: number, lat: number): [number, number] {
  return [width / 2 + (lng - v.lng) * v.scale, height / 2 - (lat - v.lat) * v.scale];
}

/** The cells of `grid` in view, at their points' mean, projected. */
function cellsInView(grid: Map<number, Cell>, level: number, v: View, width: number, height: number): Drawn[] {
  const out: Drawn[] = [];
  const take = (c: Cell) => {
    const [x, y] = project(v, width, height, c.sumLng / c.n, c.sumLat / c.n);
    if (x >= -kCell && y >= -kCell && x <= width + kCell && y <= height + kCell) out.push({ x, y, cell: c });
  };
  const deg = cellDeg(level);
  // The view's cells, one more on each side.
  const west = v.lng - width / 2 / v.scale, east = v.lng + width / 2 / v.scale;
  const south = v.lat - height / 2 / v.scale, north = v.lat + height / 2 / v.scale;
  const c0 = Math.floor((west + 180) / deg) - 1, c1 = Math.floor((east + 180) / deg) + 1;
  const r0 = Math.floor((south + 90) / deg) - 1, r1 = Math.floor((north + 90) / deg) + 1;
  if ((c1 - c0 + 1) * (r1 - r0 + 1) * 4 < grid.size) {
    // Zoomed in on a large grid: look up the cells in view rather than walk every cell.
    for (let col = c0; col <= c1; col++) {
      for (let row = r0; row <= r1; row++) {
        const c = grid.get(col * kKeyRows + row);
        if (c) take(c);
      }
    }
  } else {
    for (const c of grid.values()) take(c);
  }
  return out;
}

function draw(ctx: CanvasRenderingContext2D, clusters: Drawn[], v: View, width: number, height: number, base: GeoJson | null) {
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
  for (const { x, y, cell } of clusters) {
    if (cell.n === 1) {
      ctx.fillStyle = cell.kind === 0 ? "#0b5394" : "#b35c00";
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, Math.PI * 2);
      ctx.fill();
      continue;
    }
    const r = Math.min(22, 9 + Math.log2(cell.n) * 2);
    ctx.fillStyle = "rgba(11, 83, 148, 0.85)";
    ctx.beginPath();
    ctx.arc(x, y, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = "#ffffff";
    ctx.fillText(cell.n > 9999 ? `${Math.round(cell.n / 1000)}k` : String(cell.n), x, y);
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
  // The points so far (a ref: 1.2 M entries are not state) and how far the load is.
  const points = useRef(new Points());
  const [received, setReceived] = useState(0); // points received so far (a re-render per page)
  const [loaded, setLoaded] = useState(false); // every page in
  const [base, setBase] = useState<GeoJson | null>(null);
  const [picked, setPicked] = useState<Picked[]>([]);
  const [error, setError] = useState("");
  const canvas = useRef<HTMLCanvasElement>(null);
  const view = useRef<View | null>(null); // null: fitted to the points (until the user moves)
  const drawn = useRef<Drawn[]>([]);
  const level = useRef(0);
  // The grids built so far, by level, for `gridsOf` (the points and layers they were built for).
  const grids = useRef(new Map<number, Map<number, Cell>>());
  const gridsOf = useRef("");
  const frame = useRef(0);
  const patchCount = useRef(0); // live patches applied since the filter's load
  const shown = useRef({ facilities: true, visits: true, loaded: false });
  shown.current = { facilities: showFacilities, visits: showVisits, loaded };

  useEffect(() => {
    myUnits().then(setUnits);
    // A province-supplied base map, if the console directory has one; none is fine.
    fetch("map-base.geojson", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then(setBase)
      .catch(() => setBase(null));
  }, []);

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
    const pts = points.current;
    const { facilities: withFacilities, visits: withVisits } = shown.current;
    const v = view.current ?? fit(pts, width, height);
    const started = performance.now();
    // The grids hold the points of one load and one choice of layers; a new page or a
    // layer switched starts them again.
    const n = pts.fIds.length + pts.vFacility.length;
    const version = `${n}/${withFacilities}/${withVisits}`;
    if (gridsOf.current !== version) {
      grids.current.clear();
      gridsOf.current = version;
    }
    level.current = levelFor(v.scale);
    let grid = grids.current.get(level.current);
    if (level.current > kBucketLevel) {
      grid = gridInView(pts, level.current, v, width, height, withFacilities, withVisits);
    } else if (!grid) {
      grid = buildGrid(pts, level.current, withFacilities, withVisits);
      grids.current.set(level.current, grid);
    }
    drawn.current = cellsInView(grid, level.current, v, width, height);
    draw(ctx, drawn.current, v, width, height, base);
    // For the benchmark and the tests: how long the last frame took, how many points.
    c.dataset.renderMs = (performance.now() - started).toFixed(1);
    c.dataset.points = String((withFacilities ? pts.facilitiesPlaced : 0) + (withVisits ? pts.visitsPlaced : 0));
    c.dataset.facilities = shown.current.loaded ? String(pts.facilityCount) : ""; // loaded, with a place or not
    c.dataset.patches = String(patchCount.current); // live patches applied (tests, bench)
    c.dataset.loaded = shown.current.loaded ? "1" : "";
    c.dataset.clusters = String(drawn.current.length);
    c.dataset.level = String(level.current);
    c.dataset.view = JSON.stringify(v);
  };
  // Always the latest render's redraw, also for listeners added once.
  const latestRedraw = useRef(redraw);
  latestRedraw.current = redraw;
  const schedule = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => latestRedraw.current());
  };

  // Every point of the filter, page by page, into `into`; `page` after each (with the
  // points so far and whether it was the last); stops when `stale` says so.
  const filterDeps = [p.q, p.unit, p.kind, p.sector, p.from, p.to, f.status, f.commune, f.category, f.funding, f.age, f.author, me.value?.role];
  const mapFilter = () => facilityFilter(p, queueFilter); // as the download buttons'
  // Where the points shown are complete (the first page's checkpoint, then each patch's):
  // a change makes one ListMapPoints call with changed_since, for what changed only.
  const checkpoint = useRef("");
  const readPoints = async (into: Points, stale: () => boolean, page: (total: number, last: boolean, checkpoint: string) => void) => {
    let pageToken = "";
    let total = 0;
    let from = "";
    do {
      const r = await facilitiesApi.listMapPoints({ ...mapFilter(), pageSize: 20000, pageToken });
      if (stale()) return;
      if (!pageToken) from = r.checkpoint;
      for (const pt of r.points) {
        if (pt.type === MapPointType.FACILITY) into.addFacility(pt.id, pt.name, pt.latitude, pt.longitude);
        else into.addVisit(pt.id, pt.facilityId, pt.latitude, pt.longitude, Number(pt.visitedMs));
      }
      total += r.points.length;
      pageToken = r.nextPageToken;
      page(total, !pageToken, from);
    } while (pageToken);
  };
  // The filter's load: a generation per filter, so a late page of an old one is dropped.
  const generation = useRef(0);
  // Live: a change in my scope asks what changed since the checkpoint (ListMapPoints with
  // changed_since: the changed facilities and visits of the filter, and those that left
  // it) and patches the points and their buckets in place; the view is kept. Only when the
  // server says too much changed (`reload`), or there is no checkpoint, are the points
  // read again in the background and swapped in when complete (the old ones stay drawn
  // meanwhile). One update at a time: changes during one make one more after it.
  const live = useRef({ busy: false, again: false });
  const [, setPatches] = useState(0); // a re-render per patch (the count)
  const liveRead = useRef(() => {});
  liveRead.current = () => {
    const l = live.current;
    if (l.busy || !shown.current.loaded) {
      l.again = true; // after this update, or when the filter's load is complete
      return;
    }
    l.busy = true;
    l.again = false;
    const mine = generation.current;
    const stale = () => generation.current !== mine;
    const reread = () => {
      const fresh = new Points();
      return readPoints(fresh, stale, (total, last, from) => {
        if (!last) return;
        points.current = fresh;
        checkpoint.current = from;
        grids.current.clear(); // built from the old points
        gridsOf.current = "";
        setReceived(total);
        latestRedraw.current();
      });
    };
    const patch = async () => {
      if (!checkpoint.current) return reread();
      let r;
      try {
        r = await facilitiesApi.listMapPoints({ ...mapFilter(), changedSince: checkpoint.current });
      } catch (e) {
        // A checkpoint the server no longer takes (another filter or user): read it all.
        if (ConnectError.from(e).code === Code.InvalidArgument && !stale()) return reread();
        throw e;
      }
      if (stale()) return;
      if (r.reload) return reread();
      applyPatch(points.current, r.points, r.removed);
      checkpoint.current = r.checkpoint;
      grids.current.clear(); // built from the points before the patch
      gridsOf.current = "";
      setPatches(++patchCount.current);
      latestRedraw.current();
    };
    patch()
      .catch(() => {}) // the points shown stay; the next change tries again
      .finally(() => {
        l.busy = false;
        if (l.again && generation.current === mine) liveRead.current();
      });
  };
  const tick = changes.value;
  useEffect(() => {
    if (tick > 0) liveRead.current();
  }, [tick]);

  useEffect(() => {
    const mine = ++generation.current;
    points.current = new Points();
    grids.current.clear();
    gridsOf.current = "";
    live.current = { busy: false, again: false };
    setReceived(0);
    setLoaded(false);
    shown.current = { ...shown.current, loaded: false };
    setPicked([]);
    setError("");
    view.current = null;
    schedule(); // the previous filter's points off the canvas
    // Each page drawn as it arrives (at most every 250 ms).
    let lastDrawn = 0;
    checkpoint.current = "";
    patchCount.current = 0;
    readPoints(points.current, () => generation.current !== mine, (total, last, from) => {
      if (last) {
        checkpoint.current = from;
        shown.current = { ...shown.current, loaded: true };
        latestRedraw.current(); // the canvas' figures are right when the count says so
        setLoaded(true);
        if (live.current.again) setTimeout(() => liveRead.current(), 0); // a change came meanwhile
      } else if (performance.now() - lastDrawn > 250) {
        lastDrawn = performance.now();
        schedule();
      }
      setReceived(total);
    }).catch((e) => generation.current === mine && setError(errorText(e)));
    return () => {
      generation.current++;
    };
  }, filterDeps);

  useEffect(() => {
    redraw();
  }, [showFacilities, showVisits, base]);
  useEffect(() => {
    addEventListener("resize", schedule);
    return () => removeEventListener("resize", schedule);
  }, []);

  // Panning and zooming change the view only; the next frame draws it.
  const current = (): View | null => {
    const c = canvas.current;
    if (!c) return null;
    return view.current ?? fit(points.current, c.clientWidth, c.clientHeight);
  };
  const pan = (dx: number, dy: number) => {
    const v = current();
    if (!v) return;
    view.current = { ...v, lng: v.lng - dx / v.scale, lat: v.lat + dy / v.scale };
    schedule();
  };
  const zoom = (factor: number, x?: number, y?: number) => {
    const c = canvas.current;
    const v = current();
    if (!v || !c) return;
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
  // The points of a cell of the current level (at most 200), for the list below the map:
  // one pass over the points, on a click only.
  const pointsOf = (cell: Cell): Picked[] => {
    const pts = points.current;
    const deg = cellDeg(level.current);
    const out: Picked[] = [];
    if (shown.current.facilities) {
      for (let i = 0; i < pts.fIds.length && out.length < 200; i++) {
        const lat = pts.fLat[i], lng = pts.fLng[i];
        if ((lat || lng) && cellKey(lng, lat, deg) === cell.key) {
          out.push({ kind: "facility", index: i, facilityId: pts.fIds[i], label: pts.fNames[i] });
        }
      }
    }
    if (shown.current.visits) {
      for (let i = 0; i < pts.vFacility.length && out.length < 200; i++) {
        const lat = pts.vLat[i], lng = pts.vLng[i];
        if ((lat || lng) && cellKey(lng, lat, deg) === cell.key) {
          const fi = pts.vFacility[i];
          out.push({ kind: "visit", index: i, facilityId: pts.fIds[fi], label: `${pts.fNames[fi]} — ${formatTime(pts.vMs[i])}` });
        }
      }
    }
    return out;
  };
  const onPointerUp = (e: PointerEvent) => {
    const d = drag.current;
    drag.current = null;
    if (!d || d.moved) return;
    const rect = canvas.current!.getBoundingClientRect();
    const x = e.clientX - rect.left;
    const y = e.clientY - rect.top;
    let best: Drawn | null = null;
    let bestDist = 24 * 24;
    for (const c of drawn.current) {
      const dist = (c.x - x) ** 2 + (c.y - y) ** 2;
      if (dist < bestDist) {
        best = c;
        bestDist = dist;
      }
    }
    if (!best) return;
    // One point, or a facility and its visits at the same place (zooming never parts
    // them): open the facility.
    if (!best.cell.mixed) {
      location.hash = `#/facility/${points.current.fIds[best.cell.facility]}`;
      return;
    }
    setPicked(pointsOf(best.cell));
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

  const pts = points.current;
  const shownCount = (showFacilities ? pts.facilitiesPlaced : 0) + (showVisits ? pts.visitsPlaced : 0);
  const loading = !loaded;
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
      <p class={`live ${liveState.value}`} id="live-state">
        {liveState.value === "offline" ? tr().liveOffline : tr().live}
      </p>
      <p aria-live="polite" id="map-count">
        {loading ? t().loading : rt().points(formatCount(shownCount))}
      </p>
      {loading && received > 0 && (
        <p class="help" id="map-progress">
          {rt().mapLoading(formatCount(received))}
        </p>
      )}
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
        aria-label={`${rt().mapCanvas}. ${rt().points(formatCount(shownCount))}`}
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
              <li key={pt.kind + pt.index}>
                <a href={`#/facility/${pt.facilityId}`}>{pt.label}</a> ({pt.kind === "facility" ? rt().showFacilities : rt().showVisits})
              </li>
            ))}
          </ul>
        </section>
      )}
    </main>
  );
}
