#!/usr/bin/python3
"""scripts/faults: the fault matrix (scenarios 1–14), the randomized soak (15) and the local lies
(16 and up, scenarios_local.py: 16a, 16b data directory damaged or foreign; 17a, 17b, 17c the agent
cannot query its own postgres: refused at login, no connection slot, its backend stopped; 18, 18b
restart slower than the lease; 19 fence guard killed, then cut from etcd; 20 every etcd request
3–10 s; 21 hooks that hang; 22 agent and fence guard stopped together; 24 ttl changed) on network
namespaces. The soak draws from both classes (class 2: the kinds of LOCAL_SOAK). See harness.py for
the layout and ../shared/design/faults.md for what each scenario must hold. Prints a table and ends
with one line of JSON; exit status 1 when a check failed."""
import argparse, json, os, random, signal, sys, time, traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ETCD, NODES, Cluster, log  # noqa: E402
from observers import Observation, setup_tables, stats  # noqa: E402
from scenarios import FENCED, ORDER, SCENARIOS, Ctx, check  # noqa: E402
from scenarios_local import LOCAL_FENCED, LOCAL_ORDER, LOCAL_SCENARIOS, LOCAL_SOAK  # noqa: E402

# Class 2, the local lies (16 and up), after the matrix: scenarios_local.py imports scenarios.py's
# helpers, so the tables are joined here rather than there (no import cycle).
SCENARIOS.update(LOCAL_SCENARIOS)
ORDER.extend(LOCAL_ORDER)
FENCED.update(LOCAL_FENCED)

PROFILES = {
    "fast": {"ttl": 4, "loop_wait": 1, "retry_timeout": 1.5},
    "default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
}


def dynamic_config(profile, sync):
    config = dict(PROFILES[profile])
    config.update(maximum_lag_on_failover=1048576, synchronous_mode=sync)
    return config


def prepare(cluster, sync):
    if cluster.dynamic["synchronous_mode"] != sync:
        log(f"synchronous_mode → {sync}")
        cluster.set_synchronous(sync)
    if not cluster.wait_healthy(60, sync if sync else None):
        log("cluster not healthy: repairing")
        if not cluster.repair(sync if sync else None, 150):
            raise RuntimeError("cluster not healthy after 150 s of repair")


def common_checks(obs, final, sync, recovered):
    overlap, events = obs.split_brain()
    checks = [check("D2 = 0 (never two nodes accepting writes)", overlap == 0 and events == 0,
                    f"overlap {overlap:.3f}s, {events} writes inside another node's epoch"),
              check("no unexpected id on the final primary", final["unexpected"] == 0, f"{final['unexpected']}"),
              check("cluster healthy again (one primary, two streaming replicas)", recovered)]
    if sync:
        checks.append(check("L = 0 (synchronous mode)", final["L"] == 0, f"L={final['L']}"))
        checks.append(check("acknowledged direct writes all on the final timeline", final["direct_lost"] == 0,
                            f"{final['direct_lost']} lost"))
    return checks, overlap, events


