"""Scenarios of class 2, "local lies" (../shared/design/faults.md): numbered 16 and up, the faults in
which what an agent reads about its own node is missing, wrong, late or changed under it.

Same contract as scenarios.py: a function (cluster, observation, ctx) that marks the fault, injects
it, restores what an operator or the init system would, and returns its own checks; the runner adds
D2 = 0, L = 0 in synchronous mode, no unexpected id and a healthy cluster within 60 s. main.py
merges LOCAL_SCENARIOS and LOCAL_ORDER into the matrix.

Every wait here is bounded in time (a deadline on the monotonic clock) and every retry in count.
"""
import math, os, random, re, signal, subprocess, threading, time

from harness import BASE, NODES, SCOPE, log, namespace_pids, ns, run
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
    last = None
    for i in range(attempts):
        for name in names:
            try:
                status, doc = cluster.nodes[name].api("PATCH", "/config", {"ttl": ttl}, timeout=5)
            except Exception as error:
                last = (None, f"{name}: {type(error).__name__}: {error}")
                continue
            if status == 200:
                return status, doc
            last = (status, f"{name}: {doc}")
        time.sleep(1)
    return last


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
}
# F (fence latency of the old primary) is reported for these.
LOCAL_FENCED = {"16a", "18", "18b"}
LOCAL_ORDER = ["16a", "16b", "18", "18b", "24"]
