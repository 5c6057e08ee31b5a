// The first thing the page does: ask the bridge who the session cookie belongs to
// (AuthService.WhoAmI, the Connect protocol's JSON by hand). main.tsx imports this module
// before any other, so the call is on the wire while the rest of the bundle is still being
// evaluated (protobuf descriptors, pages), instead of after it: the queue's first rows
// wait one round trip less (docs/BENCHMARKS.md). No dependencies on purpose: a module's
// imports are evaluated before it. This holds because the console is one bundle (esbuild
// keeps the modules' order); with code splitting the shared chunks would run first. Not thread-related: the browser runs this on one thread.

/** WhoAmI's answer as JSON (protobuf's JSON mapping), or null when not signed in or unreachable. */
export const earlyWhoAmI: Promise<unknown> = fetch("/kcnet.v1.AuthService/WhoAmI", {
  method: "POST",
  credentials: "same-origin",
  headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
  body: "{}",
})
  .then((res) => (res.ok ? res.json() : null))
  .catch(() => null);
