"""How many examples a hypothesis property test runs.

The default run (`make test`, CI) runs `default` examples; `pytest
--hypothesis-profile=thorough` (the profile is registered in tests/conftest.py) runs
`thorough`, the count the test was written with. Decorators read the profile at import,
after pytest has loaded it.
"""

from __future__ import annotations

from hypothesis import settings

THOROUGH = "thorough"


def examples(default: int, thorough: int) -> int:
    """`thorough` under the thorough profile, else `default`."""
    return thorough if settings.get_current_profile_name() == THOROUGH else default
