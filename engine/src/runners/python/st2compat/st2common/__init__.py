"""squall's stand-in for StackStorm's st2common: only what actions import."""
