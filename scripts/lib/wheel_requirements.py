"""Requirements of a directory of wheels, evaluated for the image's interpreter.

Used by scripts/build-server-image.sh to fill a wheelhouse for another Python
than the host's. `pip download --python-version` picks wheels for the target
but (pip 23) evaluates environment markers against the host interpreter, so a
requirement such as redis's `async-timeout; python_full_version < "3.11.3"` is
skipped on the host's 3.11.7 and missing in bookworm's 3.11.2. This script
evaluates the markers itself.

    wheel_requirements.py local DIR
        the Requires-Dist of DIR's wheels that name no wheel of DIR (what the
        codemode packages need from the index)
    wheel_requirements.py missing PYVER DIR...
        the requirements of the wheels in DIRs, markers evaluated for Python
        PYVER on Linux, that no wheel in DIRs satisfies (empty = closed)
"""

from __future__ import annotations

import email.parser
import pathlib
import platform
import re
import sys
import zipfile

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name
from pip._vendor.packaging.version import Version


def _metadata(wheel: pathlib.Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))


def _wheels(dirs: list[str]) -> dict[str, tuple[Version, email.message.Message]]:
    found: dict[str, tuple[Version, email.message.Message]] = {}
    for directory in dirs:
        for wheel in sorted(pathlib.Path(directory).glob("*.whl")):
            meta = _metadata(wheel)
            found[canonicalize_name(meta["Name"])] = (Version(meta["Version"]), meta)
    return found


def _environment(pyver: str) -> dict[str, str]:
    major_minor = ".".join(pyver.split(".")[:2])
    return {
        "python_version": major_minor,
        "python_full_version": pyver,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": pyver,
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": platform.machine(),
        "extra": "",
    }


def local(directory: str) -> list[str]:
    wheels = _wheels([directory])
    lines = []
    for _version, meta in wheels.values():
        for line in meta.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if canonicalize_name(req.name) not in wheels and not (req.marker and "extra" in str(req.marker)):
                lines.append(line)
    return lines


def missing(pyver: str, dirs: list[str]) -> list[str]:
    env = _environment(pyver)
    wheels = _wheels(dirs)
    wanted = []
    for _version, meta in wheels.values():
        for line in meta.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            have = wheels.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(have[0], prereleases=True):
                spec = f"{req.name}{req.specifier}"
                if spec not in wanted:
                    wanted.append(spec)
    return wanted


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "local":
        print("\n".join(local(argv[1])))
        return 0
    if len(argv) >= 3 and argv[0] == "missing":
        print("\n".join(missing(argv[1], argv[2:])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
