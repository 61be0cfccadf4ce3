#!/usr/bin/python3
"""Static validation of Baton's deployment files and generated reference pages.

    validate_deploy.py --baton .build/debug/baton [--root DIR]
    validate_deploy.py --baton .build/debug/baton --self-test

Checks, without a Docker engine or a Kubernetes cluster:
  compose/compose.yaml   parses; every service's build context and Dockerfile, depends_on (and the
                         health checks service_healthy needs), named volumes, bind-mount sources,
                         networks and host ports exist and are consistent
  compose/Dockerfile     COPY sources exist in the build context; every `--product` is an
                         executable of Package.swift; entry point files are copied in
  agent configurations   compose/agents/*.yml and the Kubernetes ConfigMap's agent.yml pass the real
                         loader (`baton check-config`); their addresses name real services and ports
  HAProxy                `haproxy -c -f` passes with no warning other than unresolved names, and
                         those names are the cluster's members; backends use the agents' ports and
                         documented health-check paths
  Prometheus, Grafana    targets are services; rule files and dashboards are mounted where the
                         configuration says; every baton_* metric queried is one the agent exports
  systemd                `systemd-analyze verify` prints nothing (its warnings fail the check)
  Kubernetes             every document parses; selectors match pod labels; Services' target ports,
                         probes' ports, volume mounts, ConfigMap/Secret names and keys resolve;
                         kustomization resources exist
  docs                   docs/rest-api.md and docs/cli.md are what gen_docs.py generates; every
                         decision reason code is explained in docs/runbooks.md (that every
                         agent.yml key is in docs/configuration.md is a Swift test, BatonAgentTests)

--self-test copies the files to a temporary directory, checks that the copy passes, then breaks it
in many ways, one at a time, and checks that each break is reported.
Exit status: 0 clean, 1 problems found (each printed as FILE: message), 2 usage error.
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_docs  # noqa: E402

COMPOSE_TOP = {"name", "services", "networks", "volumes", "secrets", "configs"}
COMPOSE_SERVICE_KEYS = {
    "image", "build", "hostname", "command", "entrypoint", "environment", "env_file", "volumes",
    "networks", "ports", "expose", "depends_on", "healthcheck", "restart", "stop_grace_period",
    "stop_signal", "user", "working_dir", "labels", "cap_add", "devices", "ulimits", "shm_size",
}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
K8S_KINDS = {
    "Service": "v1", "ConfigMap": "v1", "Secret": "v1", "StatefulSet": "apps/v1",
    "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1", "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
METRIC = re.compile(r"\b(baton_[a-z0-9_]+)\b")


class Validator:
    def __init__(self, root, baton):
        self.root = os.path.abspath(root)
        self.baton = baton
        self.problems = []
        self._openapi_paths = None
        self._metrics = None

    # ---- helpers ------------------------------------------------------------------------------------
    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def load_yaml(self, path, multi=False):
        try:
            with open(path, encoding="utf-8") as handle:
                loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
                return list(yaml.load_all(handle, Loader=loader)) if multi else yaml.load(handle, Loader=loader)
        except (OSError, yaml.YAMLError) as error:
            self.problem(self.rel(path), f"does not parse: {error}")
            return None

    def openapi_paths(self):
        if self._openapi_paths is None:
            spec = self.load_yaml(os.path.join(self.root, "docs/openapi.yaml")) or {}
            self._openapi_paths = set((spec.get("paths") or {}).keys())
        return self._openapi_paths

    def baton_subcommands(self):
        return set(gen_docs.subcommands(gen_docs.help_text(self.baton, [])))

    def exported_metrics(self):
        """baton_* names that appear as string literals in the agent's sources (what GET /metrics
        can produce), plus the suffixes Prometheus adds to histograms and summaries."""
        if self._metrics is None:
            names = set()
            for base, _, files in os.walk(os.path.join(self.root, "Sources")):
                for name in files:
                    if name.endswith(".swift"):
                        text = open(os.path.join(base, name), encoding="utf-8").read()
                        names.update(re.findall(r'"(baton_[a-z0-9_]+)"', text))
            self._metrics = names
        return self._metrics

    def check_metric_names(self, where, text):
        known = self.exported_metrics()
        for name in sorted(set(METRIC.findall(text))):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                self.problem(where, f"queries metric {name}, which the agent does not export "
                                    "(not in Sources/**/*.swift; see GET /metrics)")

    def check_config(self, where, path, environment):
        """Runs the real loader on an agent configuration; returns the parsed YAML or None."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(environment)
        try:
            result = subprocess.run([self.baton, "check-config", "-c", path], capture_output=True, text=True,
                                    env=env, timeout=60)
        except OSError as error:
            self.problem(where, f"cannot run {self.baton} check-config: {error}")
            return None
        if result.returncode != 0:
            self.problem(where, "rejected by the agent's loader: " + (result.stderr or result.stdout).strip())
            return None
        return self.load_yaml(path)

    def haproxy_check(self, where, cfg_path, members):
        """haproxy -c; unresolved server names must be cluster members. Returns (binds, servers)."""
        try:
            result = subprocess.run(["haproxy", "-c", "-f", cfg_path], capture_output=True, text=True, timeout=60)
        except OSError as error:
            self.problem(where, f"cannot run haproxy -c (apt-get install haproxy): {error}")
            return set(), []
        output = result.stdout + result.stderr
        if result.returncode != 0:
            self.problem(where, "haproxy -c fails: " + " | ".join(
                line.strip() for line in output.splitlines() if "ALERT" in line or "error" in line.lower()))
        for line in output.splitlines():
            if "[WARNING]" not in line and "[ALERT]" not in line:
                continue
            unresolved = re.search(r"could not resolve address '([^']+)'", line)
            if unresolved:
                if unresolved.group(1) not in members:
                    self.problem(where, f"server address '{unresolved.group(1)}' is not a cluster member "
                                        f"({', '.join(sorted(members))})")
                continue
            if "Warnings were found" in line:
                continue
            self.problem(where, "haproxy -c: " + line.split(":", 2)[-1].strip())
        binds, servers, checks = set(), [], []
        for line in open(cfg_path, encoding="utf-8"):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "bind":
                match = re.search(r":(\d+)$", words[1])
                if match:
                    binds.add(int(match.group(1)))
            elif words[0] == "server" and len(words) >= 3:
                host, _, port = words[2].rpartition(":")
                check_port = int(words[words.index("port") + 1]) if "port" in words[3:] else None
                servers.append((words[1], host, int(port), check_port))
            elif words[:3] == ["http-check", "send", "meth"] and "uri" in words:
                checks.append(words[words.index("uri") + 1])
        for uri in checks:
            path = uri.split("?")[0]
            if path not in self.openapi_paths():
                self.problem(where, f"health check {uri}: {path} is not an endpoint of docs/openapi.yaml")
        return binds, servers

    # ---- compose ------------------------------------------------------------------------------------
    def validate_compose(self):
        directory = os.path.join(self.root, "compose")
        path = os.path.join(directory, "compose.yaml")
        where = self.rel(path)
        doc = self.load_yaml(path)
        if not isinstance(doc, dict):
            if doc is not None:
                self.problem(where, "is not a mapping")
            return
        for key in doc:
            if key not in COMPOSE_TOP and not key.startswith("x-"):
                self.problem(where, f"unknown top-level key '{key}'")
        services = doc.get("services") or {}
        if not services:
            self.problem(where, "has no services")
            return
        networks = set((doc.get("networks") or {}).keys())
        volumes = set((doc.get("volumes") or {}).keys())
        used_volumes, host_ports, built_images, dockerfiles = set(), {}, {}, {}

        def resolve(value):
            # ${VAR:-default} / ${VAR-default} → the environment's value or the default.
            def sub(match):
                name, default = match.group(1), match.group(3) or ""
                return os.environ.get(name) or default
            return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", sub, str(value))

        for name, service in services.items():
            sw = f"{where}: service {name}"
            if not isinstance(service, dict):
                self.problem(sw, "is not a mapping")
                continue
            for key in service:
                if key not in COMPOSE_SERVICE_KEYS:
                    self.problem(sw, f"unknown key '{key}'")
            if "image" not in service and "build" not in service:
                self.problem(sw, "has neither image nor build")
            build = service.get("build")
            if build is not None:
                build = {"context": build} if isinstance(build, str) else build
                context = os.path.normpath(os.path.join(directory, build.get("context", ".")))
                dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
                if not os.path.isdir(context):
                    self.problem(sw, f"build context {build.get('context')} is not a directory")
                elif not os.path.isfile(dockerfile):
                    self.problem(sw, f"Dockerfile {build.get('dockerfile', 'Dockerfile')} does not exist in "
                                     f"the build context {self.rel(context)}")
                else:
                    dockerfiles[dockerfile] = context
                if service.get("image"):
                    built_images[service["image"]] = dockerfile
            for network in service.get("networks") or []:
                if network not in networks:
                    self.problem(sw, f"network '{network}' is not declared under networks:")
            for volume in service.get("volumes") or []:
                source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
                if source.startswith((".", "/")):
                    if not os.path.exists(os.path.normpath(os.path.join(directory, source))):
                        self.problem(sw, f"bind-mount source {source} does not exist")
                else:
                    used_volumes.add(source)
                    if source not in volumes:
                        self.problem(sw, f"named volume '{source}' is not declared under volumes:")
            for port in service.get("ports") or []:
                match = re.match(r"^(?:[\d.]+:)?(\d+):(\d+)(/(tcp|udp))?$", str(port))
                if not match:
                    self.problem(sw, f"port '{port}' is not HOST:CONTAINER")
                    continue
                host = int(match.group(1))
                if host in host_ports:
                    self.problem(sw, f"host port {host} is also published by {host_ports[host]}")
                host_ports[host] = name
            healthcheck = service.get("healthcheck")
            if healthcheck:
                test = healthcheck.get("test")
                if not (isinstance(test, str) or (isinstance(test, list) and test
                                                  and test[0] in ("CMD", "CMD-SHELL", "NONE"))):
                    self.problem(sw, "healthcheck.test must be a string or a list starting with CMD/CMD-SHELL")
                for key in ("interval", "timeout", "start_period"):
                    if key in healthcheck and not DURATION.match(str(healthcheck[key])):
                        self.problem(sw, f"healthcheck.{key} '{healthcheck[key]}' is not a duration (5s, 1m30s)")
            environment = service.get("environment") or {}
            if isinstance(environment, list):
                self.problem(sw, "environment must be a mapping (KEY: value)")

        for volume in volumes - used_volumes:
            self.problem(where, f"volume '{volume}' is declared but no service uses it")

        # Dockerfiles: their health checks count for service_healthy.
        image_health = {}
        for dockerfile, context in dockerfiles.items():
            image_health[dockerfile] = self.validate_dockerfile(dockerfile, context)

        def has_healthcheck(target):
            service = services[target]
            if service.get("healthcheck"):
                return not service["healthcheck"].get("disable", False)
            dockerfile = built_images.get(service.get("image"))
            return bool(dockerfile and image_health.get(dockerfile))

        for name, service in services.items():
            sw = f"{where}: service {name}"
            image = service.get("image", "")
            if "build" not in service and image and "/" not in image.split(":")[0] \
                    and image.split(":")[0] in {i.split(":")[0] for i in built_images} and image not in built_images:
                self.problem(sw, f"image {image} is not the tag any service builds ({', '.join(built_images)})")
            depends = service.get("depends_on") or {}
            if isinstance(depends, list):
                depends = {target: {"condition": "service_started"} for target in depends}
            for target, spec in depends.items():
                if target not in services:
                    self.problem(sw, f"depends on undefined service '{target}'")
                    continue
                condition = (spec or {}).get("condition", "service_started")
                if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                    self.problem(sw, f"depends_on {target}: unknown condition '{condition}'")
                if condition == "service_healthy" and not has_healthcheck(target):
                    self.problem(sw, f"waits for {target} to be healthy, but {target} has no healthcheck")

        # Agent configurations (bind-mounted at the path the image reads) and what they name.
        agents = {}
        etcd_services = {n for n, s in services.items() if "etcd" in " ".join(map(str, s.get("command") or []))}
        for name, service in services.items():
            env = {k: resolve(v) for k, v in (service.get("environment") or {}).items()}
            config_target = env.get("BATON_CONFIG", "/etc/baton/agent.yml")
            for volume in service.get("volumes") or []:
                parts = volume.split(":")
                if len(parts) >= 2 and parts[1] == config_target and parts[0].startswith("."):
                    source = os.path.normpath(os.path.join(directory, parts[0]))
                    cw = f"{self.rel(source)} (service {name})"
                    config = self.check_config(cw, source, env)
                    if config:
                        agents[name] = config
                        self.check_agent_addresses(cw, config, name, {s: 2379 for s in etcd_services})
        def runs(service):
            command = [str(word) for word in service.get("command") or []]
            if command[:1] == ["baton-client-example"] or command[:1] == ["pgbouncer"]:
                return command[0]
            return "baton pooler" if command[:2] == ["baton", "pooler"] else None

        for name, service in services.items():
            if service.get("image") in built_images and name not in agents and runs(service) is None:
                self.problem(f"{where}: service {name}", "runs the Baton image but mounts no agent configuration "
                                                          "at /etc/baton/agent.yml (nor runs pgbouncer, baton pooler "
                                                          "or baton-client-example)")

        # The example client app: its topology source must be the cluster above.
        scopes = {(config.get("scope"), config.get("namespace", "/service")) for config in agents.values()}
        for name, service in services.items():
            command = [str(word) for word in service.get("command") or []]
            if not command or command[0] != "baton-client-example":
                continue
            sw = f"{where}: service {name} (baton-client-example)"
            settings = dict(word.split("=", 1) for word in command[1:] if "=" in word)
            for word in command[1:]:
                if "=" not in word:
                    self.problem(sw, f"argument '{word}' is not key=value")
            for entry in filter(None, settings.get("etcd_hosts", "").split(",")):
                host, _, port = entry.split("://")[-1].rpartition(":")
                if host not in etcd_services or port != "2379":
                    self.problem(sw, f"etcd_hosts entry {entry} is not an etcd service's client port")
            if "etcd_hosts" in settings and (settings.get("scope"), settings.get("namespace", "/service")) not in scopes:
                self.problem(sw, f"scope {settings.get('scope')} is not the agents' scope "
                                 f"({', '.join(sorted(str(s) for s, _ in scopes))})")

        # baton pooler and the PgBouncer it drives.
        pooler_ports = {}
        for name, service in services.items():
            if runs(service) == "baton pooler":
                port = self.check_compose_pooler(f"{where}: service {name} (baton pooler)", service, services,
                                                 directory, etcd_services, scopes, runs)
                if port:
                    pooler_ports[name] = port

        # HAProxy, Prometheus, Grafana.
        for name, service in services.items():
            mounts = self.mounts(service)
            sw = f"service {name}"
            for target, source in mounts.items():
                src = os.path.normpath(os.path.join(directory, source))
                if target.endswith("haproxy.cfg") and os.path.isfile(src):
                    self.check_compose_haproxy(f"{self.rel(src)} ({sw})", src, service, agents)
                if target.endswith("prometheus.yml") and os.path.isfile(src):
                    self.check_prometheus(f"{self.rel(src)} ({sw})", src, mounts, directory, services, agents,
                                          pooler_ports)
                if target == "/etc/grafana/provisioning" and os.path.isdir(src):
                    self.check_grafana(sw, src, mounts, directory, services)

    @staticmethod
    def mounts(service):
        """A compose service's volumes as {target: source}, short (`src:dst[:ro]`) or long syntax."""
        mounts = {}
        for volume in service.get("volumes") or []:
            parts = volume.split(":") if isinstance(volume, str) else [volume.get("source", ""),
                                                                       volume.get("target", "")]
            if len(parts) >= 2:
                mounts[parts[1]] = parts[0]
        return mounts

    def check_compose_pooler(self, where, service, services, directory, etcd_services, scopes, runs):
        """`baton pooler`'s arguments against the compose file: etcd and scope as the agents', the
        admin console a pgbouncer service's listen port and admin user, the include file the one
        that PgBouncer's configuration includes, on a volume both services mount; the status
        endpoint's port as its health check uses it. Returns the status port."""
        flags, words = {}, [str(word) for word in service.get("command")][2:]
        index = 0
        while index < len(words):
            word = words[index]
            if not word.startswith("--"):
                self.problem(where, f"argument '{word}' is not an option")
                index += 1
                continue
            key, has_value, value = word[2:].partition("=")
            if not has_value and index + 1 < len(words) and not words[index + 1].startswith("--"):
                value, index = words[index + 1], index + 1
            flags.setdefault(key, []).append(value)
            index += 1
        one = {key: values[-1] for key, values in flags.items()}
        for entry in filter(None, one.get("dcs-url", "").split("://")[-1].split(",")):
            host, _, port = entry.rpartition(":")
            if host not in etcd_services or port != "2379":
                self.problem(where, f"--dcs-url entry {entry} is not an etcd service's client port")
        if (one.get("scope"), "/service") not in scopes:
            self.problem(where, f"--scope {one.get('scope')} is not the agents' scope")
        for database in flags.get("database", []):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}=(primary|replica)(:[A-Za-z_][A-Za-z0-9_]{0,62})?$", database):
                self.problem(where, f"--database {database}: expected NAME=primary|replica[:DBNAME]")
        admin_host = one.get("admin-host", "127.0.0.1")
        bouncer = services.get(admin_host)
        if bouncer is None or runs(bouncer) != "pgbouncer":
            self.problem(where, f"--admin-host {admin_host} is not a service that runs pgbouncer")
        else:
            mounts = self.mounts(bouncer)
            ini_source = mounts.get("/etc/baton/pgbouncer.ini")
            settings, includes = {}, []
            if ini_source is None:
                self.problem(where, f"service {admin_host} mounts no /etc/baton/pgbouncer.ini")
            else:
                ini_path = os.path.normpath(os.path.join(directory, ini_source))
                try:
                    for line in open(ini_path, encoding="utf-8"):
                        line = line.strip()
                        if line.startswith("%include "):
                            includes.append(line.split(None, 1)[1])
                        elif "=" in line and not line.startswith((";", "#", "[")):
                            key, _, value = line.partition("=")
                            settings[key.strip()] = value.strip()
                except OSError:
                    self.problem(where, f"{ini_source} cannot be read")
            iw = f"{where} against {ini_source}"
            if one.get("admin-port", "6432") != settings.get("listen_port", "6432"):
                self.problem(iw, f"--admin-port {one.get('admin-port', '6432')} is not PgBouncer's listen_port "
                                 f"{settings.get('listen_port', '6432')}")
            admins = [a.strip() for a in settings.get("admin_users", "").split(",")]
            if one.get("admin-user", "pgbouncer") not in admins:
                self.problem(iw, f"--admin-user {one.get('admin-user', 'pgbouncer')} is not in admin_users")
            include = one.get("include-file", "")
            if include not in includes:
                self.problem(iw, f"--include-file {include} is not what PgBouncer includes ({', '.join(includes)})")
            shared = self.mounts(service)
            auth_folder = os.path.dirname(settings.get("auth_file", ""))
            if auth_folder and auth_folder in shared:
                self.problem(iw, f"auth_file {settings.get('auth_file')} (passwords) is on a volume this service "
                                 "mounts too: keep it in PgBouncer's own container")
            folder = os.path.dirname(include)
            if folder not in shared or mounts.get(folder) != shared[folder]:
                self.problem(where, f"the include file's directory {folder} is not one volume mounted by both "
                                    f"this service and {admin_host}")
        listen = one.get("listen", "127.0.0.1:8010")
        port = int(listen.rpartition(":")[2]) if listen != "none" and listen.rpartition(":")[2].isdigit() else None
        test = " ".join(str(word) for word in (service.get("healthcheck") or {}).get("test") or [])
        if port and f":{port}/health" not in test:
            self.problem(where, f"the health check ({test}) does not ask the status endpoint on port {port}")
        return port

    def check_agent_addresses(self, where, config, service, etcd_ports):
        for section in ("restapi", "postgresql"):
            connect = (config.get(section) or {}).get("connect_address", "")
            host = connect.rpartition(":")[0]
            if host and host != service:
                self.problem(where, f"{section}.connect_address {connect} does not name this service ({service})")
        hosts = (config.get("etcd3") or config.get("etcd") or {}).get("hosts") or []
        for entry in hosts:
            host, _, port = entry.split("://")[-1].rpartition(":")
            if host not in etcd_ports:
                self.problem(where, f"etcd host {entry} is not an etcd service ({', '.join(sorted(etcd_ports))})")
            elif int(port or 0) != etcd_ports[host]:
                self.problem(where, f"etcd host {entry}: {host} listens for clients on {etcd_ports[host]}")

    @staticmethod
    def listen_port(config, section, default):
        listen = (config.get(section) or {}).get("listen", default)
        return int(str(listen).rpartition(":")[2])

    def check_compose_haproxy(self, where, path, service, agents):
        binds, servers = self.haproxy_check(where, path, set(agents))
        for port in service.get("ports") or []:
            container = int(str(port).split("/")[0].split(":")[-1])
            if container not in binds:
                self.problem(where, f"compose publishes container port {container}, but HAProxy binds no such port")
        for server, host, port, check_port in servers:
            config = agents.get(host)
            if config is None:
                continue
            if port != self.listen_port(config, "postgresql", "127.0.0.1:5432"):
                self.problem(where, f"server {server}: {host}:{port} is not {host}'s PostgreSQL port")
            if check_port != self.listen_port(config, "restapi", "127.0.0.1:8008"):
                self.problem(where, f"server {server}: health checks on port {check_port}, "
                                    f"but {host}'s REST API listens on {self.listen_port(config, 'restapi', ':8008')}")

    def check_prometheus(self, where, path, mounts, directory, services, agents, pooler_ports):
        doc = self.load_yaml(path) or {}
        for rule_file in doc.get("rule_files") or []:
            if rule_file not in mounts:
                self.problem(where, f"rule file {rule_file} is not mounted into the container")
                continue
            rules_path = os.path.normpath(os.path.join(directory, mounts[rule_file]))
            rules = self.load_yaml(rules_path) or {}
            for group in rules.get("groups") or []:
                for rule in group.get("rules") or []:
                    if "expr" not in rule or not ("alert" in rule or "record" in rule):
                        self.problem(self.rel(rules_path), f"rule {rule} needs expr and alert (or record)")
                    self.check_metric_names(f"{self.rel(rules_path)} rule {rule.get('alert', rule.get('record'))}",
                                            str(rule.get("expr", "")))
        for job in doc.get("scrape_configs") or []:
            for static in job.get("static_configs") or []:
                for target in static.get("targets") or []:
                    host, _, port = target.rpartition(":")
                    if host not in services:
                        self.problem(where, f"job {job.get('job_name')}: target {target} is not a compose service")
                    elif host in agents and int(port) != self.listen_port(agents[host], "restapi", ":8008"):
                        self.problem(where, f"job {job.get('job_name')}: {target} is not {host}'s REST API port")
                    elif host in pooler_ports and int(port) != pooler_ports[host]:
                        self.problem(where, f"job {job.get('job_name')}: {target} is not where {host}'s status "
                                            f"endpoint listens (--listen port {pooler_ports[host]})")

    def check_grafana(self, where, provisioning, mounts, directory, services):
        datasource_uids = set()
        for base, _, files in os.walk(os.path.join(provisioning, "datasources")):
            for name in files:
                doc = self.load_yaml(os.path.join(base, name)) or {}
                for source in doc.get("datasources") or []:
                    datasource_uids.add(source.get("uid"))
                    host = re.sub(r"^\w+://", "", source.get("url", "")).split(":")[0].split("/")[0]
                    if host not in services:
                        self.problem(self.rel(os.path.join(base, name)),
                                     f"datasource url {source.get('url')} does not name a compose service")
        for base, _, files in os.walk(os.path.join(provisioning, "dashboards")):
            for name in files:
                doc = self.load_yaml(os.path.join(base, name)) or {}
                for provider in doc.get("providers") or []:
                    target = (provider.get("options") or {}).get("path", "")
                    if target not in mounts:
                        self.problem(self.rel(os.path.join(base, name)),
                                     f"dashboard path {target} is not mounted into the grafana container")
                        continue
                    dashboards = os.path.normpath(os.path.join(directory, mounts[target]))
                    found = [f for f in sorted(os.listdir(dashboards)) if f.endswith(".json")] \
                        if os.path.isdir(dashboards) else []
                    if not found:
                        self.problem(self.rel(dashboards), "holds no dashboard JSON")
                    for dashboard in found:
                        self.check_dashboard(os.path.join(dashboards, dashboard), datasource_uids)

    def check_dashboard(self, path, datasource_uids):
        where = self.rel(path)
        try:
            dashboard = json.load(open(path, encoding="utf-8"))
        except (OSError, ValueError) as error:
            self.problem(where, f"is not JSON: {error}")
            return
        panels = dashboard.get("panels") or []
        if not panels:
            self.problem(where, "has no panels")
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)):
            self.problem(where, "panel ids are not unique")
        for panel in panels:
            uid = (panel.get("datasource") or {}).get("uid")
            if uid not in datasource_uids:
                self.problem(where, f"panel '{panel.get('title')}' uses datasource {uid}, which is not provisioned")
            for target in panel.get("targets") or []:
                self.check_metric_names(f"{where} panel '{panel.get('title')}'", target.get("expr", ""))
        for variable in (dashboard.get("templating") or {}).get("list") or []:
            query = variable.get("query")
            self.check_metric_names(f"{where} variable {variable.get('name')}",
                                    query.get("query", "") if isinstance(query, dict) else str(query or ""))

    # ---- Dockerfile ---------------------------------------------------------------------------------
    def validate_dockerfile(self, path, context):
        """Returns whether the final stage declares a HEALTHCHECK."""
        where = self.rel(path)
        text = open(path, encoding="utf-8").read()
        lines, current = [], ""
        for raw in text.splitlines():
            stripped = raw.strip()
            if stripped.startswith("#") and not current:
                continue
            if stripped.startswith("#"):
                continue
            current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
            if not raw.rstrip().endswith("\\"):
                if current.strip():
                    lines.append(current.strip())
                current = ""
        if not lines or not lines[0].upper().startswith(("FROM", "ARG")):
            self.problem(where, "does not start with FROM")
        package = open(os.path.join(self.root, "Package.swift"), encoding="utf-8").read()
        executables = set(re.findall(r'\.executable(?:Target)?\(\s*name:\s*"([^"]+)"', package))
        healthcheck, copied = False, set()

        def check_guard_beside_baton():
            # The agent starts its fence guard from the directory it runs from.
            for destination in copied:
                if os.path.basename(destination) == "baton":
                    beside = os.path.join(os.path.dirname(destination), "baton-fence-guard")
                    if beside not in copied:
                        self.problem(where, f"copies {destination} but not {beside}: the agent starts its "
                                            "fence guard from beside itself and refuses to run without it")

        for line in lines:
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                check_guard_beside_baton()
                healthcheck, copied = False, set()
            elif instruction in ("COPY", "ADD"):
                words = rest.split()
                if any(w.startswith("--from") for w in words):
                    copied.update(self._copy_destinations(words))
                    continue
                words = [w for w in words if not w.startswith("--")]
                for source in words[:-1]:
                    if not os.path.exists(os.path.join(context, source)):
                        self.problem(where, f"{instruction} {source}: not in the build context {self.rel(context)}")
                copied.update(self._copy_destinations(words))
            elif instruction == "RUN":
                for product in re.findall(r"--product\s+(\S+)", rest):
                    if product not in executables:
                        self.problem(where, f"builds --product {product}, which Package.swift does not declare "
                                            f"(executables: {', '.join(sorted(executables))})")
            elif instruction == "HEALTHCHECK":
                healthcheck = "NONE" not in rest.split()[:1]
            elif instruction in ("ENTRYPOINT", "CMD"):
                try:
                    argv = json.loads(rest)
                except ValueError:
                    argv = rest.split()
                for arg in argv:
                    if arg.startswith("/usr/local/") and arg not in copied \
                            and os.path.dirname(arg) + "/" not in copied:
                        self.problem(where, f"{instruction} runs {arg}, which no COPY puts into the image")
        check_guard_beside_baton()
        return healthcheck

    @staticmethod
    def _copy_destinations(words):
        words = [w for w in words if not w.startswith("--")]
        if len(words) < 2:
            return set()
        destination = words[-1]
        if destination.endswith("/"):
            return {destination} | {destination + os.path.basename(s) for s in words[:-1]}
        return {destination}

    # ---- systemd ------------------------------------------------------------------------------------
    def validate_systemd(self):
        directory = os.path.join(self.root, "deploy/systemd")
        units = sorted(f for f in os.listdir(directory) if f.endswith(".service")) if os.path.isdir(directory) else []
        if not units:
            self.problem("deploy/systemd", "holds no .service unit")
        for unit in units:
            path = os.path.join(directory, unit)
            where = self.rel(path)
            text = open(path, encoding="utf-8").read()
            for section in ("[Unit]", "[Service]", "[Install]"):
                if section not in text:
                    self.problem(where, f"has no {section} section")
            if re.search(r"^ExecStart=\S*/baton agent", text, re.M) and "baton-fence-guard" not in text:
                self.problem(where, "runs `baton agent` but its install steps do not install baton-fence-guard "
                                    "beside baton (the agent refuses to run without its fence guard)")
            # The commands the unit runs must be real baton subcommands.
            subcommands = self.baton_subcommands()
            for match in re.finditer(r"^Exec\w+=\S*/baton (\S+)", text, re.M):
                if match.group(1) not in subcommands:
                    self.problem(where, f"runs `baton {match.group(1)}`, which is not a baton subcommand "
                                        f"({', '.join(sorted(subcommands))})")
            pooler = re.search(r"^ExecStart=\S*/baton pooler .*--include-file[= ](\S+)", text, re.M)
            if pooler:
                folder = os.path.dirname(pooler.group(1))
                writable = " ".join(re.findall(r"^ReadWritePaths=(.*)$", text, re.M)).split()
                if re.search(r"^ProtectSystem=(strict|full|yes)", text, re.M) and folder not in writable:
                    self.problem(where, f"the pooler writes its include file in {folder}, which ReadWritePaths= "
                                        "does not open (ProtectSystem= makes it read-only)")
            for match in re.finditer(r"\$\{(\w+)\}", text):
                if not re.search(rf"^Environment=.*\b{match.group(1)}=", text, re.M):
                    self.problem(where, f"uses ${{{match.group(1)}}} but no Environment= line sets it")
            if shutil.which("systemd-analyze") is None:
                continue
            # Verified with the binary path pointing at the built baton (the unit names /usr/local/bin).
            with tempfile.TemporaryDirectory() as scratch:
                copy_path = os.path.join(scratch, unit)
                with open(copy_path, "w", encoding="utf-8") as handle:
                    handle.write(text.replace("/usr/local/bin/baton", os.path.abspath(self.baton)))
                result = subprocess.run(["systemd-analyze", "verify", copy_path], capture_output=True, text=True,
                                        timeout=60)
                output = (result.stdout + result.stderr).replace(copy_path, where).strip()
                if result.returncode != 0 or output:
                    self.problem(where, "systemd-analyze verify: " + " | ".join(output.splitlines()))

    # ---- Kubernetes ---------------------------------------------------------------------------------
    def validate_kubernetes(self):
        directory = os.path.join(self.root, "deploy/kubernetes")
        files = sorted(f for f in os.listdir(directory) if f.endswith((".yaml", ".yml"))) \
            if os.path.isdir(directory) else []
        if not files:
            self.problem("deploy/kubernetes", "holds no manifests")
            return
        docs = []
        for name in files:
            loaded = self.load_yaml(os.path.join(directory, name), multi=True) or []
            for doc in loaded:
                if doc is None:
                    continue
                where = f"deploy/kubernetes/{name}"
                kind, api = doc.get("kind"), doc.get("apiVersion")
                if kind not in K8S_KINDS:
                    self.problem(where, f"unexpected kind {kind}")
                    continue
                if api != K8S_KINDS[kind]:
                    self.problem(where, f"{kind} needs apiVersion {K8S_KINDS[kind]}, not {api}")
                if kind != "Kustomization" and not (doc.get("metadata") or {}).get("name"):
                    self.problem(where, f"{kind} has no metadata.name")
                docs.append((where, doc))

        def named(kind):
            return {d["metadata"]["name"]: (w, d) for w, d in docs if d.get("kind") == kind and d.get("metadata")}

        namespaces = {(d.get("metadata") or {}).get("namespace") for w, d in docs if d["kind"] != "Kustomization"}
        if len(namespaces) != 1 or None in namespaces:
            self.problem("deploy/kubernetes", f"every object needs the same metadata.namespace (found {namespaces})")
        for where, doc in docs:
            if doc["kind"] == "Kustomization":
                for resource in doc.get("resources") or []:
                    if not os.path.exists(os.path.join(directory, resource)):
                        self.problem(where, f"resource {resource} does not exist")

        configmaps, secrets, services = named("ConfigMap"), named("Secret"), named("Service")
        workloads = {**named("StatefulSet"), **named("Deployment")}
        for name, (where, doc) in workloads.items():
            self.check_workload(where, doc, configmaps, secrets, services)

        def selected(selector):
            return [(n, d) for n, (w, d) in workloads.items()
                    if selector and all(((d["spec"]["template"].get("metadata") or {}).get("labels") or {}).get(k) == v
                                        for k, v in selector.items())]

        for name, (where, doc) in services.items():
            selector = (doc.get("spec") or {}).get("selector") or {}
            pods = selected(selector)
            if not pods:
                self.problem(where, f"Service {name} selects no pods (selector {selector})")
            for port in (doc.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for workload, spec in pods:
                    ports = [p for c in spec["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []]
                    if not any(p.get("name") == target or p.get("containerPort") == target for p in ports):
                        self.problem(where, f"Service {name}: targetPort {target} is no container port of {workload}")
        for name, (where, doc) in named("PodDisruptionBudget").items():
            if not selected(((doc.get("spec") or {}).get("selector") or {}).get("matchLabels")):
                self.problem(where, f"PodDisruptionBudget {name} selects no pods")

        # Agent configuration and HAProxy inside ConfigMaps.
        sts = named("StatefulSet")
        members = {}
        for name, (where, doc) in sts.items():
            service = doc["spec"].get("serviceName")
            for i in range(int(doc["spec"].get("replicas", 1))):
                members[f"{name}-{i}.{service}"] = (name, doc)
        for cm_name, (where, doc) in configmaps.items():
            for key, value in (doc.get("data") or {}).items():
                if key == "haproxy.cfg":
                    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as handle:
                        handle.write(value)
                    try:
                        binds, servers = self.haproxy_check(f"{where} ConfigMap {cm_name}/{key}", handle.name,
                                                            set(members))
                    finally:
                        os.unlink(handle.name)
                    for server, host, port, check_port in servers:
                        if host in members:
                            ports = {p.get("name"): p.get("containerPort") for c in
                                     members[host][1]["spec"]["template"]["spec"]["containers"]
                                     for p in c.get("ports") or []}
                            if port not in ports.values() or check_port not in ports.values():
                                self.problem(where, f"haproxy server {server}: ports {port}/{check_port} are not "
                                                    f"container ports of {members[host][0]} ({ports})")
                    self.check_haproxy_deployment(where, cm_name, binds, workloads)
                if key.endswith(".yml") and "etcd3" in value:
                    self.check_k8s_agent(where, cm_name, key, value, sts, members)

    def check_haproxy_deployment(self, where, cm_name, binds, workloads):
        for name, (w, doc) in workloads.items():
            pod = doc["spec"]["template"]["spec"]
            if any((v.get("configMap") or {}).get("name") == cm_name for v in pod.get("volumes") or []):
                for container in pod["containers"]:
                    for port in container.get("ports") or []:
                        if port["containerPort"] not in binds:
                            self.problem(w, f"{name}: container port {port['containerPort']} ({port.get('name')}) "
                                            "is bound by no HAProxy section")

    def check_workload(self, where, doc, configmaps, secrets, services):
        name = doc["metadata"]["name"]
        spec = doc.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        if not match or any(labels.get(k) != v for k, v in match.items()):
            self.problem(where, f"{name}: selector {match} does not match the pod template's labels {labels}")
        if doc["kind"] == "StatefulSet":
            service = services.get(spec.get("serviceName"))
            if not service:
                self.problem(where, f"{name}: serviceName {spec.get('serviceName')} is not a Service")
            elif (service[1].get("spec") or {}).get("clusterIP") != "None":
                self.problem(where, f"{name}: Service {spec.get('serviceName')} must be headless (clusterIP: None)")
        pod = template.get("spec") or {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        for vname, volume in volumes.items():
            if "configMap" in volume:
                cm = configmaps.get(volume["configMap"].get("name"))
                if not cm:
                    self.problem(where, f"{name}: volume {vname} uses ConfigMap {volume['configMap'].get('name')}, "
                                        "which no manifest defines")
                for item in volume["configMap"].get("items") or []:
                    if cm and item["key"] not in (cm[1].get("data") or {}):
                        self.problem(where, f"{name}: volume {vname}: ConfigMap has no key {item['key']}")
            if "secret" in volume and volume["secret"].get("secretName") not in secrets:
                self.problem(where, f"{name}: volume {vname} uses a Secret no manifest defines")
        for container in pod.get("containers") or []:
            cname = f"{name}/{container.get('name')}"
            ports = container.get("ports") or []
            port_names = {p.get("name") for p in ports}
            port_numbers = {p.get("containerPort") for p in ports}
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volumes and mount["name"] not in claims:
                    self.problem(where, f"{cname}: volumeMount {mount['name']} has no volume or volumeClaimTemplate")
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if not probe:
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket")
                if action:
                    port = action.get("port")
                    if port not in port_names and port not in port_numbers:
                        self.problem(where, f"{cname}: {probe_name} port {port} is no container port")
                    path = (probe.get("httpGet") or {}).get("path")
                    if path and container.get("name") == "baton" and path not in self.openapi_paths():
                        self.problem(where, f"{cname}: {probe_name} path {path} is not a Baton REST endpoint")
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {})
                for kind, table in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
                    if kind in ref:
                        target = table.get(ref[kind].get("name"))
                        if not target:
                            self.problem(where, f"{cname}: env {env['name']} uses {kind} {ref[kind].get('name')}, "
                                                "which no manifest defines")
                        else:
                            data = {**(target[1].get("data") or {}), **(target[1].get("stringData") or {})}
                            if ref[kind].get("key") not in data:
                                self.problem(where, f"{cname}: env {env['name']}: {ref[kind].get('name')} has no key "
                                                    f"{ref[kind].get('key')}")

    def check_k8s_agent(self, where, cm_name, key, text, sts, members):
        # The StatefulSet that mounts this ConfigMap renders __POD_NAME__ to its pod names.
        for name, (w, doc) in sts.items():
            pod = doc["spec"]["template"]["spec"]
            if not any((v.get("configMap") or {}).get("name") == cm_name for v in pod.get("volumes") or []):
                continue
            container = pod["containers"][0]
            env = {e["name"]: "validation-secret" for e in container.get("env") or [] if e["name"].startswith("BATON_")}
            env.pop("BATON_CONFIG", None)
            ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
            pod_name = f"{name}-0"
            with tempfile.TemporaryDirectory() as scratch:
                path = os.path.join(scratch, key)
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text.replace("__POD_NAME__", pod_name))
                config = self.check_config(f"{where} ConfigMap {cm_name}/{key} (rendered for {pod_name})", path, env)
            if not config:
                continue
            service = doc["spec"].get("serviceName")
            for section, port_name in (("restapi", "api"), ("postgresql", "postgresql")):
                connect = (config.get(section) or {}).get("connect_address", "")
                if connect != f"{pod_name}.{service}:{ports.get(port_name)}":
                    self.problem(where, f"{cm_name}/{key}: {section}.connect_address {connect} is not the pod's "
                                        f"address {pod_name}.{service}:{ports.get(port_name)}")
                if self.listen_port(config, section, ":0") != ports.get(port_name):
                    self.problem(where, f"{cm_name}/{key}: {section}.listen port is not container port {port_name}")
            for entry in (config.get("etcd3") or {}).get("hosts") or []:
                host, _, port = entry.rpartition(":")
                if host not in members:
                    self.problem(where, f"{cm_name}/{key}: etcd host {entry} is no StatefulSet pod address")
                    continue
                etcd_ports = {p.get("containerPort") for c in members[host][1]["spec"]["template"]["spec"]["containers"]
                              for p in c.get("ports") or [] if p.get("name") == "client"}
                if int(port) not in etcd_ports:
                    self.problem(where, f"{cm_name}/{key}: etcd host {entry}: client port is {etcd_ports}")
            args = " ".join(container.get("args") or []) + " " + " ".join(container.get("command") or [])
            mounts = {m["mountPath"] for m in container.get("volumeMounts") or []}
            for mentioned in re.findall(r"(/[\w./-]+/)" + re.escape(key), args):
                if mentioned.rstrip("/") not in mounts and mentioned.rstrip("/") != "/run/baton":
                    self.problem(where, f"{name}: reads {mentioned}{key}, but nothing is mounted at {mentioned}")

    # ---- docs ---------------------------------------------------------------------------------------
    def validate_docs(self):
        if gen_docs.render_rest(self.root) != self._read("docs/rest-api.md"):
            self.problem("docs/rest-api.md", "is out of date with docs/openapi.yaml: run scripts/lib/gen_docs.py rest")
        try:
            if gen_docs.render_cli(self.baton) != self._read("docs/cli.md"):
                self.problem("docs/cli.md", "is out of date with `baton --help`: run "
                                            "scripts/lib/gen_docs.py cli --baton .build/debug/baton")
        except (OSError, RuntimeError) as error:
            self.problem("docs/cli.md", f"cannot generate: {error}")
        reasons = self._read("Sources/BatonCore/Decision/Reason.swift")
        codes = re.findall(r'case \.\w+: return "([a-z_]+)"', reasons)
        if not codes:
            self.problem("Sources/BatonCore/Decision/Reason.swift", "no reason codes found")
        runbooks = self._read("docs/runbooks.md")
        for code in codes:
            if f"`{code}`" not in runbooks:
                self.problem("docs/runbooks.md", f"does not explain the decision reason `{code}`")

    def _read(self, rel):
        try:
            return open(os.path.join(self.root, rel), encoding="utf-8").read()
        except OSError:
            self.problem(rel, "is missing")
            return ""

    def run(self):
        self.validate_compose()
        self.validate_systemd()
        self.validate_kubernetes()
        self.validate_docs()
        return self.problems


# ---- self-test --------------------------------------------------------------------------------------
# (file, text to replace, replacement, expected fragment of a reported problem)
BREAKAGES = [
    ("compose/compose.yaml", "etcd3: {condition: service_healthy}", "etcd4: {condition: service_healthy}",
     "depends on undefined service 'etcd4'"),
    ("compose/compose.yaml", "  node3-data:\n", "", "named volume 'node3-data' is not declared"),
    ("compose/compose.yaml", "    healthcheck:\n      test: [\"CMD\", \"wget\"", "    x-healthcheck:\n      test: [\"CMD\", \"wget\"",
     "unknown key 'x-healthcheck'"),
    ("compose/compose.yaml", "      - ./agents/node2.yml:/etc/baton/agent.yml:ro", "      - ./agents/node9.yml:/etc/baton/agent.yml:ro",
     "bind-mount source ./agents/node9.yml does not exist"),
    ("compose/compose.yaml", "dockerfile: compose/Dockerfile", "dockerfile: compose/Dockerfile.missing",
     "Dockerfile compose/Dockerfile.missing does not exist"),
    ("compose/compose.yaml", "networks: [baton]", "networks: [batonnet]", "network 'batonnet' is not declared"),
    ("compose/compose.yaml", "\"9090:9090\"", "\"3000:9090\"", "host port 3000 is also published"),
    ("compose/compose.yaml", "      - \"5001:5001\"", "      - \"5001:5001\"\n      - \"5002:5002\"",
     "HAProxy binds no such port"),
    ("compose/Dockerfile", "COPY --from=build /out/baton /out/baton-fence-guard ", "COPY --from=build /out/baton ",
     "but not /usr/local/bin/baton-fence-guard"),
    ("deploy/systemd/baton-agent.service", "install -m 755 baton baton-fence-guard ", "install -m 755 baton ",
     "do not install baton-fence-guard"),
    ("compose/Dockerfile", "COPY Sources ./Sources", "COPY Source ./Sources", "COPY Source: not in the build context"),
    ("compose/Dockerfile", "--product baton ", "--product baton-server ", "Package.swift does not declare"),
    ("compose/Dockerfile", "--product baton-client-example", "--product baton-client-sample",
     "Package.swift does not declare"),
    ("compose/compose.yaml", "      - scope=rehearsal", "      - scope=rehearsals", "is not the agents' scope"),
    ("compose/compose.yaml", "      - etcd_hosts=etcd1:2379,", "      - etcd_hosts=etcd1:2380,",
     "is not an etcd service's client port"),
    ("compose/Dockerfile", "HEALTHCHECK --interval=5s", "# HEALTHCHECK --interval=5s", None),
    ("compose/compose.yaml", "--admin-port=6432", "--admin-port=6433", "is not PgBouncer's listen_port"),
    ("compose/pgbouncer/pgbouncer.ini", "%include /var/lib/baton-pooler/baton.ini",
     "%include /etc/pgbouncer/baton.ini", "is not what PgBouncer includes"),
    ("compose/compose.yaml", "--scope=rehearsal", "--scope=rehearsals", "--scope rehearsals is not the agents' scope"),
    ("compose/pgbouncer/pgbouncer.ini", "auth_file = /var/lib/baton-pgbouncer/userlist.txt",
     "auth_file = /var/lib/baton-pooler/userlist.txt", "(passwords) is on a volume"),
    ("compose/prometheus/prometheus.yml", "\"pooler:8010\"", "\"pooler:8008\"", "is not where pooler's status"),
    ("compose/haproxy/haproxy.cfg", "http-check expect status 200", "http-check expekt status 200", "haproxy -c"),
    ("compose/haproxy/haproxy.cfg", "server node3 node3:5432", "server node3 node4:5432", "'node4' is not a cluster member"),
    ("compose/haproxy/haproxy.cfg", "server node2 node2:5432 check port 8008\n    server node3",
     "server node2 node2:5433 check port 8008\n    server node3", "is not node2's PostgreSQL port"),
    ("compose/haproxy/haproxy.cfg", "uri /replica?lag=1MB", "uri /replicas?lag=1MB",
     "/replicas is not an endpoint of docs/openapi.yaml"),
    ("compose/agents/node2.yml", "log:\n  level: info", "log:\n  level: info\n  colour: true",
     "rejected by the agent's loader"),
    ("compose/agents/node1.yml", "ttl: 10", "ttl: ten", "rejected by the agent's loader"),
    ("compose/agents/node3.yml", "connect_address: node3:8008", "connect_address: node2:8008",
     "does not name this service"),
    ("compose/agents/node1.yml", "\"etcd3:2379\"]", "\"etcd3:2380\"]", "listens for clients on 2379"),
    ("compose/prometheus/prometheus.yml", "\"node3:8008\"", "\"node4:8008\"", "is not a compose service"),
    ("compose/prometheus/alerts.yml", "baton_pending_restart == 1", "baton_pending_restarts == 1",
     "baton_pending_restarts, which the agent does not export"),
    ("compose/grafana/dashboards/baton.json", "baton_lag_bytes{", "baton_replica_lag_bytes{",
     "baton_replica_lag_bytes, which the agent does not export"),
    ("compose/grafana/provisioning/dashboards/baton.yml", "path: /etc/grafana/dashboards",
     "path: /var/lib/grafana/dashboards", "is not mounted into the grafana container"),
    ("deploy/systemd/baton-agent.service", "\nKillMode=mixed", "\nKillMode=bogus", "systemd-analyze verify"),
    ("deploy/systemd/baton-pooler.service", "ReadWritePaths=/var/lib/baton-pooler", "ReadWritePaths=/var/lib/pooler",
     "which ReadWritePaths= does not open"),
    ("deploy/systemd/baton-agent.service", "baton check-config", "baton check-configuration",
     "is not a baton subcommand"),
    ("deploy/kubernetes/baton.yaml", "  selector: {app.kubernetes.io/name: baton}\n  ports:",
     "  selector: {app.kubernetes.io/name: batton}\n  ports:", "selects no pods"),
    ("deploy/kubernetes/baton.yaml", "key: replication-password}", "key: replication_password}",
     "has no key replication_password"),
    ("deploy/kubernetes/baton.yaml", "- {name: run, mountPath: /run/baton}", "- {name: runtime, mountPath: /run/baton}",
     "volumeMount runtime has no volume"),
    ("deploy/kubernetes/baton.yaml", "httpGet: {path: /readiness, port: api}", "httpGet: {path: /readiness, port: http}",
     "readinessProbe port http is no container port"),
    ("deploy/kubernetes/baton.yaml", "httpGet: {path: /readiness, port: api}",
     "httpGet: {path: /ready, port: api}", "/ready is not a Baton REST endpoint"),
    ("deploy/kubernetes/baton.yaml", "      loop_wait: 10", "      loop_wait: 20", "rejected by the agent's loader"),
    ("deploy/kubernetes/baton.yaml", "connect_address: __POD_NAME__.baton:5432", "connect_address: __POD_NAME__:5432",
     "is not the pod's address"),
    ("deploy/kubernetes/haproxy.yaml", "server baton-2 baton-2.baton:5432 check port 8008\n---",
     "server baton-3 baton-3.baton:5432 check port 8008\n---", "'baton-3.baton' is not a cluster member"),
    ("deploy/kubernetes/haproxy.yaml", "targetPort: replicas}", "targetPort: replica}", "targetPort replica is no container port"),
    ("deploy/kubernetes/etcd.yaml", "serviceName: baton-etcd", "serviceName: etcd", "serviceName etcd is not a Service"),
    ("deploy/kubernetes/kustomization.yaml", "  - haproxy.yaml", "  - proxy.yaml", "resource proxy.yaml does not exist"),
    ("docs/rest-api.md", "# REST API reference", "# REST API", "rest-api.md: is out of date"),
    ("docs/cli.md", "## baton list", "## baton lists", "cli.md: is out of date"),
    ("docs/runbooks.md", "`lag_too_high`", "lag too high", "decision reason `lag_too_high`"),
]


def _copy_tree(root, scratch):
    for item in ("compose", "deploy", "docs", "Sources", "Tests", "Package.swift", "agent.yml"):
        source = os.path.join(root, item)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(scratch, item))
        else:
            shutil.copy2(source, os.path.join(scratch, item))


def _try_breakages(scratch, baton, breakages):
    failures = []
    for rel, old, new, expected in breakages:
        path = os.path.join(scratch, rel)
        original = open(path, encoding="utf-8").read()
        if old not in original:
            failures.append(f"breakage of {rel}: the text {old!r} is not in the file (update BREAKAGES)")
            continue
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(original.replace(old, new, 1))
        try:
            problems = Validator(scratch, baton).run()
        finally:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(original)
        if expected is None:
            # Removing the image's HEALTHCHECK: compose's own healthchecks still cover the nodes.
            if problems:
                failures.append(f"{rel}: {old!r} → {new!r} should still pass, got: {problems}")
        elif not any(expected in p for p in problems):
            failures.append(f"{rel}: {old!r} → {new!r} was not reported as '{expected}' (got: {problems or 'nothing'})")
    return failures


def self_test(root, baton, workers=4):
    """Each breakage on a fresh copy: workers take every Nth breakage, each on its own copy."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="baton-validate-") as scratch:
        copies = []
        for index in range(workers):
            copy_root = os.path.join(scratch, f"copy{index}")
            os.makedirs(copy_root)
            _copy_tree(root, copy_root)
            copies.append(copy_root)
        baseline = Validator(copies[0], baton).run()
        if baseline:
            return ["the unbroken copy does not pass:"] + baseline
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda i: _try_breakages(copies[i], baton, BREAKAGES[i::workers]), range(workers))
        failures = [failure for result in results for failure in result]
        print(f"self-test: {len(BREAKAGES)} breakages tried, {len(BREAKAGES) - len(failures)} reported as expected")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.normpath(os.path.join(HERE, "../..")))
    parser.add_argument("--baton", required=True, help="the built baton binary (for check-config and --help)")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if not os.access(args.baton, os.X_OK):
        print(f"validate_deploy: {args.baton} is not an executable baton binary: build it first "
              "(swift build --product baton)", file=sys.stderr)
        return 2
    if args.self_test:
        failures = self_test(os.path.abspath(args.root), args.baton)
        for failure in failures:
            print(f"FAIL {failure}")
        print(f"{len(BREAKAGES) - len(failures)} passed, {len(failures)} failed")
        return 1 if failures else 0
    problems = Validator(args.root, args.baton).run()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in the deployment files")
        return 1
    print("deployment files: compose, Dockerfile, HAProxy, Prometheus, Grafana, systemd, Kubernetes and "
          "generated docs are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
