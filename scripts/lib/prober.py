#!/usr/bin/python3
"""Write prober (docs: ../shared/design/faults.md): inserts a unique, increasing id every 20 ms
through libpq multi-host with target_session_attrs=read-write, logs every attempt on a monotonic
clock, optionally runs a fault command at a moment, then reads the final primary and reports
U (longest gap between acknowledged writes), acknowledged writes lost, unexpected ids, failed
statements and the longest statement.
Prints one JSON object."""
import argparse, json, os, subprocess, time

import psycopg2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--conn", required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kill-after", type=float, default=None)
    parser.add_argument("--kill-cmd", default=None)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--until-file", default=None, help="stop early once this file exists")
    parser.add_argument("--steps-file", default=None,
                        help="lines 'START END LABEL' (wall-clock seconds): U is reported per step")
    args = parser.parse_args()

    acked, attempts, failed, longest = [], 0, 0, 0.0
    conn = None
    start = time.monotonic()
    fault_at = None
    next_id = int(time.time() * 1000) * 1000
    while time.monotonic() - start < args.seconds:
        if args.until_file and attempts % 10 == 0 and os.path.exists(args.until_file):
            break
        now = time.monotonic()
        if args.kill_cmd and fault_at is None and now - start >= (args.kill_after or 0):
            fault_at = now
            subprocess.run(args.kill_cmd, shell=True, check=False)
        next_id += 1
        attempts += 1
        try:
            if conn is None:
                conn = psycopg2.connect(args.conn)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO demo_probe (id) VALUES (%s)", (next_id,))
            acked.append((time.monotonic(), next_id, time.time()))
        except Exception:
            failed += 1
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
        longest = max(longest, time.monotonic() - now)
        time.sleep(max(0.0, args.interval - (time.monotonic() - now)))

    final = None
    for _ in range(50):
        try:
            final = psycopg2.connect(args.conn)
            break
        except Exception:
            time.sleep(0.2)
    stored = set()
    if final is not None:
        with final.cursor() as cur:
            cur.execute("SELECT id FROM demo_probe WHERE id >= %s", (acked[0][1] if acked else 0,))
            stored = {row[0] for row in cur.fetchall()}
    acked_ids = {a[1] for a in acked}
    steps = {}
    if args.steps_file and os.path.exists(args.steps_file):
        with open(args.steps_file) as f:
            for line in f:
                parts = line.split(maxsplit=2)
                if len(parts) == 3:
                    begin, end = float(parts[0]), float(parts[1])
                    # Every gap that overlaps the step (one that began before it or runs past
                    # its end too); the whole step when no write was acknowledged across it.
                    inside = [b[2] - a[2] for a, b in zip(acked, acked[1:]) if a[2] < end and b[2] > begin]
                    covered = any(a[2] <= begin for a in acked) and any(a[2] >= end for a in acked)
                    if not covered:
                        inside.append(end - begin)
                    steps[parts[2].strip()] = round(max(inside), 3)
    gaps = [b[0] - a[0] for a, b in zip(acked, acked[1:])]
    around = [b[0] - a[0] for a, b in zip(acked, acked[1:]) if fault_at is None or b[0] >= fault_at]
    print(json.dumps({
        "attempts": attempts,
        "failed": failed,
        "longest_statement_s": round(longest, 3),
        "acked": len(acked),
        "lost": len(acked_ids - stored),
        "unexpected": len(stored - acked_ids),
        "unavailable_s": max(around) if around else None,
        "max_gap_s": max(gaps) if gaps else None,
        **({"steps_unavailable_s": steps} if args.steps_file else {}),
    }))


if __name__ == "__main__":
    main()
