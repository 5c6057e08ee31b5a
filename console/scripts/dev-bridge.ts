// A development stand-in for kcnet-server's HTTP bridge, for working on the console
// without a server built with --http_listen: it serves DIST and forwards the Connect
// protocol's unary JSON calls to kcnet-server's gRPC port (plaintext, loopback) with Node's
// http2, converting with the generated descriptors. /auth/sign-in and /auth/sign-out keep
// the token in an HttpOnly cookie, as the real bridge does. Unary calls only; no TLS, no
// streams, no CSRF or payload limits: never expose it. Not used by the tests.
// Usage: node scripts/dev-bridge.mjs DIST GRPC_HOST:PORT HTTP_PORT  (built by build.mjs --dev)
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect } from "node:http2";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fromBinary, fromJson, toBinary, toJson, type JsonValue } from "@bufbuild/protobuf";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import * as services from "@gen/kcnet/v1/services_pb";

const [dist, grpcAddress, httpPort] = process.argv.slice(2);
const methods = new Map<string, DescMethod>();
for (const value of Object.values(services)) {
  const s = value as DescService;
  if (s && (s as { kind?: string }).kind === "service") {
    for (const m of s.methods) methods.set(`/${s.typeName}/${m.name}`, m);
  }
}
const h2 = connect(`http://${grpcAddress}`);
const codes = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
  "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted",
  "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"];
const httpStatus: Record<string, number> = { invalid_argument: 400, unauthenticated: 401,
  permission_denied: 403, not_found: 404, already_exists: 409, failed_precondition: 400,
  resource_exhausted: 429, unimplemented: 501, unavailable: 503 };

function grpcCall(path: string, body: Uint8Array, token: string): Promise<{ code: number; message: string; data: Uint8Array }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" };
    if (token) headers.authorization = `Bearer ${token}`;
    const req = h2.request(headers);
    const chunks: Buffer[] = [];
    let code = 2, message = "no status";
    const status = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined) {
        code = Number(h["grpc-status"]);
        message = decodeURIComponent(String(h["grpc-message"] ?? ""));
      }
    };
    req.on("response", status);
    req.on("trailers", status);
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const all = Buffer.concat(chunks);
      resolve({ code, message, data: all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : new Uint8Array() });
    });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    req.end(frame);
  });
}

const cookieToken = (req: IncomingMessage) => /(?:^|;\s*)kcnet_session=([^;]+)/.exec(req.headers.cookie ?? "")?.[1] ?? "";
const readBody = async (req: IncomingMessage) => {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts).toString("utf8");
};
function sendError(res: ServerResponse, code: number, message: string) {
  const name = codes[code] ?? "unknown";
  res.writeHead(httpStatus[name] ?? 500, { "content-type": "application/json" });
  res.end(JSON.stringify({ code: name, message }));
}

async function rpc(res: ServerResponse, method: DescMethod, json: string, token: string) {
  const input = fromJson(method.input, (json ? JSON.parse(json) : {}) as JsonValue);
  const out = await grpcCall(`/${method.parent.typeName}/${method.name}`, toBinary(method.input, input), token);
  if (out.code !== 0) return { error: out };
  return { message: fromBinary(method.output, out.data) };
}

createServer(async (req, res) => {
  try {
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method === "POST") {
      const body = await readBody(req);
      if (url.pathname === "/auth/sign-in" || url.pathname === "/auth/sign-out") {
        const login = url.pathname === "/auth/sign-in";
        const m = methods.get(login ? "/kcnet.v1.AuthService/Login" : "/kcnet.v1.AuthService/Logout")!;
        const r = await rpc(res, m, login ? body : "{}", login ? "" : cookieToken(req));
        if (r.error && login) return sendError(res, r.error.code, r.error.message);
        const token = login ? String((r.message as unknown as { token: string }).token) : "";
        res.writeHead(200, { "content-type": "application/json",
          "set-cookie": `kcnet_session=${token}; HttpOnly; SameSite=Strict; Path=/${login ? "" : "; Max-Age=0"}` });
        return res.end("{}");
      }
      const m = methods.get(url.pathname);
      if (!m) return sendError(res, 12, `no method ${url.pathname}`);
      const r = await rpc(res, m, body, cookieToken(req));
      if (r.error) return sendError(res, r.error.code, r.error.message);
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify(toJson(m.output, r.message!)));
    }
    const file = normalize(url.pathname === "/" ? "/index.html" : url.pathname);
    const data = await readFile(join(dist, file));
    const types: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream",
      "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'" });
    res.end(data);
  } catch (e) {
    if (!res.headersSent) sendError(res, 13, String(e));
  }
}).listen(Number(httpPort), "127.0.0.1", () => console.log(`dev bridge on http://127.0.0.1:${httpPort}/ -> ${grpcAddress}`));
