"""Scenarios 1–14 of the fault matrix (../shared/design/faults.md), each with its automatic checks.

A scenario function gets (cluster, observation, ctx) with ctx.old the primary before the fault and
ctx.replicas the others; it marks the fault, injects it, waits what the scenario needs, restores
what a real operator or init system would (restart a dead agent, heal a partition), and returns
its own checks as (name, ok, detail). The runner adds the checks every scenario shares: D2 = 0,
no acknowledged write lost in synchronous mode, no unexpected id, and a healthy cluster after.
"""
import json, os, random, signal, subprocess, time

import psycopg2

from harness import BASE, ETCD, ETCD_IP, MULTI_HOST, SCOPE, log, run


class Ctx:
    def __init__(self, cluster, old):
        self.cluster, self.old = cluster, old
        self.replicas = [n for n in cluster.nodes if n != old]
        self.ttl, self.loop_wait = cluster.ttl, cluster.loop_wait
        self.notes = {}


def check(name, ok, detail=""):
    return (name, bool(ok), detail)


def fenced_before_other_accepts(obs, old):
    """The old primary's last acknowledged write comes before any other node's first one."""
    last_old = max((done for _, done, _, ok in obs.writers[old].attempts if ok and done >= obs.fault_at), default=None)
    first_new = min((sent for n, w in obs.writers.items() if n != old
                     for sent, _, _, ok in w.attempts if ok and sent >= obs.fault_at), default=None)
    if last_old is None or first_new is None:
        return True
    return last_old <= first_new


def s1_postgres_crash(cluster, obs, ctx):
    obs.mark("fault")
    ctx.notes["pid"] = cluster.nodes[ctx.old].kill_postgres()
    cluster.wait_healthy(60, cluster.dynamic["synchronous_mode"])
    return [check("R <= 1 (restart in place or one failover)", obs.leader_changes() <= 1, f"R={obs.leader_changes()}")]


def s2_agent_killed(cluster, obs, ctx):
    obs.mark("fault")
    cluster.nodes[ctx.old].kill_agent()
    time.sleep(ctx.ttl + 4)
    f = obs.fence_latency(ctx.old)
    cluster.nodes[ctx.old].start()  # the init system restarts the agent
    return [check("F < ttl (orphaned primary stops acknowledging)", f < ctx.ttl, f"F={f:.2f}s"),
            check("old primary fenced before another node accepts writes", fenced_before_other_accepts(obs, ctx.old))]


def s3_agent_frozen(cluster, obs, ctx):
    obs.mark("fault")
    cluster.nodes[ctx.old].signal_agent(signal.SIGSTOP)
    time.sleep(2 * ctx.ttl)
    cluster.nodes[ctx.old].signal_agent(signal.SIGCONT)
    cluster.wait_healthy(60)
    seq = obs.leader_sequence()
    f = obs.fence_latency(ctx.old)
    return [check("F < ttl", f < ctx.ttl, f"F={f:.2f}s"),
            check("no stale write: the leader key never returns to the frozen agent", seq.count(ctx.old) <= 1,
                  "leaders " + "→".join(seq)),
            check("R <= 1", obs.leader_changes() <= 1, f"R={obs.leader_changes()}")]


def s4_etcd_member_lost(cluster, obs, ctx):
    return _etcd_member_lost(cluster, obs, ctx, random.choice(ETCD))


def _etcd_member_lost(cluster, obs, ctx, member):
    """Kills `member` for 10 s: no leader change, no write gap over 1 s."""
    ctx.notes["member"] = member
    obs.mark("fault")
    cluster.etcd.kill(member)
    time.sleep(10)
    cluster.etcd.start(member)
    time.sleep(2)
    u = obs.unavailability()
    return [check("R = 0", obs.leader_changes() == 0, f"R={obs.leader_changes()}"),
            check("U = 0 (no gap over 1 s)", u is not None and u < 1.0, f"U={u:.2f}s" if u else "no writes")]


def etcd_raft_leader(cluster):
    """The etcd member that is raft leader now, as the members themselves report it."""
    import urllib.request
    for member in ETCD:
        try:
            req = urllib.request.Request(f"http://{ETCD_IP[member]}:2379/v3/maintenance/status", data=b"{}",
                                         method="POST")
            with urllib.request.urlopen(req, timeout=2) as resp:
                status = json.load(resp)
            if str(status.get("leader")) == str(status.get("header", {}).get("member_id")):
                return member
        except OSError:
            continue
    return None


def s4b_etcd_leader_lost(cluster, obs, ctx):
    """Scenario 4 with the member killed chosen as etcd's raft leader: the two others elect a new
    one (election timeout 1 s), during which no lease keepalive can be answered."""
    return _etcd_member_lost(cluster, obs, ctx, etcd_raft_leader(cluster) or random.choice(ETCD))


