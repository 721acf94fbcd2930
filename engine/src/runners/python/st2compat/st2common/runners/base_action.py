"""StackStorm's python action API, as squall's python-script runner offers it.

An action subclasses ``Action`` and implements ``run(**parameters)``. It gets
``self.config`` (the pack's configuration), ``self.logger`` (to stderr) and
``self.action_service`` (datastore values, backed by squall's datastore).
"""

import logging


class Action(object):
    def __init__(self, config=None, action_service=None):
        self.config = config or {}
        self.action_service = action_service
        self.logger = logging.getLogger(
            "%s.%s" % (self.__class__.__module__, self.__class__.__name__)
        )

    def run(self, **kwargs):
        raise NotImplementedError("the action does not implement run()")
