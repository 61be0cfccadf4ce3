#!/usr/bin/python3
"""The failover benchmark (scripts/bench failover). See ../shared/design/faults.md for U, L, P, Z.

For each timing profile it starts a fresh 3-node cluster (scripts/lib/cluster.sh), then per run:
waits until healthy, starts two write probers side by side, each writing a unique id every 20 ms
into its own table —
  * libpq:        psycopg2, libpq multi-host with target_session_attrs=read-write (reconnects on error);
  * baton_client: baton-bench-probe, `BatonClient.write` with the topology from etcd;
waits until both have an acknowledged write, injects the fault at 3 s + uniform(0, loop_wait),
measures P (fault → new leader in the cluster view), restores the node, measures Z (fault → old
primary streaming again), stops both probers and reads the final primary: every acknowledged id of
each prober must be there (L), and ids stored but never acknowledged are counted (unexpected).
U (longest gap between two acknowledged writes around the fault) is computed per prober.

All times are time.monotonic() (CLOCK_MONOTONIC); baton-bench-probe stamps its attempts on the
same clock (see its header), so its acknowledgements and our fault moment compare directly.

Prints per-run lines and a table on stderr, writes results.json, the probe logs and a PNG chart
under --out (default /tmp/baton-bench-failover), copies the chart to docs/img/failover.png after a
full run (≥ 7 runs, both profiles, all scenarios), and ends with one line of JSON on stdout."""
import argparse, collections, json, os, random, shutil, statistics, subprocess, sys, threading, time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROFILES = {
    "fast": {"TTL": "4", "LOOP_WAIT": "1", "RETRY_TIMEOUT": "1.5"},
    "default": {"TTL": "30", "LOOP_WAIT": "10", "RETRY_TIMEOUT": "10"},
    # The fast timings in synchronous mode and in quorum commit (ANY 1 of the two standbys).
    "sync": {"TTL": "4", "LOOP_WAIT": "1", "RETRY_TIMEOUT": "1.5", "SYNC_MODE": "true"},
    "quorum": {"TTL": "4", "LOOP_WAIT": "1", "RETRY_TIMEOUT": "1.5", "SYNC_MODE": "quorum"},
}
SCENARIOS = {
    "node": "whole-node crash",
    "postgres": "postgres-only crash",
    "switchover": "planned switchover",
}
PROBERS = {"libpq": "libpq multi-host", "baton_client": "BatonClient"}
TABLES = {"libpq": "bench_probe", "baton_client": "bench_probe_client"}
PG_BASE = 26432
INTERVAL = 0.02


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


class LibpqProber(threading.Thread):
    """Writes first_id+1, first_id+2, … every 20 ms through libpq multi-host read-write."""

    def __init__(self, conn, first_id):
        super().__init__(daemon=True)
        self.conn, self.next_id, self.stop_event = conn, first_id, threading.Event()
        self.acked, self.ports, self.errors = [], [], collections.Counter()

    def run(self):
        conn = None
        while not self.stop_event.is_set():
            began = time.monotonic()
            self.next_id += 1
            try:
                if conn is None:
                    conn = psycopg2.connect(self.conn)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_probe (id) VALUES (%s) RETURNING inet_server_port()", (self.next_id,))
                    port = cur.fetchone()[0]
                self.acked.append((time.monotonic(), self.next_id))
                self.ports.append(port)
            except Exception as error:
                self.errors[type(error).__name__] += 1
                try:
                    conn and conn.close()
                except Exception:
                    pass
                conn = None
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - began)))
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop_event.set()
        self.join(10)


