// Browser test of the console's review work (ctest console_review, label browser): Debian's
// chromium driven by playwright-core against a real kcnet-server (gRPC + the HTTP bridge) on
// a temp data dir seeded with the demo, and `kcnet` CLI tablets. It checks:
//   - live: a tablet pushes a request and coord1's open queue shows it within 2 s, with no
//     reload; the WatchChanges stream is scoped (coord2 of another district gets no notice of
//     collab1's push, and does of collab2's) and capped per user;
//   - bulk actions: a reason is required for return; the exact count is confirmed; a result
//     per request (one applied, one refused because another officer decided it meanwhile);
//     the reason reaches collab1's tablet; "all N matching" names N;
//   - the conflicts inbox: two tablets of collab1 edit a facility's name offline; coord1 sees
//     both values side by side and restores the overwritten one; coord2 sees nothing;
//   - a coordinator never sees another area's records on these pages;
//   - keyboard use of the bulk bar; axe-core (no serious or critical violation) on each page;
//     screenshots at 1366x768 and 768x1024 in --artifacts.
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const work = mkdtempSync(join(tmpdir(), "kcnet-review-"));
const dataDir = join(work, "data");
mkdirSync(dataDir);
let server;
let browser;
const openStreams = [];

// A WatchChanges stream through the bridge, read by node: counts the notices it receives.
async function openWatch(base, token) {
  const ac = new AbortController();
  openStreams.push(ac);
  const res = await fetch(`${base}/kcnet.v1.WatchService/WatchChanges`, {
    method: "POST",
    headers: {
      "Content-Type": "application/connect+json",
      "Connect-Protocol-Version": "1",
      Authorization: `Bearer ${token}`,
    },
    body: Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]), // one envelope: {}
    signal: ac.signal,
  });
  const watch = { status: res.status, notices: [], end: null, close: () => ac.abort() };
  (async () => {
    let buf = Buffer.alloc(0);
    try {
      for await (const chunk of res.body) {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
          const flags = buf[0];
          const json = JSON.parse(buf.subarray(5, 5 + buf.readUInt32BE(1)).toString("utf8"));
          buf = buf.subarray(5 + buf.readUInt32BE(1));
          if (flags & 2) watch.end = json;
          else watch.notices.push(json);
        }
      }
    } catch {
      // aborted
    }
  })();
  return watch;
}

