// Browser test of the console's reports and plans pages (ctest console_pages, label
// browser): Debian's chromium driven by playwright-core against a real kcnet-server (gRPC +
// the HTTP bridge) on a temp data dir seeded with the demo (kcnet-admin seed-demo), on
// free ports; tablets are the `kcnet` CLI. It checks:
//   - on every report page, the figures shown equal the API's answer for the same filter
//     (the test asks ReportService through the bridge with the page's own cookie);
//   - the filters (org unit, dates, year) live in the URL and feed both the page and its
//     exports; an XLSX and a CSV download, and the XLSX reads back (unzip: the workbook's
//     XML holds the filtered commune and nothing of the others);
//   - a district coordinator sees only its district on every report and export, and a unit
//     of another district answers as one that does not exist;
//   - the outcomes page says "not yet" while the server answers UNIMPLEMENTED;
//   - the province officer revises the plan (the reason is required), the history lists
//     the revision and the budget page shows the new planned amount;
//   - axe-core: no serious or critical violation on each page; no CSP violation;
//   - screenshots at 1366x768 and 768x1024 in --artifacts.
// Exit 77 (ctest: skipped) when chromium is missing or kcnet-server has no HTTP bridge.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  launchChromium,
  pageChecks,
  parseArgs,
  requireBrowserAndConsole,
  stopAndRemove,
} from "./harness.mjs";

const args = parseArgs();
requireBrowserAndConsole(args);

const step = (what) => console.log(`-- ${what}`);
const work = mkdtempSync(join(tmpdir(), "kcnet-pages-"));
const dataDir = join(work, "data");
mkdirSync(dataDir);
let server;
let browser;
let currentPage; // for a screenshot when a step fails

async function startServer() {
  execFileSync(args.admin, ["seed-demo", `--data_dir=${dataDir}`], { stdio: "ignore" });
  server = spawn(
    args.server,
    ["--listen=127.0.0.1:0", `--data_dir=${dataDir}`, "--http_listen=127.0.0.1:0", `--console_dir=${args.console_dir}`],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  server.stderr.on("data", (d) => (log += d));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`kcnet-server did not start:\n${out}${log}`)), 30000);
    server.stdout.on("data", (d) => {
      out += d;
      const grpc = /kcnet-server listening on (\S+)/.exec(out);
      const http = /console on (\S+)/.exec(out);
      if (grpc && http) {
        clearTimeout(timer);
        resolve({ grpcAddress: grpc[1], base: http[1].replace(/\/$/, "") });
      }
    });
    server.once("exit", (code) => reject(new Error(`kcnet-server exited ${code}:\n${log}`)));
  });
}

// "1.234.567 ₫" or "1.234" -> 1234567n; the page's numbers in Vietnamese grouping.
const shownInt = (text) => BigInt(text.replace(/[^\d-]/g, "") || "0");

