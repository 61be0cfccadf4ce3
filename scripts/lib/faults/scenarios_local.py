"""Scenarios of class 2, "local lies" (../shared/design/faults.md): numbered 16 and up, the faults in
which what an agent reads about its own node is missing, wrong, late or changed under it.

Same contract as scenarios.py: a function (cluster, observation, ctx) that marks the fault, injects
it, restores what an operator or the init system would, and returns its own checks; the runner adds
D2 = 0, L = 0 in synchronous mode, no unexpected id and a healthy cluster within 60 s. main.py
merges LOCAL_SCENARIOS and LOCAL_ORDER into the matrix.

Every wait here is bounded in time (a deadline on the monotonic clock) and every retry in count.
"""
import json, math, os, random, re, signal, subprocess, threading, time, urllib.request

import psycopg2

from harness import (BASE, ETCD, ETCD_IP, NODE_IP, NODES, OBSERVER_IP, SCOPE, conninfo, etcd_b64, log,
                     namespace_pids, ns, pid_alive, run)
from scenarios import check

# --- helpers ---

# Files under base/ and global/ that PostgreSQL itself removes or rewrites: the relation cache
# init files (removed at every start), temporary files and temporary relations.
_CHURN = re.compile(r"^(pg_internal\.init|pgsql_tmp.*|t\d+_\d+.*)$")
# Relation files (1234, 1234_fsm, 1234_vm, 1234.1): PostgreSQL never replaces one by another file
# of the same name, so a new inode under an old name means the directory was emptied and refilled
# (e.g. re-cloned). Other files (pg_control, pg_filenode.map) are only checked to exist.
_RELFILE = re.compile(r"^\d+(_[a-z]+)?(\.\d+)?$")


