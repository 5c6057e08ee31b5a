// The browser half of bench `console` (driven by console_bench.cc, which seeds the data and
// runs kcnet-server): Debian's headless chromium through playwright-core over loopback.
// Prints one JSON line per figure:
//   first_load_p95_ms   20 cold loads of the queue page (a new browser context each: no
//                       cache), signed in, until the queue's count is shown (timed by this
//                       driver: page.goto -> the count found);
//   first_load_page_p95_ms the same by the page's clock (navigation start -> the count
//                       in the document);
//   js_css_gzip_bytes   every script and style sheet of the console, gzipped;
//   first_load_js_css_gzip_bytes those the first load fetches (index.html names them);
//   search_p95_ms       registry: a search typed -> its first results rendered, 20 searches,
//                       timed inside the page (input event -> the frame after the rows);
//   search_driver_p95_ms the same timed from this driver (adds one call into the page);
//   search_call_p95_ms  the first ListFacilities call of each of those searches (request
//                       sent -> answer received, the browser's resource timing);
// The searches are 1 s apart (a person reads the results before typing again).
// KCNET_CONSOLE_BENCH_TRACE=1 prints to stderr the slowest cold load's resource timings,
// each search's ListFacilities calls (browser: queued, connecting, sent -> first byte,
// first -> last byte) beside the same calls made from node, the CPU time the server's and
// the browser's threads ran and waited for a CPU (schedstat) per load and per search, and
// (console_bench.cc) the server's RPC log: each call's own time.
//   map_points          the points the map shows for the whole province;
//   map_first_clusters_ms opening the map -> the first page's clusters drawn;
//   map_load_ms         opening the map -> every point loaded and drawn (the data's fetch);
//   map_render_ms       the frame after the last page: the view's grid built over every
//                       point, the cells in view drawn;
//   map_fps             frames per second while panning (a pointer drag, 2 s);
//   map_zoom_fps        frames per second while zooming (the wheel, 1 s in, 1 s out);
//   map_live_update_ms  a facility created through the API while the whole province's map
//                       is open: its answer -> the point on the map (median of 5; the page
//                       patches in what changed since its checkpoint); map_live_move_ms the
//                       same for a facility moved; map_live_update_max_ms the slowest of both;
//   xlsx_s, xlsx_rows   the coverage report as XLSX through the browser (click -> download);
//   records_xlsx_browser_s, records_xlsx_browser_rows   the visits of the registry's
//                       filter as XLSX from its button (click -> download): every visit, or
//                       those of the --records_query search; xlsx_100k_browser_s when that
//                       is 100,000 rows or more (90,000 with the search: about 100,000).
// Usage: node console_browser.mjs --base=URL --user=U --password=P --console_dir=DIR
//        --node_modules=DIR [--chromium=PATH] [--records_query=WORDS]
// KCNET_CONSOLE_BENCH_SKIP=map,xlsx (environment) leaves those parts out.
import { gzipSync } from "node:zlib";
import { readFileSync, readdirSync, mkdtempSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const skip = new Set((process.env.KCNET_CONSOLE_BENCH_SKIP ?? "").split(","));
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    return [m[1], m[2]];
  }),
);
const require = createRequire(join(args.node_modules, "noop.js"));
const { chromium } = require("playwright-core");
const emit = (metric, value, unit) =>
  console.log(JSON.stringify({ bench: "console", metric, value: Number(value.toFixed(3)), unit }));
// KCNET_CONSOLE_BENCH_ONLY=map,xlsx runs only those phases (load, search, map, xlsx, records); all by default;
// KCNET_CONSOLE_BENCH_SKIP (above) leaves phases out.
const only = (process.env.KCNET_CONSOLE_BENCH_ONLY ?? "").split(",").filter(Boolean);
const phase = (name) => (only.length === 0 || only.includes(name)) && !skip.has(name);
const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.95))];