async function main() {
  step("seed the demo data directory and start kcnet-server with the bridge");
  const { grpcAddress, base } = await startServer();

  const tablet = (user) => {
    const store = join(work, `${user}.db`);
    const pw = join(work, `${user}.pw`);
    writeFileSync(pw, `demo-${user}-pass\n`);
    const run = (...argv) => execFileSync(args.kcnet, [`--store=${store}`, ...argv], { encoding: "utf8" });
    run(`--server=${grpcAddress}`, "login", user, `--password-file=${pw}`);
    run("sync");
    return { run };
  };
  const addFacility = (t, name) =>
    /registered facility (\S+)/.exec(t.run("facility", "add", `--name=${name}`, "--owner=Nguyễn Văn Tư", "--workers=8"))[1];
  const submitRequest = (t, facility, amount) => {
    const r = /drafted request (\S+)/.exec(
      t.run("request", "draft", `--facility=${facility}`, "--category=machinery", `--amount=${amount}`,
        "--description=Máy tráng bánh đa"),
    )[1];
    t.run("request", "submit", r);
    return r;
  };

  step("tablets: collab1 (district Đông) adds a facility, visits it, submits two requests; collab2 (Tây) one");
  const collab1 = tablet("collab1");
  const f1 = addFacility(collab1, "Cơ sở bánh đa Tư");
  collab1.run("visit", "record", `--facility=${f1}`, "--notes=Khảo sát lần đầu");
  submitRequest(collab1, f1, "80.000.000");
  submitRequest(collab1, f1, "45.000.000");
  const twin = addFacility(collab1, "CƠ SỞ BÁNH ĐA TƯ"); // the same folded name, same commune
  collab1.run("sync");
  const collab2 = tablet("collab2");
  const f3 = addFacility(collab2, "Cơ sở dệt Lụa Tây");
  collab2.run("visit", "record", `--facility=${f3}`, "--notes=Thăm");
  submitRequest(collab2, f3, "30.000.000");
  collab2.run("sync");

  step("launch chromium");
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, timezoneId: "Europe/Paris",
    acceptDownloads: true });
  const page = await context.newPage();
  currentPage = page;
  const { problems, axeCheck, shoot } = pageChecks(page, args.artifacts);
  // The API's answer, asked from the page with its own cookie (the bridge's Connect JSON).
  const api = (method, body = {}) =>
    page.evaluate(async ([m, b]) => {
      const res = await fetch(`/kcnet.v1.${m}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
        body: JSON.stringify(b),
      });
      return { status: res.status, body: await res.json() };
    }, [method, body]);
  const signIn = async (user) => {
    await page.goto(`${base}/`);
    await page.getByLabel("Tên đăng nhập").fill(user);
    await page.getByLabel("Mật khẩu").fill(`demo-${user}-pass`);
    await page.getByRole("button", { name: "Đăng nhập" }).click();
    await page.locator("main h1", { hasText: "Hàng chờ duyệt" }).waitFor();
  };
  const figures = (selector, figure) =>
    page.locator(`${selector} [data-figure="${figure}"]`).evaluateAll((cells) => cells.map((c) => c.textContent));
  const report = async (kind) => {
    await page.locator(`#report[data-kind="${kind}"]`).waitFor();
  };
  const n = (v) => BigInt(v ?? 0); // int64 are JSON strings, absent when 0
  // The API's answer for the report the page shows, for the same summaries: the reports
  // follower may still be counting the tablets' last writes, so the page is reloaded
  // until it shows the same `as_of_op` as the API's answer.
  const sameAnswer = async (kind, method, body) => {
    for (let attempt = 0; ; attempt++) {
      await report(kind);
      const answer = (await api(`ReportService/${method}`, body)).body;
      const shownAsOf = await page.locator("#report").getAttribute("data-as-of");
      if (shownAsOf === String(answer.asOfOp ?? 0)) return answer;
      if (attempt > 20) throw new Error(`${kind}: the page shows op ${shownAsOf}, the API ${answer.asOfOp}`);
      await page.waitForTimeout(200);
      await page.reload();
    }
  };

  const signOut = async () => {
    await page.getByRole("button", { name: "Đăng xuất" }).click();
    await page.locator("main h1", { hasText: "Đăng nhập" }).waitFor();
  };
  const unitsOf = async () => {
    const out = [];
    const walk = async (parent) => {
      const r = await api("OrgUnitService/ListOrgUnits", { parentId: String(parent), pageSize: 500 });
      for (const u of r.body.orgUnits ?? []) {
        out.push(u);
        if (u.level !== "ORG_UNIT_LEVEL_COMMUNE") await walk(u.id);
      }
    };
    await walk(0);
    return out;
  };

  step("officer1: the ids of the province's units (district Tây is out of coord1's scope)");
  await signIn("officer1");
  const tayDistrict = (await unitsOf()).find((u) => u.code === "902");
  assert.ok(tayDistrict, "district 902");
  await signOut();

  step("coord1: the report pages' numbers equal the API's");
  await signIn("coord1");
  const units = await unitsOf();
  const myCommunes = units.filter((u) => u.level === "ORG_UNIT_LEVEL_COMMUNE");
  assert.ok(myCommunes.length >= 3 && myCommunes.every((u) => u.code.startsWith("901")), "coord1 works in district 901");
  const anBinh = myCommunes.find((u) => u.code === "90101");

  await page.getByRole("link", { name: "Báo cáo" }).click();
  const coverage = await sameAnswer("coverage", "GetCoverage", { filter: {} });
  const shownCommunes = await page.locator("#coverage-table tbody tr").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-commune-id")));
  assert.deepEqual(shownCommunes, (coverage.communes ?? []).map((c) => c.communeId), "the same communes");
  assert.ok(shownCommunes.every((id) => myCommunes.some((u) => u.id === id)), "only coord1's communes");
  assert.deepEqual((await figures("#coverage-table tbody", "registered")).map(shownInt),
    (coverage.communes ?? []).map((c) => n(c.registeredFacilities)));
  assert.deepEqual((await figures("#coverage-table tbody", "visited")).map(shownInt),
    (coverage.communes ?? []).map((c) => n(c.visitedFacilities)));
  assert.equal(shownInt((await figures("#coverage-table tfoot", "registered"))[0]), n(coverage.total.registeredFacilities));
  assert.equal(shownInt((await figures("#coverage-table tfoot", "visited"))[0]), n(coverage.total.visitedFacilities));
  assert.ok(n(coverage.total.registeredFacilities) >= 4n, "the demo's 3 facilities of district 901 and collab1's");
  await page.locator("#chart-visits svg").waitFor();
  await axeCheck("reports: coverage");
  await shoot("reports-coverage");

  await page.getByRole("link", { name: "Tiến độ xử lý" }).click();
  const pipeline = await sameAnswer("pipeline", "GetPipeline", { filter: {} });
  const shownStatuses = await page.locator("#pipeline-table tbody tr").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-status")));
  assert.equal(shownStatuses.length, (pipeline.statuses ?? []).length);
  assert.deepEqual((await figures("#pipeline-table", "requests")).map(shownInt),
    (pipeline.statuses ?? []).map((s) => n(s.requests)));
  const submitted = (pipeline.statuses ?? []).find((s) => s.status === "REQUEST_STATUS_SUBMITTED");
  assert.equal(n(submitted?.requests), 2n, "collab1's two submitted requests, not collab2's");
  assert.equal(await page.locator("#pipeline-oldest tbody tr").count(), (pipeline.oldest ?? []).length);
  await axeCheck("reports: pipeline");
  await shoot("reports-pipeline");

  await page.getByRole("link", { name: "Hoạt động cộng tác viên" }).click();
  const activity = await sameAnswer("activity", "GetActivity", { filter: {} });
  const shownUsers = await page.locator("#activity-table tbody tr").evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-user-id")));
  assert.deepEqual(shownUsers, (activity.collaborators ?? []).map((c) => c.userId));
  // "N trên tổng M": the rows shown of the whole listing (one page here).
  assert.equal(await page.locator("#activity-shown").getAttribute("data-total"),
    String(activity.totalCollaborators ?? 0));
  assert.deepEqual((await figures("#activity-table", "visits")).map(shownInt),
    (activity.collaborators ?? []).map((c) => n(c.visits)));
  assert.deepEqual((await figures("#activity-table", "requests")).map(shownInt),
    (activity.collaborators ?? []).map((c) => n(c.requests)));
  const main = await page.locator("main").innerText();
  assert.ok(main.includes("Nguyễn Văn An"), "collab1 is listed");
  assert.ok(!main.includes("Trần Thị Bình"), "collab2 (another district) is not");
  await axeCheck("reports: activity");

  await page.getByRole("link", { name: "Chất lượng dữ liệu" }).click();
  const quality = await sameAnswer("quality", "GetQuality", { filter: {} });
  for (const [figure, field] of [["visits", "visits"], ["visits_without_gps", "visitsWithoutGps"],
    ["visits_far_from_facility", "visitsFarFromFacility"],
    ["approved_without_recent_visit", "approvedWithoutRecentVisit"]]) {
    assert.equal(shownInt((await figures("#quality-facts", figure))[0]), n(quality[field]), figure);
  }
  // Every visit the report counts is one coord1 may list (its district's), and no other.
  let myVisits = 0n;
  for (const commune of myCommunes) {
    const listed = (await api("VisitService/ListVisits", { orgUnitId: commune.id, pageSize: 500 })).body;
    myVisits += BigInt((listed.visits ?? []).length);
  }
  assert.ok(myVisits > 0n, "the demo has visits in district 901");
  assert.equal(n(quality.visits), myVisits, "the visits of coord1's district only");
  await axeCheck("reports: quality");
  await shoot("reports-quality");

  await page.getByRole("link", { name: "Kinh phí so với kế hoạch" }).click();
  const year = Number(new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Ho_Chi_Minh", year: "numeric" }).format(new Date()));
  const budget = await sameAnswer("budget", "GetBudget", { filter: {}, year });
  assert.ok(budget.hasPlan, "the demo's plan");
  assert.deepEqual((await figures("#budget-table tbody", "planned")).map(shownInt),
    (budget.rows ?? []).map((r) => n(r.plannedVnd)));
  assert.deepEqual((await figures("#budget-table tbody", "remaining")).map(shownInt),
    (budget.rows ?? []).map((r) => n(r.remainingVnd)));
  assert.match((await figures("#budget-table tbody", "planned"))[0], /500\.000\.000\s₫/);
  await axeCheck("reports: budget");
  await shoot("reports-budget");

  await page.getByRole("link", { name: "Kết quả hỗ trợ" }).click();
  const outcomes = await api("ReportService/GetOutcomes", { filter: {} });
  if (outcomes.status === 501 || outcomes.body.code === "unimplemented") {
    await page.locator("#report-not-yet", { hasText: "Chưa có" }).waitFor();
  } else {
    await report("outcomes");
    assert.equal(await page.locator("#outcomes-table tbody tr").count(), (outcomes.body.rows ?? []).length);
  }
  await axeCheck("reports: outcomes");

  step("filters in the URL: one commune, then dates; the page equals the API for that filter");
  await page.getByRole("link", { name: "Độ phủ" }).click();
  await report("coverage");
  await page.getByLabel("Đơn vị").selectOption(anBinh.id);
  await page.waitForURL(new RegExp(`unit=${anBinh.id}`));
  await page.locator(`#coverage-table tbody tr[data-commune-id="${anBinh.id}"]`).waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#coverage-table tbody tr").length === 1);
  const one = (await api("ReportService/GetCoverage", { filter: { orgUnitId: anBinh.id } })).body;
  assert.equal(shownInt((await figures("#coverage-table tfoot", "registered"))[0]), n(one.total.registeredFacilities));
  // A link with the filter opens the same view.
  await page.reload();
  await page.locator(`#coverage-table tbody tr[data-commune-id="${anBinh.id}"]`).waitFor();
  // The unit list loads on its own call: the table may be drawn before the options are.
  await page.getByLabel("Đơn vị").locator(`option[value="${anBinh.id}"]`).waitFor({ state: "attached" });
  assert.equal(await page.getByLabel("Đơn vị").inputValue(), anBinh.id);

  step("downloads honour the filter: XLSX reads back, CSV matches");
  const download = async (name) => {
    const [d] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name }).click()]);
    const path = join(work, d.suggestedFilename());
    await d.saveAs(path);
    return { path, file: d.suggestedFilename() };
  };
  const xlsx = await download("Tải XLSX (Excel)");
  assert.equal(xlsx.file, "coverage.xlsx");
  await page.locator('#exports li[data-export-state="done"]', { hasText: "coverage.xlsx" }).waitFor();
  const entries = execFileSync("unzip", ["-Z1", xlsx.path], { encoding: "utf8" });
  assert.match(entries, /xl\/worksheets\/sheet1\.xml/);
  // Written row by row (constant memory): the strings are inline in the sheet.
  const sheetXml = execFileSync("unzip", ["-p", xlsx.path, "xl/worksheets/sheet1.xml"], { encoding: "utf8" });
  assert.ok(sheetXml.includes(anBinh.name), `the filtered commune ${anBinh.name} is in the workbook`);
  for (const other of units.filter((u) => u.level === "ORG_UNIT_LEVEL_COMMUNE" && u.id !== anBinh.id)) {
    assert.ok(!sheetXml.includes(other.name), `${other.name} is filtered out of the workbook`);
  }
  assert.ok(!sheetXml.includes("Tân Hòa"), "nothing of another district");
  const csv = await download("Tải CSV");
  assert.equal(csv.file, "coverage.csv");
  const csvText = readFileSync(csv.path, "utf8");
  const anBinhLine = csvText.split(/\r?\n/).find((l) => l.includes(anBinh.name));
  assert.ok(anBinhLine, `the CSV has ${anBinh.name}:\n${csvText}`);
  assert.ok(anBinhLine.includes(`,${n(one.communes[0].registeredFacilities)},`), `registered figure in ${anBinhLine}`);
  // Rows start with the commune id; the total row's is 0.
  const communeRows = csvText.split(/\r?\n/).filter((l) => /^[1-9]\d*,/.test(l));
  assert.equal(communeRows.length, 1, `one commune row:\n${csvText}`);

  step("scope: another district as the filter answers as one that does not exist");
  const tay = await api("ReportService/GetCoverage", { filter: { orgUnitId: "999999" } });
  assert.equal(tay.status, 404, "an unknown unit");
  const unknownMessage = tay.body.message;
  await page.goto(`${base}/?unit=999999#/reports/coverage`);
  await page.getByRole("alert").waitFor();
  const other = await api("ReportService/GetCoverage", { filter: { orgUnitId: tayDistrict.id } });
  assert.equal(other.status, 404, "district Tây is out of coord1's scope");
  assert.equal(other.body.message.replace(tayDistrict.id, "ID"), unknownMessage.replace("999999", "ID"),
    "out of scope reads as does-not-exist");
  const otherExport = await page.evaluate(async (id) => {
    const res = await fetch("/kcnet.v1.ReportService/ExportReport", {
      method: "POST",
      headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1" },
      body: (() => {
        const json = new TextEncoder().encode(JSON.stringify({ report: "coverage", format: "EXPORT_FORMAT_CSV", filter: { orgUnitId: id } }));
        const framed = new Uint8Array(5 + json.length);
        new DataView(framed.buffer).setUint32(1, json.length);
        framed.set(json, 5);
        return framed;
      })(),
    });
    return new TextDecoder().decode(await res.arrayBuffer());
  }, tayDistrict.id);
  assert.ok(/not_found/.test(otherExport) && !otherExport.includes("Tân Hòa"), `no export of another district: ${otherExport}`);

  step("registry: the list equals the API's; a search without diacritics; duplicates flagged");
  const listAll = async (query) => {
    const ids = [];
    let pageToken = "";
    do {
      const r = await api("FacilityService/ListFacilities", { query, pageSize: 500, pageToken });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      ids.push(...(r.body.facilities ?? []).map((f) => f.id));
      pageToken = r.body.nextPageToken ?? "";
    } while (pageToken);
    return ids.sort();
  };
  const shownFacilities = () =>
    page.locator("[data-facility-id]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-facility-id")).sort());
  await page.goto(`${base}/#/registry`);
  await page.locator("#registry-count", { hasText: "cơ sở" }).waitFor();
  const everything = await listAll("");
  assert.equal(shownInt(await page.locator("#registry-count").innerText()), BigInt(everything.length));
  assert.deepEqual(await shownFacilities(), everything, "the rows in view are the API's (a short list)");
  await axeCheck("registry");
  await page.getByRole("searchbox", { name: "Tìm kiếm" }).fill("banh da tu");
  await page.waitForURL(/q=banh/);
  await page.waitForFunction(() => document.querySelectorAll("[data-facility-id]").length === 2);
  assert.deepEqual(await shownFacilities(), [f1, twin].sort(), "found without diacritics");
  assert.deepEqual(await listAll("banh da tu"), [f1, twin].sort(), "the API's answer");
  assert.equal(await page.locator(".badge", { hasText: "Có thể trùng" }).count(), 2, "both flagged");
  await shoot("registry");
  await page.getByRole("searchbox", { name: "Tìm kiếm" }).fill("det lua");
  await page.waitForURL(/q=det/);
  await page.locator("#registry-count", { hasText: /^0 cơ sở/ }).waitFor();
  assert.deepEqual(await listAll("det lua"), [], "another district's facility is not found");

  step("a facility's page: its visit and requests on a timeline, its twin");
  await page.goto(`${base}/#/facility/${f1}`);
  await page.locator("#facility-timeline li").first().waitFor();
  assert.equal(await page.locator('#facility-timeline li[data-kind="visit"]').count(), 1);
  assert.equal(await page.locator('#facility-timeline li[data-kind="request"]').count(), 2);
  await page.locator("#facility-duplicates", { hasText: "CƠ SỞ BÁNH ĐA TƯ" }).waitFor();
  await axeCheck("facility");
  await shoot("facility");
  await page.goto(`${base}/#/facility/${f3}`);
  await page.getByRole("alert").filter({ hasText: "Không tìm thấy cơ sở này" }).waitFor();

  step("keyboard only: search the registry and open a facility");
  await page.goto(`${base}/#/registry`);
  await page.locator("#registry-count", { hasText: "cơ sở" }).waitFor();
  const tabTo = async (predicate, what) => {
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate(predicate)) return;
    }
    throw new Error(`Tab never reached ${what}`);
  };
  await tabTo(() => document.activeElement?.id === "f-q", "the search box");
  await page.keyboard.type("xuong moc");
  await page.locator('#registry-count[data-q="xuong moc"]').waitFor();
  await tabTo(() => !!document.activeElement?.closest("[data-facility-id]"), "a facility");
  assert.match(await page.evaluate(() => document.activeElement.textContent), /Xưởng mộc Phú Lộc/);
  await page.keyboard.press("Enter");
  await page.locator("main h1", { hasText: "Xưởng mộc Phú Lộc" }).waitFor();

  step("map: the points are the API's facilities and visits with a location; a click opens one");
  await page.goto(`${base}/#/map`);
  await page.locator("#map-count", { hasText: "điểm" }).waitFor();
  const facilitiesWithPlace = [];
  {
    let pageToken = "";
    do {
      const r = (await api("FacilityService/ListFacilities", { pageSize: 500, pageToken })).body;
      facilitiesWithPlace.push(...(r.facilities ?? []).filter((f) => f.latitude || f.longitude));
      pageToken = r.nextPageToken ?? "";
    } while (pageToken);
  }
  const visitsAll = (await api("VisitService/ListVisits", { pageSize: 500 })).body.visits ?? [];
  const placed = new Set(facilitiesWithPlace.map((f) => f.id));
  const visitsWithPlace = visitsAll.filter((v) => v.latitude || v.longitude || placed.has(v.facilityId));
  const canvas = page.locator("#map-canvas");
  assert.equal(Number(await canvas.getAttribute("data-points")), facilitiesWithPlace.length + visitsWithPlace.length);
  assert.ok(facilitiesWithPlace.length >= 3, "the demo's facilities of district 901 have a place");
  const target = facilitiesWithPlace.find((f) => f.name.includes("Phú Lộc"));
  const view = JSON.parse(await canvas.getAttribute("data-view"));
  const box = await canvas.boundingBox();
  const x = box.width / 2 + (target.longitude - view.lng) * view.scale;
  const y = box.height / 2 - (target.latitude - view.lat) * view.scale;
  await axeCheck("map");
  await shoot("map");
  await canvas.click({ position: { x, y } });
  await page.waitForURL(new RegExp(`#/facility/${target.id}`));
  await page.locator("main h1", { hasText: "Phú Lộc" }).waitFor();

  step("map: zoomed out, every point is one cluster (the grid's buckets summed); a click lists them all");
  await page.goto(`${base}/#/map`);
  await page.locator("#map-count", { hasText: "điểm" }).waitFor();
  await canvas.focus();
  for (let i = 0; i < 30; i++) await page.keyboard.press("-");
  await page.waitForFunction(() => document.querySelector("#map-canvas")?.dataset.clusters === "1", null, { timeout: 10000 });
  {
    // The cluster sits at the mean of the points (a visit without GPS at its facility).
    const byId = new Map(facilitiesWithPlace.map((f) => [f.id, f]));
    const places = [
      ...facilitiesWithPlace.map((f) => [f.longitude, f.latitude]),
      ...visitsWithPlace.map((v) => (v.latitude || v.longitude ? [v.longitude, v.latitude] : [byId.get(v.facilityId).longitude, byId.get(v.facilityId).latitude])),
    ];
    const meanLng = places.reduce((a, p) => a + p[0], 0) / places.length;
    const meanLat = places.reduce((a, p) => a + p[1], 0) / places.length;
    const v = JSON.parse(await canvas.getAttribute("data-view"));
    const b = await canvas.boundingBox();
    await canvas.click({ position: { x: b.width / 2 + (meanLng - v.lng) * v.scale, y: b.height / 2 - (meanLat - v.lat) * v.scale } });
    await page.locator("#map-picked li").first().waitFor();
    const listed = await page.locator("#map-picked li a").evaluateAll((links) => links.map((a) => a.getAttribute("href")));
    assert.equal(listed.length, Math.min(200, places.length), "the cluster's list holds every point");
    const ids = new Set(facilitiesWithPlace.map((f) => `#/facility/${f.id}`));
    assert.ok(listed.every((href) => ids.has(href)), "each listed point links to one of the API's facilities");
  }

  step("map: live, a facility created and then moved elsewhere is patched in, with no reload and no re-read of the points");
  {
    // The tab's watch stream open (a closed tab's stream is freed within a second now).
    await page.locator("#live-state.live:not(.offline):not(.connecting)").waitFor({ timeout: 45000 });
    // Every ListMapPoints the page makes from now on: a full read has no changedSince.
    const mapCalls = [];
    const onRequest = (request) => {
      if (!request.url().endsWith("/kcnet.v1.FacilityService/ListMapPoints")) return;
      mapCalls.push(JSON.parse(request.postData() ?? "{}"));
    };
    page.on("request", onRequest);
    const before = Number(await canvas.getAttribute("data-points"));
    const patchesBefore = Number(await canvas.getAttribute("data-patches"));
    const made = await api("FacilityService/CreateFacility", {
      facility: { communeId: facilitiesWithPlace[0].communeId, name: "Cơ sở bản đồ trực tiếp", latitude: facilitiesWithPlace[0].latitude + 0.001, longitude: facilitiesWithPlace[0].longitude },
    });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const createdAt = Date.now();
    await page.waitForFunction((n) => Number(document.querySelector("#map-canvas")?.dataset.points) === n, before + 1, { timeout: 10000 });
    console.log(`    the new facility on the open map ${Date.now() - createdAt} ms after CreateFacility answered`);
    await page.locator("#map-count", { hasText: new Intl.NumberFormat("vi-VN").format(before + 1) }).waitFor();
    assert.deepEqual(mapCalls.filter((c) => !c.changedSince), [], "no full re-read of the map's points");
    // Moved half a degree east: the same number of points, and the fitted view (Xem toàn
    // bộ: every point) reaches further east, so the patch placed it where it is now.
    await page.getByRole("button", { name: "Xem toàn bộ" }).click();
    const fittedBefore = JSON.parse(await canvas.getAttribute("data-view"));
    const moved = await api("FacilityService/UpdateFacility", {
      facility: { id: made.body.id, longitude: facilitiesWithPlace[0].longitude + 0.5 },
      updateMask: "longitude",
    });
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    await page.waitForFunction((n) => Number(document.querySelector("#map-canvas")?.dataset.patches) >= n, patchesBefore + 2, { timeout: 10000 });
    assert.equal(Number(await canvas.getAttribute("data-points")), before + 1, "moved, not added");
    const fittedAfter = JSON.parse(await canvas.getAttribute("data-view"));
    assert.ok(fittedAfter.lng > fittedBefore.lng + 0.1, `the fitted view follows the moved facility: ${fittedBefore.lng} -> ${fittedAfter.lng}`);
    page.off("request", onRequest);
    assert.ok(mapCalls.length >= 2, `the page asked for the changes (${mapCalls.length} calls)`);
    assert.deepEqual(mapCalls.filter((c) => !c.changedSince), [], "no full re-read of the map's points");
  }

  step("the plans list for the coordinator is read-only");
  await page.goto(`${base}/#/plans`);
  await page.locator("#plans-table tbody tr").first().waitFor();
  await page.locator("#plans-table tbody tr a").first().click();
  await page.locator("#plan-revision").waitFor();
  assert.equal(await page.locator(".plan-editor").count(), 0, "no editor for a coordinator");
  await axeCheck("plan (coordinator)");

  step("officer1 revises the plan: a reason is required; the history and the budget follow");
  await signOut();
  await signIn("officer1");
  await page.getByRole("link", { name: "Kế hoạch" }).click();
  await page.locator("#plans-table tbody tr a").first().click();
  await page.locator(".plan-editor").waitFor();
  await axeCheck("plan editor");
  const amount1 = page.getByLabel("Kinh phí kế hoạch (đồng) 1", { exact: true });
  assert.equal(await amount1.inputValue(), "500.000.000");
  await amount1.fill("750.000.000");
  await page.getByRole("button", { name: "Lưu kế hoạch" }).click();
  await page.locator("#plan-error", { hasText: "Lý do sửa: bắt buộc" }).waitFor();
  assert.match(await page.locator("#plan-revision").innerText(), /Lần sửa: 1/, "nothing saved");
  await amount1.fill("75O.000"); // a letter O: refused, naming the line
  await page.getByLabel("Lý do sửa (bắt buộc)").fill("Bổ sung vốn máy móc");
  await page.getByRole("button", { name: "Lưu kế hoạch" }).click();
  await page.locator("#plan-error", { hasText: "Dòng 1" }).waitFor();
  await amount1.fill("750.000.000");
  await page.getByRole("button", { name: "Lưu kế hoạch" }).click();
  await page.locator("#plan-message", { hasText: "lần sửa 2" }).waitFor();
  await page.locator('#plan-history tr[data-revision="2"]', { hasText: "Bổ sung vốn máy móc" }).waitFor();
  assert.match(await page.locator('#plan-history tr[data-revision="2"]').innerText(), /500\.000\.000 ₫.*→.*750\.000\.000 ₫/s);
  const provinceYear = /#\/plans\/(\d+)\/(\d+)/.exec(page.url());
  const revisions = (await api("PlanService/ListPlanRevisions",
    { provinceId: provinceYear[1], year: Number(provinceYear[2]) })).body.revisions;
  assert.equal(revisions.length, 2);
  assert.equal(await page.locator("#plan-history tbody tr").count(), 2);
  await shoot("plan-editor");

  step("officer1 creates next year's plan");
  await page.goto(`${base}/#/plans`);
  await page.getByRole("link", { name: `Lập kế hoạch năm ${Number(provinceYear[2]) + 1}` }).click();
  await page.getByRole("button", { name: "Thêm dòng" }).click();
  await page.getByLabel("Kinh phí kế hoạch (đồng) 1", { exact: true }).fill("1.200.000.000");
  await page.getByLabel("Số cơ sở theo kế hoạch 1", { exact: true }).fill("12");
  await page.getByLabel("Nguồn kinh phí 1", { exact: true }).selectOption("2");
  await page.getByRole("button", { name: "Tạo kế hoạch" }).click();
  await page.locator("#plan-message", { hasText: "lần sửa 1" }).waitFor();
  const created = (await api("PlanService/GetPlan", { provinceId: provinceYear[1], year: Number(provinceYear[2]) + 1 })).body;
  assert.equal(created.lines.length, 1);
  assert.equal(n(created.lines[0].plannedAmountVnd), 1200000000n);
  assert.equal(created.lines[0].funding, "FUNDING_SOURCE_NATIONAL");
  assert.match(await page.locator("#plan-total").innerText(), /1\.200\.000\.000\s₫/);

  await page.goto(`${base}/#/reports/budget`);
  const budget2 = await sameAnswer("budget", "GetBudget", { filter: {}, year });
  assert.deepEqual((await figures("#budget-table tbody", "planned")).map(shownInt),
    (budget2.rows ?? []).map((r) => n(r.plannedVnd)));
  assert.ok((budget2.rows ?? []).some((r) => n(r.plannedVnd) === 750000000n), "the revised line");
  assert.equal(shownInt((await figures("#budget-table tfoot", "planned"))[0]),
    (budget2.rows ?? []).reduce((a, r) => a + n(r.plannedVnd), 0n));

  step("the officer's coverage includes both districts");
  await page.goto(`${base}/#/reports/coverage`);
  const all = await sameAnswer("coverage", "GetCoverage", { filter: {} });
  assert.ok(all.communes.some((c) => c.communeName.includes("Tân Hòa")), "district Tây's commune");
  assert.equal(await page.locator("#coverage-table tbody tr").count(), all.communes.length);

  step("registry: a long list shows its first 100 rows, and the rest once scrolled to");
  const kilnCommune = (await unitsOf()).find((u) => u.level === "ORG_UNIT_LEVEL_COMMUNE").id;
  for (let i = 0; i < 130; i += 10) {
    await Promise.all(Array.from({ length: 10 }, async (_, k) => {
      const r = await api("FacilityService/CreateFacility",
        { facility: { communeId: kilnCommune, name: `Lò gạch Hưng Thịnh ${i + k}`, ownerName: "Trần Văn Bảy" } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }));
  }
  const kilns = await listAll("lo gach hung thinh");
  assert.equal(kilns.length, 130);
  await page.goto(`${base}/?q=lo+gach+hung+thinh#/registry`);
  await page.locator("#registry-count", { hasText: /^100\+ cơ sở/ }).waitFor();
  await page.locator(".vlist").evaluate((list) => (list.scrollTop = list.scrollHeight));
  await page.locator("#registry-count", { hasText: /^130 cơ sở/ }).waitFor();
  await page.locator(".vlist").evaluate((list) => (list.scrollTop = list.scrollHeight)); // the grown list's end
  const firstPage = ((await api("FacilityService/ListFacilities", { query: "lo gach hung thinh", pageSize: 100 })).body.facilities ?? [])
    .map((f) => f.id);
  await page.waitForFunction((first) =>
    [...document.querySelectorAll("[data-facility-id]")].some((r) => !first.includes(r.getAttribute("data-facility-id"))), firstPage);
  const inView = await shownFacilities();
  assert.ok(inView.length > 0 && inView.every((id) => kilns.includes(id)), "the rows in view are the API's");
  await page.goto(`${base}/#/reports/coverage`);
  await report("coverage");

  step("English");
  await page.getByRole("button", { name: "Switch to English" }).click();
  await page.locator("main h1", { hasText: "Reports: Coverage" }).waitFor();

  assert.deepEqual(problems, [], "no CSP violation or page error");
  console.log("console pages browser test: OK");
}

main()
  .then(() => (process.exitCode = 0))
  .catch(async (e) => {
    console.error(e);
    process.exitCode = 1;
    await currentPage?.screenshot({ path: join(args.artifacts, "pages-failure.png") }).catch(() => {});
    console.error(`page at failure: ${currentPage?.url()} (screenshot pages-failure.png)`);
  })
  .finally(async () => {
    await browser?.close().catch(() => {});
    await stopAndRemove([server], work);
  });
