// Bundles the console with esbuild into OUT_DIR: index.html, assets/app.js, assets/app.css.
// No inline script or style anywhere: kcnet-server sends a strict Content-Security-Policy.
// Usage: node scripts/build.mjs GEN_DIR OUT_DIR
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
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
await esbuild.build({
  entryPoints: { app: join(consoleDir, "src", "main.tsx") },
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
copyFileSync(join(consoleDir, "public", "index.html"), join(outDir, "index.html"));
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
