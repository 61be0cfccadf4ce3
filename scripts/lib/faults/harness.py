"""The fault-injection harness: a 3-node Baton cluster on Linux network namespaces.

Layout (all names start with `faults`, all addresses in 10.231.0.0/24):

    root namespace   bridge faultsbr0 10.231.0.1   the observer (prober, split-brain writers,
                                                  role watchers) — never cut
    faults-n1..n3    10.231.0.11..13              one agent + its PostgreSQL 15 (port 5432, API 8008)
    faults-e1..e3    10.231.0.21..23              one etcd 3.4 member each (client 2379, peer 2380)

Faults are injected with iptables rules in a node's namespace (a chain FAULTS hooked into INPUT and
OUTPUT, flushed to heal), signals to processes by PID, a preloaded shim that moves one agent's wall
clock (wallclock.c), and a loop filesystem for a full disk. Everything started is recorded by PID;
every namespace, link, mount and process this harness created is removed on exit, also after a
failure.
"""
import base64, json, os, re, shutil, signal, subprocess, sys, threading, time, urllib.request

BASE = os.environ.get("FAULTS_DIR", "/tmp/baton-faults")
# FAULTS_PREFIX and FAULTS_NET let a second harness run beside this one (e.g. a soak while CI runs
# its subset): its own namespaces, bridge and /24; cleanup only ever touches names with our prefix.
PREFIX = os.environ.get("FAULTS_PREFIX", "faults")
NET = os.environ.get("FAULTS_NET", "10.231.0")
if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", PREFIX):
    sys.exit(f"FAULTS_PREFIX={PREFIX!r}: expected 1-6 lowercase letters or digits, starting with a letter")
if not re.fullmatch(r"10\.(\d{1,3})\.(\d{1,3})", NET) or max(map(int, NET.split(".")[1:])) > 255:
    sys.exit(f"FAULTS_NET={NET!r}: expected the first three octets of a private /24, e.g. 10.232.0")
BRIDGE = f"{PREFIX}br0"
OBSERVER_IP = f"{NET}.1"
NODES = ["node1", "node2", "node3"]
NODE_IP = {f"node{i}": f"{NET}.1{i}" for i in (1, 2, 3)}
ETCD = ["e1", "e2", "e3"]
ETCD_IP = {f"e{i}": f"{NET}.2{i}" for i in (1, 2, 3)}
PG_PORT, API_PORT = 5432, 8008
SCOPE = "faults"
WALLCLOCK_SHIM = f"{BASE}/wallclock.so"
SUPERUSER_PASSWORD = "faults-superuser-secret"
REPLICATION_PASSWORD = "faults-replication-secret"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(*args, check=True, quiet=False, timeout=60, env=None):
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
    return result.stdout


def ns(node_or_member):
    return f"{PREFIX}-{node_or_member.replace('node', 'n')}"


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def namespace_pids(name):
    out = run("ip", "netns", "pids", name, check=False, quiet=True)
    return [int(p) for p in out.split()]


def etcd_b64(text):
    return base64.b64encode(text.encode()).decode()


