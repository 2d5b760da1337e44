"""A cheating builder for the tests: the real agent, with every build tampered.

Run as `python tests/cheat_builder.py [builder options]`. It enrols, heartbeats, signs and
uploads exactly as the shipped agent does; only what it builds differs (tampering.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tampering import tampered_srpm

from services.builder import __main__ as builder_main
from services.builder import rpmbuild

_honest_build = rpmbuild.build


def _tampered_build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
    return _honest_build(tampered_srpm(srpm, srpm.parent / "tampered"), **kwargs)


if __name__ == "__main__":
    rpmbuild.build = _tampered_build
    builder_main.main()
