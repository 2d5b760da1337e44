"""RPM-aware comparison of two hosts' result sets for the same task (issue 6).

Equal result-set digests are the fast path. Otherwise each RPM is reduced to plain facts
(`read_rpm_facts`, the only I/O here) and `compare_results` compares them, ignoring only what
honest rebuilds of the same SRPM vary in: build time, build host, cookie, signatures, header and
payload digests, and (clamped) mtimes. File digests are never ignored: Koji's 'S5TN' ignore set
hides a tampered noarch file (shared notes, build-and-limits.md §2-3). Every header tag not
handled or ignored below is still compared, so a tag we did not think of counts as a difference
rather than slipping through.

File digests are recomputed from the payload while reading, so a header that lies about its
payload (which `rpmkeys -K` does not notice) is refused instead of compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import rpm

from services.common.rpmfiles import RpmCheckError

# What honest rebuilds of the same SRPM in the same chroot vary in; never file contents.
_IGNORED_TAG_NAMES = (
    "BUILDTIME",
    "BUILDHOST",
    "COOKIE",
    "FILEMTIMES",  # clamped to SOURCE_DATE_EPOCH anyway; contents are compared by digest
    # signatures and digests over the header or payload bytes (they change with any tag above)
    "SIGSIZE",
    "LONGSIGSIZE",
    "SIGMD5",
    "SHA1HEADER",
    "SHA256HEADER",
    "SHA3_256HEADER",
    "RSAHEADER",
    "DSAHEADER",
    "SIGPGP",
    "SIGGPG",
    "OPENPGP",
    "RESERVEDSPACE",
    "PAYLOADDIGEST",
    "PAYLOADDIGESTALT",
    "PAYLOADDIGESTALGO",
    "PAYLOADSHA256",
    "PAYLOADSHA256ALT",
    "PAYLOADSHA3_256",
    "PAYLOADSHA3_256ALT",
    "FILESIGNATURES",
    "FILESIGNATURELENGTH",
    "VERITYSIGNATURES",
    "VERITYSIGNATUREALGO",
)

# Dependency kinds compared as sets of "name op version [flags]".
DEP_KINDS = (
    "require",
    "provide",
    "conflict",
    "obsolete",
    "recommend",
    "suggest",
    "supplement",
    "enhance",
    "order",
)

# Per-file tags turned into FileFacts (and so left out of the generic tag comparison).
_FILE_TAG_NAMES = (
    "BASENAMES",
    "DIRNAMES",
    "DIRINDEXES",
    "OLDFILENAMES",
    "FILEDIGESTS",
    "FILEMODES",
    "FILEUSERNAME",
    "FILEGROUPNAME",
    "FILESIZES",
    "LONGFILESIZES",
    "FILELINKTOS",
    "FILEFLAGS",
    "FILERDEVS",
    "FILEVERIFYFLAGS",
    "FILECAPS",
)


def _tags(names: Iterable[str]) -> frozenset[int]:
    # Tags this rpm version does not know cannot appear in its headers.
    return frozenset(
        int(tag) for n in names if (tag := getattr(rpm, f"RPMTAG_{n}", None)) is not None
    )


_IGNORED_TAGS = _tags(_IGNORED_TAG_NAMES)
_STRUCTURED_TAGS = _tags(
    [
        *_FILE_TAG_NAMES,
        *(f"{k.upper()}{p}" for k in DEP_KINDS for p in ("NAME", "FLAGS", "VERSION")),
    ]
)

# RPMTAG_FILEDIGESTALGO values (PGPHASHALGO_*) rpm can record.
_DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}

_CHUNK = 1024 * 1024

# Bounds on evidence, so a flag's evidence stays readable and small whatever the input.
DEFAULT_MAX_DIFFERENCES = 50
_MAX_VALUE_CHARS = 200


@dataclass(frozen=True)
class FileFacts:
    digest: str  # recomputed from the payload; "" for non-regular files and ghosts
    mode: int
    user: str
    group: str
    size: int
    link: str  # symlink target, "" otherwise
    flags: int  # %config, %doc, %ghost... (RPMFILE_*)
    rdev: int
    verify: int  # %verify flags
    caps: str


@dataclass(frozen=True)
class RpmFacts:
    """What of one RPM is compared, as plain data."""

    nevra: str
    files: Mapping[str, FileFacts]  # by path
    deps: Mapping[str, frozenset[str]]  # DEP_KINDS -> entries
    tags: Mapping[str, str]  # every other compared header tag, rendered as text


@dataclass(frozen=True)
class ResultSet:
    """One host's result for a task: its result-set digest and the facts of its RPMs."""

    digest: str
    rpms: Sequence[RpmFacts] = ()


