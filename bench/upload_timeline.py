#!/usr/bin/env python3
"""Prints the timeline of traced attachment uploads (issue 17; sync/upload_trace.h).

Usage: KCNET_UPLOAD_TRACE=/tmp/t.trace build/bench/attachments_bench --only=throughput
       bench/upload_timeline.py /tmp/t.trace [--upload=N] [--events]

The trace holds lines "<ns> <side> <event> <a> <b>" of the device (dev) and the server
(srv). Uploads are cut at each device "begin"; upload N (default: the middle one) is
printed event by event with --events. The summary is over all uploads: where a photo's
wall time goes (sending, waiting for the window, Begin), what a commit costs (fdatasync,
the offset's row, the ack's trip to the device).
"""
import statistics
import sys


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def line(name, values, unit="ms"):
    if not values:
        print(f"  {name:34s} (none)")
        return
    print(f"  {name:34s} n={len(values):5d} mean={statistics.mean(values):8.3f} "
          f"p50={pct(values, 50):8.3f} p90={pct(values, 90):8.3f} max={max(values):8.3f} {unit}")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1")
                for a in sys.argv[1:] if a.startswith("--"))
    events = []
    with open(args[0]) as f:
        for raw in f:
            parts = raw.split()
            if len(parts) != 5:
                continue
            events.append((int(parts[0]), parts[1], parts[2], int(parts[3]), int(parts[4])))
    events.sort()
    begins = [i for i, e in enumerate(events) if e[1] == "dev" and e[2] == "begin"]
    if not begins:
        sys.exit("no upload in the trace")
    uploads = []  # (start index, end index)
    for k, i in enumerate(begins):
        uploads.append((i, begins[k + 1] if k + 1 < len(begins) else len(events)))

    ms = lambda ns: ns / 1e6
    wall, wait, begin_ms, send_ms = [], [], [], []
    sync_ms, row_ms, to_ack_ms, trip_ms, commit_bytes, room_waits = [], [], [], [], [], 0
    commit_to_ack = []
    pending_start, pending_synced, pending_row, pending_ack = {}, {}, {}, {}
    last_wait = None
    for (t, side, ev, a, b) in events:
        if side == "srv" and ev == "commit_start":
            pending_start[a] = t
        elif side == "srv" and ev == "synced" and a in pending_start:
            sync_ms.append(ms(t - pending_start[a]))
            pending_synced[a] = t
        elif side == "srv" and ev == "row_written" and a in pending_synced:
            row_ms.append(ms(t - pending_synced[a]))
            pending_row[a] = t
        elif side == "srv" and ev == "ack_send":
            if a in pending_row:
                to_ack_ms.append(ms(t - pending_row.pop(a)))
                pending_ack[a] = t
        elif side == "dev" and ev == "ack" and a in pending_ack:
            trip_ms.append(ms(t - pending_ack.pop(a)))
            if a in pending_start:
                commit_to_ack.append(ms(t - pending_start.pop(a)))
        elif side == "srv" and ev == "room_wait":
            room_waits += 1
        elif side == "dev" and ev == "window_wait":
            last_wait = t
        elif side == "dev" and ev == "send" and last_wait is not None:
            wait.append(ms(t - last_wait))
            last_wait = None
    prev_start = {}
    for (t, side, ev, a, b) in events:
        if side == "srv" and ev == "commit_start":
            prev_start.setdefault("last", 0)
            commit_bytes.append((a - prev_start["last"]) if a > prev_start["last"] else a)
            prev_start["last"] = a
    for (i, j) in uploads:
        t0 = events[i][0]
        done = [e[0] for e in events[i:j] if e[1] == "dev" and e[2] == "complete"]
        begun = [e[0] for e in events[i:j] if e[1] == "dev" and e[2] == "begun"]
        sends = [e for e in events[i:j] if e[1] == "dev" and e[2] in ("send", "sent")]
        if done:
            wall.append(ms(done[0] - t0))
        if begun:
            begin_ms.append(ms(begun[0] - t0))
        s = 0
        for k in range(0, len(sends) - 1):
            if sends[k][2] == "send" and sends[k + 1][2] == "sent":
                s += sends[k + 1][0] - sends[k][0]
        send_ms.append(ms(s))
    print(f"{len(uploads)} uploads, {len(events)} events")
    print("per photo:")
    line("wall (begin to complete)", wall)
    line("Begin round trip", begin_ms)
    line("in stream->Write (sending)", send_ms)
    print("per window wait of the device (sent - committed >= bound):")
    line("waiting for an ack", wait)
    print(f"  waits per photo: {len(wait) / max(1, len(uploads)):.1f}; server room waits: {room_waits}")
    print("per commit:")
    line("bytes per commit (KiB)", [b / 1024 for b in commit_bytes if b > 0], "KiB")
    line("fdatasync", sync_ms)
    line("offset row", row_ms)
    line("row written to ack sent", to_ack_ms)
    line("ack sent to device read", trip_ms)
    line("commit start to device read", commit_to_ack)

    if "events" in opts:
        n = int(opts.get("upload", len(uploads) // 2))
        i, j = uploads[n]
        t0 = events[i][0]
        print(f"upload {n}, microseconds from its Begin:")
        for (t, side, ev, a, b) in events[i:j]:
            print(f"{(t - t0) / 1e3:10.1f} {side} {ev:13s} {a:9d} {b:9d}")


if __name__ == "__main__":
    main()
