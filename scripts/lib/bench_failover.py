#!/usr/bin/python3
"""The failover benchmark (scripts/bench failover). See ../shared/design/faults.md for U, L, P, Z.

For each timing profile it starts a fresh 3-node cluster (scripts/lib/cluster.sh), then per run:
waits until healthy, starts the prober (a write every 20 ms, multi-host libpq read-write), injects
the fault at 3 s + uniform(0, loop_wait), measures P (fault → new leader in the cluster view),
restores the node, measures Z (fault → old primary streaming again), then stops the prober and
checks every acknowledged id on the final primary (L). Prints a table and one JSON line."""
import argparse, json, os, random, statistics, subprocess, sys, threading, time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROFILES = {
    "default": {"TTL": "30", "LOOP_WAIT": "10", "RETRY_TIMEOUT": "10"},
    "fast": {"TTL": "4", "LOOP_WAIT": "1", "RETRY_TIMEOUT": "1.5"},
}
PG_BASE = 26432


def sh(script, env, check=True, capture=True):
    full = f"source scripts/lib/common.sh; source scripts/lib/cluster.sh; {script}"
    result = subprocess.run(["bash", "-c", full], cwd=ROOT, env=env, capture_output=capture, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{script}: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def members(env):
    out = sh("cluster_list --format json", env, check=False)
    try:
        return json.loads(out)
    except ValueError:
        return []


def leader(env):
    return next((m["member"] for m in members(env) if m["role"] == "Leader"), None)


def healthy(env):
    rows = members(env)
    return sum(r["role"] == "Leader" for r in rows) == 1 and sum(r["state"] == "streaming" for r in rows) == 2


def wait(predicate, limit, step=0.05):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        value = predicate()
        if value:
            return time.monotonic()
        time.sleep(step)
    return None


class Prober(threading.Thread):
    def __init__(self, conn):
        super().__init__(daemon=True)
        self.conn, self.acked, self.stop = conn, [], threading.Event()
        self.next_id = int(time.time() * 1000) * 1000

    def run(self):
        conn = None
        while not self.stop.is_set():
            began = time.monotonic()
            self.next_id += 1
            try:
                if conn is None:
                    conn = psycopg2.connect(self.conn)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_probe (id) VALUES (%s)", (self.next_id,))
                self.acked.append((time.monotonic(), self.next_id))
            except Exception:
                try:
                    conn and conn.close()
                except Exception:
                    pass
                conn = None
            time.sleep(max(0.0, 0.02 - (time.monotonic() - began)))
        if conn is not None:
            conn.close()


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profiles", default="fast,default")
    parser.add_argument("--scenarios", default="node,postgres,switchover")
    args = parser.parse_args()
    results = {}
    for profile in args.profiles.split(","):
        env = dict(os.environ, CLUSTER_DIR=f"/tmp/baton-bench-{profile}", SCOPE="bench", PG_BASE_PORT=str(PG_BASE),
                   ETCD_BASE_PORT="27790", API_BASE_PORT="29008", **PROFILES[profile])
        env["BATON_SUPERUSER_PASSWORD"] = env.get("BATON_SUPERUSER_PASSWORD", "bench-superuser-secret")
        env["BATON_REPLICATION_PASSWORD"] = env.get("BATON_REPLICATION_PASSWORD", "bench-replication-secret")
        loop_wait = float(PROFILES[profile]["LOOP_WAIT"])
        conn = (f"host=127.0.0.1,127.0.0.1,127.0.0.1 port={PG_BASE+1},{PG_BASE+2},{PG_BASE+3} user=postgres "
                f"password={env['BATON_SUPERUSER_PASSWORD']} dbname=postgres target_session_attrs=read-write connect_timeout=1")
        sh("cluster_stop; rm -rf $CLUSTER_DIR", env, check=False)
        print(f"== profile {profile}: ttl {PROFILES[profile]['TTL']} s, loop_wait {loop_wait} s", file=sys.stderr)
        sh("cluster_start", env)
        try:
            if not wait(lambda: healthy(env), 180, 0.5):
                raise RuntimeError("cluster not healthy after 180 s")
            with psycopg2.connect(conn) as c, c.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS bench_probe (id bigint PRIMARY KEY)")
            for scenario in args.scenarios.split(","):
                rows = []
                for run in range(args.runs):
                    if not wait(lambda: healthy(env), 120, 0.2):
                        raise RuntimeError(f"not healthy before {scenario} run {run}")
                    old = leader(env)
                    index = old[len("node"):]
                    others = [f"node{i}" for i in (1, 2, 3) if f"node{i}" != old]
                    prober = Prober(conn)
                    prober.start()
                    time.sleep(3 + random.uniform(0, loop_wait))
                    fault = time.monotonic()
                    if scenario == "node":
                        sh(f"cluster_kill_node {index}", env)
                    elif scenario == "postgres":
                        sh(f"kill -9 $(cluster_postmaster_pid {index})", env)
                    else:
                        sh(f"$BATON_BIN switchover -c $CLUSTER_DIR/node1.yml --candidate {random.choice(others)} --force --no-wait", env)
                    new_at = wait(lambda: (leader(env) not in (None, old)) or (scenario == "postgres" and leader(env) == old and
                                  any(m["member"] == old and m["state"] == "running" for m in members(env)) and
                                  time.monotonic() - fault > 0.3), 90)
                    promoted = leader(env)
                    if scenario == "node":
                        sh(f"cluster_start_agent {index}", env)
                    rejoined = wait(lambda: any(m["member"] == old and (m["state"] == "streaming" or m["role"] == "Leader")
                                                for m in members(env)), 120, 0.1)
                    time.sleep(1.0)
                    prober.stop.set()
                    prober.join()
                    acked = prober.acked
                    around = [b[0] - a[0] for a, b in zip(acked, acked[1:]) if b[0] >= fault]
                    with psycopg2.connect(conn) as c, c.cursor() as cur:
                        cur.execute("SELECT id FROM bench_probe WHERE id >= %s", (acked[0][1] if acked else 0,))
                        stored = {r[0] for r in cur.fetchall()}
                    ids = {i for _, i in acked}
                    row = {
                        "U": max(around) if around else None,
                        "L": len(ids - stored),
                        "unexpected": len(stored - ids),
                        "P": (new_at - fault) if new_at else None,
                        "Z": (rejoined - fault) if rejoined else None,
                        "role_change": promoted != old,
                    }
                    rows.append(row)
                    print(f"  {profile:8} {scenario:10} run {run+1}: U {row['U']:.2f} s  L {row['L']}  "
                          f"P {row['P'] if row['P'] is None else round(row['P'], 2)} s  "
                          f"Z {row['Z'] if row['Z'] is None else round(row['Z'], 2)} s  {old}→{promoted}", file=sys.stderr)
                results[f"{profile}/{scenario}"] = {
                    "runs": len(rows), "U_s": stats([r["U"] for r in rows]), "L_total": sum(r["L"] for r in rows),
                    "unexpected_total": sum(r["unexpected"] for r in rows), "P_s": stats([r["P"] for r in rows]),
                    "Z_s": stats([r["Z"] for r in rows]), "role_changes": sum(r["role_change"] for r in rows),
                }
        finally:
            sh("cluster_stop; rm -rf $CLUSTER_DIR", env, check=False)
    print("\n| profile/scenario | runs | U min/median/max (s) | L | P median (s) | Z median (s) |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for key, r in results.items():
        u = r["U_s"] or {}
        print(f"| {key} | {r['runs']} | {u.get('min')} / {u.get('median')} / {u.get('max')} | {r['L_total']} | "
              f"{(r['P_s'] or {}).get('median')} | {(r['Z_s'] or {}).get('median')} |", file=sys.stderr)
    print(json.dumps({"bench": "failover", "results": results}))


if __name__ == "__main__":
    main()