async function until(what, predicate, ms = 5000) {
  const t0 = Date.now();
  while (!(await predicate())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function main() {
  step("seed the demo data directory, and coord2 for the other district (902)");
  execFileSync(args.admin, ["seed-demo", `--data_dir=${dataDir}`], { stdio: "ignore" });
  writeFileSync(join(work, "coord2.pw"), "demo-coord2-pass\n");
  execFileSync(args.admin, [`--data_dir=${dataDir}`, "create-user", "--username=coord2",
    "--display_name=Đỗ Văn Hải", "--role=district_coordinator", "--org_units=902",
    `--password-file=${join(work, "coord2.pw")}`], { stdio: "ignore" });

  step("start kcnet-server with the HTTP bridge");
  server = spawn(args.server, ["--listen=127.0.0.1:0", `--data_dir=${dataDir}`,
    "--http_listen=127.0.0.1:0", `--console_dir=${args.console_dir}`], { stdio: ["ignore", "pipe", "pipe"] });
  let serverLog = "";
  server.stderr.on("data", (d) => (serverLog += d));
  const [grpcAddress, consoleUrl] = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`kcnet-server did not start:\n${out}${serverLog}`)), 30000);
    server.stdout.on("data", (d) => {
      out += d;
      const grpc = /kcnet-server listening on (\S+)/.exec(out);
      const http = /console on (\S+)/.exec(out);
      if (grpc && http) {
        clearTimeout(timer);
        resolve([grpc[1], http[1]]);
      }
    });
    server.once("exit", (code) => reject(new Error(`kcnet-server exited ${code}:\n${serverLog}`)));
  });
  const base = consoleUrl.replace(/\/$/, "");
  const login = async (user) => {
    const res = await fetch(`${base}/kcnet.v1.AuthService/Login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: user, password: `demo-${user}-pass` }),
    });
    assert.equal(res.status, 200, `login ${user}`);
    return (await res.json()).token;
  };
  const call = async (token, path, body) => {
    const res = await fetch(`${base}/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };

  // Tablets: the kcnet CLI, one store each (a second store of a user is a second device).
  const tablet = (user, name = user) => {
    const store = join(work, `${name}.db`);
    const pw = join(work, `${user}.pw`);
    writeFileSync(pw, `demo-${user}-pass\n`);
    const run = (...argv) => execFileSync(args.kcnet, [`--store=${store}`, ...argv], { encoding: "utf8" });
    return { login: () => run(`--server=${grpcAddress}`, `--device=${name}-device`, "login", user, `--password-file=${pw}`), run };
  };
  const submitRequest = (t, name, amount) => {
    const f = /registered facility (\S+)/.exec(
      t.run("facility", "add", `--name=${name}`, "--owner=Nguyễn Văn Tư", "--workers=8"))[1];
    const r = /drafted request (\S+)/.exec(
      t.run("request", "draft", `--facility=${f}`, "--category=machinery", `--amount=${amount}`,
        "--description=Máy tráng bánh đa"))[1];
    t.run("request", "submit", r);
    return { facility: f, request: r };
  };

  const collab1 = tablet("collab1");
  collab1.login();
  collab1.run("sync");
  const collab2 = tablet("collab2");
  collab2.login();
  collab2.run("sync");
  const { request: r1 } = submitRequest(collab1, "Cơ sở bánh đa Tư", "80.000.000");
  collab1.run("sync");

  step("the watch stream: seq 0 at once; scoped; capped per user");
  const coord2Token = await login("coord2");
  const w2 = await openWatch(base, coord2Token);
  assert.equal(w2.status, 200);
  await until("coord2's first notice", () => w2.notices.length === 1);
  assert.equal(w2.notices[0].seq ?? "0", "0", "the first notice is seq 0");

  step("launch chromium; coord1 signs in");
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, timezoneId: "Asia/Ho_Chi_Minh" });
  const page = await context.newPage();
  const { problems: pageProblems, axeCheck, shoot } = pageChecks(page, args.artifacts);
  const row = (id) => page.locator(`tr[data-request-id="${id}"]`);
  await page.goto(`${base}/`);
  await page.getByLabel("Tên đăng nhập").fill("coord1");
  await page.getByLabel("Mật khẩu").fill("demo-coord1-pass");
  await page.getByRole("button", { name: "Đăng nhập" }).click();
  await page.locator("main h1", { hasText: "Hàng chờ duyệt" }).waitFor();
  await row(r1).waitFor();
  await page.locator("#live-state", { hasText: "Cập nhật trực tiếp" }).waitFor();

  step("live: collab1's tablet pushes a request; coord1's queue shows it within 2 s, no reload");
  await page.evaluate(() => (globalThis.kcnetNoReload = true));
  const { request: r2 } = submitRequest(collab1, "Cơ sở mây tre Hoà", "45.000.000");
  collab1.run("sync"); // returns once the push is acknowledged (committed)
  const pushed = Date.now();
  await row(r2).waitFor({ timeout: 2000 });
  console.log(`   shown ${Date.now() - pushed} ms after the push was acknowledged`);
  assert.equal(await page.evaluate(() => globalThis.kcnetNoReload), true, "the page was not reloaded");
  assert.match(await page.locator("#queue-count").innerText(), /^2 đề nghị/);
  await sleep(300);
  assert.equal(w2.notices.length, 1, "coord2 (district 902) got no notice of district 901's push");

  step("live: collab2's push (district 902) notifies coord2, never shows in coord1's queue");
  const { request: r3 } = submitRequest(collab2, "Cơ sở dệt Lụa", "30.000.000");
  collab2.run("sync");
  await until("coord2's notice of collab2's push", () => w2.notices.length >= 2, 2000);
  await sleep(500);
  assert.equal(await row(r3).count(), 0, "another district's request never reaches coord1's queue");

  step("the watch cap: at most 4 streams per user");
  const extra = [];
  for (let i = 0; i < 4; i++) extra.push(await openWatch(base, coord2Token));
  await until("the fifth stream's refusal", () => extra.some((w) => w.status === 429 || w.end?.error), 3000);
  const refused = extra.find((w) => w.status === 429 || w.end?.error);
  assert.ok(refused.status === 429 || refused.end.error.code === "resource_exhausted",
    `refused as resource_exhausted: ${refused.status} ${JSON.stringify(refused.end)}`);
  for (const w of [w2, ...extra]) w.close();

  await axeCheck("queue (live, bulk bar)");
  await shoot("queue-bulk");

  step("bulk: return two selected requests; the reason is required; the count is exact");
  const { request: r4 } = submitRequest(collab1, "Cơ sở gốm Bát Tràng", "20.000.000");
  collab1.run("sync");
  await row(r4).waitFor({ timeout: 2000 });
  assert.match(await page.locator("label", { hasText: "khớp bộ lọc" }).innerText(), /tất cả 3 đề nghị khớp bộ lọc/);
  await row(r2).getByRole("checkbox").check();
  await row(r4).getByRole("checkbox").check();
  await page.getByLabel("Thao tác").selectOption("return");
  await page.getByRole("button", { name: "Xem lại trước khi thực hiện" }).click();
  await page.getByRole("alert").filter({ hasText: "Lý do: bắt buộc" }).waitFor();
  const reason = "Thiếu ảnh chụp nhà xưởng";
  await page.locator("#bulk-reason").fill(reason);
  await page.getByRole("button", { name: "Xem lại trước khi thực hiện" }).click();
  const confirm = page.locator("#bulk-confirm");
  assert.equal(await confirm.innerText(), "Xác nhận: Trả lại đúng 2 đề nghị");
  await axeCheck("bulk confirmation");
  await shoot("bulk-confirm");
  // Meanwhile someone else endorses r2 (the API, as another tab would): r2 is then refused.
  const coord1Token = await login("coord1");
  const endorsed = await call(coord1Token, "kcnet.v1.SupportRequestService/EndorseSupportRequest", { id: r2, note: "ok" });
  assert.equal(endorsed.status, 200, JSON.stringify(endorsed.body));
  // Keyboard: focus the confirm button and press Enter.
  await confirm.focus();
  await page.keyboard.press("Enter");
  await page.locator("#bulk-status", { hasText: "Xong: 1 đã thực hiện, 1 bị từ chối." }).waitFor();
  assert.equal(await page.locator(`#bulk-results tr[data-result-id="${r4}"]`).getAttribute("data-ok"), "true");
  const r2Result = await page.locator(`#bulk-results tr[data-result-id="${r2}"]`).innerText();
  assert.match(r2Result, /Bị từ chối: /, r2Result);
  await axeCheck("bulk results");
  await shoot("bulk-results");
  collab1.run("sync");
  const shown = collab1.run("request", "show", r4);
  assert.match(shown, /status: returned/i);
  assert.ok(shown.includes(`decision note: ${reason}`), `the tablet shows the reason:\n${shown}`);
  await until("the queue without the decided requests", async () =>
    (await row(r2).count()) === 0 && (await row(r4).count()) === 0, 2000);

  step("live: the request page shows another officer's decision without a reload");
  await page.goto(`${base}/#/request/${r1}`);
  await page.locator("#request-status", { hasText: "Đã gửi" }).waitFor();
  const endorsedR1 = await call(coord1Token, "kcnet.v1.SupportRequestService/EndorseSupportRequest", { id: r1, note: "ok" });
  assert.equal(endorsedR1.status, 200, JSON.stringify(endorsedR1.body));
  await page.locator("#request-status", { hasText: "Huyện đã đồng ý" }).waitFor({ timeout: 2000 });

  step("conflicts: two tablets of collab1 edit a facility's name offline");
  const tabA = tablet("collab1", "collab1-a");
  tabA.login();
  const { facility: f5 } = submitRequest(tabA, "Cơ sở nón lá", "10.000.000");
  tabA.run("sync");
  const tabB = tablet("collab1", "collab1-b");
  tabB.login();
  tabB.run("sync");
  tabA.run("facility", "update", f5, "--name=Cơ sở nón lá Chuông (A)");
  await sleep(20);
  tabB.run("facility", "update", f5, "--name=Cơ sở nón lá Làng Chuông (B)");
  tabB.run("sync"); // the later edit first
  tabA.run("sync"); // the earlier edit loses: a conflict
  await page.goto(`${base}/#/conflicts`);
  await page.locator("main h1", { hasText: "Xung đột dữ liệu" }).waitFor();
  const conflictRow = page.locator("tr[data-conflict-id]").first();
  await conflictRow.waitFor();
  assert.match(await conflictRow.locator("td.winner").innerText(), /\(B\)/);
  assert.match(await conflictRow.locator("td.loser").innerText(), /\(A\)/);
  assert.match(await conflictRow.innerText(), /Tên/);
  // The facility's name follows the rows on its own call (the id shows meanwhile).
  await conflictRow.filter({ hasText: "Cơ sở: Cơ sở nón lá" }).waitFor({ timeout: 5000 }).catch(() => {});
  assert.match(await conflictRow.innerText(), /Cơ sở: Cơ sở nón lá/);
  await axeCheck("conflicts");
  await shoot("conflicts");

  step("coord2 sees none of district 901's conflicts");
  const coord2Conflicts = await call(coord2Token, "kcnet.v1.SyncService/ListConflicts", { includeResolved: true });
  assert.equal(coord2Conflicts.status, 200);
  assert.deepEqual(coord2Conflicts.body.conflicts ?? [], []);

  step("coord1 restores the overwritten value; the tablets receive it");
  await conflictRow.getByRole("button", { name: "Khôi phục giá trị bị ghi đè" }).click();
  await page.locator("#conflict-count", { hasText: "0 xung đột" }).waitFor();
  tabB.run("sync");
  assert.match(tabB.run("facility", "show", f5), /Chuông \(A\)/);

  step("a coordinator has no administration page");
  assert.equal(await page.getByRole("link", { name: "Quản trị" }).count(), 0);

  step("administration: admin1 creates a coordinator with a review area of one commune");
  await page.getByRole("button", { name: "Đăng xuất" }).click();
  await page.getByLabel("Tên đăng nhập").fill("admin1");
  await page.getByLabel("Mật khẩu").fill("demo-admin1-pass");
  await page.getByRole("button", { name: "Đăng nhập" }).click();
  await page.getByRole("link", { name: "Quản trị" }).click();
  await page.locator("main h1", { hasText: "Quản trị" }).waitFor();
  await page.locator('tr[data-username="coord1"]').waitFor();
  await page.getByLabel("Tên đăng nhập").fill("coord3");
  await page.getByLabel("Họ tên").fill("Vũ Thị Mai");
  await page.locator("#new-role").selectOption("2");
  await page.getByLabel("Mật khẩu (ít nhất 8 ký tự)").fill("short");
  const commune = await page.locator("#new-units option", { hasText: "(90101)" }).getAttribute("value");
  await page.locator("#new-units").selectOption([commune]);
  await page.getByRole("button", { name: "Tạo", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "password" }).waitFor(); // the server names the field
  assert.equal(await page.locator('tr[data-username="coord3"]').count(), 0, "nothing stored");
  await page.getByLabel("Mật khẩu (ít nhất 8 ký tự)").fill("coord3-password");
  await page.getByRole("button", { name: "Tạo", exact: true }).click();
  await page.locator('tr[data-username="coord3"]').waitFor();
  assert.match(await page.locator('tr[data-username="coord3"]').innerText(), /Điều phối viên huyện[\s\S]*Xã An Bình/);
  const coord3Token = await (async () => {
    const res = await fetch(`${base}/kcnet.v1.AuthService/Login`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username: "coord3", password: "coord3-password" }) });
    assert.equal(res.status, 200, "coord3 signs in");
    return (await res.json()).token;
  })();
  const coord3List = await call(coord3Token, "kcnet.v1.SupportRequestService/ListSupportRequests", {});
  const coord3Requests = coord3List.body.supportRequests ?? [];
  assert.ok(coord3Requests.some((r) => r.id === r1), "coord3 sees its review area's requests");
  assert.ok(coord3Requests.every((r) => r.communeId === commune), "and only those");
  await axeCheck("administration");
  await shoot("admin");

  step("administration: reset coord3's password, then deactivate it");
  await page.getByRole("button", { name: "Sửa người dùng: coord3" }).click();
  await page.getByLabel("Mật khẩu mới (ít nhất 8 ký tự)").fill("coord3-new-password");
  await page.getByRole("button", { name: "Đặt lại mật khẩu" }).click();
  await page.locator("#edit-user-section", { hasText: "Đã lưu." }).waitFor();
  assert.equal((await call(coord3Token, "kcnet.v1.AuthService/WhoAmI", {})).status, 401,
    "a password reset revokes the user's tokens");
  await page.getByRole("button", { name: "Khoá tài khoản" }).click();
  await page.locator('tr[data-username="coord3"]', { hasText: "Không (đã khoá)" }).waitFor();
  const refusedLogin = await fetch(`${base}/kcnet.v1.AuthService/Login`, { method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: "coord3", password: "coord3-new-password" }) });
  assert.notEqual(refusedLogin.status, 200, "a deactivated user cannot sign in");

  step("administration: devices with their last sync; revoke one");
  const deviceRow = page.locator('tr[data-device-id="collab1-b-device"]');
  await deviceRow.waitFor();
  assert.match(await deviceRow.innerText(), /\d{2}:\d{2} \d{2}\/\d{2}\/\d{4}/);
  await deviceRow.getByRole("button", { name: "Thu hồi thiết bị collab1-b-device" }).click();
  await page.locator("main", { hasText: "Đã thu hồi thiết bị collab1-b-device" }).waitFor();
  await axeCheck("administration (devices)");

  step("administration: org-unit import, dry run first; a bad row is refused whole");
  await page.locator("#csv-text").fill("code,name,level,parent_code\n903,Huyện Mới Demo,district,90\n90399,Xã Sai,town,903\n");
  await page.getByRole("button", { name: "Chạy thử" }).click();
  await page.getByRole("alert").filter({ hasText: "level" }).waitFor();
  await page.locator("#csv-text").fill("code,name,level,parent_code\n903,Huyện Mới Demo,district,90\n90301,Xã Mới Demo,commune,903\n");
  await page.getByRole("button", { name: "Nhập", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "chạy thử" }).waitFor();
  await page.getByRole("button", { name: "Chạy thử" }).click();
  await page.locator("#import-result", { hasText: "sẽ thêm 2 đơn vị" }).waitFor();
  assert.equal(await page.locator("#new-units option", { hasText: "(90301)" }).count(), 0, "a dry run adds nothing");
  await shoot("admin-import");
  await page.getByRole("button", { name: "Nhập", exact: true }).click();
  await page.locator("#import-result", { hasText: "Đã nhập: thêm 2 đơn vị" }).waitFor();
  await page.locator("#new-units option", { hasText: "(90301)" }).waitFor();
  await axeCheck("administration (import)");

  step("filters on the server: officer1 filters by collaborator and commune; the count is the API's");
  await page.getByRole("button", { name: "Đăng xuất" }).click();
  await page.locator("main.signin").waitFor(); // the sign-in page, not the admin page's fields
  await page.locator("#username").fill("officer1");
  await page.locator("#password").fill("demo-officer1-pass");
  await page.getByRole("button", { name: "Đăng nhập" }).click();
  await page.locator("main h1", { hasText: "Hàng chờ duyệt" }).waitFor();
  await row(r1).waitFor();
  const officerToken = await login("officer1");
  const whoCollab1 = await call(await login("collab1"), "kcnet.v1.AuthService/WhoAmI", {});
  const collab1User = whoCollab1.body.user ?? whoCollab1.body;
  const collab1Id = String(collab1User.id);
  const collab1Commune = String((collab1User.orgUnitIds ?? [])[0]);
  await page.locator("#f-author").selectOption(collab1Id);
  await page.locator("#f-commune").selectOption(collab1Commune);
  const filter = { status: "REQUEST_STATUS_ENDORSED", authorId: collab1Id, communeIds: [collab1Commune] };
  const counted = await call(officerToken, "kcnet.v1.SupportRequestService/CountSupportRequests", filter);
  assert.equal(counted.status, 200, JSON.stringify(counted.body));
  const n = Number(counted.body.count ?? 0);
  assert.ok(n >= 2, `r1 and r2 are endorsed requests of collab1: ${n}`);
  await page.locator("#queue-count", { hasText: new RegExp(`^${n} đề nghị`) }).waitFor();
  assert.equal(await page.locator("tr[data-request-id]").count(), n, "the rows are the server's N");
  const listed = await call(officerToken, "kcnet.v1.SupportRequestService/ListSupportRequests", filter);
  assert.ok((listed.body.supportRequests ?? []).every((r) => String(r.authorId) === collab1Id));
  const bad = await call(officerToken, "kcnet.v1.SupportRequestService/ListSupportRequests", { minAgeDays: -1 });
  assert.equal(bad.status, 400, "a bad filter is refused");
  assert.match(bad.body.message, /min_age_days/);

  step("bulk approve over all N matching: one amount, a funding source, a result per item");
  await page.getByLabel("Thao tác").selectOption("approve");
  await page.getByLabel(`tất cả ${n} đề nghị khớp bộ lọc`).check();
  await page.getByLabel("Cùng một số tiền cho mọi đề nghị").check();
  await page.locator("#bulk-amount-value").fill("50.000.000");
  await page.getByRole("button", { name: "Xem lại trước khi thực hiện" }).click();
  await page.getByRole("alert").filter({ hasText: "Nguồn kinh phí" }).waitFor(); // required
  await page.locator("#bulk-funding").selectOption({ label: "Ngân sách địa phương" });
  await page.getByRole("button", { name: "Xem lại trước khi thực hiện" }).click();
  const approveConfirm = page.locator("#bulk-confirm");
  await approveConfirm.waitFor();
  assert.equal(await approveConfirm.innerText(), `Xác nhận: Phê duyệt đúng ${n} đề nghị`);
  await axeCheck("bulk approve confirmation");
  await shoot("bulk-approve-confirm");
  await approveConfirm.click();
  await page.locator("#bulk-status", { hasText: "Xong:" }).waitFor({ timeout: 30000 });
  assert.equal(await page.locator("#bulk-results tr[data-result-id]").count(), n, "one result per request");
  // r1 asked 80.000.000: approved at 50.000.000; r2 asked 45.000.000: refused, the server says why.
  assert.equal(await page.locator(`#bulk-results tr[data-result-id="${r1}"]`).getAttribute("data-ok"), "true");
  const r2Approve = await page.locator(`#bulk-results tr[data-result-id="${r2}"]`).innerText();
  assert.match(r2Approve, /Bị từ chối: .*approved_amount_vnd/, r2Approve);
  const r1Now = await call(officerToken, "kcnet.v1.SupportRequestService/GetSupportRequest", { id: r1 });
  assert.equal(r1Now.body.status, "REQUEST_STATUS_APPROVED");
  assert.equal(String(r1Now.body.approvedAmountVnd), "50000000");
  assert.equal(r1Now.body.approvedFunding, "FUNDING_SOURCE_LOCAL");
  await axeCheck("bulk approve results");
  await shoot("bulk-approve-results");

  step("record export: the queue's requests of the filter as XLSX, in the background; read back");
  await page.locator("#f-status").selectOption("all");
  await page.locator("#queue-count", { hasText: /đề nghị/ }).waitFor();
  const allOfCollab1 = await call(officerToken, "kcnet.v1.SupportRequestService/CountSupportRequests",
    { authorId: collab1Id, communeIds: [collab1Commune] });
  const m = Number(allOfCollab1.body.count ?? 0);
  await page.locator("#queue-count", { hasText: new RegExp(`^${m} đề nghị`) }).waitFor();
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 60000 }),
    page.locator("#export-requests-xlsx").click(),
  ]);
  assert.equal(download.suggestedFilename(), "de-nghi-ho-tro.xlsx");
  const xlsxFile = join(work, "de-nghi-ho-tro.xlsx");
  await download.saveAs(xlsxFile);
  await page.locator('#exports li[data-export-state="done"]').first().waitFor();
  // Written row by row (constant memory): the strings are inline in the sheet.
  const sheetXml = execFileSync("unzip", ["-p", xlsxFile, "xl/worksheets/sheet1.xml"], { encoding: "utf8" });
  const strings = sheetXml;
  assert.equal((sheetXml.match(/<row /g) ?? []).length, m + 1, "a header and one row per request of the filter");
  assert.ok(strings.includes(r1) && strings.includes(r2), "the filtered requests are in the file");
  assert.ok(!strings.includes(r3), "another district's request is not");
  assert.ok(strings.includes("Trạng thái / Status"), "Vietnamese first in the headers");
  assert.match(sheetXml, /<c r="F2"[^>]*><v>\d+<\/v><\/c>/, "the requested amount is a number");
  // Status and category as Vietnamese labels, never the enum's names.
  assert.ok(strings.includes("Huyện đã đồng ý") || strings.includes("Đã phê duyệt"), "statuses in Vietnamese");
  assert.ok(!/REQUEST_STATUS_|>ENDORSED<|>APPROVED</.test(strings), "no enum names");
  await shoot("queue-export");

  step("the map and its exports follow the queue's filter (carried in the URL)");
  const queueFilter = { authorId: collab1Id, communeIds: [collab1Commune] }; // status: all
  // The oracle: the facilities of the requests the queue lists for this filter.
  const wantFacilities = new Set();
  {
    let pageToken = "";
    do {
      const r = await call(officerToken, "kcnet.v1.SupportRequestService/ListSupportRequests", { ...queueFilter, pageToken });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      for (const q of r.body.supportRequests ?? []) wantFacilities.add(q.facilityId);
      pageToken = r.body.nextPageToken ?? "";
    } while (pageToken);
  }
  const everyPoint = await call(officerToken, "kcnet.v1.FacilityService/ListMapPoints", { facilitiesOnly: true, pageSize: 20000 });
  assert.equal(everyPoint.status, 200, JSON.stringify(everyPoint.body));
  const everyFacility = (everyPoint.body.points ?? []).filter((p) => p.type === "MAP_POINT_TYPE_FACILITY");
  assert.ok(wantFacilities.size >= 1, "the filter matches some requests");
  assert.ok(everyFacility.length > wantFacilities.size, "the filter leaves facilities out (the test means something)");
  const wantWithPlace = everyFacility.filter((p) => wantFacilities.has(p.id) && (p.latitude || p.longitude)).length;
  await page.getByRole("link", { name: "Bản đồ" }).click();
  await page.locator("#map-queue-filter").waitFor();
  assert.match(page.url(), new RegExp(`author=${collab1Id}`), "the queue's filter is in the map's URL");
  await page.locator("#map-count", { hasText: "điểm" }).waitFor();
  await page.getByLabel("Lần thăm", { exact: true }).uncheck();
  // The facilities the map loaded (with a place or not) are exactly the filter's; those
  // with a place are drawn.
  await page.waitForFunction(
    ([n, drawn]) => {
      const c = document.querySelector("#map-canvas");
      return c?.dataset.facilities === String(n) && c?.dataset.points === String(drawn);
    },
    [wantFacilities.size, wantWithPlace],
    { timeout: 10000 },
  );
  const [mapCsv] = await Promise.all([
    page.waitForEvent("download", { timeout: 60000 }),
    page.locator("#export-facilities-csv").click(),
  ]);
  assert.equal(mapCsv.suggestedFilename(), "co-so.csv");
  const mapCsvFile = join(work, "map-co-so.csv");
  await mapCsv.saveAs(mapCsvFile);
  const exportedIds = readFileSync(mapCsvFile, "utf8")
    .replace(/^\uFEFF/, "")
    .split(/\r\n/)
    .slice(1)
    .filter((l) => l)
    .map((l) => l.split(",")[0])
    .sort();
  assert.deepEqual(exportedIds, [...wantFacilities].sort(), "the map's export holds exactly the filter's facilities");
  await axeCheck("map with the queue's filter");
  await shoot("map-queue-filter");

  assert.deepEqual(pageProblems, [], "no CSP violation or page error");
  console.log("console review test: OK");
}

main()
  .then(() => (process.exitCode = 0))
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const ac of openStreams) ac.abort();
    await browser?.close().catch(() => {});
    await stopAndRemove([server], work);
  });
