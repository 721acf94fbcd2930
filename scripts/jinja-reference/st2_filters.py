"""StackStorm's Jinja filters, reimplemented for squall's reference renderer.

This module mirrors the behaviour of the filters that StackStorm registers in
``st2common.util.jinja.get_filters()`` (st2 3.x, Python 3), so that
``render.py`` can produce expected outputs that match what a StackStorm
installation would render. It is an independent implementation: argument
names, defaults and output formatting follow StackStorm's, the code does not.

``decrypt_kv`` is deliberately absent (it needs StackStorm's crypto keys).

Libraries, as in StackStorm:
  * PyYAML     (libyaml C loader/dumper when available, like st2's
                ``yaml_safe_load`` / ``yaml_safe_dump`` helpers)
  * semver 3   (``semver.Version`` API, as current st2 uses)
  * jsonpath-rw
"""

import datetime
import json
import os
import re

import jsonpath_rw
import semver
import yaml

try:  # st2 prefers the libyaml-backed classes when they are importable
    from yaml import CSafeDumper as _SafeDumper
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - pure-Python fallback
    from yaml import SafeDumper as _SafeDumper
    from yaml import SafeLoader as _SafeLoader

__all__ = ["NONE_MAGIC_VALUE", "get_filters", "get_tests", "install"]

# The placeholder st2 substitutes for None so that a rendered parameter can be
# turned back into a real null afterwards.
NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def from_json_string(value):
    return json.loads(str(value))


def from_yaml_string(value):
    return yaml.load(str(value), Loader=_SafeLoader)


def to_json_string(value, indent=None, sort_keys=False, separators=(",", ": ")):
    # Note the default separators: no space after the item comma, so a
    # one-line dump reads {"a": 1,"b": [1,2]}.
    kwargs = {}
    if indent is not None:
        kwargs["indent"] = indent
    if sort_keys is not None:
        kwargs["sort_keys"] = sort_keys
    if separators is not None:
        kwargs["separators"] = separators
    return json.dumps(value, **kwargs)


def to_yaml_string(value, indent=None, allow_unicode=True):
    kwargs = {"default_flow_style": False}
    if indent is not None:
        kwargs["indent"] = indent
    if allow_unicode is not None:
        kwargs["allow_unicode"] = allow_unicode
    # PyYAML's dump() sorts mapping keys by default (sort_keys=True).
    return yaml.dump(value, Dumper=_SafeDumper, **kwargs)


def json_escape(value):
    # json.dumps, then strip every leading/trailing double quote (not just one
    # pair) -- a string ending in '"' therefore loses its escaped quote too.
    return json.dumps(value).strip('"')


def jsonpath_query(value, query):
    found = [match.value for match in jsonpath_rw.parse(query).find(value)]
    return found if found else None


def to_complex(value):
    # Plain json.dumps: default separators (", ", ": "), keys unsorted.
    return json.dumps(value)


def use_none(value):
    return NONE_MAGIC_VALUE if value is None else value


# --------------------------------------------------------------------------
# regex
# --------------------------------------------------------------------------


def _flags(ignorecase):
    return re.IGNORECASE if ignorecase else 0


def _as_text(value):
    return value if isinstance(value, str) else str(value)


def regex_match(value, pattern, ignorecase=False):
    # Anchored at the start only (re.match), not a full match.
    return re.match(pattern, _as_text(value), _flags(ignorecase)) is not None


def regex_replace(value, pattern, replacement, ignorecase=False):
    # Python replacement syntax: \1, \g<name>.
    return re.compile(pattern, _flags(ignorecase)).sub(replacement, _as_text(value))


def regex_search(value, pattern, ignorecase=False):
    return re.search(pattern, _as_text(value), _flags(ignorecase)) is not None


def regex_substring(value, pattern, result_index=0, ignorecase=False):
    # re.findall semantics: with one group the group text, with several a
    # tuple of groups; an out-of-range index raises IndexError.
    return re.findall(pattern, _as_text(value), _flags(ignorecase))[result_index]


# --------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------


def to_human_time_from_seconds(seconds):
    if not isinstance(seconds, (int, float)):
        raise AssertionError()  # st2 uses a bare assert here
    return _human_time(seconds)


def _human_time(seconds):
    if seconds is None:
        return None
    if seconds == 0:
        return "0s"
    if seconds < 1:
        # st2 labels sub-second values with "μs" but prints the value as given.
        return "%s\u03bcs" % seconds
    if isinstance(seconds, float):
        seconds = int(round(seconds))

    # Same calendar arithmetic as st2: add the delta to 0001-01-01 and read the
    # fields back. Days therefore come from the day-of-month (a span of 40
    # days reads as 9d...), years from the year field.
    moment = datetime.datetime(1, 1, 1) + datetime.timedelta(seconds=seconds)
    parts = [
        moment.year - 1,
        moment.day - 1,
        moment.hour,
        moment.minute,
        moment.second,
    ]
    first = next((i for i, part in enumerate(parts) if part), None)
    if first is None:
        return "0s"
    parts = parts[first:]
    units = ["y", "d", "h", "m", "s"][-len(parts):]
    return "".join("%s%s" % (part, unit) for part, unit in zip(parts, units))


# --------------------------------------------------------------------------
# version (semver 3 API: semver.Version)
# --------------------------------------------------------------------------


def version_compare(value, pattern):
    return semver.Version.parse(value).compare(pattern)


def version_more_than(value, pattern):
    return version_compare(value, pattern) == 1


def version_less_than(value, pattern):
    return version_compare(value, pattern) == -1


def version_equal(value, pattern):
    return version_compare(value, pattern) == 0


def version_match(value, pattern):
    return semver.Version.parse(value).match(pattern)


def version_bump_major(value):
    return str(semver.Version.parse(value).bump_major())


def version_bump_minor(value):
    return str(semver.Version.parse(value).bump_minor())


def version_bump_patch(value):
    return str(semver.Version.parse(value).bump_patch())


def version_strip_patch(value):
    parsed = semver.Version.parse(value)
    return "%d.%d" % (parsed.major, parsed.minor)


# --------------------------------------------------------------------------
# path
# --------------------------------------------------------------------------


def basename(path):
    return os.path.basename(path)


def dirname(path):
    return os.path.dirname(path)


# --------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------


def get_filters():
    return {
        "from_json_string": from_json_string,
        "from_yaml_string": from_yaml_string,
        "json_escape": json_escape,
        "jsonpath_query": jsonpath_query,
        "to_complex": to_complex,
        "to_json_string": to_json_string,
        "to_yaml_string": to_yaml_string,
        "regex_match": regex_match,
        "regex_replace": regex_replace,
        "regex_search": regex_search,
        "regex_substring": regex_substring,
        "to_human_time_from_seconds": to_human_time_from_seconds,
        "version_compare": version_compare,
        "version_more_than": version_more_than,
        "version_less_than": version_less_than,
        "version_equal": version_equal,
        "version_match": version_match,
        "version_bump_major": version_bump_major,
        "version_bump_minor": version_bump_minor,
        "version_bump_patch": version_bump_patch,
        "version_strip_patch": version_strip_patch,
        "use_none": use_none,
        "basename": basename,
        "dirname": dirname,
    }


def _test_in(item, container):
    return item in container


def get_tests():
    # st2 replaces Jinja's own `in` test with a plain membership check.
    return {"in": _test_in}


def install(env):
    """Register the filters and tests on a jinja2.Environment, like st2."""
    env.filters.update(get_filters())
    env.tests.update(get_tests())
    return env