def s5_quorum_lost(cluster, obs, ctx, seconds=None):
    seconds = seconds or float(os.environ.get("FAULTS_QUORUM_SECONDS", "20"))
    members = random.sample(ETCD, 2)
    ctx.notes["members"] = members
    obs.mark("fault")
    for m in members:
        cluster.etcd.signal(m, signal.SIGSTOP)
    time.sleep(seconds)
    obs.mark("quorum back")
    for m in members:
        cluster.etcd.signal(m, signal.SIGCONT)
    cluster.wait_healthy(60, cluster.dynamic["synchronous_mode"])
    f = obs.fence_latency(ctx.old)
    during = [n for t, n in obs.watcher.leaders if n and t < obs.marks["quorum back"]]
    seq = obs.leader_sequence()
    ctx.notes["after_quorum_back"] = "→".join(seq)
    return [check("no promotion while the quorum is lost", all(n == ctx.old for n in during), "→".join(during)),
            check("primary read-only within ttl", f < ctx.ttl, f"F={f:.2f}s")]


def _cut_from_etcd(cluster, obs, ctx, direction):
    obs.mark("fault")
    cluster.net.cut_from_etcd(ctx.old, direction)
    time.sleep(ctx.ttl + 8)
    cluster.net.heal()
    f = obs.fence_latency(ctx.old)
    return [check("F < ttl (fenced before its lease can expire)", f < ctx.ttl, f"F={f:.2f}s"),
            check("old primary fenced before another node accepts writes", fenced_before_other_accepts(obs, ctx.old)),
            check("R <= 1", obs.leader_changes() <= 1, f"R={obs.leader_changes()}")]


def s6_primary_cut_from_etcd(cluster, obs, ctx):
    return _cut_from_etcd(cluster, obs, ctx, "both")


def s7a_primary_deaf_to_etcd(cluster, obs, ctx):
    return _cut_from_etcd(cluster, obs, ctx, "in")


def s7b_replica_deaf_to_primary(cluster, obs, ctx):
    # In synchronous mode, the synchronous standby: the case where every commit waits for it.
    sync = cluster.sync_standby() if cluster.dynamic["synchronous_mode"] else None
    replica = sync if sync in ctx.replicas else random.choice(ctx.replicas)
    ctx.notes["replica"] = replica
    obs.mark("fault")
    cluster.net.drop_wal_from(replica, ctx.old)
    time.sleep(15)
    late = [t for t, _ in obs.prober.acked() if t >= obs.fault_at + 10]
    cluster.net.heal()
    checks = [check("R <= 1", obs.leader_changes() <= 1, f"R={obs.leader_changes()}"),
              check("primary keeps its role", obs.leader_sequence()[-1:] == [ctx.old], "→".join(obs.leader_sequence()))]
    if sync in ctx.replicas:
        # The silent standby is dropped and another takes its place while the path is still cut.
        checks.append(check("writes resume while the WAL path is still cut (acknowledged in its last 5 s)",
                            late, f"{len(late)} acknowledged, synchronous standby {sync}"))
    return checks


def _keys(cluster):
    keys = cluster.keys() or {}
    out = {}
    for k, v in keys.items():
        try:
            out[k[len(f"/service/{SCOPE}/"):]] = json.loads(v)
        except ValueError:
            out[k[len(f"/service/{SCOPE}/"):]] = v
    return out


def s8_lagging_replicas(cluster, obs, ctx):
    limit = int(cluster.dynamic["maximum_lag_on_failover"])
    for r in ctx.replicas:
        cluster.net.drop_wal_from(r, ctx.old)
    # Load: a few MB of WAL that the replicas do not receive.
    with psycopg2.connect(MULTI_HOST) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS faults_load (id serial, pad text)")
        cur.execute("INSERT INTO faults_load (pad) SELECT repeat('x', 1000) FROM generate_series(1, 6000)")
    conn.close()
    # Wait until the leader has published a position more than the limit ahead of both replicas.
    deadline = time.monotonic() + 30
    lag_seen = None
    while time.monotonic() < deadline:
        keys = _keys(cluster)
        optime = (keys.get("status") or {}).get("optime") if isinstance(keys.get("status"), dict) else None
        positions = [(keys.get(f"members/{r}") or {}).get("xlog_location") for r in ctx.replicas]
        if optime and all(p is not None for p in positions):
            lag_seen = min(optime - p for p in positions)
            if lag_seen > limit:
                break
        time.sleep(0.5)
    ctx.notes["published_lag"] = lag_seen
    obs.mark("fault")
    cluster.nodes[ctx.old].crash()
    cluster.net.heal()
    time.sleep(ctx.ttl + 10)
    seq_before = obs.leader_sequence()
    logs = ""
    for r in ctx.replicas:
        with open(f"{BASE}/{r}.agent.log", errors="replace") as f:
            f.seek(max(0, os.path.getsize(f.name) - 400000))
            logs += f.read()
    reported = "not eligible" in logs
    cluster.nodes[ctx.old].start()
    return [check("published lag exceeded maximum_lag_on_failover before the crash",
                  lag_seen is not None and lag_seen > limit, f"lag={lag_seen} limit={limit}"),
            check("no lagging replica promoted", all(n == ctx.old for n in seq_before), "→".join(seq_before)),
            check("agents report that no candidate is eligible", reported)]