def _data_files(data):
    """{relative path: inode} of every file under base/ and global/ of a data directory, without
    the files postgres churns by itself."""
    out = {}
    for sub in ("base", "global"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(data, sub)):
            dirnames[:] = [d for d in dirnames if not d.startswith("pgsql_tmp")]
            for name in filenames:
                if _CHURN.match(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    out[os.path.relpath(path, data)] = os.lstat(path).st_ino
                except FileNotFoundError:
                    continue
    return out


def _lost_files(before, data):
    """(missing, replaced): files of `before` that are gone, relation files that are another file now."""
    now = _data_files(data)
    missing = sorted(p for p in before if p not in now)
    replaced = sorted(p for p, ino in before.items()
                      if p in now and now[p] != ino and _RELFILE.match(os.path.basename(p)))
    return missing, replaced


def _tree(root):
    """{relative path: bytes} of every file under root, {relative path: None} for directories."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
            except OSError:
                continue
    return out


def _stop_node(node, limit=60):
    """`systemctl stop` of deploy/systemd/baton-agent.service (KillMode=mixed, TimeoutStopSec=60):
    SIGTERM to the agent, which stops postgres itself; whatever is left after the agent exited, or
    after `limit` seconds, is killed (node.crash(): every process in the node's namespace)."""
    if node.agent_pid():
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(limit)
        except subprocess.TimeoutExpired:
            log(f"    {node.name}: agent still running {limit} s after SIGTERM: killed")
    node.crash()


class _InitSystem:
    """What the unit's Restart=on-failure, RestartSec=5 does: an agent that exits with a failure
    has the rest of its processes killed and is started again 5 s later. tick() from a poll loop."""

    def __init__(self, node):
        self.node, self.exits, self.dead_since = node, [], None

    def tick(self):
        proc = self.node.proc
        if proc is None or proc.poll() is None:
            return
        now = time.monotonic()
        if self.dead_since is None:
            self.dead_since = now
            self.exits.append(proc.returncode)
            log(f"    {self.node.name}: agent exited with status {proc.returncode}")
            if proc.returncode != 0:
                self.node.crash()
            return
        if proc.returncode != 0 and now - self.dead_since >= 5:
            log(f"    {self.node.name}: restarting the agent (Restart=on-failure)")
            self.node.start()
            self.dead_since = None


def _leaders_between(obs, start, end):
    """Every member that held the leader key (as the watcher saw it) at some time in [start, end)."""
    held = [leader for t, leader in obs.watcher.leaders if t <= start][-1:]
    held += [leader for t, leader in obs.watcher.leaders if start < t < end]
    return [n for i, n in enumerate(held) if n and n not in held[:i]]


def _promoted_at(obs, old):
    """When the watcher first saw the leader key held by another member than `old` after the fault
    (monotonic), or None."""
    return next((t for t, leader in obs.watcher.leaders if t >= obs.fault_at and leader and leader != old), None)


def _max_gap(obs, since):
    """U as the runner computes it, but usable before obs.stop(): the longest gap between two
    acknowledged prober writes that ends after `since`, or up to now when none came after."""
    acked = sorted(t for t, _ in obs.prober.acked())
    before = [t for t in acked if t < since]
    after = [t for t in acked if t >= since]
    points = before[-1:] + after
    gaps = [b - a for a, b in zip(points, points[1:])]
    if not after:
        gaps.append(time.monotonic() - (before[-1] if before else since))
    return max(gaps) if gaps else None


def _others_healthy(cluster, absent):
    """The cluster without `absent`: a leader among the others, running as primary, the remaining
    node a streaming replica."""
    leader = cluster.leader()
    if leader is None or leader == absent or leader not in cluster.nodes:
        return False
    for name in NODES:
        if name == absent:
            continue
        s = cluster.nodes[name].status()
        if s is None or s.get("state") != "running":
            return False
        if name == leader and s.get("role") != "primary":
            return False
        if name != leader and (s.get("role") != "replica" or s.get("replication_state") != "streaming"):
            return False
    return True


def _postgres_on(node_name, data):
    """PIDs of postgres processes in the node's namespace whose working directory or command line
    is the data directory `data` (a postmaster chdirs into its data directory)."""
    found = []
    for pid in namespace_pids(ns(node_name)):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if comm == "postgres" and (cwd == data or f" {data}" in cmdline):
            found.append(pid)
    return found


def _namespace_commands(node_name):
    out = set()
    for pid in namespace_pids(ns(node_name)):
        try:
            with open(f"/proc/{pid}/comm") as f:
                out.add(f.read().strip())
        except OSError:
            continue
    return out


def _sync(cluster):
    return cluster.dynamic["synchronous_mode"] or None


# --- 16a: the leader's data directory damaged ---

def s16a_leader_data_dir_damaged(cluster, obs, ctx):
    """PG_VERSION of the primary's data directory moved out of it: the agent must not delete or
    re-create any file of that directory, and the leader key must move to a healthy replica within
    ttl + 1 s. Then PG_VERSION comes back and the node must rejoin."""
    node = cluster.nodes[ctx.old]
    data = f"{node.dir}/data"
    aside = f"{BASE}/{ctx.old}.PG_VERSION.16a"
    before = _data_files(data)
    data_inode = os.stat(data).st_ino
    ctx.notes["files_checked"] = len(before)
    if not before:
        return [check("files under base/ and global/ before the fault", False, f"none found in {data}")]
    init = _InitSystem(node)
    obs.mark("fault")
    os.rename(f"{data}/PG_VERSION", aside)  # same filesystem (BASE): atomic, nothing copied
    log(f"    moved {data}/PG_VERSION to {aside}")
    hold_until = obs.fault_at + 2 * ctx.ttl + 5
    first_loss = None
    try:
        while time.monotonic() < hold_until:
            missing, replaced = _lost_files(before, data)
            if (missing or replaced) and first_loss is None:
                first_loss = time.monotonic() - obs.fault_at
                log(f"    {len(missing)} files missing, {len(replaced)} replaced in {data} "
                    f"{first_loss:.2f} s after the fault, e.g. {(missing + replaced)[:3]}")
            init.tick()
            time.sleep(0.5)
        missing, replaced = _lost_files(before, data)
        same_dir = os.path.isdir(data) and os.stat(data).st_ino == data_inode
        p = obs.promotion(ctx.old)
        # The leader key while PG_VERSION was away, from the first other leader on.
        back_at = time.monotonic()
        promoted = _promoted_at(obs, ctx.old)
        regained = promoted is not None and ctx.old in _leaders_between(obs, promoted, back_at)
        ctx.notes.update(missing=len(missing), replaced=len(replaced), first_loss_s=first_loss,
                         agent_exits=list(init.exits), commands=sorted(_namespace_commands(ctx.old)))
    finally:
        # Repair, as an operator would (also when the hold broke off): put PG_VERSION back, but
        # only into the directory it came from, not into one that was emptied and refilled (that
        # one has its own PG_VERSION or is being cloned).
        obs.mark("PG_VERSION back")
        missing_now, replaced_now = _lost_files(before, data)
        intact = (os.path.isdir(data) and os.stat(data).st_ino == data_inode
                  and not missing_now and not replaced_now)
        if intact and not os.path.exists(f"{data}/PG_VERSION"):
            os.rename(aside, f"{data}/PG_VERSION")
            log("    PG_VERSION moved back")
        else:
            log(f"    PG_VERSION not moved back: the data directory is not the one damaged "
                f"({len(missing_now)} missing, {len(replaced_now)} replaced); left at {aside}")
    # Any loss seen during the hold counts, also of a file that was re-created since.
    intact = intact and not missing and not replaced and same_dir and first_loss is None
    # The agent gets max(20 s, 3 loops) to notice by itself; then it is restarted as `systemctl
    # restart baton-agent` would (SIGTERM, wait, kill what is left, start): what an operator does
    # after repairing a data directory under a running agent.
    restarted = False
    if not node.running():
        node.start()
        restarted = True
    if not cluster.wait_healthy(max(20.0, 3 * ctx.loop_wait), _sync(cluster)):
        log(f"    {ctx.old} not back by itself: restarting its agent (operator)")
        _stop_node(node)
        node.start()
        restarted = True
    healthy = cluster.wait_healthy(max(0.0, back_at + 60 - time.monotonic()), _sync(cluster))
    ctx.notes["agent_restarted_after_repair"] = restarted
    return [
        check("no file under base/ and global/ of the damaged data directory deleted or replaced",
              intact, f"{len(missing)} of {len(before)} missing, {len(replaced)} replaced, same directory "
                      f"{same_dir}, first loss {'-' if first_loss is None else f'{first_loss:.2f} s'}"
                      + (f", e.g. {(missing + replaced)[:3]}" if missing or replaced else "")),
        check("another member leads within ttl + 1 s of the fault", p is not None and p <= ctx.ttl + 1,
              "no other leader" if p is None else f"P={p:.2f}s (ttl {ctx.ttl:g} s)"),
        check("the damaged node does not regain the leader key while PG_VERSION is away", not regained,
              "leaders " + "→".join(obs.leader_sequence())),
        check("healthy within 60 s of PG_VERSION's return", healthy,
              f"agent restarted: {restarted}"),
    ]


# --- 16b: a new member's data_dir is a non-empty directory without a cluster ---

_FOREIGN = {
    "important.txt": b"not a PostgreSQL file: an operator's notes, which no agent may delete\n",
    "keep/notes.txt": b"line 1\nline 2\n" + bytes(range(256)),
    "keep/deeper/.hidden": b"\x00\x01\x02 binary tail \xff",
}


def s16b_foreign_data_dir(cluster, obs, ctx):
    """A replica's data_dir replaced by a directory of unrelated files (its cluster moved aside),
    and its agent started: the files must survive byte for byte, the node must not lead nor run a
    postgres there, the two others stay healthy. Then the original directory comes back."""
    sync = cluster.sync_standby() if cluster.dynamic["synchronous_mode"] else None
    name = random.choice([r for r in ctx.replicas if r != sync] or ctx.replicas)
    node = cluster.nodes[name]
    data = f"{node.dir}/data"
    original = f"{node.dir}/data.16b-original"
    ctx.notes["node"] = name
    if os.path.exists(original):
        return [check("no leftover of an earlier 16b run", False, f"{original} exists: put it back by hand")]
    _stop_node(node)
    os.rename(data, original)
    os.makedirs(data)
    for rel, content in _FOREIGN.items():
        os.makedirs(os.path.dirname(os.path.join(data, rel)), exist_ok=True)
        with open(os.path.join(data, rel), "wb") as f:
            f.write(content)
    run("chown", "-R", "postgres:postgres", data)
    os.chmod(data, 0o700)
    expected = _tree(data)
    init = _InitSystem(node)
    obs.mark("fault")
    node.start()
    hold_until = obs.fault_at + 2 * ctx.ttl + 5
    first_change = first_pidfile = None
    postgres_pids, samples, healthy_samples, commands = set(), 0, 0, set()
    try:
        while time.monotonic() < hold_until:
            now = time.monotonic() - obs.fault_at
            if first_change is None and _tree(data) != expected:
                first_change = now
                log(f"    {data} changed {now:.2f} s after the agent started")
            if first_pidfile is None and os.path.exists(f"{data}/postmaster.pid"):
                first_pidfile = now
            postgres_pids.update(_postgres_on(name, data))
            commands |= _namespace_commands(name)
            samples += 1
            healthy_samples += _others_healthy(cluster, name)
            init.tick()
            time.sleep(0.5)
        tree = _tree(data)
        # Files byte for byte; directories (None) must still be directories.
        kept = {rel: (rel in tree and tree[rel] == content) for rel, content in expected.items()}
        extra = sorted(set(tree) - set(expected))
        others_now = _others_healthy(cluster, name)
        seq = obs.leader_sequence()
        # Only what the agent on the foreign directory said (the watcher keeps changes only, so
        # the node's last answer from before the fault is excluded by its time).
        statuses = [s for t, s in obs.watcher.status[name] if s is not None and t > obs.fault_at]
        running = [s for s in statuses if s[1] == "running"]
    finally:
        # Back to the node's own data directory; the foreign one is kept beside it for a look.
        _stop_node(node)
        foreign = f"{node.dir}/data.16b-foreign-{time.strftime('%H%M%S')}"
        os.rename(data, foreign)
        os.rename(original, data)
        log(f"    {name}: original data directory back, the foreign one kept as {foreign}")
        node.start()
    ctx.notes.update(extra_files=extra[:10], agent_exits=list(init.exits), commands=sorted(commands),
                     others_healthy_samples=f"{healthy_samples}/{samples}")
    return [
        check("the foreign files are all still there, byte for byte, after 2 × ttl + 5 s", all(kept.values()),
              ", ".join(f"{rel}{'/' if expected[rel] is None else ''}: {'kept' if ok else 'lost or changed'}"
                        for rel, ok in sorted(kept.items()))
              + (f"; first change {first_change:.2f} s after start" if first_change is not None else "")),
        check("the node never leads", name not in seq, "leaders " + "→".join(seq)),
        check("no postgres ever runs on the foreign directory",
              not postgres_pids and first_pidfile is None and not running,
              f"postgres pids {sorted(postgres_pids)}, postmaster.pid "
              f"{'-' if first_pidfile is None else f'at {first_pidfile:.2f} s'}, "
              f"{len(running)} 'running' states in its /patroni"),
        check("the two other nodes stay healthy (R = 0, healthy at the end of the hold)",
              obs.leader_changes() == 0 and others_now,
              f"R={obs.leader_changes()}, healthy now {others_now}, {healthy_samples}/{samples} samples healthy"),
    ]


# --- 18: a restart slower than the lease ---

def _restart_slower_than_lease(cluster, obs, ctx, stopped):
    """POST /restart on the primary while one of its postgres processes is stopped (SIGSTOP) for
    ttl + 5 s, so that the fast shutdown takes longer than the lease: once another member was
    promoted, the old primary must never again acknowledge a write.

    stopped="checkpointer" (18): the shutdown waits for the shutdown checkpoint. If the fence guard
    kills the postmaster at the lease deadline, the stopped checkpointer keeps the shared memory
    attached, so no new postmaster can start on that directory until it is continued.
    stopped="postmaster" (18b): the postmaster ignores the shutdown request while stopped; once it
    is killed (SIGKILL works on a stopped process) its children exit by themselves, so a start
    right after that is possible: the path in which a restart could bring the old primary back
    writable with its lease gone."""
    node = cluster.nodes[ctx.old]
    postmaster = node.postmaster_pid()
    if not postmaster:
        return [check("primary's postmaster found", False, f"no live postmaster.pid in {node.dir}/data")]
    if stopped == "postmaster":
        target = postmaster
    else:
        children = run("ps", "--ppid", str(postmaster), "-o", "pid=,cmd=")
        found = [int(line.split()[0]) for line in children.splitlines() if "checkpointer" in line]
        if len(found) != 1:
            return [check("one checkpointer under the primary's postmaster", False, children.strip()[:300])]
        target = found[0]
    ctx.notes["stopped"] = f"{stopped} {target}"
    reply = {}

    def restart():
        began = time.monotonic()
        try:
            # The agent answers once the restart is done (or failed): bounded, stop_timeout is 30 s.
            reply["answer"] = node.api("POST", "/restart", {}, timeout=ctx.ttl + 60)
        except Exception as error:
            reply["error"] = f"{type(error).__name__}: {error}"
        reply["seconds"] = round(time.monotonic() - began, 2)

    requester = threading.Thread(target=restart, daemon=True)
    obs.mark("fault")
    os.kill(target, signal.SIGSTOP)
    try:
        requester.start()
        time.sleep(max(0.0, obs.fault_at + ctx.ttl + 5 - time.monotonic()))
    finally:
        try:
            os.kill(target, signal.SIGCONT)
        except ProcessLookupError:
            ctx.notes["stopped_process_gone"] = True  # killed meanwhile (immediate shutdown, guard)
        obs.mark("continued")
    continued = time.monotonic()
    requester.join(ctx.ttl + 65)
    ctx.notes["restart_reply"] = reply.get("answer") or reply.get("error") or "no answer yet"
    ctx.notes["restart_seconds"] = reply.get("seconds")
    healthy = cluster.wait_healthy(60, _sync(cluster))
    healthy_after = time.monotonic() - continued
    time.sleep(3)  # writes after the recovery: the old node must stay read-only (or be primary by right)
    p = obs.promotion(ctx.old)
    promoted = _promoted_at(obs, ctx.old)
    late = []
    if promoted is not None:
        # Until the leader key legitimately returns to the old node (if it does).
        back = next((t for t, leader in obs.watcher.leaders if t > promoted and leader == ctx.old), float("inf"))
        late = [sent for sent, _, _, ok in obs.writers[ctx.old].attempts if ok and promoted <= sent < back]
    return [
        check("the old primary never acknowledges a write after another member was promoted", not late,
              ("no other member promoted (the restart kept the key)" if p is None else
               f"P={p:.2f}s; {len(late)} writes acknowledged by {ctx.old} after it"
               + (f", the first {late[0] - obs.fault_at:.2f} s after the fault" if late else ""))),
        check(f"healthy within 60 s of the {stopped}'s SIGCONT", healthy,
              f"{healthy_after:.1f} s" if healthy else "not healthy"),
    ]


def s18_restart_slower_than_lease(cluster, obs, ctx):
    return _restart_slower_than_lease(cluster, obs, ctx, "checkpointer")


def s18b_restart_postmaster_stopped(cluster, obs, ctx):
    return _restart_slower_than_lease(cluster, obs, ctx, "postmaster")


# --- 24: dynamic configuration ---

def _leases(cluster):
    """{key: granted ttl} for the leader key and every member key (None: key absent, 0: no lease)."""
    prefix = f"/service/{SCOPE}/"
    out = {}
    for key in [prefix + "leader"] + [f"{prefix}members/{n}" for n in NODES]:
        lease = cluster.etcd.lease_of(key)
        out[key[len(prefix):]] = lease if not lease else cluster.etcd.lease_ttl(lease)[0]
    return out


def _patch_ttl(cluster, names, ttl, attempts=5):
    """PATCH /config {"ttl": ttl} through the first of `names` that takes it; (status, answer)."""
    return _patch_config(cluster, names, {"ttl": ttl}, attempts)


def s24_dynamic_ttl(cluster, obs, ctx):
    """ttl changed through PATCH /config: within loop_wait + 2 s every member key and the leader key
    must be on leases granted with the new ttl; then the primary crashes, and the failover must
    cost the new ttl (U ≤ new ttl + 2 s, and the leader key outlives the crash by about the new ttl,
    not the old one). The old ttl is put back at the end."""
    status, current = cluster.nodes[ctx.replicas[0]].api("GET", "/config")
    if status != 200 or not isinstance(current, dict) or "ttl" not in current:
        return [check("GET /config", False, f"{status}: {current}")]
    old_ttl = current["ttl"]
    retry = float(current.get("retry_timeout", cluster.dynamic["retry_timeout"]))
    loop_wait = float(current.get("loop_wait", ctx.loop_wait))
    # Both profiles run at their lowest valid ttl (loop_wait + 2 × retry_timeout = ttl, and 4 s is
    # Baton's minimum), so the change is upwards: 4 → 8 (fast), 30 → 45 (default).
    new_ttl = int(float(old_ttl) + max(4, float(old_ttl) / 2))
    assert loop_wait + 2 * retry <= new_ttl
    granted_expected = math.ceil(new_ttl)
    ctx.notes.update(old_ttl=old_ttl, new_ttl=new_ttl)
    via = random.choice(ctx.replicas)
    answer = _patch_ttl(cluster, [via], new_ttl)
    if answer is None or answer[0] != 200:
        return [check(f"PATCH /config ttl={new_ttl}", False, f"{answer}")]
    obs.mark("ttl changed")
    log(f"    ttl {old_ttl} → {new_ttl} through {via}'s REST API")
    crashed = None
    try:
        time.sleep(loop_wait + 2)
        leases = _leases(cluster)
        ctx.notes["granted_ttl"] = leases
        log(f"    granted ttl of each key's lease {loop_wait + 2:g} s later: {leases}")
        wrong = {k: v for k, v in leases.items() if v != granted_expected}
        checks = [check(f"every member key's and the leader key's lease granted with the new ttl "
                        f"({granted_expected} s) within loop_wait + 2 s", not wrong,
                        ", ".join(f"{k}: {'absent' if v is None else 'no lease' if v == 0 else f'{v} s'}"
                                  for k, v in leases.items()))]
        crashed = cluster.leader()
        if crashed not in cluster.nodes:
            return checks + [check("a leader before the crash", False, f"leader key {crashed!r}")]
        obs.mark("fault")
        cluster.nodes[crashed].crash()
        deadline = obs.fault_at + new_ttl + 20
        while time.monotonic() < deadline and obs.promotion(crashed) is None:
            time.sleep(0.2)
        p = obs.promotion(crashed)
        # Writes back (bounded), then one more second of them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(t > obs.fault_at for t, _ in obs.prober.acked()):
            time.sleep(0.2)
        time.sleep(1)
        u = _max_gap(obs, obs.fault_at)
        floor = new_ttl - loop_wait - 1
        checks += [
            check("U ≤ new ttl + 2 s after a crash of the primary", u is not None and u <= new_ttl + 2,
                  f"U={u:.2f}s, new ttl {new_ttl} s" if u is not None else "no writes"),
            check("the leader key outlives the crash by ≥ new ttl − loop_wait − 1 s (its lease has the new ttl)",
                  p is not None and p >= floor,
                  "no other leader" if p is None else f"P={p:.2f}s, floor {floor:g} s (old ttl {old_ttl} s)"),
        ]
        return checks
    finally:
        alive = [n for n in NODES if n != crashed]
        answer = _patch_ttl(cluster, alive, old_ttl)
        log(f"    ttl back to {old_ttl}: {answer[0] if answer else None}")
        if answer is None or answer[0] != 200:
            log(f"    could not restore ttl={old_ttl}: {answer}; later scenarios run with ttl {new_ttl}")
        if crashed in cluster.nodes:
            cluster.nodes[crashed].start()
        # For the record (later scenarios of the same run depend on it): the leases after the restore.
        time.sleep(loop_wait + 2)
        try:
            ctx.notes["granted_ttl_after_restore"] = _leases(cluster)
            log(f"    granted ttl after the restore: {ctx.notes['granted_ttl_after_restore']}")
        except Exception as error:
            ctx.notes["granted_ttl_after_restore"] = f"unreadable: {error}"



# --- shared by 17, 19, 20, 21, 22 (and the soak's class-2 kinds) ---

def _pg(name, **extra):
    """An autocommit superuser connection from the observer to one node's postgres."""
    conn = psycopg2.connect(conninfo([NODE_IP[name]], **extra))
    conn.autocommit = True
    return conn


def _agent_backends(name):
    """PIDs of the backends of `name`'s agent session (application_name baton-<name>), asked from
    the observer; [] when the node's postgres cannot be asked."""
    try:
        conn = _pg(name)
    except psycopg2.Error:
        return []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"baton-{name}",))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def _log_sizes():
    out = {}
    for name in NODES:
        try:
            out[name] = os.path.getsize(f"{BASE}/{name}.agent.log")
        except OSError:
            out[name] = 0
    return out