@dataclass(frozen=True)
class Difference:
    rpm: str  # NEVRA, or "result set" for set-level differences
    what: str  # e.g. "file /usr/bin/x: digest", "requires", "header PREIN"
    a: str  # value on side a ("" when absent), bounded
    b: str

    def __str__(self) -> str:
        return f"{self.rpm}: {self.what}: a={self.a!r} b={self.b!r}"


@dataclass(frozen=True)
class Comparison:
    verdict: Literal["agree", "differ"]
    identical: bool  # agreed on the fast path (equal result-set digests)
    differences: tuple[Difference, ...] = ()  # at most max_differences
    omitted: int = 0  # differences found beyond the bound

    @property
    def agree(self) -> bool:
        return self.verdict == "agree"

    def evidence(self) -> list[str]:
        """Human-readable lines for a fraud flag's evidence."""
        lines = [str(d) for d in self.differences]
        if self.omitted:
            lines.append(f"... and {self.omitted} more differences")
        return lines


def _bound(value: str) -> str:
    if len(value) <= _MAX_VALUE_CHARS:
        return value
    return value[: _MAX_VALUE_CHARS - 3] + "..."


def _render(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(repr(_render(v)) for v in value) + "]"
    return str(value)


def _dep_entries(hdr: rpm.hdr, kind: str) -> frozenset[str]:
    k = kind.upper()
    names = hdr[getattr(rpm, f"RPMTAG_{k}NAME")] or []
    flags = hdr[getattr(rpm, f"RPMTAG_{k}FLAGS")] or []
    versions = hdr[getattr(rpm, f"RPMTAG_{k}VERSION")] or []
    if not (len(names) == len(flags) == len(versions)):
        raise RpmCheckError(f"{kind} dependency arrays have different lengths")
    out = set()
    for name, fl, ver in zip(names, flags, versions, strict=True):
        op = ""
        if fl & rpm.RPMSENSE_LESS:
            op += "<"
        if fl & rpm.RPMSENSE_GREATER:
            op += ">"
        if fl & rpm.RPMSENSE_EQUAL:
            op += "="
        # Remaining flags (pre/post, rpmlib, ...) matter too: keep them, in hex.
        extra = fl & ~(rpm.RPMSENSE_LESS | rpm.RPMSENSE_GREATER | rpm.RPMSENSE_EQUAL)
        text = f"{_render(name)} {op} {_render(ver)}" if op else _render(name)
        out.add(f"{text} [0x{extra:x}]" if extra else text)
    return frozenset(out)


def _payload_digests(hdr: rpm.hdr, f: object, path: Path | str) -> dict[str, str]:
    """Digest of every file with content in the payload, checked against the header."""
    algo = _DIGEST_ALGOS.get(int(hdr[rpm.RPMTAG_FILEDIGESTALGO] or 1))
    if algo is None:
        raise RpmCheckError(f"{path}: unknown file digest algorithm")
    fi = rpm.files(hdr)
    digests: dict[str, str] = {}
    try:
        # No compressor tag means gzip to rpm itself (rpm2cpio); gzdio also reads plain data.
        compressor = _render(hdr[rpm.RPMTAG_PAYLOADCOMPRESSOR]) or "gzip"
        payload = rpm.fd.open(f, flags=compressor)
        archive = fi.archive(payload)
        for entry in archive:
            if not archive.hascontent():
                continue
            h = hashlib.new(algo)
            while chunk := archive.read(_CHUNK):  # bounded memory for large files
                h.update(chunk)
            digests[entry.name] = h.hexdigest()
    except (rpm.error, OSError) as exc:
        raise RpmCheckError(f"{path}: unreadable payload: {exc}") from exc
    # Hard-linked files carry their content once, with one link of the set.
    by_inode = {e.inode: digests[e.name] for e in fi if e.name in digests}
    for entry in fi:
        is_regular = (entry.mode & 0o170000) == 0o100000
        if not is_regular or entry.fflags & rpm.RPMFILE_GHOST:
            continue
        actual = digests.get(entry.name, by_inode.get(entry.inode))
        if actual is None or actual != (entry.digest or ""):
            raise RpmCheckError(f"{path}: header digest of {entry.name} does not match payload")
        digests[entry.name] = actual
    return digests


def read_rpm_facts(path: Path | str) -> RpmFacts:
    """Read the facts compared of one RPM; a malformed or inconsistent file raises RpmCheckError.

    Callers should have checked header/payload digests (`rpmfiles.check_rpm_digests`) already.
    """
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)  # results are unsigned; digests are still verified
    with open(path, "rb") as f:
        try:
            hdr = ts.hdrFromFdno(f.fileno())
        except rpm.error as exc:
            raise RpmCheckError(f"{path}: {exc}") from exc
        digests = _payload_digests(hdr, f, path)
    arch = "src" if hdr.isSource() else _render(hdr[rpm.RPMTAG_ARCH])
    epoch = hdr[rpm.RPMTAG_EPOCH]
    nevra = (
        f"{_render(hdr[rpm.RPMTAG_NAME])}-{'' if epoch is None else f'{epoch}:'}"
        f"{_render(hdr[rpm.RPMTAG_VERSION])}-{_render(hdr[rpm.RPMTAG_RELEASE])}.{arch}"
    )
    files = {
        e.name: FileFacts(
            digest=digests.get(e.name, ""),
            mode=int(e.mode),
            user=e.user or "",
            group=e.group or "",
            size=int(e.size),
            link=e.linkto or "",
            flags=int(e.fflags),
            rdev=int(e.rdev),
            verify=int(e.vflags),
            caps=e.caps or "",
        )
        for e in rpm.files(hdr)
    }
    tags = {
        rpm.tagnames.get(t, str(t)): _render(hdr[t])
        for t in hdr.keys()
        if t not in _IGNORED_TAGS and t not in _STRUCTURED_TAGS
    }
    return RpmFacts(
        nevra=nevra,
        files=MappingProxyType(files),
        deps=MappingProxyType({k: _dep_entries(hdr, k) for k in DEP_KINDS}),
        tags=MappingProxyType(tags),
    )


