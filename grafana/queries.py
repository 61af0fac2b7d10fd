#!/usr/bin/env python3
"""Prints every PromQL query of the dashboards and alert rules as JSON, for checks against a live Prometheus.

    python3 grafana/queries.py > queries.json

Output: a list of {"source", "expr", "signal"}:
  * one entry per dashboard target: source "<dashboard uid>/<panel title>" (a panel with several targets gives
    several entries with the same source), expr with `$__rate_interval` replaced by `1m`, signal = expr;
  * one entry per alerting rule: source "alert/<name>", expr, and signal = the expression before its final
    top-level comparison operator (>, <, >=, <=, ==, !=), i.e. the value the threshold is applied to.
    Every signal should return data once the gateway has served requests.

Needs PyYAML (`pip install pyyaml`) for grafana/alerts.yml.
"""

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RATE_INTERVAL = "1m"

_CLOSE = {"(": ")", "[": "]", "{": "}"}


def final_comparison(expr):
    """Index and length of the last comparison operator outside (), [], {} and string literals, or None."""
    stack = []
    last = None
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            # Skip the string literal; backticks have no escapes.
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if c != "`" and expr[j] == "\\" else 1
            i = j + 1
            continue
        if c == "#":
            # A comment runs to the end of the line.
            while i < n and expr[i] != "\n":
                i += 1
            continue
        if c in _CLOSE:
            stack.append(_CLOSE[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                raise ValueError(f"unbalanced {c!r} at {i} in: {expr}")
        elif not stack:
            two = expr[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                last = (i, 2)
                i += 2
                continue
            if c in "<>":
                last = (i, 1)
        i += 1
    if stack:
        raise ValueError(f"unbalanced brackets in: {expr}")
    return last


def signal_of(expr):
    found = final_comparison(expr)
    if found is None:
        return expr.strip()
    return expr[: found[0]].strip()


def normalise(expr):
    return " ".join(expr.replace("$__rate_interval", RATE_INTERVAL).split())


def panels(items):
    """Panels in order, including those nested in collapsed rows."""
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def dashboard_queries(directory):
    out = []
    for path in sorted(directory.glob("*.json")):
        dash = json.loads(path.read_text(encoding="utf-8"))
        for panel in panels(dash.get("panels", [])):
            for t in panel.get("targets", []):
                if t.get("expr"):
                    expr = normalise(t["expr"])
                    out.append({"source": f"{dash['uid']}/{panel.get('title', '')}", "expr": expr, "signal": expr})
    return out


def alert_queries(path):
    out = []
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                expr = normalise(str(rule["expr"]))
                out.append({"source": f"alert/{rule['alert']}", "expr": expr, "signal": signal_of(expr)})
    return out


def main():
    queries = dashboard_queries(HERE / "dashboards") + alert_queries(HERE / "alerts.yml")
    json.dump(queries, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
