// Generates the TypeScript of proto/kcnet/v1 with Debian's protoc and
// @bufbuild/protoc-gen-es (a build output: never committed).
// Usage: node scripts/codegen.mjs OUT_DIR [PROTO_ROOT]
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const consoleDir = resolve(here, "..");
const outDir = resolve(process.argv[2] ?? join(consoleDir, "gen"));
const protoRoot = resolve(process.argv[3] ?? join(consoleDir, "..", "proto"));
const plugin = join(consoleDir, "node_modules", ".bin", "protoc-gen-es");

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
execFileSync(
  process.env.PROTOC ?? "protoc",
  [
    `--plugin=protoc-gen-es=${plugin}`,
    `--es_out=${outDir}`,
    "--es_opt=target=ts,import_extension=none",
    `-I${protoRoot}`,
    "kcnet/v1/domain.proto",
    "kcnet/v1/services.proto",
    "kcnet/v1/reports.proto",
    "kcnet/v1/plans.proto",
    "kcnet/v1/sync.proto",
    "kcnet/v1/sync_service.proto",
    "kcnet/v1/attachments.proto",
    "kcnet/v1/record_export.proto",
  ],
  { stdio: "inherit" },
);
console.log(`codegen: ${outDir}`);