// Where the time goes under load (KCNET_CONSOLE_BENCH_TRACE): the CPU time that the
// server's threads (console_bench, this script's grandparent) and the browser's (this
// script's descendants) ran, and the time they waited runnable for a CPU, from Linux's
// /proc/PID/task/TID/schedstat (run ns, wait ns, slices).
const children = () => {
  const parent = new Map();
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      parent.set(Number(pid), Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[1]));
    } catch {} // gone meanwhile
  }
  return parent;
};
const descendants = (root) => {
  const parent = children();
  const out = [];
  for (const pid of parent.keys()) for (let p = pid; p > 1; p = parent.get(p) ?? 0) if (p === root) { out.push(pid); break; }
  return out.filter((pid) => pid !== root);
};
const cpu = (pids) => {
  let run = 0, wait = 0;
  for (const pid of pids) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const [r, w] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
        run += r / 1e6;
        wait += w / 1e6;
      }
    } catch {} // gone meanwhile
  }
  return { run, wait };
};
const serverPid = Number(readFileSync(`/proc/${process.ppid}/stat`, "utf8").split(") ")[1].split(" ")[1]);
const cpuNow = () => ({ server: cpu([serverPid]), browser: cpu(descendants(process.pid)) });
const cpuSince = (before, what, n) => {
  const now = cpuNow();
  const per = (k, f) => Math.round((now[k][f] - before[k][f]) / n);
  console.error(`${what}, per ${n === 1 ? "run" : "item"}: server ran ${per("server", "run")} ms, waited for a CPU ${per("server", "wait")} ms;` +
    ` browser ran ${per("browser", "run")} ms, waited ${per("browser", "wait")} ms (load ${readFileSync("/proc/loadavg", "utf8").split(" ")[0]})`);
};

