"""squall's stand-in for st2common.exceptions.actionrunner (see the package docstring)."""

from st2common.exceptions import StackStormBaseException, compat_exception  # noqa: F401


def __getattr__(name):
    return compat_exception(__name__, name)
