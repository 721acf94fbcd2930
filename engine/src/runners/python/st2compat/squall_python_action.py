"""Runs one StackStorm python action for squall's python-script runner.

Reads what to run from stdin (JSON: entry_point, parameters, config, pack,
service socket, result file, working directory, environment), so parameters
never appear on a command line. Writes the outcome as JSON to the result
file: the action's return value, or the (succeeded, result) tuple StackStorm
actions may return.

squall may start this script before there is a run for it (a warm
interpreter): it imports what every run needs, then waits on stdin. It exits
quietly when stdin closes without a run, or after SQUALL_IDLE_EXIT seconds
without one.
"""

import gc
import importlib.util
import inspect
import json
import logging
import os
import select
import socket
import sys
import traceback

SYSTEM_SCOPE = "system"
USER_SCOPE = "user"


class ActionService(object):
    """Datastore values, through squall (StackStorm's ActionService API)."""

    def __init__(self, path, pack, class_name):
        self._path = path
        self._prefix = "%s.%s:" % (pack, class_name)
        self._sock = None
        self._reader = None

    def _call(self, request):
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(self._path)
            self._reader = self._sock.makefile("r", encoding="utf-8")
        self._sock.sendall((json.dumps(request) + "\n").encode("utf-8"))
        answer = json.loads(self._reader.readline())
        if not answer.get("ok"):
            raise RuntimeError("datastore: %s" % answer.get("error"))
        return answer.get("value")

    def _name(self, name, local):
        return self._prefix + name if local else name

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self._call(
            {"op": "get", "name": self._name(name, local), "scope": scope, "decrypt": decrypt}
        )

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        self._call(
            {
                "op": "set",
                "name": self._name(name, local),
                "value": value,
                "ttl": ttl,
                "scope": scope,
                "secret": bool(encrypt),
            }
        )
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self._call({"op": "delete", "name": self._name(name, local), "scope": scope})

    def list_values(self, local=True, prefix=None, scope=SYSTEM_SCOPE):
        full = self._prefix + (prefix or "") if local else (prefix or "")
        return self._call({"op": "list", "prefix": full, "scope": scope})


def write_result(path, succeeded, result):
    with open(path, "w") as out:
        json.dump({"succeeded": succeeded, "result": result}, out, default=str)


def read_spec():
    """The run to do, or None when there will be none."""
    idle = os.environ.get("SQUALL_IDLE_EXIT")
    if idle:
        ready, _, _ = select.select([sys.stdin], [], [], float(idle))
        if not ready:
            return None
    data = sys.stdin.buffer.read()
    sys.stdin.close()
    if not data.strip():
        return None
    return json.loads(data.decode("utf-8"))


def main():
    # What every run needs, imported before the run is known.
    from st2common.runners.base_action import Action

    # Nothing loaded so far is garbage: leaving it out of collections makes
    # the interpreter's exit about 10 ms faster (the run's own objects are
    # still collected and finalized as usual). Python 3.7 and later.
    if hasattr(gc, "freeze"):
        gc.freeze()
    spec = read_spec()
    if spec is None:
        return 0
    os.environ.update(spec.get("env") or {})
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    result_file = spec["result_file"]
    logging.basicConfig(
        level=getattr(logging, str(spec.get("log_level", "debug")).upper(), logging.DEBUG),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [-] %(message)s",
    )
    entry_point = spec["entry_point"]
    actions_dir = os.path.dirname(entry_point)
    for path in (os.path.join(actions_dir, "lib"), actions_dir):
        if path not in sys.path:
            sys.path.insert(0, path)

    module_spec = importlib.util.spec_from_file_location("squall_action", entry_point)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, Action) and c is not Action and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        message = "%s must define exactly one Action subclass, found %d" % (
            entry_point,
            len(classes),
        )
        sys.stderr.write(message + "\n")
        write_result(result_file, False, {"error": message})
        return 1
    service = ActionService(spec["service_socket"], spec["pack"], classes[0].__name__)
    action = classes[0](config=spec.get("config") or {}, action_service=service)
    try:
        result = action.run(**spec["parameters"])
    except Exception:
        text = traceback.format_exc()
        sys.stderr.write(text)
        write_result(result_file, False, {"error": text.strip().splitlines()[-1], "traceback": text})
        return 1
    succeeded = True
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        succeeded, result = result
    write_result(result_file, succeeded, result)
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
