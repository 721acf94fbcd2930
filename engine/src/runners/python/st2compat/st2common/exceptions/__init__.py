"""squall's stand-in for st2common.exceptions.

Packs import StackStorm's exception classes to raise or catch them. The base
classes exist by name; any other `...Exception`/`...Error` name imported from
this package or its submodules is created on first use as a subclass of
StackStormBaseException, so `from st2common.exceptions.action import X` works
for whichever X a pack names.
"""


class StackStormBaseException(Exception):
    """The base of StackStorm's exceptions."""


class StackStormPluginException(StackStormBaseException):
    """Raised by plugins (actions, sensors)."""


_created = {}


def compat_exception(module, name):
    if not (name.endswith("Exception") or name.endswith("Error")):
        raise AttributeError("module %r has no attribute %r" % (module, name))
    key = (module, name)
    if key not in _created:
        _created[key] = type(name, (StackStormBaseException,), {"__module__": module})
    return _created[key]


def __getattr__(name):
    return compat_exception(__name__, name)
