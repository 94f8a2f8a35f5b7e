"""Constants of the report tests' tiny run (the ``tiny_run`` fixture is in conftest.py)."""

HOOK = "blocks.1.hook_resid_post"
