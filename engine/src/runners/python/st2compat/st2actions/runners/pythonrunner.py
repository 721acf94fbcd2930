"""The import path older StackStorm packs use for the action base class."""

from st2common.runners.base_action import Action  # noqa: F401
