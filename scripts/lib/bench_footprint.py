"""scripts/bench footprint: idle RSS and CPU of the agents and their fence guards (see the wrapper)."""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROFILES = {
    "fast": {"TTL": "4", "LOOP_WAIT": "1", "RETRY_TIMEOUT": "1.5"},
    "default": {"TTL": "30", "LOOP_WAIT": "10", "RETRY_TIMEOUT": "10"},
}
TICK = os.sysconf("SC_CLK_TCK")
SETTLE = 15


def sh(script, env, check=True):
    full = f"source scripts/lib/common.sh; source scripts/lib/cluster.sh; {script}"
    result = subprocess.run(["bash", "-c", full], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{script}: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return None


def children(pid):
    """PIDs whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


def guard_of(agent):
    for child in children(agent):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"fence-guard" in f.read():
                    return child
        except OSError:
            pass
    return None


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def fmt(s, unit):
    return "-" if s is None else f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f} {unit}"


def measure(profile, seconds):
    env = dict(os.environ, CLUSTER_DIR=f"/tmp/baton-bench-footprint-{profile}", SCOPE="footprint",
               PG_BASE_PORT="26532", ETCD_BASE_PORT="27890", API_BASE_PORT="29108", **PROFILES[profile])
    env.setdefault("BATON_SUPERUSER_PASSWORD", "bench-superuser-secret")
    env.setdefault("BATON_REPLICATION_PASSWORD", "bench-replication-secret")
    sh("cluster_stop; rm -rf $CLUSTER_DIR", env, check=False)
    print(f"== profile {profile}: ttl {PROFILES[profile]['TTL']} s, loop_wait {PROFILES[profile]['LOOP_WAIT']} s",
          file=sys.stderr)
    sh("cluster_start", env)
    try:
        if subprocess.run(["bash", "-c", "source scripts/lib/common.sh; source scripts/lib/cluster.sh; "
                           "cluster_wait_healthy 180"], cwd=ROOT, env=env).returncode != 0:
            raise RuntimeError("cluster not healthy after 180 s")
        time.sleep(SETTLE)
        agents = [int(open(f"{env['CLUSTER_DIR']}/node{i}.agent.pid").read()) for i in (1, 2, 3)]
        guards = [guard_of(a) for a in agents]
        print(f"   agents {agents}, fence guards {guards}; sampling {seconds} s", file=sys.stderr)
        rss = {"agent": [], "guard": []}
        cpu = {"agent": [], "guard": []}
        # CPU time is counted in clock ticks (1/100 s): over a 10 s window one tick is 0.1 %, too
        # coarse for an idle agent. Each window is a minute (0.017 % a tick), or the whole run.
        window = min(60, seconds)
        for start in range(0, seconds - window + 1, window):
            before = {p: cpu_ticks(p) for p in agents + guards if p}
            t0 = time.monotonic()
            for _ in range(window):
                for kind, pids in (("agent", agents), ("guard", guards)):
                    rss[kind] += [rss_mb(p) for p in pids if p]
                time.sleep(1)
            elapsed = time.monotonic() - t0
            for kind, pids in (("agent", agents), ("guard", guards)):
                for p in pids:
                    after = cpu_ticks(p) if p else None
                    if p and after is not None and before.get(p) is not None:
                        cpu[kind].append(100.0 * (after - before[p]) / TICK / elapsed)
        return {f"{kind}_rss_mb": stats(rss[kind]) for kind in rss} | \
               {f"{kind}_cpu_pct": stats(cpu[kind]) for kind in cpu}
    finally:
        sh("cluster_stop; rm -rf $CLUSTER_DIR", env, check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--profiles", default="fast,default")
    args = parser.parse_args()
    profiles = args.profiles.split(",")
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown or args.seconds < 10:
        sys.exit(f"--profiles takes {','.join(PROFILES)}; --seconds at least 10")
    results = {p: measure(p, args.seconds) for p in profiles}
    print(f"\n| profile | agent RSS (MiB) | agent CPU (%) | fence guard RSS (MiB) | fence guard CPU (%) |")
    print("|---|---|---|---|---|")
    for p, r in results.items():
        print(f"| {p} | {fmt(r['agent_rss_mb'], '')} | {fmt(r['agent_cpu_pct'], '')} | "
              f"{fmt(r['guard_rss_mb'], '')} | {fmt(r['guard_cpu_pct'], '')} |")
    print("(min / median / max: RSS over 1 s samples of 3 agents; CPU over 60 s windows of 3 agents)")
    print(json.dumps({"benchmark": "footprint", "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