class ClientProber:
    """baton-bench-probe (BatonClient.write) as a child process; reads its JSON lines as they come
    and keeps them in LOG (one file per run, for inspection). Stopped by closing its stdin."""

    def __init__(self, binary, env, first_id, log):
        endpoints = open(os.path.join(env["CLUSTER_DIR"], "etcd", "endpoints")).read().strip()
        child_env = dict(env, BATON_PASSWORD=env["BATON_SUPERUSER_PASSWORD"])
        self.acked, self.ports, self.errors, self.outcome_unknown = [], [], collections.Counter(), 0
        self.log = open(log, "w")
        self.stderr = open(log[: -len(".jsonl")] + ".stderr.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"etcd_hosts={endpoints}", f"scope={env['SCOPE']}", "user=postgres", "dbname=postgres",
             f"table={TABLES['baton_client']}", f"first_id={first_id}", f"interval_ms={INTERVAL * 1000:g}",
             "seconds=900"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=child_env, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "ack" in record:
                self.acked.append((record["ack"], record["id"]))
                self.ports.append(record.get("port"))
            elif "error" in record:
                self.errors[record["error"]] += 1
                self.outcome_unknown += bool(record.get("outcome_unknown"))

    def finish(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)
        self.log.close()
        self.stderr.close()
        if self.proc.returncode not in (0, None) and not self.acked:
            raise RuntimeError(f"baton-bench-probe exited with status {self.proc.returncode}; "
                               f"see {self.stderr.name}")


def stored_ids(conn, table, first_id):
    """The ids above first_id in TABLE on the final primary (multi-host read-write), retried ≤ 20 s."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg2.connect(conn) as c, c.cursor() as cur:
                cur.execute(f"SELECT id FROM {table} WHERE id > %s", (first_id,))
                return {r[0] for r in cur.fetchall()}
        except psycopg2.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def measure(prober, fault, stored):
    """U, L and the rest for one prober in one run."""
    acked = sorted(prober.acked)
    around = [b[0] - a[0] for a, b in zip(acked, acked[1:]) if b[0] >= fault]
    ids = {i for _, i in acked}
    ports = [p for p in prober.ports if p is not None]
    return {
        # None: no write was acknowledged after the fault (the prober never recovered).
        "U": max(around) if around else None,
        "L": len(ids - stored),
        "unexpected": len(stored - ids),
        "acked": len(acked),
        "errors": dict(prober.errors),
        "first_port": ports[0] if ports else None,
        "last_port": ports[-1] if ports else None,
    }


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def fmt(s):
    return "—" if not s else f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f}"


def inject(env, scenario, old):
    """The fault on the primary OLD (`nodeN`): `node` (agent and postmaster SIGKILLed), `postgres`
    (postmaster SIGKILLed) or a planned switchover (any other name). Returns when it was injected
    and when the cluster had a new leader (for `postgres`, OLD running again; None: not within
    90 s), both on the monotonic clock."""
    index = old[len("node"):]
    fault = time.monotonic()
    if scenario == "node":
        sh(f"cluster_kill_node {index}", env)
    elif scenario == "postgres":
        sh(f"kill -9 $(cluster_postmaster_pid {index})", env)
    else:
        # In synchronous mode the candidate must be a synchronous standby: the agent picks it,
        # and refuses while none is confirmed yet (right after the previous switchover).
        others = [f"node{i}" for i in (1, 2, 3) if f"node{i}" != old]
        candidate = "" if env.get("SYNC_MODE", "false") != "false" else f"--candidate {random.choice(others)}"
        for attempt in range(20):
            try:
                sh(f"$BATON_BIN switchover -c $CLUSTER_DIR/node1.yml {candidate} --force --no-wait", env)
                break
            except RuntimeError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        fault = time.monotonic() if attempt else fault
    new_at = wait(lambda: (leader(env) not in (None, old)) or (
        scenario == "postgres" and leader(env) == old and
        any(m["member"] == old and m["state"] == "running" for m in members(env)) and
        time.monotonic() - fault > 0.3), 90)
    return fault, new_at


def one_run(env, conn, probe_bin, out_dir, profile, scenario, run, loop_wait):
    # Healthy and led, read in one go: a cluster seen healthy can be between two leaders a moment
    # later (the previous run's old primary rejoining), and a run needs to know whom it kills.
    found = {}

    def ready():
        found["leader"] = leader(env) if healthy(env) else None
        return found["leader"] is not None

    if not wait(ready, 120, 0.2):
        raise RuntimeError(f"not healthy with a leader before {scenario} run {run + 1}")
    old = found["leader"]
    index = old[len("node"):]
    first_id = int(time.time() * 1000) * 1000
    probers = {
        "libpq": LibpqProber(conn, first_id),
        "baton_client": ClientProber(probe_bin, env, first_id, os.path.join(
            out_dir, f"probe-{profile}-{scenario}-{run + 1}.jsonl")),
    }
    probers["libpq"].start()
    try:
        if not wait(lambda: all(p.acked for p in probers.values()), 30):
            raise RuntimeError(f"{profile} {scenario} run {run + 1}: a prober had no write acknowledged within "
                               f"30 s: {({k: dict(p.errors) for k, p in probers.items()})}; BatonClient prober's "
                               f"log: {probers['baton_client'].stderr.name}")
        time.sleep(3 + random.uniform(0, loop_wait))
        fault, new_at = inject(env, scenario, old)
        promoted = leader(env)
        if scenario == "node":
            sh(f"cluster_start_agent {index}", env)
        rejoined = wait(lambda: any(m["member"] == old and (m["state"] == "streaming" or m["role"] == "Leader")
                                    for m in members(env)), 120, 0.1)
        time.sleep(1.0)
    finally:
        for prober in probers.values():
            prober.finish()
    row = {
        "P": (new_at - fault) if new_at else None,
        "Z": (rejoined - fault) if rejoined else None,
        "role_change": promoted != old, "old": old, "new": promoted,
        "probers": {name: measure(p, fault, stored_ids(conn, TABLES[name], first_id)) for name, p in probers.items()},
    }
    parts = []
    for name, m in row["probers"].items():
        u = "never recovered" if m["U"] is None else f"{m['U']:.2f} s"
        parts.append(f"{name} U {u} L {m['L']} (+{m['unexpected']}) acked {m['acked']} "
                     f"port {m['first_port']}→{m['last_port']}")
    p = "—" if row["P"] is None else f"{row['P']:.2f} s"
    z = "—" if row["Z"] is None else f"{row['Z']:.2f} s"
    print(f"  {profile:8} {scenario:10} run {run + 1}: {'; '.join(parts)}; P {p} Z {z} {old}→{promoted}",
          file=sys.stderr)
    return row


def summarize(rows):
    summary = {
        "runs": len(rows), "P_s": stats([r["P"] for r in rows]), "Z_s": stats([r["Z"] for r in rows]),
        "role_changes": sum(r["role_change"] for r in rows), "probers": {},
    }
    for name in PROBERS:
        ms = [r["probers"][name] for r in rows]
        summary["probers"][name] = {
            "U_s": stats([m["U"] for m in ms]), "L_total": sum(m["L"] for m in ms),
            "unexpected_total": sum(m["unexpected"] for m in ms), "acked_total": sum(m["acked"] for m in ms),
            "unrecovered_runs": sum(m["U"] is None for m in ms),
        }
    return summary


def chart(results, path, title):
    """Rows: profiles; columns: U (one range per prober), P, Z. Dot = median, bar = min…max; log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    profiles = sorted({k.split("/")[0] for k in results}, key=lambda p: list(PROFILES).index(p))
    scenarios = [s for s in SCENARIOS if any(k.endswith("/" + s) for k in results)]
    fig, axes = plt.subplots(len(profiles), 3, figsize=(14, 4.2 * len(profiles)), squeeze=False)
    colors = {"libpq": "#1f77b4", "baton_client": "#d62728", "cluster": "#555555"}
    for row, profile in enumerate(profiles):
        p = PROFILES[profile]
        for col, metric in enumerate(["U", "P", "Z"]):
            ax = axes[row][col]
            series = [(name, PROBERS[name]) for name in PROBERS] if metric == "U" else [("cluster", None)]
            width = 0.8 / len(series)
            for j, (name, label) in enumerate(series):
                for i, scenario in enumerate(scenarios):
                    r = results.get(f"{profile}/{scenario}")
                    s = r and (r["probers"][name]["U_s"] if metric == "U" else r[f"{metric}_s"])
                    if not s:
                        continue
                    x = i + (j - (len(series) - 1) / 2) * width
                    ax.errorbar([x], [s["median"]], yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                                fmt="o", color=colors[name], capsize=5, markersize=7, elinewidth=2,
                                label=label if i == 0 else None)
                    text = f"{s['median']:.2f}"
                    if metric == "U":
                        text += f"\nL {r['probers'][name]['L_total']}"
                    ax.annotate(text, (x, s["median"]), textcoords="offset points", xytext=(6, -3),
                                fontsize=8, color=colors[name], va="center")
            ax.set_yscale("log")
            ax.margins(y=0.15)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 3, 5)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xticks(range(len(scenarios)))
            ax.set_xticklabels([SCENARIOS[s].replace(" ", "\n", 1) for s in scenarios], fontsize=9)
            ax.set_xlim(-0.6, len(scenarios) - 0.4)
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.set_ylabel("seconds (log scale)")
            names = {"U": "U: longest gap between acknowledged writes (L: lost)", "P": "P: fault → new leader",
                     "Z": "Z: fault → old primary streaming again"}
            ax.set_title(f"{profile} profile (ttl {p['TTL']} s, loop_wait {p['LOOP_WAIT']} s)\n{names[metric]}",
                         fontsize=10)
            if metric == "U":
                ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args():
    parser = argparse.ArgumentParser(prog="scripts/bench failover")
    parser.add_argument("--runs", type=int, default=7, help="runs per scenario and profile (≥ 7 for figures)")
    parser.add_argument("--profiles", default="fast,default", help="comma-separated: " + ",".join(PROFILES))
    parser.add_argument("--scenarios", default="node,postgres,switchover", help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--out", default="/tmp/baton-bench-failover", help="results.json, probe logs and the chart")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")
    for option, given, known in (("--profiles", args.profiles, PROFILES), ("--scenarios", args.scenarios, SCENARIOS)):
        wrong = [x for x in given.split(",") if x not in known]
        if wrong or not given:
            parser.error(f"{option} {given}: unknown {', '.join(wrong) or '(empty)'}; choose from {', '.join(known)}")
    return args


