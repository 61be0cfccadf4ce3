#!/usr/bin/python3
"""Generates the reference pages that must never drift from their sources.

    gen_docs.py rest [--root DIR] [--check]            docs/rest-api.md from docs/openapi.yaml
    gen_docs.py cli --baton PATH [--root DIR] [--check] docs/cli.md from `baton … --help`

Without --check the page is (re)written; with --check nothing is written and the exit status is 1
when the page differs from what would be generated (scripts/lib/validate_deploy.py runs both).
"""
import argparse
import os
import re
import subprocess
import sys

import yaml

METHODS = ["get", "head", "options", "post", "put", "patch", "delete"]


def _resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        target = spec
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _schema_text(spec, schema, depth=0):
    """A one-line rendering of a schema: its $ref name, type, or object fields."""
    if schema is None:
        return ""
    if "$ref" in schema:
        return "`" + schema["$ref"].rsplit("/", 1)[-1] + "`"
    kind = schema.get("type", "")
    if kind == "array":
        return "array of " + (_schema_text(spec, schema.get("items", {}), depth + 1) or "values")
    if kind == "object" and "properties" in schema and depth == 0:
        fields = ", ".join(f"`{name}`" for name in schema["properties"])
        return f"object ({fields})"
    return kind or "any"


def _one_line(text):
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(path):
    return re.sub(r"[^a-z0-9 _-]", "", path.lower()).strip().replace(" ", "-") or "-"


def _statuses(spec, op):
    parts = []
    for status, response in op.get("responses", {}).items():
        response = _resolve(spec, response)
        parts.append(f"{status} ({_one_line(response.get('description') or '').rstrip('.')})")
    return ", ".join(parts)