def s10_slow_etcd(cluster, obs, ctx, seconds=20.0, stall=0.3, period=0.7):
    obs.mark("fault")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in ETCD:
            cluster.etcd.signal(m, signal.SIGSTOP)
        time.sleep(stall)
        for m in ETCD:
            cluster.etcd.signal(m, signal.SIGCONT)
        time.sleep(period - stall)
    time.sleep(2)
    return [check("R = 0 (stalls of 300 ms, below retry_timeout, cause no failover)", obs.leader_changes() == 0,
                  f"R={obs.leader_changes()}")]


def s11_clock_jump(cluster, obs, ctx):
    node = cluster.nodes[ctx.old]
    if not node.wallclock:
        return [check("wall-clock shim available", False, "agents started without the wall-clock shim")]
    obs.mark("fault")
    node.set_clock_offset("+600")
    time.sleep(10)
    node.set_clock_offset("-600")
    time.sleep(10)
    node.set_clock_offset("0")
    time.sleep(3)
    return [check("R = 0 (wall clock +10 min, then -10 min, on the primary's agent)", obs.leader_changes() == 0,
                  f"R={obs.leader_changes()}")]


def s12_switchovers(cluster, obs, ctx, count=None):
    count = count or int(os.environ.get("FAULTS_SWITCHOVERS", "5"))
    obs.mark("fault")
    failures = []
    for i in range(count):
        leader = cluster.leader()
        candidate = random.choice([n for n in cluster.nodes if n != leader])
        result = cluster.switchover(candidate)
        if result.returncode != 0 or not cluster.wait_healthy(30):
            failures.append(f"#{i + 1} to {candidate}: exit {result.returncode} {result.stderr.strip()[-200:]}")
        elif cluster.leader() != candidate:
            failures.append(f"#{i + 1}: leader is {cluster.leader()}, not {candidate}")
        time.sleep(2 + random.uniform(0, ctx.loop_wait))
    ctx.notes["switchovers"] = count
    return [check(f"{count} switchovers, each to the chosen candidate", not failures, "; ".join(failures)),
            check("R = number of switchovers", obs.leader_changes() == count, f"R={obs.leader_changes()}")]


def s13_primary_and_sync_die(cluster, obs, ctx):
    sync = cluster.sync_standby()
    if sync not in ctx.replicas:
        return [check("a synchronous standby before the fault", False, f"sync key names {sync}")]
    remaining = next(r for r in ctx.replicas if r != sync)
    ctx.notes.update(sync=sync, remaining=remaining)
    obs.mark("fault")
    cluster.nodes[ctx.old].crash()
    time.sleep(0.5)
    cluster.nodes[sync].crash()
    time.sleep(ctx.ttl + 10)
    seq = obs.leader_sequence()
    cluster.nodes[ctx.old].start()
    cluster.nodes[sync].start()
    return [check("the asynchronous replica is not promoted", remaining not in seq, "→".join(seq))]


def s14_flapping(cluster, obs, ctx, cycles=None):
    cycles = cycles or int(os.environ.get("FAULTS_FLAP_CYCLES", "6"))
    obs.mark("fault")
    for _ in range(cycles):
        cluster.net.isolate(ctx.old)
        time.sleep(3)
        cluster.net.heal()
        time.sleep(7)
    ok = cluster.wait_healthy(60, cluster.dynamic["synchronous_mode"])
    seq = obs.leader_sequence()
    return [check("at most one failover, no ping-pong", obs.leader_changes() <= 1, "→".join(seq)),
            check("old primary rejoins", ok)]


