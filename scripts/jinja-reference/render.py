#!/usr/bin/env python3
"""Render tests/fixtures/jinja/cases.yaml with real Jinja2 + StackStorm filters.

Writes tests/fixtures/jinja/expected.json, the reference that squall's Rust
(minijinja) renderer is compared against. See README.md beside this file for
the pinned environment.

Usage:
    render.py [--cases PATH] [--out PATH] [--check]

--check renders and compares with the existing output file instead of
writing it (exit 1 on any difference).
"""

import argparse
import json
import math
import os
import re
import sys

import jinja2
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st2_filters  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_CASES = os.path.join(REPO_ROOT, "tests", "fixtures", "jinja", "cases.yaml")
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "jinja", "expected.json")
GENERATOR = "scripts/jinja-reference/render.py"

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Plain (unquoted) YAML scalars must mean the same thing to PyYAML (YAML 1.1)
# and to a YAML 1.2 core-schema loader such as the one the Rust tests use.
_CORE_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_CORE_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_CORE_INT = re.compile(r"^[-+]?[0-9]+$")
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]")
_CORE_FLOAT = re.compile(
    r"^([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$"
)
_TAG = "tag:yaml.org,2002:"


def _core_tag(text):
    if _CORE_NULL.match(text):
        return _TAG + "null"
    if _CORE_BOOL.match(text):
        return _TAG + "bool"
    if _CORE_INT.match(text):
        return _TAG + "int"
    if _CORE_FLOAT.match(text):
        return _TAG + "float"
    return _TAG + "str"


def check_plain_scalars(node, where="cases.yaml"):
    """Fail on plain scalars whose type differs between YAML 1.1 and 1.2."""
    problems = []

    def walk(n):
        if isinstance(n, yaml.ScalarNode):
            if n.style is None and n.tag.startswith(_TAG):
                if n.tag != _core_tag(n.value) or _LEADING_ZERO.match(n.value):
                    problems.append(
                        "%s:%d: plain scalar %r reads differently in YAML 1.1 (PyYAML: %s)"
                        " and YAML 1.2 (%s); quote it"
                        % (where, n.start_mark.line + 1, n.value, n.tag, _core_tag(n.value))
                    )
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                walk(item)
        elif isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                walk(key)
                walk(value)

    walk(node)
    return problems


def _json_compatible(value, path):
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("%s: non-finite float" % path)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _json_compatible(item, "%s[%d]" % (path, i))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("%s: non-string key %r" % (path, key))
            _json_compatible(item, "%s.%s" % (path, key))
        return
    raise ValueError("%s: %s is not JSON-compatible" % (path, type(value).__name__))


def load_cases(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    problems = check_plain_scalars(yaml.compose(text, Loader=yaml.SafeLoader), path)
    if problems:
        raise SystemExit("\n".join(problems))
    cases = yaml.safe_load(text)
    if not isinstance(cases, list):
        raise SystemExit("%s: expected a list of cases" % path)
    seen = set()
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or set(case) - {"name", "template", "context"}:
            raise SystemExit("case #%d: keys must be name, template, context" % i)
        name = case.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SystemExit("case #%d: bad name %r" % (i, name))
        if name in seen:
            raise SystemExit("duplicate case name %r" % name)
        seen.add(name)
        if not isinstance(case.get("template"), str):
            raise SystemExit("case %s: template must be a string" % name)
        context = case.setdefault("context", {})
        if context is None:
            case["context"] = context = {}
        if not isinstance(context, dict):
            raise SystemExit("case %s: context must be a mapping" % name)
        try:
            _json_compatible(context, name)
        except ValueError as err:
            raise SystemExit("case %s" % err)
    return cases


def check_yaml_backend():
    # st2 dumps/loads YAML through libyaml (CSafeDumper/CSafeLoader) when it is
    # available, and the two backends differ (e.g. a scalar dump gets a
    # trailing "...\n" from the pure-Python emitter only).
    if not getattr(yaml, "__with_libyaml__", False):
        raise SystemExit("PyYAML was built without libyaml; install the binary wheel")


def make_environment():
    # As st2common.util.jinja.get_jinja_environment(allow_undefined=True).
    env = jinja2.Environment(
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return st2_filters.install(env)


def sorted_keys(value):
    """squall's template contexts are JSON objects with their keys in sorted order
    (serde_json maps); render the reference against the same order."""
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def render_case(env, case):
    try:
        output = env.from_string(case["template"]).render(sorted_keys(case["context"]))
    except Exception as err:  # every failure is part of the reference
        return {"error": "%s: %s" % (type(err).__name__, err)}
    return {"output": str(output)}


def build(cases):
    env = make_environment()
    return {
        "generator": GENERATOR,
        "jinja2": jinja2.__version__,
        "cases": {case["name"]: render_case(env, case) for case in cases},
    }


def dump(doc):
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)

    check_yaml_backend()
    doc = build(load_cases(args.cases))
    text = dump(doc)
    errors = sorted(n for n, r in doc["cases"].items() if "error" in r)

    if args.check:
        with open(args.out, encoding="utf-8") as fh:
            if fh.read() != text:
                print("%s is out of date; rerun render.py" % args.out, file=sys.stderr)
                return 1
    else:
        with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)

    print(
        "%d cases, %d errors (%s)" % (len(doc["cases"]), len(errors), ", ".join(errors)),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
