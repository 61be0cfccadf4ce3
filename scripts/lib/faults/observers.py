"""Observers in the root namespace (never cut), and the measurements of ../shared/design/faults.md.

* Prober: a unique, increasing id every 20 ms through libpq multi-host with
  target_session_attrs=read-write; every attempt is logged with its outcome on the monotonic clock.
* DirectWriters: every 50 ms, a write straight to each node (no failover logic); a node that
  acknowledges writes while another one does is a split brain (D2). The writes are reconciled
  against the final primary at the end (acknowledged direct writes on another timeline).
* Watcher: every 100 ms, each agent's GET /patroni and the leader key in etcd (R, P, Z).
"""
import bisect, itertools, threading, time

import psycopg2

from harness import MULTI_HOST, NODE_IP, NODES, conninfo, log

_ids = itertools.count(int(time.time() * 1000) * 1000)
_ids_lock = threading.Lock()


def next_id():
    with _ids_lock:
        return next(_ids)


def setup_tables():
    with psycopg2.connect(MULTI_HOST) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS faults_probe (id bigint PRIMARY KEY)")
        cur.execute("CREATE TABLE IF NOT EXISTS faults_direct (id bigint PRIMARY KEY, node text NOT NULL)")
    conn.close()


class PacedWriter(threading.Thread):
    """Writes a unique id every `interval` seconds over one autocommit connection, reconnecting
    after a failure, and logs every attempt as (sent, done, id, ok) on the monotonic clock."""

    # A writer aimed at one node keeps its connection when that node answers "read-only" (it is a
    # replica now); the prober reconnects, so that multi-host finds the current primary.
    keeps_read_only_connection = False

    def __init__(self, conninfo, interval):
        super().__init__(daemon=True)
        self.conninfo, self.interval = conninfo, interval
        self.attempts = []  # (sent, done, id, ok)
        self.stop_event = threading.Event()

    def insert(self, cur, ident):
        raise NotImplementedError

    def run(self):
        conn = None
        while not self.stop_event.is_set():
            began = time.monotonic()
            ident = next_id()
            ok = False
            try:
                if conn is None:
                    conn = psycopg2.connect(self.conninfo)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    self.insert(cur, ident)
                ok = True
            except Exception as error:
                read_only = isinstance(error, psycopg2.errors.ReadOnlySqlTransaction)
                if not (read_only and self.keeps_read_only_connection):
                    try:
                        conn is not None and conn.close()
                    except Exception:
                        pass
                    conn = None
            self.attempts.append((began, time.monotonic(), ident, ok))
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def stop(self):
        self.stop_event.set()
        self.join(30)


class Prober(PacedWriter):
    """Writes through libpq multi-host with target_session_attrs=read-write, every 20 ms."""

    def __init__(self, interval=0.02):
        super().__init__(MULTI_HOST, interval)

    def insert(self, cur, ident):
        cur.execute("INSERT INTO faults_probe (id) VALUES (%s)", (ident,))

    def acked(self):
        return [(done, ident) for _, done, ident, ok in self.attempts if ok]


class DirectWriter(PacedWriter):
    """Writes to one node only, every 50 ms."""

    keeps_read_only_connection = True

    def __init__(self, node, interval=0.05):
        super().__init__(conninfo([NODE_IP[node]]), interval)
        self.node = node

    def insert(self, cur, ident):
        cur.execute("INSERT INTO faults_direct (id, node) VALUES (%s, %s)", (ident, self.node))


class Watcher(threading.Thread):
    """Polls each agent's /patroni (one thread per node) and the leader key every 100 ms."""

    def __init__(self, cluster, interval=0.1):
        super().__init__(daemon=True)
        self.cluster, self.interval = cluster, interval
        self.leaders = []  # (t, leader or None); only changes are kept
        self.status = {n: [] for n in NODES}  # (t, doc or None); only changes of the summary are kept
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._node_loop, args=(n,), daemon=True) for n in NODES]

    @staticmethod
    def summary(doc):
        if doc is None:
            return None
        return (doc.get("role"), doc.get("state"), doc.get("replication_state"), doc.get("timeline"),
                doc.get("postmaster_start_time"), bool(doc.get("sync_standby")))

    def _node_loop(self, name):
        node = self.cluster.nodes[name]
        last = "unset"
        while not self.stop_event.is_set():
            began = time.monotonic()
            s = self.summary(node.status(timeout=0.4))
            if s != last:
                self.status[name].append((time.monotonic(), s))
                last = s
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    def run(self):
        for t in self.threads:
            t.start()
        last = "unset"
        while not self.stop_event.is_set():
            began = time.monotonic()
            keys = self.cluster.keys()
            if keys is not None:  # unknown while etcd answers nobody: keep the last value
                leader = keys.get("/service/faults/leader") or None
                if leader != last:
                    self.leaders.append((time.monotonic(), leader))
                    last = leader
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(5)
        self.join(5)