def _log_since(name, offset):
    """What `name`'s agent logged after byte `offset` (at most the last 4 MB of it)."""
    path = f"{BASE}/{name}.agent.log"
    try:
        size = os.path.getsize(path)
        with open(path, errors="replace") as f:
            f.seek(max(offset, size - 4_000_000))
            return f.read()
    except OSError:
        return ""


def _decisions(text):
    """[(log time, reason code, actions)] of the decision lines of an agent log excerpt."""
    out = []
    for line in text.splitlines():
        m = re.search(r"ha\.reason=(\S+)", line)
        if not m:
            continue
        a = re.search(r"ha\.actions=(.*?) ha\.member=", line)
        out.append((line.split(" ", 1)[0], m.group(1), a.group(1) if a else ""))
    return out


def _promote_decisions(text):
    """Decision lines of an agent log excerpt whose actions take the key or promote."""
    return [d for d in _decisions(text)
            if re.search(r"(^|, )(promote|acquire leader key|start postgres as primary)($|,)", d[2])]


def _late_writes(obs, old, since=None):
    """Writes acknowledged by `old` that were sent once another member held the leader key (from
    the first such moment after the fault, until the key legitimately returns to `old`)."""
    promoted = _promoted_at(obs, old) if since is None else since
    if promoted is None:
        return None, []
    back = next((t for t, leader in obs.watcher.leaders if t > promoted and leader == old), float("inf"))
    return promoted, [sent for sent, _, _, ok in obs.writers[old].attempts if ok and promoted <= sent < back]


