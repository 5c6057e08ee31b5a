// The console's live-change signal: one WatchService.WatchChanges server stream per tab
// through the bridge. The server sends a notice (no data) whenever records in the signed-in
// user's scope change, from a tablet's push or another officer's decision; pages that show
// records read `changes.value` and re-read when it moves. The stream reconnects by itself
// (0.5 s, doubling to 15 s); after a reconnect it counts as a change, since notices may have
// been missed while it was down. Not thread-related: the browser runs this on one thread.
import { signal } from "@preact/signals";
import { watch } from "./api";

/** Moves on every change in my scope (and after a reconnect). */
export const changes = signal(0);
/** "live" while the stream is open; "offline" while it reconnects. */
export const liveState = signal<"connecting" | "live" | "offline">("connecting");

let running: AbortController | null = null;

// Notices that come close together make one re-read: the first schedules it 250 ms on, the
// rest until then join it (well inside the 2 s goal; a busy province sends many).
let bumpScheduled = false;
function bump() {
  if (bumpScheduled) return;
  bumpScheduled = true;
  setTimeout(() => {
    bumpScheduled = false;
    changes.value++;
  }, 250);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function startLive() {
  if (running) return;
  const ac = new AbortController();
  running = ac;
  (async () => {
    let backoff = 500;
    let connectedBefore = false;
    while (!ac.signal.aborted) {
      try {
        for await (const notice of watch.watchChanges({}, { signal: ac.signal })) {
          liveState.value = "live";
          backoff = 500;
          // seq 0 opens the stream: a change only when it is a reconnect.
          if (notice.heartbeat) continue; // the bridge's sign of life: no change
          if (notice.seq > 0n || connectedBefore) bump();
          connectedBefore = true;
        }
      } catch {
        // Ended by the server, the network or stopLive(): reconnect unless stopped.
      }
      if (ac.signal.aborted) break;
      liveState.value = "offline";
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  })();
}

export function stopLive() {
  running?.abort();
  running = null;
  liveState.value = "connecting";
}

// A tab closed or reloaded ends its watch at once (the fetch is aborted: the browser
// closes the connection and the bridge frees the stream within a second), rather than
// leaving the server to find it gone. A page kept in the back-forward cache watches again
// when it is shown.
let hiddenWhileLive = false;
addEventListener("pagehide", () => {
  hiddenWhileLive = running !== null;
  stopLive();
});
addEventListener("pageshow", (e) => {
  if ((e as PageTransitionEvent).persisted && hiddenWhileLive) startLive();
  hiddenWhileLive = false;
});