def run_scenario(cluster, key, default_sync):
    title, fn, mode = SCENARIOS[key]
    sync = default_sync if mode is None else mode
    prepare(cluster, sync)
    old = cluster.leader()
    ctx = Ctx(cluster, old)
    obs = Observation(cluster)
    obs.start()
    time.sleep(3 + random.uniform(0, cluster.loop_wait))
    error = None
    try:
        own = fn(cluster, obs, ctx)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        own = [check("scenario ran", False, error)]
    if obs.fault_at is None:  # the scenario failed before its fault: measure from now
        obs.mark("fault")
    recovered = cluster.wait_healthy(60, sync if sync else None)
    if not recovered:
        log("not healthy 60 s after the scenario: the check fails; repairing for the next one")
        cluster.repair(sync if sync else None, 120)
    time.sleep(1)
    obs.stop()
    final = obs.final_read()
    shared, overlap, events = common_checks(obs, final, sync, recovered)
    obs.log_violations(log)
    checks = own + shared
    row = {
        "scenario": key, "title": title, "synchronous": sync, "old_primary": old,
        "U": obs.unavailability(), "L": final["L"], "D2": overlap, "D2_events": events,
        "F": obs.fence_latency(old) if key in FENCED else None, "P": obs.promotion(old), "R": obs.leader_changes(), "Z": obs.rejoin(old),
        "acked": final["acked"], "unexpected": final["unexpected"], "in_doubt": final["in_doubt"],
        "direct_lost": final["direct_lost"], "leaders": "→".join(obs.leader_sequence()), "notes": ctx.notes,
        "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in checks],
        "passed": all(ok for _, ok, _ in checks),
    }
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    log(f"scenario {key} ({title}): {'PASS' if row['passed'] else 'FAIL'}  U {fmt(row['U'])} s  L {row['L']}  "
        f"D2 {overlap:.2f} s/{events}  F {fmt(row['F'])} s  P {fmt(row['P'])} s  R {row['R']}  Z {fmt(row['Z'])} s  "
        f"leaders {row['leaders']}")
    for c, ok, d in checks:
        if not ok:
            log(f"    FAILED: {c} {d}")
    return row


def summarize(rows):
    by = {}
    for r in rows:
        by.setdefault(r["scenario"], []).append(r)
    out = {}
    for key, rs in by.items():
        out[key] = {
            "title": rs[0]["title"], "runs": len(rs), "synchronous": any(r["synchronous"] for r in rs),
            "passed": sum(r["passed"] for r in rs),
            "U_s": stats([r["U"] for r in rs]), "L": sum(r["L"] for r in rs),
            "D2_s": round(sum(r["D2"] for r in rs), 3), "D2_events": sum(r["D2_events"] for r in rs),
            "F_s": stats([r["F"] for r in rs]), "P_s": stats([r["P"] for r in rs]),
            "R": [r["R"] for r in rs if r["R"] is not None], "Z_s": stats([r["Z"] for r in rs]),
            "failed_checks": sorted({c["check"] for r in rs for c in r["checks"] if not c["ok"]}),
        }
    return out