def _gap_until_now(obs, since):
    """The longest gap between acknowledged prober writes from `since` until now, the gap since the
    last acknowledged write included (unlike _max_gap, which counts it only when none came)."""
    acked = sorted(t for t, _ in obs.prober.acked())
    points = [t for t in acked if t < since][-1:] + [t for t in acked if t >= since] + [time.monotonic()]
    return max((b - a for a, b in zip(points, points[1:])), default=None)


def _stop_leader_check(obs, ctx, bound, what):
    p = obs.promotion(ctx.old)
    return check(f"{what}: another member leads within {bound:g} s", p is not None and p <= bound,
                 "no other leader" if p is None else f"P={p:.2f}s")


def _wait_other_leader(obs, old, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and obs.promotion(old) is None:
        time.sleep(0.2)
    return obs.promotion(old)


# --- 17: the agent cannot query its own postgres ---

_HBA_MARK = "# faults 17a: the agent's path refused"


def _refuse_agent_auth(cluster, name):
    """The agent's connections to its own postgres (superuser, TCP to 127.0.0.1, scram-sha-256)
    refused at authentication: two `reject` lines for the loopback addresses first in the node's
    pg_hba.conf, a reload, and the agent's open session terminated so that it must log in again.
    The observer (from the bridge) and the replication connections (database `replication`,
    which `all` does not match) still get in. Returns the restore function."""
    node = cluster.nodes[name]
    hba = f"{node.dir}/data/pg_hba.conf"
    with open(hba) as f:
        text = f.read()
    lines = [f"host all all 127.0.0.1/32 reject {_HBA_MARK}", f"host all all ::1/128 reject {_HBA_MARK}"]
    with open(hba, "w") as f:
        f.write("\n".join(lines) + "\n" + text)
    postmaster = node.postmaster_pid()
    if postmaster:
        os.kill(postmaster, signal.SIGHUP)
    time.sleep(0.3)  # the postmaster reloads pg_hba.conf on SIGHUP before the next connection
    killed = []
    try:
        conn = _pg(name)
        with conn.cursor() as cur:
            cur.execute("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (f"baton-{name}",))
            killed = [r[0] for r in cur.fetchall()]
        conn.close()
    except psycopg2.Error as error:
        log(f"    could not terminate {name}'s agent session: {error}")
    log(f"    {name}: pg_hba.conf rejects 127.0.0.1 and ::1, reloaded (postmaster {postmaster}); "
        f"agent backends terminated: {killed}")

    def restore():
        # Whatever data directory runs there now (a rewind or a clone brings the source's file).
        try:
            with open(hba) as f:
                current = f.read()
        except OSError:
            return
        kept = [line for line in current.splitlines(True) if _HBA_MARK not in line]
        if len(kept) != len(current.splitlines(True)):
            with open(hba, "w") as f:
                f.write("".join(kept))
            pid = node.postmaster_pid()
            if pid:
                os.kill(pid, signal.SIGHUP)
            log(f"    {name}: pg_hba.conf restored (postmaster {pid} reloaded)")
    return restore


def _fill_connection_slots(cluster, name, attempts=5):
    """Every connection slot of the node's postgres taken by the observer, superuser-reserved ones
    included (the agent is a superuser), and the agent's session terminated so that its new
    connection finds none free. Returns (restore function, number of connections held)."""
    ip = NODE_IP[name]
    held = []
    refusals = []

    def fill(limit=200):
        for _ in range(limit):
            try:
                conn = psycopg2.connect(conninfo([ip], connect_timeout="2"))
                conn.autocommit = True  # pg_stat_activity is read afresh by each statement
                held.append(conn)
            except psycopg2.OperationalError as error:
                text = str(error)
                if "too many clients" in text or "connection slots are reserved" in text:
                    refusals.append(text.strip().splitlines()[0])
                    return True
                return False
        return False

    def restore():
        for conn in held:
            try:
                conn.close()
            except Exception:
                pass
        log(f"    {name}: {len(held)} connections closed")
        held.clear()

    full = fill()
    agent_left = None
    for _ in range(attempts):
        if not held:
            break
        try:
            with held[0].cursor() as cur:
                cur.execute("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (f"baton-{name}",))
                terminated = [r[0] for r in cur.fetchall()]
            # The terminated backends' slots: taken again before the agent's next connection.
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not fill(10):
                time.sleep(0.02)
            with held[0].cursor() as cur:
                cur.execute("SELECT pid, state, backend_start::time::text, wait_event FROM pg_stat_activity "
                            "WHERE application_name = %s", (f"baton-{name}",))
                agent_left = cur.fetchall()
        except psycopg2.Error as error:
            # Postgres stopped under the held connections (the agent stepped down): nothing to take.
            log(f"    {name}: the held connections broke ({str(error).strip().splitlines()[0]})")
            agent_left = agent_left or []
            break
        log(f"    {name}: {len(held)} observer connections hold every slot (refused: "
            f"{refusals[-1] if refusals else '-'}); agent backends terminated {terminated}, "
            f"left {agent_left}")
        if not agent_left:
            break
    return restore, len(held), full


def _stop_agent_backends(cluster, name):
    """SIGSTOP to every backend of the agent's own session: its next status query hangs."""
    pids = _agent_backends(name)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    log(f"    {name}: agent backends stopped (SIGSTOP): {pids}")

    def restore():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        log(f"    {name}: agent backends continued: {pids}")
    return restore, pids


def _cannot_query(cluster, obs, ctx, how):
    """The leader's agent cannot query its own postgres (17a/b/c). The agent may not take the
    promote path on an unknown recovery state; a leader that cannot see its postgres stops it and
    gives up the key after about ttl, and another member leads; the old primary acknowledges
    nothing once another member holds the key."""
    name = ctx.old
    node = cluster.nodes[name]
    sizes = _log_sizes()
    checks = []
    obs.mark("fault")
    if how == "auth":
        restore = _refuse_agent_auth(cluster, name)
    elif how == "slots":
        restore, count, full = _fill_connection_slots(cluster, name)
        ctx.notes["connections_held"] = count
        checks.append(check("every connection slot taken (postgres refused one more superuser connection)", full,
                            f"{count} observer connections"))
    else:
        restore, pids = _stop_agent_backends(cluster, name)
        ctx.notes["stopped_backends"] = pids
        checks.append(check("the agent's backend found and stopped", bool(pids), f"{pids}"))
    # A stopped backend (17c) blocks an immediate shutdown's end: held ttl + 5 s as in 18, then
    # continued. The others hold until another member leads and 2 × ttl + 5 s have passed.
    try:
        if how == "backend":
            time.sleep(max(0.0, obs.fault_at + ctx.ttl + 5 - time.monotonic()))
        else:
            _wait_other_leader(obs, name, 2 * ctx.ttl + 15)
            time.sleep(max(0.0, obs.fault_at + 2 * ctx.ttl + 5 - time.monotonic()))
    finally:
        obs.mark("restored")
        restore()
    restored = time.monotonic()
    text = _log_since(name, sizes[name])
    codes = [d[1] for d in _decisions(text)]
    ctx.notes["decisions_of_the_faulted_node"] = sorted(set(codes))
    promoting = [d for d in _promote_decisions(text)]
    promoted, late = _late_writes(obs, name)
    if promoted is not None:
        # Only up to the restore: afterwards the node may lead again by right.
        late = [t for t in late if t < obs.marks["restored"]]
    regained = promoted is not None and name in _leaders_between(obs, promoted, obs.marks["restored"])
    healthy = cluster.wait_healthy(60, _sync(cluster))
    checks += [
        check("the faulted node decides no promotion and takes no key while it cannot see its postgres",
              not promoting and not regained,
              f"{len(promoting)} promoting decisions {promoting[:2]}, regained {regained}; reasons seen "
              + ", ".join(sorted(set(codes)))[:300]),
        check("the old primary acknowledges no write once another member holds the key", not late,
              "no other leader" if promoted is None else f"{len(late)} late writes"
              + (f", the first {late[0] - obs.fault_at:.2f} s after the fault" if late else "")),
        check("healthy within 60 s of the restore", healthy, f"{time.monotonic() - restored:.1f} s"),
    ]
    if how != "backend":
        # leaderRecoveryStateUnknown for up to ttl, then a graceful demote, then the race: the bound
        # allows for ttl, a loop, a fast stop and the replicas' race.
        bound = 2 * ctx.ttl + ctx.loop_wait + 5
        checks.append(_stop_leader_check(obs, ctx, bound, "the leader that cannot see its postgres steps down"))
        checks.append(check("the faulted node saw its recovery state as unknown",
                            any(c in ("leader_recovery_state_unknown", "leader_cannot_see_postgres") for c in codes),
                            ", ".join(sorted(set(codes)))[:300]))
    else:
        checks.append(check("R ≤ 1", obs.leader_changes() <= 1, f"R={obs.leader_changes()}"))
    return checks


def s17a_agent_auth_refused(cluster, obs, ctx):
    return _cannot_query(cluster, obs, ctx, "auth")


def s17b_connection_slots_full(cluster, obs, ctx):
    return _cannot_query(cluster, obs, ctx, "slots")


def s17c_agent_backend_stopped(cluster, obs, ctx):
    return _cannot_query(cluster, obs, ctx, "backend")


# --- 19: the fence guard gone, then the leader cut from etcd ---

def s19_fence_guard_gone(cluster, obs, ctx):
    """The leader's fence guard process SIGKILLed, and at once the leader cut from etcd: the agent
    must start a new guard (or give up the key), and the old primary must stop acknowledging
    writes before its lease can expire (F < ttl) and before another member accepts any."""
    node = cluster.nodes[ctx.old]
    guards = node.fence_guard_pids()
    ctx.notes["guard_pids"] = guards
    if not guards:
        return [check("the leader's fence guard process found", False, f"no fence-guard child of {node.agent_pid()}")]
    sizes = _log_sizes()
    obs.mark("fault")
    for pid in guards:
        os.kill(pid, signal.SIGKILL)
    cluster.net.cut_from_etcd(ctx.old)
    log(f"    {ctx.old}: fence guard {guards} killed, node cut from etcd")
    new_guard, new_guard_at = None, None
    deadline = obs.fault_at + ctx.ttl + 8
    try:
        while time.monotonic() < deadline:
            if new_guard is None:
                fresh = [p for p in node.fence_guard_pids() if p not in guards]
                if fresh:
                    new_guard, new_guard_at = fresh[0], time.monotonic() - obs.fault_at
                    log(f"    new fence guard {new_guard} {new_guard_at:.2f} s after the fault")
            time.sleep(0.1)
    finally:
        cluster.net.heal()
        obs.mark("healed")
    f = obs.fence_latency(ctx.old)
    from scenarios import fenced_before_other_accepts
    text = _log_since(ctx.old, sizes[ctx.old])
    gave_up = "fence_guard_down" in text
    ctx.notes.update(new_guard=new_guard, new_guard_after_s=new_guard_at, agent_gave_up_key=gave_up,
                     agent_fenced="lease deadline passed" in text)
    return [
        check("a new fence guard runs, or the agent gave up the key", new_guard is not None or gave_up,
              f"new guard {new_guard} after {new_guard_at if new_guard_at is None else round(new_guard_at, 2)} s, "
              f"fence_guard_down decided: {gave_up}"),
        check("F < ttl (fenced before its lease can expire)", f < ctx.ttl, f"F={f:.2f}s"),
        check("old primary fenced before another node accepts writes", fenced_before_other_accepts(obs, ctx.old)),
        check("R <= 1", obs.leader_changes() <= 1, f"R={obs.leader_changes()}"),
    ]


# --- 20: etcd slow but alive ---

_SLOW_PROXY = r"""
import random, socket, sys, threading, time, collections
listen_port, host, port, low, high = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])

def log(text):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()

def close(*socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass

def handle(client, peer):
    try:
        up = socket.create_connection((host, port), timeout=5)
        up.settimeout(None)
    except OSError as error:
        log(f"{peer}: upstream {host}:{port} refused: {error}")
        close(client)
        return
    queue, cv, last = collections.deque(), threading.Condition(), [0.0]

    def reader():  # client -> queue, each chunk stamped with its release time (order kept)
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            with cv:
                now = time.monotonic()
                release = max(now + random.uniform(low, high), last[0])
                last[0] = release
                queue.append((release, now, data))
                cv.notify()
            if not data:
                return

    def sender():  # queue -> upstream, each chunk at its release time
        while True:
            with cv:
                while not queue:
                    cv.wait()
                release, arrived, data = queue.popleft()
            time.sleep(max(0.0, release - time.monotonic()))
            if not data:
                try:
                    up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                up.sendall(data)
            except OSError:
                return
            log(f"{peer}: {len(data)} bytes delayed {time.monotonic() - arrived:.2f} s")

    def back():  # upstream -> client, at once
        while True:
            try:
                data = up.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            try:
                client.sendall(data)
            except OSError:
                break
        close(client, up)

    for fn in (reader, sender, back):
        threading.Thread(target=fn, daemon=True).start()

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", listen_port))
server.listen(128)
log(f"delaying client->server chunks by {low}-{high} s on :{listen_port} -> {host}:{port}")
while True:
    client, addr = server.accept()
    threading.Thread(target=handle, args=(client, f"{addr[0]}:{addr[1]}"), daemon=True).start()
"""

_PROXY_PORT = 23790


def _etcd_member_healthy(member, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ETCD_IP[member]}:2379/health", timeout=1) as resp:
                if json.loads(resp.read()).get("health") == "true":
                    return True
        except Exception:
            pass
        time.sleep(0.3)
    return False


def _measure_etcd_latency(node_name, member, limit=25):
    """One etcd request from a node's namespace (the path the agents take), in seconds."""
    began = time.monotonic()
    out = subprocess.run(["ip", "netns", "exec", ns(node_name), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "--max-time", str(limit), "-X", "POST", f"http://{ETCD_IP[member]}:2379/v3/kv/range",
                          "-d", json.dumps({"key": etcd_b64("health")})],
                         capture_output=True, text=True, timeout=limit + 5)
    return time.monotonic() - began, out.stdout.strip()


def _slow_etcd(cluster, low, high):
    """Every client→server chunk of the nodes' etcd connections delayed by uniform(low, high)
    seconds (order kept per connection): in each member's namespace an iptables nat PREROUTING
    rule sends TCP to 2379 from anywhere but the observer to a delaying proxy on :23790 of that
    namespace, which forwards to the member's own ip:2379 (a local connection: OUTPUT, not
    PREROUTING, so no loop). Peer traffic (2380) is untouched. Established connections keep
    their path, so the members are restarted one at a time (quorum checked between) and every
    client reconnects through a proxy. Returns the restore function: rules removed, proxies
    stopped by PID (their connections break, the clients reconnect directly)."""
    path = f"{BASE}/slowproxy.py"
    with open(path, "w") as f:
        f.write(_SLOW_PROXY)
    proxies = {}
    rule = ["-p", "tcp", "--dport", "2379", "!", "-s", OBSERVER_IP, "-j", "REDIRECT", "--to-ports", str(_PROXY_PORT)]

    def restore():
        for member in ETCD:
            run("ip", "netns", "exec", ns(member), "iptables", "-t", "nat", "-D", "PREROUTING", *rule, check=False)
        for member, proc in proxies.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log(f"    slow etcd removed: rules deleted, proxies {[p.pid for p in proxies.values()]} stopped")
        proxies.clear()

    try:
        for member in ETCD:
            logfile = open(f"{BASE}/etcd/{member}.slowproxy.log", "ab")
            proxies[member] = subprocess.Popen(
                ["ip", "netns", "exec", ns(member), "/usr/bin/python3", path, str(_PROXY_PORT), ETCD_IP[member],
                 "2379", str(low), str(high)], stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL)
            logfile.close()
        time.sleep(0.5)
        for member in ETCD:
            run("ip", "netns", "exec", ns(member), "iptables", "-t", "nat", "-A", "PREROUTING", *rule)
        log(f"    proxies {[p.pid for p in proxies.values()]} delaying the nodes' etcd requests by {low:g}–{high:g} s")
        for member in ETCD:
            cluster.etcd.kill(member)
            cluster.etcd.start(member)
            if not _etcd_member_healthy(member, 30):
                log(f"    etcd member {member} not healthy 30 s after its restart")
        for member in ETCD:
            _etcd_member_healthy(member, 10)
    except BaseException:
        restore()
        raise
    return restore


def _patch_config(cluster, names, patch, attempts=5):
    """PATCH /config with `patch` through the first of `names` that takes it; (status, answer)."""
    last = None
    for _ in range(attempts):
        for name in names:
            try:
                status, doc = cluster.nodes[name].api("PATCH", "/config", patch, timeout=5)
            except Exception as error:
                last = (None, f"{name}: {type(error).__name__}: {error}")
                continue
            if status == 200:
                return status, doc
            last = (status, f"{name}: {doc}")
        time.sleep(1)
    return last


def s20_etcd_slow(cluster, obs, ctx):
    """Every etcd request of the nodes takes 3–10 s (below retry_timeout, set to 12 s for the
    scenario, ttl raised to fit), for max(60 s, 2 × ttl) with the writer running: no leader
    change, no self-fencing of a healthy leader. The timing is put back at the end."""
    status, current = cluster.nodes[ctx.replicas[0]].api("GET", "/config")
    if status != 200 or not isinstance(current, dict):
        return [check("GET /config", False, f"{status}: {current}")]
    old = {k: current[k] for k in ("ttl", "loop_wait", "retry_timeout") if k in current}
    loop_wait = float(current.get("loop_wait", ctx.loop_wait))
    retry = 12
    ttl = max(float(old.get("ttl", ctx.ttl)), loop_wait + 2 * retry + 5)
    ttl = int(ttl) if ttl == int(ttl) else ttl
    answer = _patch_config(cluster, ctx.replicas, {"ttl": ttl, "retry_timeout": retry})
    if answer is None or answer[0] != 200:
        return [check(f"PATCH /config ttl={ttl} retry_timeout={retry}", False, f"{answer}")]
    log(f"    timing {old} → ttl {ttl}, retry_timeout {retry}")
    ctx.notes.update(old_timing=old, ttl=ttl, retry_timeout=retry)
    time.sleep(loop_wait + 3)
    sizes = _log_sizes()
    leaders_before = obs.leader_changes()
    hold = max(60.0, 2 * ttl)
    restore = None
    latencies = []
    try:
        obs.mark("fault")
        restore = _slow_etcd(cluster, 3.0, 10.0)
        obs.mark("slow")
        for node_name, member in zip(NODES, ETCD):
            seconds, code = _measure_etcd_latency(node_name, member)
            latencies.append(round(seconds, 2))
            log(f"    one etcd request from {node_name} to {member} through the proxy: {seconds:.2f} s (HTTP {code})")
        time.sleep(max(0.0, obs.marks["slow"] + hold - time.monotonic()))
        u = _gap_until_now(obs, obs.marks["slow"])
    finally:
        if restore:
            restore()
        obs.mark("fast again")
        answer = _patch_config(cluster, NODES, old)
        log(f"    timing back to {old}: {answer[0] if answer else None}")
    fenced = {n: _log_since(n, sizes[n]).count("lease deadline passed") for n in NODES}
    ctx.notes.update(latency_s=latencies, fence_log_lines=fenced, U_while_slow_s=u)
    r = obs.leader_changes() - leaders_before
    return [
        check(f"the writes go on while etcd is slow (longest gap < retry_timeout, {retry} s)",
              u is not None and u < retry, "no writes" if u is None else f"U={u:.2f}s"),
        check("the proxies delay etcd requests by 3–10 s (one request from each node)",
              latencies and all(2.9 <= x <= 25 for x in latencies), f"{latencies} s"),
        check("R = 0 while etcd is slow (delays below retry_timeout cause no failover)", r == 0,
              f"R={r}, leaders {'→'.join(obs.leader_sequence())}"),
        check("no agent fences itself", not any(fenced.values()),
              ", ".join(f"{n}: {c} 'lease deadline passed'" for n, c in fenced.items())),
    ]


# --- 21: a hook that hangs ---

def _hook_script():
    path = f"{BASE}/hang-hook.sh"
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"echo \"$(date -u +%H:%M:%S.%N) pid $$ args $*\" >> {BASE}/hang-hook.log\n"
                "exec sleep 100000\n")
    os.chmod(path, 0o755)
    return path


class _SleepWatch(threading.Thread):
    """Polls the nodes' namespaces every 200 ms for our hook's `sleep 100000` and records when
    each PID was first and last seen (PIDs only, nothing is signalled)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = {}  # pid: [node, first, last]
        self.stop_event = threading.Event()

    def scan(self):
        now = time.monotonic()
        for name in NODES:
            for pid in namespace_pids(ns(name)):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv[:2] == [b"sleep", b"100000"]:
                    entry = self.seen.setdefault(pid, [name, now, now])
                    entry[2] = now

    def run(self):
        while not self.stop_event.is_set():
            self.scan()
            time.sleep(0.2)

    def stop(self):
        self.stop_event.set()
        self.join(5)


def _restart_all(cluster, order, sync, limit=60):
    """Each agent stopped (SIGTERM, as systemctl stop) and started again with its current config
    file, one at a time, waiting (bounded) for a healthy cluster between."""
    for name in order:
        _stop_node(cluster.nodes[name])
        cluster.nodes[name].write_config()
        cluster.nodes[name].start()
        if not cluster.wait_healthy(limit, sync):
            log(f"    not healthy {limit} s after restarting {name}")


def s21_hook_hangs(cluster, obs, ctx):
    """on_role_change and on_start of every node run a script that sleeps forever (hook_timeout
    5 s); the agents are restarted with it (replicas first, the leader last), then a switchover:
    the renewal goes on (R = exactly the switchover, no agent fences itself), and every hanging
    hook is killed at its timeout. The configuration is put back (agents restarted) at the end."""
    hook = _hook_script()
    timeout = 5.0
    slack = 3.0
    sync = _sync(cluster)
    watch = _SleepWatch()
    watch.start()
    extra = (f"  hook_timeout: {timeout:g}\n  callbacks:\n    on_role_change: {hook}\n    on_start: {hook}\n")
    try:
        for node in cluster.nodes.values():
            node.extra_postgresql = extra
        leader = cluster.leader()
        _restart_all(cluster, [n for n in NODES if n != leader] + [leader], sync)
        obs.mark("reconfigured")
        ctx.notes["leader_changes_of_the_reconfiguration"] = obs.leader_changes()
        leader = cluster.leader()
        if leader not in cluster.nodes or not cluster.wait_healthy(60, sync):
            return [check("healthy after the restarts with the hanging hooks", False, f"leader {leader}")]
        # In synchronous mode only the synchronous standby may be the candidate (the leader answers
        # 412 otherwise, as Patroni does).
        standby = cluster.sync_standby() if sync else None
        candidate = standby if standby in NODES and standby != leader else random.choice(
            [n for n in NODES if n != leader])
        sizes = _log_sizes()
        changes_before = obs.leader_changes()
        obs.mark("fault")
        result = cluster.switchover(candidate)
        log(f"    switchover {leader} → {candidate}: exit {result.returncode}")
        if result.returncode != 0:
            with open(f"{BASE}/switchover-21.stderr", "w") as f:
                f.write(result.stdout + "\n--- stderr\n" + result.stderr)
        time.sleep(max(0.0, obs.fault_at + timeout + slack + 10 - time.monotonic()))
        r = obs.leader_changes() - changes_before
        texts = {n: _log_since(n, sizes[n]) for n in NODES}
        fenced = {n: t.count("lease deadline passed") for n, t in texts.items()}
        killed = {n: t.count("hook did not finish within") for n, t in texts.items()}
        watch.scan()
        now = time.monotonic()
        lifetimes = {pid: round((now if pid_alive(pid) else last) - first, 2)
                     for pid, (_, first, last) in watch.seen.items()}
        survivors = {pid: s for pid, s in lifetimes.items() if s > timeout + slack}
        ctx.notes.update(hooks_seen=len(watch.seen), hook_lifetimes_s=sorted(lifetimes.values()),
                         hooks_killed_logged=killed, candidate=candidate)
        log(f"    hanging hooks seen: {len(watch.seen)}, lifetimes {sorted(lifetimes.values())} s")
        checks = [
            check("switchover to the candidate", result.returncode == 0 and cluster.leader() == candidate,
                  f"exit {result.returncode}, leader {cluster.leader()}: {(result.stdout + result.stderr).strip()[-200:]}"),
            check("R = 1 from the switchover on (the renewal goes on, no self-fencing)",
                  r == 1 and not any(fenced.values()),
                  f"R={r}; " + ", ".join(f"{n}: {c} 'lease deadline passed'" for n, c in fenced.items())),
            check("hanging hooks ran (on_role_change of the switchover at least)",
                  len(watch.seen) >= 1 and killed[candidate] >= 1,
                  f"{len(watch.seen)} seen, timeouts logged {killed}"),
            check(f"every hanging hook killed at its timeout ({timeout:g} s + {slack:g} s)", not survivors,
                  f"lifetimes {sorted(lifetimes.values())} s"),
        ]
        return checks
    finally:
        watch.stop()
        for node in cluster.nodes.values():
            node.extra_postgresql = ""
        leader = cluster.leader()
        _restart_all(cluster, [n for n in NODES if n != leader] + ([leader] if leader in NODES else []), sync)
        obs.mark("config back")


# --- 22: agent and fence guard stopped together (host suspend stand-in) ---

def _freeze_agent_and_guard(cluster, name):
    """SIGSTOP to the node's agent and its fence guard, together. Returns (restore, guard PIDs)."""
    node = cluster.nodes[name]
    guards = node.fence_guard_pids()
    agent = node.agent_pid()
    for pid in [agent] + guards:
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def restore():
        for pid in guards + [agent]:
            try:
                pid and os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    return restore, agent, guards


def s22_agent_and_guard_frozen(cluster, obs, ctx):
    """The leader's agent and fence guard stopped together (SIGSTOP) for 2 × ttl + 2 s, while
    postgres goes on: the others elect a new leader. On SIGCONT the old primary's postmaster must
    be stopped at once (both clocks say the deadline passed), it must acknowledge no write once
    another node accepted one, and the frozen agent must not take the key back."""
    node = cluster.nodes[ctx.old]
    postmaster = node.postmaster_pid()
    sizes = _log_sizes()
    obs.mark("fault")
    restore, agent, guards = _freeze_agent_and_guard(cluster, ctx.old)
    ctx.notes.update(agent=agent, guards=guards, postmaster=postmaster)
    if not guards:
        restore()
        return [check("the leader's fence guard found", False, "no fence-guard child of the agent")]
    log(f"    {ctx.old}: agent {agent} and fence guard {guards} stopped; postmaster {postmaster} runs on")
    try:
        time.sleep(2 * ctx.ttl + 2)
    finally:
        restore()
        obs.mark("resumed")
    resumed = obs.marks["resumed"]
    gone_after = None
    deadline = resumed + 10
    while time.monotonic() < deadline:
        if not pid_alive(postmaster):
            gone_after = time.monotonic() - resumed
            break
        time.sleep(0.02)
    healthy = cluster.wait_healthy(60, _sync(cluster))
    from scenarios import fenced_before_other_accepts
    promoted, late = _late_writes(obs, ctx.old)
    seq = obs.leader_sequence()
    text = _log_since(ctx.old, sizes[ctx.old])
    ctx.notes.update(postmaster_gone_after_resume_s=gone_after,
                     agent_fenced="lease deadline passed" in text,
                     guard_fenced="baton fence-guard: lease deadline passed" in text)
    p = obs.promotion(ctx.old)
    return [
        check("another member leads while the agent and its guard are stopped", p is not None and p < 2 * ctx.ttl + 2,
              "no other leader" if p is None else f"P={p:.2f}s"),
        check("the old postmaster is stopped within 1 s of SIGCONT", gone_after is not None and gone_after < 1.0,
              f"postmaster {postmaster} " + ("still alive 10 s after SIGCONT" if gone_after is None
                                             else f"gone {gone_after:.2f} s after SIGCONT")),
        check("old primary fenced before another node accepts writes", fenced_before_other_accepts(obs, ctx.old)),
        check("the old primary acknowledges no write once another member holds the key", not late,
              f"{len(late)} late writes" + (f", the first {late[0] - obs.fault_at:.2f} s after the fault" if late else "")),
        check("no stale write: the leader key never returns to the frozen agent", seq.count(ctx.old) <= 1,
              "leaders " + "→".join(seq)),
        check("healthy within 60 s of SIGCONT", healthy),
    ]


# --- class 2 in the soak: kinds injected and repaired within a bounded time ---

def _held(restore, hold):
    """Holds an injected fault `hold` seconds, then repairs it with `restore`, whatever happens."""
    try:
        time.sleep(hold)
    finally:
        restore()


def _soak_auth(cluster, leader, replicas, hold):
    _held(_refuse_agent_auth(cluster, leader), hold)


def _soak_slots(cluster, leader, replicas, hold):
    _held(_fill_connection_slots(cluster, leader)[0], hold)


def _soak_backend(cluster, leader, replicas, hold):
    _held(_stop_agent_backends(cluster, leader)[0], hold)


def _soak_guard_cut(cluster, leader, replicas, hold):
    node = cluster.nodes[leader]
    for pid in node.fence_guard_pids():
        os.kill(pid, signal.SIGKILL)
    cluster.net.cut_from_etcd(leader)
    _held(cluster.net.heal, hold)


def _soak_freeze(cluster, leader, replicas, hold):
    _held(_freeze_agent_and_guard(cluster, leader)[0], hold)


def _soak_slow_etcd(cluster, leader, replicas, hold):
    # Below retry_timeout, whatever the profile: 20 %–80 % of it per chunk.
    retry = float(cluster.dynamic["retry_timeout"])
    _held(_slow_etcd(cluster, 0.2 * retry, 0.8 * retry), hold)


# soak kind: function(cluster, leader, replicas, hold), which injects the fault on the leader (or on
# every etcd member), holds it `hold` seconds and repairs it; every step is bounded in time.
LOCAL_SOAK = {
    "pg-auth-refused": _soak_auth,         # 17a
    "pg-slots-full": _soak_slots,          # 17b
    "pg-backend-stop": _soak_backend,      # 17c
    "guard-kill-cut": _soak_guard_cut,     # 19
    "agent-guard-freeze": _soak_freeze,    # 22
    "etcd-slow": _soak_slow_etcd,          # 20, delays scaled below retry_timeout
}

LOCAL_SCENARIOS = {
    "16a": ("local lie: PG_VERSION moved out of the primary's data directory", s16a_leader_data_dir_damaged, None),
    "16b": ("local lie: a replica's data_dir is a non-empty directory without a cluster", s16b_foreign_data_dir, None),
    # 18 and 18b run asynchronous: in synchronous mode an old primary that comes back writable
    # acknowledges nothing (its commits wait for a synchronous standby that now follows another
    # node), so the direct writer could not see it.
    "18": ("local lie: POST /restart on the primary, shutdown slower than ttl (checkpointer stopped)",
           s18_restart_slower_than_lease, False),
    "18b": ("local lie: POST /restart on the primary, shutdown slower than ttl (postmaster stopped)",
            s18b_restart_postmaster_stopped, False),
    "24": ("dynamic configuration: ttl changed, then the primary crashes", s24_dynamic_ttl, None),
    "17a": ("local lie: the leader's agent refused by its own postgres (pg_hba reject on its path)",
            s17a_agent_auth_refused, None),
    "17b": ("local lie: every connection slot of the leader's postgres taken", s17b_connection_slots_full, None),
    "17c": ("local lie: the leader's agent backend stopped (SIGSTOP)", s17c_agent_backend_stopped, None),
    "19": ("local lie: the leader's fence guard killed, then the leader cut from etcd", s19_fence_guard_gone, None),
    # 20 sets retry_timeout 12 s (and ttl to fit) for its duration and puts the timing back after;
    # its etcd members are restarted once, one at a time, to move every client onto the proxies.
    "20": ("local lie: every etcd request of the nodes takes 3–10 s (retry_timeout 12 s)", s20_etcd_slow, None),
    "21": ("local lie: on_role_change and on_start hang (hook_timeout 5 s), then a switchover", s21_hook_hangs, None),
    # 22 runs synchronous: postgres goes on while agent and guard are stopped (not a whole-host
    # suspend), so an asynchronous old primary would acknowledge writes after the new primary's
    # promotion whatever any agent does; in synchronous mode it can only once it is fenced late.
    "22": ("local lie: the leader's agent and fence guard stopped together for 2 × ttl + 2 s",
           s22_agent_and_guard_frozen, True),
}
# F (fence latency of the old primary) is reported for these.
LOCAL_FENCED = {"16a", "18", "18b", "17a", "17b", "17c", "19", "22"}
LOCAL_ORDER = ["16a", "16b", "17a", "17b", "17c", "18", "18b", "19", "20", "21", "22", "24"]