class Network:
    """The bridge, the six namespaces and their iptables fault chains."""

    def __init__(self):
        self.namespaces = [ns(n) for n in NODES] + [ns(e) for e in ETCD]

    @staticmethod
    def leftovers():
        names = [line.split()[0] for line in run("ip", "netns", "list", check=False).splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{PREFIX}-")]

    def cleanup(self):
        """Removes everything this harness creates: processes inside our namespaces (by PID),
        the namespaces, the bridge, a loop mount. Safe to run when nothing exists."""
        for name in self.leftovers():
            for pid in namespace_pids(name):
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for name in self.leftovers():
            while namespace_pids(name) and time.monotonic() < deadline:
                time.sleep(0.1)
            run("ip", "netns", "delete", name, check=False)
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            run("ip", "link", "delete", BRIDGE, check=False)
        for name in os.listdir("/sys/class/net"):
            if name.startswith(f"{PREFIX}-v"):
                run("ip", "link", "delete", name, check=False)

    def create(self):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{OBSERVER_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        pairs = [(ns(n), NODE_IP[n]) for n in NODES] + [(ns(e), ETCD_IP[e]) for e in ETCD]
        for name, ip in pairs:
            veth = f"{PREFIX}-v{name.split('-')[1]}"
            run("ip", "netns", "add", name)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            run("ip", "link", "set", veth, "master", BRIDGE, "up")
            run("ip", "netns", "exec", name, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            run("ip", "netns", "exec", name, "ip", "link", "set", "eth0", "up")
            run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            run("ip", "netns", "exec", name, "iptables", "-N", "FAULTS")
            run("ip", "netns", "exec", name, "iptables", "-I", "INPUT", "-j", "FAULTS")
            run("ip", "netns", "exec", name, "iptables", "-I", "OUTPUT", "-j", "FAULTS")

    # Faults: every rule goes into the FAULTS chain of one namespace; heal() flushes them all.
    def _rule(self, name, *rule):
        run("ip", "netns", "exec", name, "iptables", "-A", "FAULTS", *rule)

    def cut_from_etcd(self, node, direction="both"):
        for ip in ETCD_IP.values():
            if direction in ("both", "in"):
                self._rule(ns(node), "-s", ip, "-j", "DROP")
            if direction in ("both", "out"):
                self._rule(ns(node), "-d", ip, "-j", "DROP")

    def isolate(self, node):
        """Cut from etcd and from the other nodes; the observer (10.231.0.1) still reaches it."""
        for ip in list(ETCD_IP.values()) + [NODE_IP[n] for n in NODES if n != node]:
            self._rule(ns(node), "-s", ip, "-j", "DROP")
            self._rule(ns(node), "-d", ip, "-j", "DROP")

    def drop_wal_from(self, replica, primary):
        """One direction: the replica no longer receives anything from the primary's postgres."""
        self._rule(ns(replica), "-p", "tcp", "-s", NODE_IP[primary], "--sport", str(PG_PORT), "-j", "DROP")

    def heal(self, names=None):
        for name in names or self.namespaces:
            run("ip", "netns", "exec", name, "iptables", "-F", "FAULTS", check=False)


class Etcd:
    """Three etcd members, each in its own namespace."""

    def __init__(self):
        self.procs = {}
        self.cluster = ",".join(f"{e}=http://{ETCD_IP[e]}:2380" for e in ETCD)

    def start(self, member, new=True):
        ip = ETCD_IP[member]
        data = f"{BASE}/etcd/{member}"
        os.makedirs(data, exist_ok=True)
        args = ["ip", "netns", "exec", ns(member), "etcd", "--name", member, "--data-dir", data,
                "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
                "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
                "--initial-cluster", self.cluster, "--initial-cluster-token", "baton-faults",
                "--initial-cluster-state", "new", "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--logger", "zap", "--log-outputs", "stderr"]
        logfile = open(f"{BASE}/etcd/{member}.log", "ab")
        self.procs[member] = subprocess.Popen(args, stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL)
        logfile.close()

    def pid(self, member):
        proc = self.procs.get(member)
        return proc.pid if proc and proc.poll() is None else None

    def signal(self, member, sig):
        pid = self.pid(member)
        if pid:
            os.kill(pid, sig)

    def kill(self, member):
        proc = self.procs.get(member)
        if proc and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)

    def ensure_running(self):
        for member in ETCD:
            proc = self.procs.get(member)
            if proc is None or proc.poll() is not None:
                log(f"restarting etcd member {member}")
                self.start(member)
            else:
                os.kill(proc.pid, signal.SIGCONT)

    def endpoints(self):
        return [f"http://{ETCD_IP[e]}:2379" for e in ETCD]

    def request(self, path, body, timeout=0.5):
        last = None
        for endpoint in self.endpoints():
            try:
                req = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return json.loads(resp.read())
            except Exception as error:  # try the next member
                last = error
        raise RuntimeError(f"no etcd member answered {path}: {last}")

    def get_prefix(self, prefix, serializable=True):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        doc = self.request("/v3/kv/range", {"key": etcd_b64(prefix), "range_end": etcd_b64(end),
                                            "serializable": serializable})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in doc.get("kvs", [])}

    def lease_of(self, key, timeout=2):
        """The lease id attached to `key` (0: none), or None when the key does not exist."""
        kvs = self.request("/v3/kv/range", {"key": etcd_b64(key)}, timeout=timeout).get("kvs") or []
        return int(kvs[0].get("lease", 0)) if kvs else None

    def lease_ttl(self, lease, timeout=2):
        """(granted ttl, remaining ttl) of a lease in seconds; the remaining one is -1 when the
        lease has expired or never existed (etcd then omits the granted ttl: 0)."""
        doc = self.request("/v3/lease/timetolive", {"ID": lease}, timeout=timeout)
        return int(doc.get("grantedTTL", 0)), int(doc.get("TTL", -1))

    def wait_healthy(self, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                self.request("/v3/kv/range", {"key": etcd_b64("health")}, timeout=1)
                return True
            except Exception:
                time.sleep(0.2)
        return False


class Node:
    """One agent (and the PostgreSQL it manages) in its namespace."""

    def __init__(self, name, baton, dynamic, wallclock=True):
        self.name, self.baton, self.dynamic, self.wallclock = name, baton, dynamic, wallclock
        self.dir = f"{BASE}/{name}"
        self.config = f"{BASE}/{name}.yml"
        self.clock_file = f"{BASE}/{name}.wallclock"
        self.proc = None
        self.ip = NODE_IP[name]
        # Extra lines of the `postgresql:` section (indented two spaces), e.g. callbacks and
        # hook_timeout for scenario 21; empty for every other scenario.
        self.extra_postgresql = ""

    def write_config(self):
        os.makedirs(self.dir, exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        hosts = ", ".join(f'"{ETCD_IP[e]}:2379"' for e in ETCD)
        # max_connections must be the same on every member: a cluster-wide parameter, as in Patroni.
        dynamic = dict(self.dynamic)
        postgresql = dict(dynamic.get("postgresql") or {})
        postgresql["parameters"] = {"max_connections": 60, **(postgresql.get("parameters") or {})}
        dynamic["postgresql"] = postgresql
        dcs = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in dynamic.items())
        text = f"""scope: {SCOPE}
name: {self.name}
etcd3:
  hosts: [{hosts}]
restapi:
  listen: {self.ip}:{API_PORT}
postgresql:
  listen: 0.0.0.0:{PG_PORT}
  connect_address: {self.ip}:{PG_PORT}
  data_dir: {self.dir}/data
  bin_dir: /usr/lib/postgresql/15/bin
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: replicator}}
  replication_networks: ["{NET}.0/24", "127.0.0.1/32"]
  client_networks: ["{NET}.0/24", "127.0.0.1/32"]
{self.extra_postgresql}  parameters:
    shared_buffers: 32MB
bootstrap:
  dcs:
{dcs}
log:
  level: {os.environ.get('FAULTS_LOG_LEVEL', 'info')}
"""
        with open(self.config, "w") as f:
            f.write(text)
        os.chmod(self.config, 0o600)
        with open(self.clock_file, "w") as f:
            f.write("0\n")

    def start(self):
        env = dict(os.environ, BATON_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
                   BATON_REPLICATION_PASSWORD=REPLICATION_PASSWORD)
        if self.wallclock:
            # Only the wall clock of this agent can be moved (wallclock.c); monotonic clocks stay.
            env.update(LD_PRELOAD=WALLCLOCK_SHIM, BATON_WALLCLOCK_FILE=self.clock_file)
        logfile = open(f"{BASE}/{self.name}.agent.log", "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns(self.name), self.baton, "agent", "-c", self.config],
                                     stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL, env=env)
        logfile.close()

    def agent_pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def postmaster_pid(self):
        try:
            with open(f"{self.dir}/data/postmaster.pid") as f:
                pid = int(f.readline().strip())
            return pid if pid_alive(pid) else None
        except (OSError, ValueError):
            return None

    def kill_postgres(self):
        pid = self.postmaster_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
        return pid

    def kill_agent(self):
        pid = self.agent_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)

    def fence_guard_pids(self):
        """PIDs of the agent's fence guard processes (`baton-fence-guard`, children of the agent)."""
        agent = self.agent_pid()
        found = []
        if not agent:
            return found
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                if parent != agent:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if argv and os.path.basename(argv[0]) == b"baton-fence-guard" and pid_alive(int(entry)):
                found.append(int(entry))
        return found

    def signal_agent(self, sig):
        pid = self.agent_pid()
        if pid:
            os.kill(pid, sig)

    def crash(self):
        """The whole node dies: every process in its namespace (agent, fence guard, postgres)."""
        self.kill_agent()
        for pid in namespace_pids(ns(self.name)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while namespace_pids(ns(self.name)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def set_clock_offset(self, offset):
        with open(self.clock_file, "w") as f:
            f.write(f"{offset}\n")

    def running(self):
        return self.agent_pid() is not None

    def status(self, timeout=0.5):
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{API_PORT}/patroni", timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as error:  # 503 still carries the document
            try:
                return json.loads(error.read())
            except Exception:
                return None
        except Exception:
            return None

    def api(self, method, path, body=None, timeout=5.0):
        """One request to this agent's REST API: (HTTP status, JSON document or text). The agents
        of this harness have no REST API credentials (restapi has only `listen`), so unsafe methods
        go through without Basic auth. Raises on a connection error or timeout."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.ip}:{API_PORT}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as error:  # 4xx/5xx still carry a document
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


def conninfo(hosts, **extra):
    params = {
        "host": ",".join(hosts), "port": ",".join([str(PG_PORT)] * len(hosts)), "user": "postgres",
        "password": SUPERUSER_PASSWORD, "dbname": "postgres", "connect_timeout": "1",
        "keepalives": "1", "keepalives_idle": "1", "keepalives_interval": "1", "keepalives_count": "2",
        "tcp_user_timeout": "2000",
    }
    params.update(extra)
    return " ".join(f"{k}={v}" for k, v in params.items())


MULTI_HOST = conninfo([NODE_IP[n] for n in NODES], target_session_attrs="read-write")


class Cluster:
    """Network + etcd + nodes, with the harness's view of who is what."""

    def __init__(self, baton, dynamic, wallclock=True):
        self.net = Network()
        self.etcd = Etcd()
        self.dynamic = dynamic
        self.nodes = {n: Node(n, baton, dynamic, wallclock) for n in NODES}
        self.baton = baton
        self.mounts = []

    @property
    def ttl(self):
        return float(self.dynamic["ttl"])

    @property
    def loop_wait(self):
        return float(self.dynamic["loop_wait"])

    def start(self):
        log("cleaning up leftovers of earlier runs of this harness")
        self.cleanup()
        if os.path.exists(BASE):
            shutil.rmtree(BASE)
        os.makedirs(f"{BASE}/etcd")
        os.chmod(BASE, 0o755)
        self.build_wallclock_shim()
        log(f"network: bridge {BRIDGE} {OBSERVER_IP}/24, namespaces {', '.join(self.net.namespaces)}")
        self.net.create()
        for member in ETCD:
            self.etcd.start(member)
        if not self.etcd.wait_healthy(30):
            raise RuntimeError(f"etcd not healthy after 30 s; logs in {BASE}/etcd")
        for node in self.nodes.values():
            node.write_config()
            node.start()

    def build_wallclock_shim(self):
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wallclock.c")
        for compiler in ("cc", "gcc", "clang", "/opt/swift/usr/bin/clang"):
            if shutil.which(compiler):
                run(compiler, "-shared", "-fPIC", "-O2", "-o", WALLCLOCK_SHIM, source, "-ldl")
                return
        log("no C compiler: scenario 11 (wall-clock jump) cannot run")
        for node in self.nodes.values():
            node.wallclock = False

    def cleanup(self):
        for node in self.nodes.values():
            if node.proc and node.proc.poll() is None:
                node.proc.kill()
        for proc in self.etcd.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        self.net.cleanup()
        for mount in list(self.mounts) + self._our_mounts():
            run("umount", "-l", mount, check=False)
        self.mounts = []

    @staticmethod
    def _our_mounts():
        try:
            with open("/proc/mounts") as f:
                return [line.split()[1] for line in f if line.split()[1].startswith(BASE + "/")]
        except OSError:
            return []

    # --- the cluster as seen from etcd and from each agent's REST API ---
    def keys(self):
        try:
            return self.etcd.get_prefix(f"/service/{SCOPE}/")
        except Exception:
            return None

    def leader(self):
        keys = self.keys()
        return None if keys is None else keys.get(f"/service/{SCOPE}/leader") or None

    def sync_standby(self):
        keys = self.keys() or {}
        try:
            doc = json.loads(keys.get(f"/service/{SCOPE}/sync", "{}"))
        except ValueError:
            return None
        value = doc.get("sync_standby")
        return value.split(",")[0] if value else None

    def statuses(self):
        return {n: node.status() for n, node in self.nodes.items()}

    def healthy(self, sync=None):
        """One running primary holding the leader key and two streaming replicas (and a synchronous
        standby when synchronous mode is on)."""
        leader = self.leader()
        if leader not in self.nodes:
            return False
        statuses = self.statuses()
        for name, s in statuses.items():
            if s is None or s.get("state") != "running":
                return False
            if name == leader:
                if s.get("role") != "primary":
                    return False
            elif s.get("role") != "replica" or s.get("replication_state") != "streaming":
                return False
        if sync is True and not any(s.get("sync_standby") for s in statuses.values()):
            return False
        return True

    def wait_healthy(self, limit=90, sync=None):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.healthy(sync):
                return True
            time.sleep(0.2)
        return False

    def repair(self, sync=None, limit=120):
        """Back to a healthy cluster after a scenario: heal every cut, resume every process, start
        every dead etcd member and agent, clear clock offsets, free the loop filesystem."""
        self.net.heal()
        self.etcd.ensure_running()
        for node in self.nodes.values():
            node.set_clock_offset("0")
            if node.running():
                node.signal_agent(signal.SIGCONT)
            else:
                # A node whose agent is gone is restarted whole: stop a leftover postgres first.
                node.crash()
                log(f"restarting {node.name}")
                node.start()
        if self.wait_healthy(limit / 2, sync):
            return True
        # Last resort, as an operator would: re-clone a replica that runs but does not stream
        # (the check that brought us here has already failed and names the fault).
        leader = self.leader()
        for name, status in self.statuses().items():
            if name != leader and status and status.get("role") == "replica" and \
                    status.get("replication_state") != "streaming":
                log(f"re-cloning {name}, which runs but does not stream")
                done = subprocess.run([self.baton, "reinit", "-c", self.nodes[name].config, name, "--force"],
                                      capture_output=True, text=True, timeout=60)
                if done.returncode != 0:
                    log(f"    baton reinit {name} failed (exit {done.returncode}): "
                        f"{(done.stdout + done.stderr).strip()[-600:]}")
        if self.wait_healthy(limit / 2, sync):
            return True
        self.log_state()
        return False

    def log_state(self):
        """What a post-mortem needs, in the log: the keys of the scope and each agent's /patroni."""
        keys = self.keys()
        log(f"    etcd keys: {json.dumps(keys, sort_keys=True) if keys is not None else 'unreadable'}")
        for name, status in self.statuses().items():
            brief = None if status is None else {k: status.get(k) for k in (
                "state", "role", "timeline", "replication_state", "xlog", "sync_standby", "pending_restart",
                "cluster_unlocked", "pause")}
            log(f"    {name}: {json.dumps(brief, sort_keys=True)}")

    def set_synchronous(self, on):
        value = "true" if on else "false"
        run(self.baton, "edit-config", "-c", self.nodes["node1"].config, "-s", f"synchronous_mode={value}",
            "--force", env=dict(os.environ, BATON_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
                                BATON_REPLICATION_PASSWORD=REPLICATION_PASSWORD))
        self.dynamic["synchronous_mode"] = on

    def switchover(self, candidate, wait=True):
        args = [self.baton, "switchover", "-c", self.nodes["node1"].config, "--candidate", candidate, "--force"]
        if not wait:
            args.append("--no-wait")
        return subprocess.run(args, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, BATON_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
                                       BATON_REPLICATION_PASSWORD=REPLICATION_PASSWORD))
