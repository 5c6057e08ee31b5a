// Bundles the console with esbuild into OUT_DIR: index.html, assets/app-HASH.js,
// assets/boot-HASH.js (the first calls, run before the bundle: src/boot.ts) and
// assets/app-HASH.css (named by their content: kcnet-server lets browsers keep them for
// good, `Cache-Control: immutable`, while index.html, which names them, is never cached),
// each with a gzipped copy beside it (.gz, served as `Content-Encoding: gzip`) and a
// source map. No inline script or style anywhere: kcnet-server sends a strict
// Content-Security-Policy.
// Usage: node scripts/build.mjs GEN_DIR OUT_DIR
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const consoleDir = resolve(here, "..");
const genDir = resolve(process.argv[2] ?? join(consoleDir, "gen"));
const outDir = resolve(process.argv[3] ?? join(consoleDir, "dist"));

// `@gen/kcnet/v1/services_pb` -> GEN_DIR/kcnet/v1/services_pb.ts
const genPlugin = {
  name: "gen",
  setup(build) {
    build.onResolve({ filter: /^@gen\// }, (args) => ({
      path: join(genDir, args.path.slice("@gen/".length) + ".ts"),
    }));
  },
};

rmSync(outDir, { recursive: true, force: true });
mkdirSync(join(outDir, "assets"), { recursive: true });
const app = await esbuild.build({
  // boot: the first calls, its own small file run before the bundle (src/boot.ts).
  entryPoints: { app: join(consoleDir, "src", "main.tsx"), boot: join(consoleDir, "src", "boot.ts") },
  entryNames: "[name]-[hash]",
  metafile: true,
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: join(outDir, "assets"),
  nodePaths: [join(consoleDir, "node_modules")],
  plugins: [genPlugin],
  logLevel: "warning",
});
// index.html names the hashed files; each has its gzipped copy.
let html = readFileSync(join(consoleDir, "public", "index.html"), "utf8");
for (const file of Object.keys(app.metafile.outputs)) {
  const name = basename(file);
  const [, entry, ext] = /^(app|boot)-[A-Za-z0-9]+\.(js|css)$/.exec(name) ?? [];
  if (!ext) continue;
  html = html.replace(`assets/${entry}.${ext}`, `assets/${name}`);
  writeFileSync(join(outDir, "assets", `${name}.gz`), gzipSync(readFileSync(join(outDir, "assets", name)), { level: 9 }));
}
if (/assets\/(app|boot)\.(js|css)/.test(html)) throw new Error("index.html: an asset was not renamed");
writeFileSync(join(outDir, "index.html"), html);
// The development stand-in for the bridge (scripts/dev-bridge.ts), beside dist, for Node.
await esbuild.build({
  entryPoints: [join(consoleDir, "scripts", "dev-bridge.ts")],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: join(outDir, "..", "dev-bridge.mjs"),
  nodePaths: [join(consoleDir, "node_modules")],
  plugins: [genPlugin],
  logLevel: "warning",
});
console.log(`build: ${outDir}`);
