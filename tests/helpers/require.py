"""`require_or_skip`: a missing system requirement skips the test, or fails it when SYNTHSCALE_REQUIRE
names it (CI: .ci/run), so that CI cannot pass with a whole group of tests skipped."""
import os

import pytest

REQUIRE_VAR = "SYNTHSCALE_REQUIRE"


def required() -> set[str]:
    """The requirements SYNTHSCALE_REQUIRE names (comma-separated, e.g. `slurm,wordnet`)."""
    return {name.strip() for name in os.environ.get(REQUIRE_VAR, "").split(",") if name.strip()}


def require_or_skip(name: str, reason: str) -> None:
    """Skip the calling test (or fixture) because `name` is missing here, saying why; fail instead when
    SYNTHSCALE_REQUIRE names it, so that CI cannot pass with a whole group of tests skipped."""
    if name in required():
        pytest.fail(f"{REQUIRE_VAR} requires {name!r}, which is missing: {reason}", pytrace=False)
    pytest.skip(reason)