class Observation:
    """Everything observed during one scenario run."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.prober = Prober()
        self.writers = {n: DirectWriter(n) for n in NODES}
        self.watcher = Watcher(cluster)
        self.fault_at = None
        self.marks = {}
        # Monotonic stamps → wall-clock time, to find a violation in the agents' logs.
        self.wall_offset = time.time() - time.monotonic()
        # What a violation needs for its analysis: (wall time, what) for lost writes and D2 events.
        self.violations = []

    def wall(self, stamp):
        wall = stamp + self.wall_offset
        return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}"

    def start(self):
        self.started = time.monotonic()
        self.prober.start()
        for w in self.writers.values():
            w.start()
        self.watcher.start()

    def mark(self, name):
        self.marks[name] = time.monotonic()
        if name == "fault" and self.fault_at is None:
            self.fault_at = self.marks[name]

    def stop(self):
        self.prober.stop()
        for w in self.writers.values():
            w.stop_event.set()
        for w in self.writers.values():
            w.join(30)
        self.watcher.stop()
        self.stopped = time.monotonic()

    # --- measurements ---
    def final_read(self):
        """Reads the final primary: the acknowledged ids that are missing (L), and ids that are
        there but were never acknowledged (unexpected; in doubt when the attempt failed)."""
        attempts = self.prober.attempts
        first = min((a[2] for a in attempts), default=0)
        last = max((a[2] for a in attempts), default=0)
        direct = [a for w in self.writers.values() for a in w.attempts]
        dfirst = min((a[2] for a in direct), default=0)
        dlast = max((a[2] for a in direct), default=0)
        stored = stored_direct = None
        for _ in range(100):
            try:
                conn = psycopg2.connect(MULTI_HOST)
                with conn.cursor() as cur:
                    cur.execute("SELECT id FROM faults_probe WHERE id BETWEEN %s AND %s", (first, last))
                    stored = {r[0] for r in cur.fetchall()}
                    cur.execute("SELECT id FROM faults_direct WHERE id BETWEEN %s AND %s", (dfirst, dlast))
                    stored_direct = {r[0] for r in cur.fetchall()}
                conn.close()
                break
            except Exception:
                time.sleep(0.3)
        if stored is None:
            raise RuntimeError("final read failed: no primary reachable for 30 s")
        acked = {a[2] for a in attempts if a[3]}
        attempted = {a[2] for a in attempts}
        direct_acked = {a[2] for a in direct if a[3]}
        for name, writer in self.writers.items():
            for sent, done, ident, ok in writer.attempts:
                if ok and ident not in stored_direct:
                    self.violations.append((done, f"direct write {ident} acknowledged by {name} is not on the final primary"))
        for sent, done, ident, ok in attempts:
            if ok and ident not in stored:
                self.violations.append((done, f"prober write {ident} acknowledged is not on the final primary"))
        return {
            "acked": len(acked),
            "L": len(acked - stored),
            "unexpected": len(stored - attempted),
            "in_doubt": len(stored & (attempted - acked)),
            "direct_lost": len(direct_acked - stored_direct),
        }

    def unavailability(self, since=None):
        """U: the longest gap between two consecutive acknowledged writes after `since` (the
        fault), or over the whole run."""
        acked = sorted(t for t, _ in self.prober.acked())
        since = self.fault_at if since is None else since
        gaps = [b - a for a, b in zip(acked, acked[1:]) if since is None or b >= since]
        if since is not None and acked and acked[-1] < since:
            gaps.append(self.stopped - acked[-1])
        return max(gaps) if gaps else None

    def split_brain(self):
        """D2: the time during which two nodes certainly accepted writes. A node's accepting epoch
        is a run of acknowledged direct writes with no failure between them; it certainly accepted
        writes from the acknowledgement of the first to the sending of the last. D2 is the length of
        the overlap of two nodes' epochs, plus every acknowledged write of one node that lies
        entirely inside another node's epoch (events)."""
        epochs = {}
        for name, writer in self.writers.items():
            runs, current = [], []
            for sent, done, ident, ok in writer.attempts:
                if ok:
                    current.append((sent, done))
                elif current:
                    runs.append(current)
                    current = []
            if current:
                runs.append(current)
            epochs[name] = runs
        overlap, events = 0.0, 0
        writes = {name: sorted((sent, done) for run in runs for sent, done in run) for name, runs in epochs.items()}
        names = list(epochs)
        for a in names:
            for b in names:
                if a == b:
                    continue
                sends = [w[0] for w in writes[b]]
                for run_a in epochs[a]:
                    if len(run_a) < 2:
                        continue
                    lo, hi = run_a[0][1], run_a[-1][0]
                    if hi <= lo:
                        continue
                    start = bisect.bisect_left(sends, lo)
                    for sent, done in writes[b][start:bisect.bisect_right(sends, hi)]:
                        if done <= hi:
                            events += 1
                            self.violations.append(
                                (sent, f"D2: {b} acknowledged a write inside {a}'s accepting epoch "
                                       f"({self.wall(lo)}–{self.wall(hi)})"))
                    if b > a:
                        for run_b in epochs[b]:
                            if len(run_b) >= 2:
                                blo, bhi = run_b[0][1], run_b[-1][0]
                                overlap += max(0.0, min(hi, bhi) - max(lo, blo))
        return overlap, events

    def log_violations(self, log, most=20):
        """Logs the violations found by split_brain() and final_read(), in time order (UTC, the
        agents' log clock), so that they can be matched with the agents' decisions."""
        for stamp, what in sorted(self.violations)[:most]:
            log(f"    violation at {self.wall(stamp)} UTC: {what}")
        if len(self.violations) > most:
            log(f"    … and {len(self.violations) - most} more")

    def fence_latency(self, node):
        """F: from the fault until `node` stopped acknowledging direct writes: the end of its
        accepting epoch (acknowledged writes with no failure between them) that spans the fault;
        0 when it was not accepting writes at the fault. A later epoch (restarted in place, or
        primary again after a failover) does not count."""
        last = None
        for sent, done, _, ok in self.writers[node].attempts:
            if sent < self.fault_at:
                last = done if ok else None
                continue
            if not ok:
                break
            last = done
        return max(0.0, last - self.fault_at) if last is not None else 0.0

    def leader_changes(self):
        """R: how many times the leader key went to a different member after the run started
        (an empty key in between does not count)."""
        names = [leader for _, leader in self.watcher.leaders if leader]
        return sum(1 for a, b in zip(names, names[1:]) if a != b)

    def leader_sequence(self):
        names = [leader for _, leader in self.watcher.leaders if leader]
        return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]

    def promotion(self, old):
        """P: from the fault to a leader key held by another member."""
        for t, leader in self.watcher.leaders:
            if t >= self.fault_at and leader and leader != old:
                return t - self.fault_at
        return None

    def rejoin(self, old, after=None):
        """Z: from the fault until the old primary is a streaming replica again, or a running
        primary again when it kept (or regained) the leader key."""
        after = self.fault_at if after is None else after
        history = self.watcher.status[old]
        was_down = False
        for t, s in history:
            if t < after:
                continue
            if s is None or s[1] != "running" or s[0] != "primary":
                was_down = True
            if s is not None and s[1] == "running":
                if s[0] == "replica" and s[2] == "streaming":
                    return t - self.fault_at
                if s[0] == "primary" and was_down:
                    return t - self.fault_at
        return None

    def postmaster_starts(self, node):
        starts = {s[4] for _, s in self.watcher.status[node] if s and s[4]}
        return len(starts)


def stats(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {"min": round(values[0], 3), "median": round(median, 3), "max": round(values[-1], 3)}