def print_table(summary):
    def s(v):
        return "-" if not v else (f"{v['median']}" if v["min"] == v["max"] else
                                  f"{v['min']} / {v['median']} / {v['max']}")
    print("\n| # | scenario | mode | runs | pass | U (s) | L | D2 (s, events) | F (s) | R | Z (s) |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for key, r in summary.items():
        print(f"| {key} | {r['title']} | {'sync' if r['synchronous'] else 'async'} | {r['runs']} | {r['passed']} | "
              f"{s(r['U_s'])} | {r['L']} | {r['D2_s']}, {r['D2_events']} | {s(r['F_s'])} | "
              f"{', '.join(map(str, r['R']))} | {s(r['Z_s'])} |", file=sys.stderr)


# --- scenario 15: the randomized soak ---
SOAK_KINDS = ["postgres-crash", "agent-kill", "node-crash", "agent-freeze", "etcd-member-kill", "etcd-quorum-pause",
              "cut-etcd", "isolate", "wal-cut", "switchover", "clock-jump", "replica-crash"]
# Class 2 (scenarios_local.py): pg-auth-refused (17a), pg-slots-full (17b), pg-backend-stop (17c),
# guard-kill-cut (19), agent-guard-freeze (22), etcd-slow (20, delays of 20–80 % of retry_timeout),
# each injected on the leader and repaired after the hold. 16, 18 and 21 need a stopped node, an
# asynchronous cluster or restarted agents and stay out; 24 changes what later faults measure.
SOAK_KINDS += list(LOCAL_SOAK)


def soak(cluster, args):
    sync = True
    prepare(cluster, sync)
    obs = Observation(cluster)
    obs.start()
    obs.mark("fault")
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    kinds = args.kinds
    counts, not_recovered, not_injected, faults = {}, [], [], 0
    while faults < args.faults and (deadline is None or time.monotonic() < deadline):
        kind = random.choice(kinds)
        leader = cluster.leader()
        if leader not in cluster.nodes:
            cluster.repair(sync, 120)
            continue
        replicas = [n for n in NODES if n != leader]
        node = cluster.nodes[leader]
        time.sleep(random.uniform(0, 2 * cluster.loop_wait))
        hold = random.uniform(1, 2 * cluster.ttl)
        log(f"soak fault {faults + 1}: {kind} (leader {leader}, hold {hold:.1f} s)")
        if kind == "postgres-crash":
            node.kill_postgres()
        elif kind == "agent-kill":
            node.kill_agent()
            time.sleep(hold)
            node.start()
        elif kind == "node-crash":
            node.crash()
            time.sleep(hold)
            node.start()
        elif kind == "replica-crash":
            victim = cluster.nodes[random.choice(replicas)]
            victim.crash()
            time.sleep(hold)
            victim.start()
        elif kind == "agent-freeze":
            node.signal_agent(signal.SIGSTOP)
            time.sleep(hold)
            node.signal_agent(signal.SIGCONT)
        elif kind == "etcd-member-kill":
            member = random.choice(ETCD)
            cluster.etcd.kill(member)
            time.sleep(hold)
            cluster.etcd.start(member)
        elif kind == "etcd-quorum-pause":
            members = random.sample(ETCD, 2)
            for m in members:
                cluster.etcd.signal(m, signal.SIGSTOP)
            time.sleep(hold)
            for m in members:
                cluster.etcd.signal(m, signal.SIGCONT)
        elif kind == "cut-etcd":
            cluster.net.cut_from_etcd(random.choice([leader] + replicas), random.choice(["both", "in", "out"]))
            time.sleep(hold)
            cluster.net.heal()
        elif kind == "isolate":
            cluster.net.isolate(random.choice([leader, leader] + replicas))
            time.sleep(hold)
            cluster.net.heal()
        elif kind == "wal-cut":
            cluster.net.drop_wal_from(random.choice(replicas), leader)
            time.sleep(hold)
            cluster.net.heal()
        elif kind == "switchover":
            cluster.switchover(random.choice(replicas))
        elif kind == "clock-jump":
            node.set_clock_offset(random.choice(["+600", "-600", "+3600"]))
            time.sleep(hold)
            node.set_clock_offset("0")
        elif kind in LOCAL_SOAK:
            try:
                LOCAL_SOAK[kind](cluster, leader, replicas, hold)
            except Exception as exc:  # a fault that could not be injected still gets the recovery wait
                traceback.print_exc()
                not_injected.append(f"{faults + 1}:{kind}: {type(exc).__name__}: {exc}")
                log(f"    {kind} failed: {type(exc).__name__}: {exc}")
        faults += 1
        counts[kind] = counts.get(kind, 0) + 1
        if not cluster.wait_healthy(60, sync):
            not_recovered.append(f"{faults}:{kind}")
            log(f"    not healthy 60 s after fault {faults} ({kind})")
            cluster.log_state()
            if args.stop_on_failure:
                log("    --stop-on-failure: the soak stops here, the cluster as it is")
                break
            log("    repairing")
            cluster.repair(sync, 120)
    time.sleep(2)
    obs.stop()
    final = obs.final_read()
    # The last fault's recovery was already waited for; an agent restarted by it may still be
    # registering, so the final state gets the same 60 s as every fault.
    checks, overlap, events = common_checks(obs, final, sync, cluster.wait_healthy(60, sync))
    obs.log_violations(log)
    checks.append(check("every fault recovered from within 60 s", not not_recovered, ", ".join(not_recovered)))
    checks.append(check("every fault injected and repaired without an error", not not_injected,
                        "; ".join(not_injected)[:500]))
    result = {"faults": faults, "kinds": counts, "seconds": round(obs.stopped - obs.started, 1),
              "acked": final["acked"], "L": final["L"], "unexpected": final["unexpected"],
              "in_doubt": final["in_doubt"], "direct_lost": final["direct_lost"], "D2": overlap, "D2_events": events,
              "R": obs.leader_changes(), "not_recovered": not_recovered, "not_injected": not_injected,
              "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in checks],
              "passed": all(ok for _, ok, _ in checks)}
    for c, ok, d in checks:
        log(f"  {'ok    ' if ok else 'FAILED'} {c} {d}")
    return result


def main():
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__)
    parser.add_argument("mode", nargs="?", default="matrix", choices=["matrix", "soak"])
    parser.add_argument("--scenarios", default=",".join(ORDER), help="comma-separated, e.g. 1,2,6,7a")
    parser.add_argument("--runs", type=int, default=1, help="runs per scenario (default 1)")
    parser.add_argument("--profile", default="fast", choices=sorted(PROFILES))
    parser.add_argument("--async", dest="asynchronous", action="store_true",
                        help="run the scenarios that do not need a mode in asynchronous mode (default synchronous)")
    parser.add_argument("--faults", type=int, default=200, help="soak: number of faults (default 200)")
    parser.add_argument("--minutes", type=float, default=None, help="soak: stop after this many minutes")
    parser.add_argument("--kinds", default=",".join(SOAK_KINDS),
                        help="soak: the fault kinds to draw from, comma-separated (default: all of them)")
    parser.add_argument("--stop-on-failure", action="store_true",
                        help="soak: stop at the first fault not recovered from, without repairing (use with --keep)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json-out", default=None, help="also write the full results to this file")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end (debugging)")
    args = parser.parse_args()
    baton = os.environ.get("BATON_BIN")
    if not baton or not os.access(baton, os.X_OK):
        parser.error("BATON_BIN must name the baton binary (scripts/faults sets it)")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    wrong = [k for k in args.kinds if k not in SOAK_KINDS]
    if wrong or not args.kinds:
        parser.error(f"unknown fault kind(s) {', '.join(wrong) or '(none given)'}; known: {', '.join(SOAK_KINDS)}")
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    default_sync = not args.asynchronous
    cluster = Cluster(baton, dynamic_config(args.profile, default_sync))
    started = time.monotonic()
    result = {"bench": "faults", "mode": args.mode, "profile": args.profile, "seed": seed}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
        log(f"cluster starting (profile {args.profile}: {PROFILES[args.profile]}, seed {seed})")
        if not cluster.wait_healthy(180):
            raise RuntimeError("cluster not healthy 180 s after start; logs in /tmp/baton-faults")
        setup_tables()
        if args.mode == "soak":
            result["soak"] = soak(cluster, args)
            passed = result["soak"]["passed"]
        else:
            rows = []
            for key in keys:
                for i in range(args.runs):
                    log(f"== scenario {key}: {SCENARIOS[key][0]} (run {i + 1}/{args.runs})")
                    try:
                        rows.append(run_scenario(cluster, key, default_sync))
                    except Exception as exc:  # a broken run must not lose the others
                        traceback.print_exc()
                        rows.append({"scenario": key, "title": SCENARIOS[key][0], "synchronous": None,
                                     "U": None, "L": 0, "D2": 0.0, "D2_events": 0, "F": None, "P": None, "R": None,
                                     "Z": None, "passed": False,
                                     "checks": [{"check": "scenario ran", "ok": False, "detail": repr(exc)}]})
                        cluster.repair(None, 120)
                    if args.json_out:
                        with open(args.json_out, "w") as f:
                            json.dump({"partial": True, "runs": rows}, f, indent=1, default=str)
            summary = summarize(rows)
            print_table(summary)
            result["scenarios"] = summary
            result["runs"] = rows
            passed = all(r["passed"] for r in rows)
    except BaseException as exc:
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
        passed = False
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not args.keep:
            log("cleaning up (processes by PID, namespaces, bridge, mounts)")
            cluster.cleanup()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["passed"] = passed
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if args.mode == "soak":
        counted = [result.get("soak", {}).get("passed", False)]
    else:
        counted = [r["passed"] for r in result.get("runs", [])] or [False]
    print(f"faults: {sum(counted)} passed, {len(counted) - sum(counted)} failed", file=sys.stderr, flush=True)
    brief = {k: v for k, v in result.items() if k != "runs"}
    print(json.dumps(brief, default=str))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
