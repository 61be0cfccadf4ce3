"""Every configuration key Patroni's own validator knows, one per line (run with Patroni's Python).

Walks patroni.validator.schema: mapping keys (plain, Optional, Or, AtMostOne), nested mappings and
alternatives. Used by PatroniKeysDocumentedTests: docs/configuration.md must state each one."""
from patroni import validator as V


def names(key):
    if isinstance(key, str):
        return [key]
    if isinstance(key, V.Optional):
        return names(key.name)
    inner = getattr(key, "args", None)
    if inner is not None:
        return [n for a in inner for n in names(a)]
    if hasattr(key, "name"):
        return names(key.name)
    return []


def walk(value, prefix):
    found = []
    inner = getattr(value, "validator", value)
    if isinstance(inner, dict):
        for key, child in inner.items():
            for name in names(key):
                path = prefix + ("." if prefix else "") + name
                found.append(path)
                found += walk(child, path)
    elif not isinstance(inner, str) and hasattr(inner, "args"):
        for alternative in inner.args:
            found += walk(alternative, prefix)
    return found


print("\n".join(sorted(set(walk(V.schema, "")))))
