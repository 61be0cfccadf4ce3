#!/usr/bin/python3
"""The pooler benchmark (scripts/bench pooler): what a client behind PgBouncer sees when the
primary changes, with `baton pooler` coordinating (PAUSE around a planned switchover) and without,
beside HAProxy with REST health checks (as Patroni users run it) and libpq multi-host.

One 3-node cluster (scripts/lib/cluster.sh; fast timings, synchronous mode by default), one real
PgBouncer (transaction pooling) with `baton pooler` beside it, one HAProxy whose `primary` listener
checks every agent's GET /primary (compose/haproxy/haproxy.cfg's timings: inter 1s fall 2 rise 2,
on-marked-down shutdown-sessions). Three writers side by side, each inserting a unique id every
20 ms on one autocommit connection (psycopg2, reconnecting after an error):
  * pgbouncer: through PgBouncer's `app` database;
  * haproxy:   through HAProxy's primary listener;
  * libpq:     libpq multi-host with target_session_attrs=read-write.
Scenarios, in order:
  * coordinated:   --switchovers planned switchovers with the pooler pausing `app` around each;
  * uncoordinated: as many with the pooler started with --no-pause-on-switchover (it re-points and
                   KILLs the old primary's connections, as on a failover);
  * node, postgres: --crashes whole-node crashes (agent and postmaster SIGKILLed) and
                   postgres-only crashes (postmaster SIGKILLed) of the primary.
Per writer and scenario: failed statements, the longest and the 99th-percentile statement latency,
U (longest gap between acknowledged writes after the fault) and L (acknowledged ids missing from
the final primary). Prints a table on stderr, writes results.json under --out and ends with one
line of JSON on stdout. Every process it starts is stopped by PID."""
import argparse, json, os, random, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psycopg2  # noqa: E402

from bench_failover import ROOT, healthy, inject, leader, sh, stats, stored_ids, wait  # noqa: E402

PG_BASE, API_BASE, ETCD_BASE = 26532, 29108, 27890
# cluster.sh puts PgBouncer at PG_BASE + 10 and the pooler's status endpoint at PG_BASE + 11.
BOUNCER_PORT, HAPROXY_PORT = PG_BASE + 10, PG_BASE + 12
INTERVAL = 0.02
WRITERS = ("pgbouncer", "haproxy", "libpq")
SCENARIOS = {
    "coordinated": "planned switchover, pooler pauses",
    "uncoordinated": "planned switchover, no pause",
    "node": "whole-node crash",
    "postgres": "postgres-only crash",
}


class Writer(threading.Thread):
    """Inserts first_id+1, first_id+2, … every 20 ms into TABLE through CONN; every attempt is kept
    as (start, end, ok) on the monotonic clock."""

    def __init__(self, conn, table, first_id):
        super().__init__(daemon=True)
        self.conn, self.table, self.next_id = conn, table, first_id
        self.stop_event = threading.Event()
        self.attempts, self.acked, self.errors = [], [], {}

    def run(self):
        conn = None
        while not self.stop_event.is_set():
            began = time.monotonic()
            self.next_id += 1
            ok = False
            try:
                if conn is None:
                    conn = psycopg2.connect(self.conn)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (self.next_id,))
                ok = True
                self.acked.append((time.monotonic(), self.next_id))
            except Exception as error:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                try:
                    conn and conn.close()
                except Exception:
                    pass
                conn = None
            self.attempts.append((began, time.monotonic(), ok))
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - began)))
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop_event.set()
        self.join(40)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Tier:
    """PgBouncer and `baton pooler` (scripts/lib/cluster.sh, as scripts/demo starts them) and
    HAProxy in front of the cluster, each stopped by PID."""

    def __init__(self, env, out):
        self.env, self.out = env, out
        self.haproxy = None

    def start(self):
        sh("cluster_start_pgbouncer", self.env)
        backends = "\n".join(
            f"    server node{i} 127.0.0.1:{PG_BASE + i} check port {API_BASE + i}" for i in (1, 2, 3))
        with open(f"{self.out}/haproxy.cfg", "w") as f:
            f.write(f"""global
    maxconn 200
defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 2s
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
listen primary
    bind 127.0.0.1:{HAPROXY_PORT}
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
{backends}
""")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", f"{self.out}/haproxy.cfg"],
                                        stdout=open(f"{self.out}/haproxy.out", "w"), stderr=subprocess.STDOUT)

    def start_pooler(self, pause):
        sh("cluster_stop_pooler", self.env)
        sh("cluster_start_pooler" + ("" if pause else " --no-pause-on-switchover"), self.env)
        if not wait(self.following, 30, 0.2):
            raise RuntimeError(f"baton pooler not following after 30 s; see {self.env['CLUSTER_DIR']}/pooler.log")

    def following(self):
        return subprocess.run(["bash", "-c", "source scripts/lib/cluster.sh; cluster_pooler_following"], cwd=ROOT,
                              env=self.env).returncode == 0

    def stop(self):
        sh("cluster_stop_pooler", self.env, check=False)
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(5)