def _loop_fs_for_wal(cluster, node_name):
    """Moves a stopped node's pg_wal onto a small loop filesystem of its own (what pg_wal holds
    now plus 48 MB)."""
    node = cluster.nodes[node_name]
    image, mount = f"{BASE}/{node_name}-wal.img", f"{BASE}/{node_name}-wal"
    used = int(run("du", "-sm", f"{node.dir}/data/pg_wal").split()[0])
    size_mb = used + 48
    run("truncate", "-s", f"{size_mb}M", image)
    run("mkfs.ext4", "-q", "-F", image)
    os.makedirs(mount, exist_ok=True)
    run("mount", "-o", "loop", image, mount)
    cluster.mounts.append(mount)
    wal = f"{node.dir}/data/pg_wal"
    run("cp", "-a", wal + "/.", mount + "/")
    run("chown", "-R", "postgres:postgres", mount)
    run("rm", "-rf", wal)
    os.symlink(mount, wal)
    return mount


def _wal_back_from_loop_fs(cluster, node_name):
    """Puts pg_wal back into the data directory (the small filesystem would fill up in later
    scenarios): stops the node cleanly, copies, unmounts, starts it again."""
    node = cluster.nodes[node_name]
    mount = f"{BASE}/{node_name}-wal"
    if node.proc and node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(60)
    node.crash()
    wal = f"{node.dir}/data/pg_wal"
    os.remove(wal)
    os.makedirs(wal)
    run("cp", "-a", mount + "/.", wal + "/")
    run("rm", "-rf", wal + "/lost+found")
    run("chown", "-R", "postgres:postgres", wal)
    os.chmod(wal, 0o700)
    run("umount", mount)
    cluster.mounts.remove(mount)
    node.start()


def s9_disk_full(cluster, obs, ctx):
    """pg_wal of one replica on a small loop filesystem that is then filled: the full node must
    never be promoted when the primary dies, and must not crash-loop."""
    full = ctx.replicas[0]
    other = ctx.replicas[1]
    node = cluster.nodes[full]
    mount = f"{BASE}/{full}-wal"
    if mount not in cluster.mounts:
        # Stop the replica cleanly (its agent stops postgres on SIGTERM), move pg_wal, restart.
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(60)
        node.crash()
        _loop_fs_for_wal(cluster, full)
        node.start()
        if not cluster.wait_healthy(90):
            return [check("replica back after moving pg_wal to a loop filesystem", False)]
    filler = f"{mount}/filler"
    free = os.statvfs(mount)
    run("fallocate", "-l", str(free.f_bavail * free.f_frsize), filler, check=False)
    time.sleep(3)
    starts_before = obs.postmaster_starts(full)
    obs.mark("fault")
    cluster.nodes[ctx.old].crash()
    time.sleep(ctx.ttl + 10)
    seq = obs.leader_sequence()
    starts = obs.postmaster_starts(full) - starts_before
    os.remove(filler)
    cluster.nodes[ctx.old].start()
    cluster.wait_healthy(60)
    _wal_back_from_loop_fs(cluster, full)
    return [check("the full node is never promoted", full not in seq, "→".join(seq)),
            check("the other replica is promoted", other in seq, "→".join(seq)),
            check("no crash loop on the full node (≤ 3 postmaster starts)", starts <= 3, f"{starts} starts")]


SCENARIOS = {
    "1": ("postgres crash on the primary", s1_postgres_crash, None),
    "2": ("agent killed on the primary", s2_agent_killed, None),
    "3": ("agent frozen 2 × ttl", s3_agent_frozen, None),
    "4": ("one etcd member lost", s4_etcd_member_lost, None),
    "4b": ("etcd's raft leader lost", s4b_etcd_leader_lost, None),
    "5": ("etcd quorum lost", s5_quorum_lost, None),
    "6": ("primary cut from etcd", s6_primary_cut_from_etcd, None),
    "7a": ("asymmetric: primary ← etcd dropped", s7a_primary_deaf_to_etcd, None),
    "7b": ("asymmetric: replica ← primary WAL dropped", s7b_replica_deaf_to_primary, None),
    "8": ("replicas beyond maximum_lag_on_failover, primary dies", s8_lagging_replicas, False),
    "9": ("disk full under a replica's pg_wal, primary dies", s9_disk_full, None),
    "10": ("slow etcd (300 ms stalls)", s10_slow_etcd, None),
    "11": ("wall-clock jump ±10 min on the primary's agent", s11_clock_jump, None),
    "12": ("switchover under load, 5 times (asynchronous)", s12_switchovers, False),
    "13": ("primary and synchronous standby die together", s13_primary_and_sync_die, True),
    "14": ("flapping link: primary isolated 3 s on / 7 s off", s14_flapping, None),
}
# Scenarios in which the primary is cut off or orphaned: F (fence latency) is reported for these.
FENCED = {"2", "3", "5", "6", "7a", "14"}
ORDER = ["1", "2", "3", "4", "4b", "5", "6", "7a", "7b", "8", "9", "10", "11", "12", "13", "14"]
