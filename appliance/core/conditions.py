"""Resume conditions: the original's JSON read into one tree, and how a signal counts.

Wire forms (as the original's serde): ``{"Single": {"waitpoint_key", "matcher"}}`` with
matcher ``{"ByName": name}`` or ``"Wildcard"``; ``"OperatorOnly"``; ``"TimeoutOnly"``;
``{"Composite": {"kind": "AllOf", "members": [...]}}``; ``{"Composite": {"kind": "Count",
"n", "count_kind", "matcher"?, "waitpoints": [keys]}}``. Stored as a tree of plain
objects (``kind``: single / all_of / count / never, each with its ``path``) that the Lua
library reads too. A signal adds *satisfier tokens* (``<path>|leaf``, ``<path>|wp:<id>``,
``<path>|sig:<id>``, ``<path>|src:<type>:<identity>``) to the suspension; a node is
satisfied by its own tokens only. See spec/suspension.md § Conditions.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput, InvalidResumeCondition

MAX_DEPTH = 4
MAX_NODES = 256
COUNT_KINDS = ("DistinctWaitpoints", "DistinctSignals", "DistinctSources")

Tree = dict[str, Any]

# Effects a signal can have (the original's vocabulary).
SATISFIED = "resume_condition_satisfied"
APPENDED = "appended_to_waitpoint"
DUPLICATE = "appended_to_waitpoint_duplicate"
NOT_IN_CONDITION = "signal_ignored_not_in_condition"
MATCHER_FAILED = "signal_ignored_matcher_failed"
BUFFERED = "buffered_for_pending_waitpoint"


def _bad(path: str, what: str) -> InvalidResumeCondition:
    where = f"resume_condition{'.' + path if path else ''}"
    return InvalidResumeCondition(f"{where}: {what}")


def _key(raw: Any, path: str) -> str:
    if not _is_key(raw):
        raise _bad(path, KEY_RULE)
    return raw


KEY_RULE = "a waitpoint key is 1 to 256 printable characters"


def _is_key(raw: Any) -> bool:
    return isinstance(raw, str) and 1 <= len(raw) <= 256 and raw.isprintable()


def check_key(raw: Any, where: str) -> str:
    """A waitpoint key given outside a condition (``where``: its field)."""
    if not _is_key(raw):
        raise InvalidInput(f"{where}: {KEY_RULE}, got {raw!r:.80}")
    return raw


def _matcher(raw: Any, path: str) -> str | None:
    """The signal name a matcher requires (None: any name)."""
    if raw is None or raw == "Wildcard":
        return None
    if isinstance(raw, dict) and list(raw) == ["ByName"]:
        name = raw["ByName"]
        if not isinstance(name, str) or not 1 <= len(name) <= 256 or not name.isprintable():
            raise _bad(f"{path}.ByName", "a signal name is 1 to 256 printable characters "
                       "(use \"Wildcard\" for any name)")
        return name
    raise _bad(path, 'a matcher is {"ByName": "<signal name>"} or "Wildcard"')


def parse_condition(raw: Any) -> Tree:
    """The tree of a wire condition, or a typed 400 naming where it is wrong."""
    count = [0]
    return _node(raw, "", 1, count)


def _node(raw: Any, path: str, depth: int, count: list[int]) -> Tree:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _bad(path, f"a condition has at most {MAX_NODES} nodes")
    if raw in ("OperatorOnly", "TimeoutOnly"):
        return {"kind": "never", "path": path, "by": raw}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _bad(path, 'must be {"Single": {...}}, "OperatorOnly", "TimeoutOnly" or '
                   '{"Composite": {...}}')
    [(tag, body)] = raw.items()
    if not isinstance(body, dict):
        raise _bad(f"{path}.{tag}" if path else tag, "must be an object")
    if tag == "Single":
        _fields(body, {"waitpoint_key", "matcher"}, {"waitpoint_key"}, path)
        return {"kind": "single", "path": path,
                "waitpoint_key": _key(body["waitpoint_key"], _at(path, "waitpoint_key")),
                "name": _matcher(body.get("matcher"), _at(path, "matcher"))}
    if tag != "Composite":
        raise _bad(path, f"unknown condition {tag!r}")
    if depth > MAX_DEPTH:
        raise _bad(path, f"composite depth {depth} exceeds cap {MAX_DEPTH}")
    kind = body.get("kind")
    if kind == "AllOf":
        _fields(body, {"kind", "members"}, {"members"}, path)
        members = body["members"]
        if not isinstance(members, list) or not members:
            raise _bad(_at(path, "members"), "allof_empty_members: an AllOf needs members")
        return {"kind": "all_of", "path": path,
                "members": [_node(m, _at(path, f"members[{i}]"), depth + 1, count)
                            for i, m in enumerate(members)]}
    if kind == "Count":
        _fields(body, {"kind", "n", "count_kind", "matcher", "waitpoints"},
                {"n", "count_kind", "waitpoints"}, path)
        n, count_kind, keys = body["n"], body["count_kind"], body["waitpoints"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            raise _bad(_at(path, "n"), "must be an integer in 1..10000")
        if n == 0:
            raise _bad(_at(path, "n"), "count_n_zero: n must be at least 1")
        if count_kind not in COUNT_KINDS:
            raise _bad(_at(path, "count_kind"), f"must be one of {', '.join(COUNT_KINDS)}")
        if not isinstance(keys, list) or not keys:
            raise _bad(_at(path, "waitpoints"),
                       "count_waitpoints_empty: name the waitpoint keys it counts")
        if len(keys) > MAX_NODES:
            raise _bad(_at(path, "waitpoints"), f"at most {MAX_NODES} keys")
        keys = [_key(k, _at(path, f"waitpoints[{i}]")) for i, k in enumerate(keys)]
        if len(set(keys)) != len(keys):
            raise _bad(_at(path, "waitpoints"), "a key is named twice")
        if count_kind == "DistinctWaitpoints" and n > len(keys):
            raise _bad(_at(path, "n"), f"count_exceeds_waitpoint_set: n={n} > "
                       f"waitpoints.len()={len(keys)}")
        return {"kind": "count", "path": path, "n": n, "count_kind": count_kind,
                "name": _matcher(body.get("matcher"), _at(path, "matcher")),
                "waitpoints": keys}
    raise _bad(_at(path, "kind"), 'a Composite kind is "AllOf" or "Count"')


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fields(body: dict[str, Any], allowed: set[str], required: set[str], path: str) -> None:
    for name in body:
        if name not in allowed:
            raise _bad(path, f"unknown field {name!r}")
    for name in sorted(required - set(body)):
        raise _bad(_at(path, name), "is required")


def referenced_keys(tree: Tree) -> list[str]:
    """The waitpoint keys the condition names, in first-mention order."""
    out: list[str] = []
    for node in _walk(tree):
        for key in ([node["waitpoint_key"]] if node["kind"] == "single"
                    else node.get("waitpoints", [])):
            if key not in out:
                out.append(key)
    return out


def is_timeout_only(tree: Tree) -> bool:
    return tree["kind"] == "never" and tree.get("by") == "TimeoutOnly"


def signal_names(tree: Tree, key: str) -> list[str]:
    """The signal names the condition asks of waitpoint ``key`` (empty: any name)."""
    names: list[str] = []
    for node in _mentioning(tree, key):
        if node["name"] is not None and node["name"] not in names:
            names.append(node["name"])
    return names


def _mentioning(tree: Tree, key: str) -> list[Tree]:
    """The single and count nodes that name waitpoint ``key``."""
    return [n for n in _walk(tree)
            if (n["kind"] == "single" and n["waitpoint_key"] == key)
            or (n["kind"] == "count" and key in n["waitpoints"])]


def _walk(tree: Tree) -> list[Tree]:
    out = [tree]
    for member in tree.get("members", ()):
        out += _walk(member)
    return out


def offer(tree: Tree, satisfied: list[str], key: str, waitpoint_id: str, signal_id: str,
          signal_name: str, source: str) -> tuple[str, list[str]]:
    """What a signal on waitpoint ``key`` does: its effect and the satisfier tokens it adds
    (``satisfied``: the suspension's tokens so far, not changed here)."""
    candidates = _mentioning(tree, key)
    if not candidates:
        return NOT_IN_CONDITION, []
    have = set(satisfied)
    added: list[str] = []
    accepted = False
    for node in candidates:
        if node["name"] is not None and node["name"] != signal_name:
            continue
        accepted = True
        if node["kind"] == "single":
            token = f"{node['path']}|leaf"
        else:
            token = node["path"] + "|" + {
                "DistinctWaitpoints": f"wp:{waitpoint_id}",
                "DistinctSignals": f"sig:{signal_id}",
                "DistinctSources": f"src:{source}"}[node["count_kind"]]
        if token not in have and token not in added:
            added.append(token)
    if not accepted:
        return MATCHER_FAILED, []
    if not added:
        return DUPLICATE, []
    return (SATISFIED if holds(tree, [*satisfied, *added]) else APPENDED), added


def holds(tree: Tree, satisfied: list[str]) -> bool:
    """Whether the tokens satisfy the condition."""
    kind = tree["kind"]
    if kind == "single":
        return f"{tree['path']}|leaf" in satisfied
    if kind == "count":
        prefix = tree["path"] + "|"
        return sum(1 for t in satisfied if t.startswith(prefix)) >= tree["n"]
    if kind == "all_of":
        return all(holds(m, satisfied) for m in tree["members"])
    return False


__all__ = ["APPENDED", "BUFFERED", "COUNT_KINDS", "DUPLICATE", "MATCHER_FAILED", "MAX_DEPTH",
           "NOT_IN_CONDITION", "SATISFIED", "Tree", "holds", "is_timeout_only", "offer",
           "parse_condition", "referenced_keys", "signal_names"]