@dataclass
class _Collector:
    limit: int
    found: list[Difference] = field(default_factory=list)
    omitted: int = 0

    def add(self, rpm_name: str, what: str, a: object, b: object) -> None:
        if len(self.found) < self.limit:
            self.found.append(Difference(rpm_name, what, _bound(str(a)), _bound(str(b))))
        else:
            self.omitted += 1


def _by_nevra(rpms: Sequence[RpmFacts], side: str, out: _Collector) -> dict[str, RpmFacts]:
    seen: dict[str, RpmFacts] = {}
    for r in rpms:
        if r.nevra in seen:
            out.add("result set", f"duplicate RPM on side {side}", r.nevra, "")
        seen[r.nevra] = r
    return seen


def _compare_rpm(a: RpmFacts, b: RpmFacts, out: _Collector) -> None:
    n = a.nevra
    for path in sorted(a.files.keys() | b.files.keys()):
        fa, fb = a.files.get(path), b.files.get(path)
        if fa is None or fb is None:
            out.add(n, f"file {path}", "present" if fa else "absent", "present" if fb else "absent")
            continue
        for name in FileFacts.__dataclass_fields__:
            va, vb = getattr(fa, name), getattr(fb, name)
            if va != vb:
                if name == "mode":
                    va, vb = oct(va), oct(vb)
                out.add(n, f"file {path}: {name}", va, vb)
    for kind in DEP_KINDS:
        da, db = a.deps.get(kind, frozenset()), b.deps.get(kind, frozenset())
        for entry in sorted(da - db):
            out.add(n, f"{kind}s", entry, "")
        for entry in sorted(db - da):
            out.add(n, f"{kind}s", "", entry)
    for tag in sorted(a.tags.keys() | b.tags.keys()):
        ta, tb = a.tags.get(tag), b.tags.get(tag)
        if ta != tb:
            out.add(n, f"header {tag}", ta or "", tb or "")


def compare_results(
    a: ResultSet, b: ResultSet, *, max_differences: int = DEFAULT_MAX_DIFFERENCES
) -> Comparison:
    """Do two results for the same task agree? Pure; `rpms` is read only if digests differ."""
    if a.digest == b.digest:
        return Comparison("agree", identical=True)
    out = _Collector(limit=max_differences)
    ra, rb = _by_nevra(a.rpms, "a", out), _by_nevra(b.rpms, "b", out)
    for nevra in sorted(ra.keys() | rb.keys()):
        if nevra not in rb:
            out.add("result set", "RPM", nevra, "")
        elif nevra not in ra:
            out.add("result set", "RPM", "", nevra)
        else:
            _compare_rpm(ra[nevra], rb[nevra], out)
    if not a.rpms and not b.rpms:
        # Different digests yet no RPM facts: nothing shows they are equivalent.
        out.add("result set", "digest", a.digest, b.digest)
    if out.found or out.omitted:
        return Comparison("differ", False, tuple(out.found), out.omitted)
    return Comparison("agree", identical=False)