def main():
    args = parse_args()
    probe_bin = os.environ.get("BATON_PROBE_BIN", "")
    if not os.access(probe_bin, os.X_OK):
        sys.exit(f"BATON_PROBE_BIN={probe_bin!r} is not an executable; run this through `scripts/bench failover`, "
                 "which builds baton-bench-probe")
    profiles, scenarios = args.profiles.split(","), args.scenarios.split(",")
    os.makedirs(args.out, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results, raw = {}, {}
    for profile in profiles:
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
                for table in TABLES.values():
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY)")
            for scenario in scenarios:
                rows = [one_run(env, conn, probe_bin, args.out, profile, scenario, run, loop_wait)
                        for run in range(args.runs)]
                raw[f"{profile}/{scenario}"] = rows
                results[f"{profile}/{scenario}"] = summarize(rows)
        finally:
            # The agents' logs stay with the results, to read a slow run afterwards.
            sh(f"cluster_stop; for f in $CLUSTER_DIR/node*.agent.log; do cp \"$f\" {args.out}/{profile}-$(basename \"$f\"); done; "
               "rm -rf $CLUSTER_DIR", env, check=False)

    print("\n| profile / scenario | prober | runs | U min / median / max (s) | L | unexpected | "
          "P min / median / max (s) | Z min / median / max (s) |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for key, r in results.items():
        profile, scenario = key.split("/")
        for name, label in PROBERS.items():
            pr = r["probers"][name]
            never = f" ({pr['unrecovered_runs']} never recovered)" if pr["unrecovered_runs"] else ""
            print(f"| {profile}: {SCENARIOS[scenario]} | {label} | {r['runs']} | {fmt(pr['U_s'])}{never} | "
                  f"{pr['L_total']} | {pr['unexpected_total']} | {fmt(r['P_s'])} | {fmt(r['Z_s'])} |", file=sys.stderr)

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"started": started, "runs": args.runs, "summary": results, "raw": raw}, f, indent=1)
    png = os.path.join(args.out, "failover.png")
    chart(results, png, f"scripts/bench failover — {args.runs} run(s) per scenario, {started}; "
                        "dot = median, bar = min…max")
    full = args.runs >= 7 and set(profiles) == {"fast", "default"} and set(scenarios) == set(SCENARIOS)
    if full:
        os.makedirs(os.path.join(ROOT, "docs", "img"), exist_ok=True)
        shutil.copyfile(png, os.path.join(ROOT, "docs", "img", "failover.png"))
        print("chart copied to docs/img/failover.png (a full run)", file=sys.stderr)
    print(f"chart: {png}\nper-run results and probe logs: {args.out}", file=sys.stderr)
    print(json.dumps({"bench": "failover", "runs": args.runs, "chart": png, "results": results}, sort_keys=True))


if __name__ == "__main__":
    main()
