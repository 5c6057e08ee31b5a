// What the console's browser tests (browser, pages and review .test.mjs) share: their
// command line, the skip rule, Debian's chromium launched headless, and the per-page
// checks (axe-core, CSP problems, screenshots at two viewports).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export const chromiumPath = process.env.KCNET_CHROMIUM ?? "/usr/bin/chromium";

// --server, --admin, --kcnet, --console_dir and --artifacts (all required), as ctest passes
// them (console/CMakeLists.txt). The artifacts folder is created.
export function parseArgs(argv = process.argv.slice(2)) {
  const args = Object.fromEntries(
    argv.map((a) => {
      const m = /^--([^=]+)=(.*)$/.exec(a);
      if (!m) throw new Error(`bad argument ${a}`);
      return [m[1], m[2]];
    }),
  );
  for (const k of ["server", "admin", "kcnet", "console_dir", "artifacts"]) {
    if (!args[k]) throw new Error(`--${k} is required`);
  }
  mkdirSync(args.artifacts, { recursive: true });
  return args;
}

// Skipped (exit 77) where the browser is missing, but never in CI (.ci/run installs chromium
// through deploy/install-deps.sh): there a skip would hide a broken set-up. `evenInCi` is for
// a state of the code rather than of the machine (a build without the HTTP bridge).
export function skip(why, { evenInCi = false } = {}) {
  if (process.env.CI === "true" && !evenInCi) {
    console.error(`FAILED: ${why}; CI must run the browser tests`);
    process.exit(1);
  }
  console.log(`SKIPPED: ${why}`);
  process.exit(77);
}

// The standard output and error of a command, whatever its exit status.
export function commandText(bin, argv) {
  try {
    return execFileSync(bin, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    return `${e.stdout ?? ""}${e.stderr ?? ""}`;
  }
}

// Skips without chromium; with `bridge`, skips when kcnet-server has no HTTP bridge; fails
// when the console was not built.
export function requireBrowserAndConsole(args, { bridge = true } = {}) {
  if (!existsSync(chromiumPath)) {
    skip(`no chromium at ${chromiumPath} (apt-get install chromium; deploy/install-deps.sh does)`);
  }
  if (bridge && !commandText(args.server, ["--help"]).includes("http_listen")) {
    skip("kcnet-server has no --http_listen (the HTTP bridge is not in this build)", { evenInCi: true });
  }
  if (!existsSync(join(args.console_dir, "index.html"))) {
    throw new Error(`${args.console_dir}/index.html is missing: build the kcnet_console target`);
  }
}

// Debian's chromium, headless, quiet (no network of its own), without the sandbox as root.
export async function launchChromium() {
  const { chromium } = require("playwright-core");
  const launchArgs = ["--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"];
  if (process.getuid?.() === 0) launchArgs.push("--no-sandbox");
  return chromium.launch({ executablePath: chromiumPath, args: launchArgs });
}

// The checks every page gets: `problems` collects CSP violations and page errors as they
// happen; axeCheck(name) asserts axe-core finds no serious or critical violation;
// shoot(name) writes NAME-1366x768.png and NAME-tablet.png into `artifacts`.
export function pageChecks(page, artifacts) {
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  const axeCheck = async (name) => {
    await page.evaluate(axeSource);
    const violations = await page.evaluate(async () => {
      const r = await globalThis.axe.run(document, { resultTypes: ["violations"] });
      return r.violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    });
    assert.deepEqual(violations, [], `axe on ${name}`);
  };
  const shoot = async (name) => {
    await page.screenshot({ path: join(artifacts, `${name}-1366x768.png`), fullPage: true });
    await page.setViewportSize({ width: 768, height: 1024 });
    await page.screenshot({ path: join(artifacts, `${name}-tablet.png`), fullPage: true });
    await page.setViewportSize({ width: 1366, height: 768 });
  };
  return { problems, axeCheck, shoot };
}

// Stops child processes (SIGTERM, SIGKILL after 10 s), waits until each has exited, then
// removes `dir`: a server still shutting down writes into its data directory, and removing
// it under the server failed with ENOTEMPTY.
export async function stopAndRemove(children, dir) {
  await Promise.all(
    children.filter(Boolean).map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
          child.once("exit", () => {
            clearTimeout(timer);
            resolve();
          });
          child.kill("SIGTERM");
        }),
    ),
  );
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
}