const launchArgs = ["--headless", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];
if (process.getuid?.() === 0) launchArgs.push("--no-sandbox");
const browser = await chromium.launch({ executablePath: args.chromium ?? "/usr/bin/chromium", args: launchArgs });
const work = mkdtempSync(join(tmpdir(), "kcnet-console-bench-"));
try {
  // The session cookie, as the sign-in page gets it.
  const signIn = await fetch(`${args.base}/auth/sign-in`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
    body: JSON.stringify({ username: args.user, password: args.password }),
  });
  if (!signIn.ok) throw new Error(`sign-in: ${signIn.status}`);
  const [pair] = signIn.headers.get("set-cookie").split(";");
  const [name, value] = pair.split("=");
  const url = new URL(args.base);
  const cookie = { name, value, domain: url.hostname, path: "/", httpOnly: true, sameSite: "Strict" };
  const newPage = async () => {
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, acceptDownloads: true });
    await context.addCookies([cookie]);
    return { context, page: await context.newPage() };
  };

  // First load of the queue, cold.
  const loads = [];
  const inPageLoads = [];
  const loadCpu = cpuNow();
  let slowest = { ms: 0, entries: [] };
  const marks = [];
  for (let i = 0; i < (phase("load") ? 21 : 0); i++) {
    const { context, page } = await newPage();
    // The page's own clock: when the count was first in the document (navigation start = 0).
    await page.addInitScript(() => {
      const seen = new MutationObserver(() => {
        if (document.getElementById("queue-count")) {
          window.kcnetQueueShownMs = performance.now();
          seen.disconnect();
        }
      });
      seen.observe(document, { subtree: true, childList: true });
    });
    const started = performance.now();
    await page.goto(`${args.base}/#/queue`);
    await page.locator("#queue-count").waitFor();
    const ms = performance.now() - started;
    if (i > 0) {
      // the first warms the server, not the browser
      loads.push(ms);
      inPageLoads.push(await page.evaluate(() => window.kcnetQueueShownMs));
    }
    if (process.env.KCNET_CONSOLE_BENCH_TRACE && i > 0) {
      // The critical path of each load (page clock, ms): the bundle fetched, WhoAmI and the
      // queue's list sent, the list's answer in, the count shown.
      marks.push(await page.evaluate(() => {
        const at = (part, f) => {
          const e = performance.getEntriesByType("resource").find((r) => r.name.includes(part));
          return e ? Math.round(f(e)) : -1;
        };
        return [at("/assets/app-", (e) => e.responseEnd), at("WhoAmI", (e) => e.requestStart),
          at("ListSupportRequests", (e) => e.requestStart), at("ListSupportRequests", (e) => e.responseEnd),
          Math.round(window.kcnetQueueShownMs)];
      }));
    }
    if (process.env.KCNET_CONSOLE_BENCH_TRACE && i > 0 && ms > slowest.ms) {
      slowest = { ms, inPage: inPageLoads.at(-1), entries: await page.evaluate(() => performance.getEntries().map((e) =>
        [e.entryType, e.name.slice(-48), Math.round(e.startTime), Math.round(e.duration)])) };
    }
    await context.close();
  }
  if (loads.length > 0) {
    emit("first_load_p95_ms", p95(loads), "ms");
    emit("first_load_page_p95_ms", p95(inPageLoads), "ms");
  }
  if (process.env.KCNET_CONSOLE_BENCH_TRACE && loads.length > 0) {
    cpuSince(loadCpu, "cold loads", 21);
    console.error("loads (driver, page):", JSON.stringify(loads.map((x, k) => [Math.round(x), Math.round(inPageLoads[k])])));
    console.error("slowest:", JSON.stringify(slowest));
    const median = (k) => [...marks.map((m) => m[k])].sort((a, b) => a - b)[marks.length >> 1];
    console.error(`critical path, medians (ms from navigation): app.js in ${median(0)}, WhoAmI sent ${median(1)},` +
      ` ListSupportRequests sent ${median(2)}, answered ${median(3)}, count shown ${median(4)}`);
  }
  const dist = args.console_dir;
  // Every hashed script and style sheet (console/scripts/build.mjs: app, boot, the chunks
  // and the lazily loaded pages); first_load_js_css_gzip_bytes: those index.html names
  // (what the first load fetches).
  const assets = readdirSync(join(dist, "assets")).filter((f) => /^[A-Za-z]+-[A-Za-z0-9]+\.(js|css)$/.test(f));
  const gz = (files) => files.reduce((n, f) => n + gzipSync(readFileSync(join(dist, "assets", f))).length, 0);
  emit("js_css_gzip_bytes", gz(assets), "bytes");
  const html = readFileSync(join(dist, "index.html"), "utf8");
  emit("first_load_js_css_gzip_bytes", gz(assets.filter((f) => html.includes(`assets/${f}"`))), "bytes");

  // Registry search: typed -> first results (or none) rendered.
  const { context, page } = await newPage();
  if (phase("search")) {
  await page.goto(`${args.base}/#/registry`);
  await page.locator("#registry-count", { hasText: /\d/ }).waitFor({ timeout: 600000 });
  const searches = [];
  const driven = [];
  const calls = [];
  await page.evaluate(() => performance.clearResourceTimings());
  const searchCpu = cpuNow();
  const words = ["may tre", "banh da", "co khi", "det", "go", "gom", "nuoc mam", "mien", "bun", "cho"];
  for (let i = 0; i < 20; i++) {
    const query = `${words[i % words.length]} ${i < 10 ? "" : i}`.trim();
    // Typed in the page itself (the value, then the input event, as a keyboard makes it) and
    // timed by the page's clock up to the frame after the results were rendered: no
    // round trip to this driver is counted. The 200 ms typing pause is the page's, not the
    // search's: not counted. search_driver_ms adds the driver's one call into the page.
    await page.waitForTimeout(1000); // a person reads the results before typing again
    const started = performance.now();
    const inPage = await page.evaluate(async (q) => {
      const box = document.querySelector("#f-q");
      const done = () => document.querySelector("#registry-count")?.getAttribute("data-q") === q;
      const t0 = performance.now();
      box.value = q;
      box.dispatchEvent(new Event("input", { bubbles: true }));
      await new Promise((resolve, reject) => {
        const watch = new MutationObserver(() => done() && (watch.disconnect(), resolve()));
        watch.observe(document.querySelector("main"), { subtree: true, childList: true, attributes: true });
        setTimeout(() => reject(new Error(`search "${q}": no results in 120 s`)), 120000);
      });
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0))); // painted
      return performance.now() - t0;
    }, query);
    driven.push(performance.now() - started - 200);
    searches.push(inPage - 200);
    // The first ListFacilities call of this search, as the browser timed it (request to
    // last byte): the server's and the bridge's share of the figure above.
    const timings = await page.evaluate(() => {
      const all = performance.getEntriesByType("resource").filter((e) => e.name.includes("ListFacilities"));
      performance.clearResourceTimings();
      return all.map((e) => [Math.round(e.startTime), Math.round(e.requestStart), Math.round(e.responseEnd - e.requestStart),
        // trace: queued before sent, connecting, sent -> first byte, first -> last byte
        Math.round(e.requestStart - e.fetchStart), Math.round(e.connectEnd - e.connectStart),
        Math.round(e.responseStart - e.requestStart), Math.round(e.responseEnd - e.responseStart)]);
    });
    if (process.env.KCNET_CONSOLE_BENCH_TRACE) {
      // The same calls from node, the browser idle: the server's and the bridge's own time.
      const call = async (body) => {
        const t0 = performance.now();
        const res = await fetch(`${args.base}/kcnet.v1.FacilityService/ListFacilities`, {
          method: "POST",
          headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", Cookie: pair },
          body: JSON.stringify(body),
        });
        const json = await res.json();
        return [Math.round(performance.now() - t0), json];
      };
      const [first, page] = await call({ query, pageSize: 100 });
      const [second] = page.nextPageToken ? await call({ query, pageSize: 500, pageToken: page.nextPageToken }) : [0];
      console.error(query, Math.round(searches.at(-1)), JSON.stringify(timings), "node: first", first, "second", second);
    }
    const own = timings.filter((t) => t[1] > 0); // a call cut short (aborted) never started its request
    calls.push(own.length ? own[0][2] : 0);
  }
  if (process.env.KCNET_CONSOLE_BENCH_TRACE) cpuSince(searchCpu, "searches (with the trace's node calls and 1 s pauses)", 20);
  emit("search_p95_ms", p95(searches), "ms");
  emit("search_call_p95_ms", p95(calls), "ms");
  emit("search_driver_p95_ms", p95(driven), "ms");
  }

  // The map of the whole province.
  let started = performance.now();
  if (phase("map")) {
  await page.goto(`${args.base}/#/map`);
  // The first clusters: the first page of points drawn (the map draws as pages arrive).
  await page.waitForFunction(() => Number(document.querySelector("#map-canvas")?.getAttribute("data-points") ?? 0) > 0,
    null, { timeout: 600000, polling: 50 });
  emit("map_first_clusters_ms", performance.now() - started, "ms");
  await page.waitForFunction(() => /\d/.test(document.querySelector("#map-count")?.textContent ?? "") &&
    document.querySelector("#map-canvas")?.getAttribute("data-loaded") === "1", null, { timeout: 1200000 });
  emit("map_load_ms", performance.now() - started, "ms");
  if (process.env.KCNET_CONSOLE_BENCH_TRACE) {
    // Each ListMapPoints call as the browser timed it: start, sent -> first byte, first ->
    // last byte, bytes; the gap to the next call's start is the page's own work.
    const calls = await page.evaluate(() => performance.getEntriesByType("resource").filter((e) => e.name.includes("ListMapPoints"))
      .map((e) => [Math.round(e.startTime), Math.round(e.responseStart - e.requestStart), Math.round(e.responseEnd - e.responseStart), e.encodedBodySize]));
    console.error("map calls [start, sent->first byte, first->last byte, bytes]:", JSON.stringify(calls));
    // The same first page from node (the browser idle), gzipped and not.
    for (const encoding of ["gzip", "identity", "gzip"]) {
      const t0 = performance.now();
      const res = await fetch(`${args.base}/kcnet.v1.FacilityService/ListMapPoints`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", Cookie: pair, "Accept-Encoding": encoding },
        body: JSON.stringify({ pageSize: 20000 }),
      });
      const headers = performance.now() - t0;
      const text = await res.text();
      console.error(`map page from node (${encoding}): headers ${Math.round(headers)} ms, body ${Math.round(performance.now() - t0)} ms, ${text.length} chars`);
    }
  }
  const canvas = page.locator("#map-canvas");
  emit("map_points", Number(await canvas.getAttribute("data-points")), "points");
  emit("map_render_ms", Number(await canvas.getAttribute("data-render-ms")), "ms");
  const fps = await page.evaluate(async () => {
    const c = document.querySelector("#map-canvas");
    const r = c.getBoundingClientRect();
    let x = r.left + r.width / 2;
    const y = r.top + r.height / 2;
    const fire = (type) => c.dispatchEvent(new PointerEvent(type, { clientX: x, clientY: y, bubbles: true, pointerId: 1 }));
    fire("pointerdown");
    let frames = 0;
    const t0 = performance.now();
    await new Promise((done) => {
      const tick = () => {
        frames++;
        x += 4;
        fire("pointermove");
        if (performance.now() - t0 < 2000) requestAnimationFrame(tick);
        else done();
      };
      requestAnimationFrame(tick);
    });
    fire("pointerup");
    return frames / ((performance.now() - t0) / 1000);
  });
  emit("map_fps", fps, "frames/s");
  // Zooming: the wheel at the centre each frame, in for 1 s (factor 1.25 a step), then out
  // for 1 s: it crosses grid levels, each built once (one pass over the points).
  const zoomFps = await page.evaluate(async () => {
    const c = document.querySelector("#map-canvas");
    const r = c.getBoundingClientRect();
    const at = { clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true, cancelable: true };
    let frames = 0;
    const t0 = performance.now();
    await new Promise((done) => {
      const tick = () => {
        frames++;
        const inward = performance.now() - t0 < 1000;
        c.dispatchEvent(new WheelEvent("wheel", { ...at, deltaY: inward ? -100 : 100 }));
        if (performance.now() - t0 < 2000) requestAnimationFrame(tick);
        else done();
      };
      requestAnimationFrame(tick);
    });
    return frames / ((performance.now() - t0) / 1000);
  });
  emit("map_zoom_fps", zoomFps, "frames/s");
  // Live: a facility created (or moved) through the API while the province's map is open,
  // 5 times each, 1 s apart: from the write's answer (it answers once committed) to the
  // point on the map (the canvas' point count, or its patch count for a move). The page
  // patches its points with what changed since its checkpoint (ListMapPoints with
  // changed_since); a full re-read would take about map_load_ms.
  const call = (method, body) => page.evaluate(async ([m, b]) => {
    const r = await fetch(`/kcnet.v1.FacilityService/${m}`, {
      method: "POST", headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" }, body: JSON.stringify(b) });
    return { status: r.status, body: await r.json() };
  }, [method, body]);
  const some = (await call("ListFacilities", { pageSize: 1 })).body.facilities[0];
  const created = [], moved = [];
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const points = Number(await canvas.getAttribute("data-points"));
    const made = await call("CreateFacility", { facility: { communeId: some.communeId, name: `Cơ sở trực tiếp ${i}`, latitude: some.latitude + 0.01, longitude: some.longitude } });
    if (made.status !== 200) throw new Error(`CreateFacility: ${JSON.stringify(made.body)}`);
    const t0 = performance.now();
    await page.waitForFunction((n) => Number(document.querySelector("#map-canvas")?.dataset.points) >= n, points + 1, { timeout: 600000, polling: 5 });
    created.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 1000));
    const patches = Number(await canvas.getAttribute("data-patches"));
    const move = await call("UpdateFacility", { facility: { id: made.body.id, longitude: some.longitude + 0.02 }, updateMask: "longitude" });
    if (move.status !== 200) throw new Error(`UpdateFacility: ${JSON.stringify(move.body)}`);
    const t1 = performance.now();
    await page.waitForFunction((n) => Number(document.querySelector("#map-canvas")?.dataset.patches) >= n, patches + 1, { timeout: 600000, polling: 5 });
    moved.push(performance.now() - t1);
  }
  console.error("map live update ms (created, moved):", JSON.stringify([created.map(Math.round), moved.map(Math.round)]));
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  emit("map_live_update_ms", median(created), "ms");
  emit("map_live_update_max_ms", Math.max(...created, ...moved), "ms");
  emit("map_live_move_ms", median(moved), "ms");
  }

  // An XLSX export through the browser.
  if (phase("xlsx")) {
  await page.goto(`${args.base}/#/reports/coverage`);
  await page.locator("#report").waitFor({ timeout: 600000 });
  started = performance.now();
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 600000 }),
    page.getByRole("button", { name: /XLSX/ }).click(),
  ]);
  const file = join(work, "coverage.xlsx");
  await download.saveAs(file);
  emit("xlsx_s", (performance.now() - started) / 1000, "s");
  const sheet = execFileSync("unzip", ["-p", file, "xl/worksheets/sheet1.xml"], { encoding: "utf8", maxBuffer: 1 << 30 });
  emit("xlsx_rows", (sheet.match(/<row /g) ?? []).length, "rows");
  }
  // A record export through the browser: the visits of the registry's filter as XLSX from
  // its button, click to download (the user's wait; the 20 s is for 100k). Every
  // visit of the province, or with --records_query (console_bench passes "may tre" from
  // --scale=0.9, about 100,000 rows) that search typed first, as a user narrows the list.
  if (phase("records")) {
  await page.goto(`${args.base}/#/registry`);
  const button = page.locator("#export-visits-xlsx");
  await button.waitFor({ timeout: 600000 });
  if (args.records_query) {
    await page.locator("#f-q").fill(args.records_query);
    await page.locator(`#registry-count[data-q="${args.records_query}"]`).waitFor({ timeout: 600000 });
  }
  const recordsCpu = cpuNow();
  started = performance.now();
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 600000 }), button.click()]);
  const file = join(work, "lan-tham.xlsx");
  await download.saveAs(file);
  const seconds = (performance.now() - started) / 1000;
  if (process.env.KCNET_CONSOLE_BENCH_TRACE) cpuSince(recordsCpu, "records export (click -> file saved)", 1);
  emit("records_xlsx_browser_s", seconds, "s");
  const sheet = execFileSync("unzip", ["-p", file, "xl/worksheets/sheet1.xml"], { encoding: "utf8", maxBuffer: 1 << 30 });
  const rows = (sheet.match(/<row /g) ?? []).length - 1;
  emit("records_xlsx_browser_rows", rows, "rows");
  // About 100,000 rows: the whole province at --scale=0.1 and up, or the search's tenth.
  if (rows >= (args.records_query ? 90000 : 100000)) emit("xlsx_100k_browser_s", seconds, "s");
  }
  await context.close();
} finally {
  await browser.close();
  rmSync(work, { recursive: true, force: true });
}