def conns(env):
    password = env["BATON_SUPERUSER_PASSWORD"]
    return {
        "pgbouncer": f"host=127.0.0.1 port={BOUNCER_PORT} user=postgres password={password} dbname=app "
                     "connect_timeout=2",
        "haproxy": f"host=127.0.0.1 port={HAPROXY_PORT} user=postgres password={password} dbname=postgres "
                   "connect_timeout=2",
        "libpq": f"host=127.0.0.1,127.0.0.1,127.0.0.1 port={PG_BASE + 1},{PG_BASE + 2},{PG_BASE + 3} user=postgres "
                 f"password={password} dbname=postgres target_session_attrs=read-write connect_timeout=1",
    }


def one_run(env, tier, scenario, run):
    found = {}

    def ready():
        found["leader"] = leader(env) if healthy(env) else None
        return found["leader"] is not None and tier.following()

    if not wait(ready, 120, 0.2):
        raise RuntimeError(f"not healthy (or the pooler not following) before {scenario} run {run + 1}")
    old = found["leader"]
    index = old[len("node"):]
    first_id = int(time.time() * 1000) * 1000
    paths = conns(env)
    writers = {name: Writer(paths[name], f"bench_pool_{name}", first_id) for name in WRITERS}
    for writer in writers.values():
        writer.start()
    try:
        if not wait(lambda: all(w.acked for w in writers.values()), 30):
            raise RuntimeError(f"{scenario} run {run + 1}: a writer had no write acknowledged within 30 s: "
                               f"{ {k: w.errors for k, w in writers.items()} }")
        time.sleep(2 + random.uniform(0, 1))
        fault, new_at = inject(env, "switchover" if scenario.endswith("coordinated") else scenario, old)
        if scenario == "node":
            sh(f"cluster_start_agent {index}", env)
        wait(lambda: all(w.acked and w.acked[-1][0] > (new_at or fault) + 1 for w in writers.values()), 30)
        time.sleep(1.0)
    finally:
        for writer in writers.values():
            writer.finish()
    row = {"old": old, "new": leader(env)}
    for name, writer in writers.items():
        ids = stored_ids(paths["libpq"], f"bench_pool_{name}", first_id)
        acked = sorted(writer.acked)
        around = [b[0] - a[0] for a, b in zip(acked, acked[1:]) if b[0] >= fault]
        window = [(s, e, ok) for s, e, ok in writer.attempts if e >= fault - 1]
        row[name] = {
            "U": max(around) if around else None,
            "L": len({i for _, i in acked} - ids),
            "failed": sum(not ok for _, _, ok in window),
            "latencies": [e - s for s, e, _ in window],
            "errors": writer.errors,
        }
    text = "; ".join(
        f"{n} U {row[n]['U'] or float('nan'):.2f} s failed {row[n]['failed']} L {row[n]['L']} "
        f"max {max(row[n]['latencies'] or [0]):.2f} s" for n in WRITERS)
    print(f"  {scenario:13} run {run + 1}: {text} ({old}→{row['new']})", file=sys.stderr)
    return row


def summarize(rows):
    summary = {"runs": len(rows)}
    for name in WRITERS:
        latencies = [x for r in rows for x in r[name]["latencies"]]
        summary[name] = {
            "failed": sum(r[name]["failed"] for r in rows),
            "L": sum(r[name]["L"] for r in rows),
            "U_s": stats([r[name]["U"] for r in rows]),
            "max_latency_s": round(max(latencies), 3) if latencies else None,
            "p99_latency_s": round(percentile(latencies, 99), 3) if latencies else None,
            "unrecovered_runs": sum(r[name]["U"] is None for r in rows),
        }
    us = [(r["pgbouncer"]["U"], r["libpq"]["U"]) for r in rows]
    summary["pgbouncer_minus_libpq_U_s"] = stats([b - a for b, a in us if a is not None and b is not None])
    return summary