def _render_operation(spec, out, method, op):
    title = f"**{method.upper()}**"
    text = _one_line(op.get("description") or "")
    summary = _one_line(op.get("summary") or "")
    out.append(f"{title} — {summary}" + (f". {text}" if text else "") + "\n")
    if op.get("security"):
        out.append("Requires HTTP Basic auth when `restapi.authentication` is set; the client "
                   "address must be in `restapi.allowlist` when one is set.\n")
    params = [_resolve(spec, p) for p in op.get("parameters", [])]
    if params:
        out.append("| parameter | in | description |")
        out.append("|---|---|---|")
        for param in params:
            out.append(f"| `{param['name']}` | {param['in']} | {_one_line(param.get('description') or '')} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        body = _resolve(spec, body)
        for media, content in body.get("content", {}).items():
            required = "required" if body.get("required") else "optional"
            out.append(f"Request body ({required}, `{media}`): {_schema_text(spec, content.get('schema'))}.\n")
    out.append("| status | meaning |")
    out.append("|---|---|")
    for status, response in op.get("responses", {}).items():
        name = response["$ref"].rsplit("/", 1)[-1] if "$ref" in response else ""
        response = _resolve(spec, response)
        schemas = [_schema_text(spec, c.get("schema")) for c in response.get("content", {}).values()]
        detail = f" ({', '.join(x for x in schemas if x)})" if any(schemas) else ""
        label = f"{name}: " if name else ""
        out.append(f"| {status} | {label}{_one_line(response.get('description') or '')}{detail} |")
    out.append("")


def render_rest(root):
    with open(os.path.join(root, "docs/openapi.yaml"), encoding="utf-8") as handle:
        spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    info = spec["info"]
    out = []
    out.append("# REST API reference\n")
    out.append(
        "<!-- Generated from docs/openapi.yaml by scripts/lib/gen_docs.py rest; do not edit by hand.\n"
        "     scripts/test fails when this page and the OpenAPI document disagree. -->\n"
    )
    out.append(f"{info['title']}, version {info['version']}. The machine-readable document is "
               "[openapi.yaml](openapi.yaml); this page is generated from it.\n")
    out.append(info.get("description", "").strip() + "\n")
    servers = ", ".join(f"`{s['url']}`" for s in spec.get("servers", []))
    if servers:
        out.append(f"Default server: {servers}.\n")

    # Summary table: one row per path.
    out.append("## Endpoints\n")
    out.append("| path | methods | what |")
    out.append("|---|---|---|")
    for path, item in spec["paths"].items():
        methods = [m for m in METHODS if m in item]
        first = item[methods[0]]
        what = _one_line(first.get("description") or first.get("summary") or "")
        if first.get("summary") and first.get("summary") != "Health check":
            what = _one_line(first["summary"]) + (". " + what if what and what != first["summary"] else "")
        anchor = _anchor(path)
        out.append(f"| [`{path}`](#{anchor}) | {', '.join(m.upper() for m in methods)} | {what} |")
    out.append("")

    # Each path: the first method in full; later methods with the same summary, description and
    # parameters in one line each.
    out.append("## Paths\n")
    for path, item in spec["paths"].items():
        out.append(f"### {path}\n")
        shown = None
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            key = (op.get("summary"), op.get("description"), repr(op.get("parameters")), repr(op.get("requestBody")))
            if shown is not None and key == shown:
                out.append(f"**{method.upper()}**: the same; responds " + _statuses(spec, op) + ".\n")
                continue
            shown = key
            _render_operation(spec, out, method, op)

    # Schemas.
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        out.append("## Schemas\n")
        for name, schema in schemas.items():
            out.append(f"### {name}\n")
            if schema.get("description"):
                out.append(schema["description"].strip() + "\n")
            props = schema.get("properties")
            if props:
                required = set(schema.get("required", []))
                out.append("| field | type | description |")
                out.append("|---|---|---|")
                for field, prop in props.items():
                    description = (prop.get("description") or "").strip().replace("\n", " ").replace("|", "\\|")
                    mark = " (required)" if field in required else ""
                    out.append(f"| `{field}`{mark} | {_schema_text(spec, prop, 1)} | {description} |")
                out.append("")
            else:
                out.append(f"Type: {_schema_text(spec, schema)}.\n")
    return "\n".join(out).rstrip() + "\n"


CLI_INTRO = """# CLI reference

<!-- Generated from `baton --help` and `baton COMMAND --help` by scripts/lib/gen_docs.py cli; do not
     edit by hand. scripts/test fails when this page and the built binary's help disagree. -->

`baton` is both the agent (`baton agent`) and the operator's command line. Operator commands read
the cluster from etcd and act through the REST API of the right member, so each needs the agent's
configuration file: `-c /etc/baton/agent.yml`, or `BATON_CONFIG` in the environment (default
`agent.yml` in the current directory). Exit status: 0 done, 1 the action failed, 2 bad usage or
configuration. Secrets come from the environment (`BATON_*`, see [configuration.md](configuration.md)).

Runbooks that use these commands: [runbooks.md](runbooks.md).
"""


_HELP_CACHE = {}


def help_text(baton, args):
    """`baton ARGS --help` with a fixed width and no BATON_* environment (cached per binary)."""
    key = (os.path.abspath(baton), os.path.getmtime(baton), tuple(args))
    if key not in _HELP_CACHE:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env["COLUMNS"] = "100"
        result = subprocess.run([baton, *args, "--help"], capture_output=True, text=True, env=env, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{baton} {' '.join(args)} --help exited {result.returncode}: {result.stderr.strip()}")
        _HELP_CACHE[key] = result.stdout.rstrip()
    return _HELP_CACHE[key]


def subcommands(top):
    """The names under SUBCOMMANDS: in `baton --help`."""
    commands = []
    in_subcommands = False
    for line in top.splitlines():
        if line.startswith("SUBCOMMANDS:"):
            in_subcommands = True
            continue
        if in_subcommands:
            if not line.strip():
                if commands:
                    break
                continue
            match = re.match(r"^  (\S+)", line)
            if match and not line.startswith("   "):
                commands.append(match.group(1))
            elif match is None and not line.startswith("   "):
                break
    return commands


def render_cli(baton):
    top = help_text(baton, [])
    commands = subcommands(top)
    if not commands:
        raise RuntimeError("no SUBCOMMANDS section in `baton --help`")
    out = [CLI_INTRO, "## baton\n", "```", top, "```", ""]
    for command in commands:
        if command == "help":
            continue
        out += [f"## baton {command}\n", "```", help_text(baton, [command]), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", choices=["rest", "cli"])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
    parser.add_argument("--baton", help="the built baton binary (for cli)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    if args.page == "rest":
        path, text = os.path.join(root, "docs/rest-api.md"), render_rest(root)
    else:
        if not args.baton:
            parser.error("cli needs --baton PATH (e.g. .build/debug/baton)")
        path, text = os.path.join(root, "docs/cli.md"), render_cli(args.baton)
    if args.check:
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        if current != text:
            rel = os.path.relpath(path, root)
            print(f"{rel} is out of date: run scripts/lib/gen_docs.py {args.page}"
                  + (" --baton .build/debug/baton" if args.page == "cli" else ""), file=sys.stderr)
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {os.path.relpath(path, root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
