"""The facts of an RPM that the verifier compares (issue 6), read from the file (I/O) and
carried as JSON between the collector, which holds the uploads, and the verifier.

`read_rpm_facts` reduces one RPM to plain data, leaving out only what honest rebuilds of the
same SRPM vary in: build time, build host, cookie, signatures, header and payload digests,
and (clamped) mtimes. File digests are never left out: Koji's 'S5TN' ignore set hides a
tampered noarch file (shared notes, build-and-limits.md §2-3). Every header tag not handled
or ignored below is kept, so a tag we did not think of counts as a difference rather than
slipping through. File digests are recomputed from the payload while reading, so a header
that lies about its payload (which `rpmkeys -K` does not notice) is refused.

`comparison_key` is the SHA-256 of the canonical JSON of exactly what
`services.verifier.compare.compare_results` compares: two result sets agree there if and only
if their keys are equal, so the verifier can group results by key.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

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


_FILE_TYPES: dict[str, type] = typing.get_type_hints(FileFacts)
_FILE_FIELDS = tuple(FileFacts.__dataclass_fields__)


def facts_to_json(facts: RpmFacts) -> dict[str, Any]:
    """Plain JSON data; `facts_from_json` reads it back to equal facts."""
    return {
        "nevra": facts.nevra,
        "files": {
            path: {name: getattr(f, name) for name in _FILE_FIELDS}
            for path, f in sorted(facts.files.items())
        },
        "deps": {kind: sorted(entries) for kind, entries in sorted(facts.deps.items())},
        "tags": dict(sorted(facts.tags.items())),
    }


def _field(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{what}: expected {kind.__name__}")
    return value


def facts_from_json(data: Any) -> RpmFacts:
    """Facts from `facts_to_json`'s form; ValueError when the data has another shape."""
    if not isinstance(data, dict):
        raise ValueError("RPM facts must be an object")
    nevra = _field(data.get("nevra"), str, "nevra")
    files_in = _field(data.get("files"), dict, "files")
    files = {}
    for path, entry in files_in.items():
        _field(entry, dict, f"file {path}")
        if set(entry) != set(_FILE_FIELDS):
            raise ValueError(f"file {path}: expected the fields {', '.join(_FILE_FIELDS)}")
        files[path] = FileFacts(
            **{
                name: _field(entry[name], _FILE_TYPES[name], f"file {path}: {name}")
                for name in _FILE_FIELDS
            }
        )
    deps = {}
    for kind, entries in _field(data.get("deps"), dict, "deps").items():
        if kind not in DEP_KINDS:
            raise ValueError(f"unknown dependency kind {kind!r}")
        _field(entries, list, kind)
        deps[kind] = frozenset(_field(e, str, kind) for e in entries)
    tags = {tag: _field(v, str, tag) for tag, v in _field(data.get("tags"), dict, "tags").items()}
    return RpmFacts(
        nevra=nevra,
        files=MappingProxyType(files),
        deps=MappingProxyType(deps),
        tags=MappingProxyType(tags),
    )


def comparison_key(rpms: Sequence[RpmFacts]) -> str:
    """SHA-256 (hex) over what compare_results compares of a result set's RPMs.

    Order does not matter (RPMs are matched by N-E-V-R-A, files by path, dependencies are
    sets); a missing dependency kind equals an empty one, as in the comparison.
    """
    nevras = [r.nevra for r in rpms]
    if len(set(nevras)) != len(nevras):
        # compare_results reports duplicates as a difference even between equal sets.
        raise ValueError("a result set with the same RPM twice has no comparison key")
    canonical = []
    for facts in sorted(rpms, key=lambda r: r.nevra):
        data = facts_to_json(facts)
        data["deps"] = {kind: v for kind, v in data["deps"].items() if v}
        canonical.append(data)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()