def main():
    parser = argparse.ArgumentParser(prog="scripts/bench pooler")
    parser.add_argument("--switchovers", type=int, default=10, help="planned switchovers per mode (default 10)")
    parser.add_argument("--crashes", type=int, default=3, help="whole-node and postgres-only crashes each (3)")
    parser.add_argument("--sync", choices=["on", "off"], default="on", help="synchronous mode (default on)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--out", default="/tmp/baton-bench-pooler", help="results.json and the logs")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    wrong = [s for s in scenarios if s not in SCENARIOS]
    if wrong or args.switchovers < 1 or args.crashes < 0:
        parser.error(f"unknown scenarios {wrong}" if wrong else "--switchovers ≥ 1, --crashes ≥ 0")
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, CLUSTER_DIR="/tmp/baton-bench-pooler-cluster", SCOPE="benchpool",
               PG_BASE_PORT=str(PG_BASE), ETCD_BASE_PORT=str(ETCD_BASE), API_BASE_PORT=str(API_BASE),
               TTL="4", LOOP_WAIT="1", RETRY_TIMEOUT="1.5", SYNC_MODE="true" if args.sync == "on" else "false")
    env.setdefault("BATON_SUPERUSER_PASSWORD", "bench-superuser-secret")
    env.setdefault("BATON_REPLICATION_PASSWORD", "bench-replication-secret")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sh("cluster_stop; rm -rf $CLUSTER_DIR", env, check=False)
    print(f"== cluster: ttl 4 s, loop_wait 1 s, synchronous mode {args.sync}", file=sys.stderr)
    sh("cluster_start", env)
    tier = Tier(env, args.out)
    results, raw = {}, {}
    try:
        if not wait(lambda: healthy(env), 180, 0.5):
            raise RuntimeError("cluster not healthy after 180 s")
        with psycopg2.connect(conns(env)["libpq"]) as c, c.cursor() as cur:
            for name in WRITERS:
                cur.execute(f"CREATE TABLE IF NOT EXISTS bench_pool_{name} (id bigint PRIMARY KEY)")
        tier.start()
        for scenario in scenarios:
            tier.start_pooler(pause=scenario != "uncoordinated")
            count = args.switchovers if scenario in ("coordinated", "uncoordinated") else args.crashes
            rows = [one_run(env, tier, scenario, run) for run in range(count)]
            raw[scenario] = [{k: (dict(v, latencies=len(v["latencies"])) if k in WRITERS else v)
                              for k, v in r.items()} for r in rows]
            if rows:
                results[scenario] = summarize(rows)
    finally:
        tier.stop()
        sh(f"cluster_stop; for f in $CLUSTER_DIR/node*.agent.log; do cp \"$f\" {args.out}/; done; "
           f"cp $CLUSTER_DIR/pgbouncer/pgbouncer.log $CLUSTER_DIR/pooler.log {args.out}/ 2>/dev/null; "
           "rm -rf $CLUSTER_DIR", env, check=False)

    def fmt(s):
        return "—" if not s else f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f}"

    print("\n| scenario | writer | runs | failed | max latency (s) | p99 latency (s) | U min / median / max (s) | L |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for scenario, r in results.items():
        for name in WRITERS:
            w = r[name]
            never = f" ({w['unrecovered_runs']} never recovered)" if w["unrecovered_runs"] else ""
            print(f"| {SCENARIOS[scenario]} | {name} | {r['runs']} | {w['failed']} | {w['max_latency_s']} | "
                  f"{w['p99_latency_s']} | {fmt(w['U_s'])}{never} | {w['L']} |", file=sys.stderr)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"started": started, "sync": args.sync, "summary": results, "raw": raw}, f, indent=1)
    print(f"results and logs: {args.out}", file=sys.stderr)
    print(json.dumps({"bench": "pooler", "sync": args.sync, "switchovers": args.switchovers,
                      "crashes": args.crashes, "results": results}, sort_keys=True))


if __name__ == "__main__":
    main()
