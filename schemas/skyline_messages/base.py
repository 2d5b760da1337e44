"""The Skyline base message and the JSON Schema fragments every family shares."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import fastjsonschema
import jsonschema
from fedora_messaging import message

SCHEMA = "http://json-schema.org/draft-07/schema#"

#: Architectures a task can be built for. Koji's names; "noarch" is built on any host.
ARCHES = ("noarch", "x86_64", "i686", "aarch64", "ppc64le", "s390x", "armv7hl", "riscv64")

# jsonschema matches patterns with Python's `re`, where `$` also matches before a trailing
# newline: "builder1\n" would pass `^[a-z0-9-]+$`. END closes that and is still valid ECMA 262.
END = r"(?!\n)$"
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}" + END}
ARCH = {"type": "string", "enum": list(ARCHES)}
# Host names end up in routing keys, queue names and broker user names: keep them plain.
HOST = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}" + END}
USER = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}" + END}
ID = {"type": "integer", "minimum": 1}
UUID = {
    "type": "string",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}" + END,
}
TIMESTAMP = {"type": "string", "format": "date-time", "minLength": 20, "maxLength": 40}
# rpm itself refuses ".." anywhere in a name, version or release; refusing it here keeps an
# N-V-R safe to use as packages/<name>/<version>/<release> path components.
NVR = {
    "type": "string",
    "pattern": r"^(?!.*\.\.)[^/\s]+-[^-/\s]+-[^-/\s]+" + END,
    "maxLength": 255,
}
# A bare file name: no directory part, no leading dot, so it can never climb out of a folder.
FILE_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_+][A-Za-z0-9._+~^-]{0,254}" + END}
SIGNATURE = {"type": "string", "pattern": "^[A-Za-z0-9+/]{86}==" + END}  # base64 Ed25519
FILE_ENTRY = {
    "type": "object",
    "required": ["name", "size", "sha256"],
    "properties": {"name": FILE_NAME, "size": {"type": "integer", "minimum": 0}, "sha256": SHA256},
    "additionalProperties": False,
}
FILES = {"type": "array", "items": FILE_ENTRY, "maxItems": 10000}
TASK_STATUS = {"type": "string", "enum": ["succeeded", "failed"]}


def body_schema(
    description: str, required: list[str], properties: dict[str, Any]
) -> dict[str, Any]:
    """A closed object schema: unknown fields are errors, so typos never pass silently."""
    return {
        "$schema": SCHEMA,
        "description": description,
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def package_of(file_or_nvr: str) -> str:
    """The package name in `name-version-release[.arch.rpm]`, or the input if it has no NVR."""
    stem = file_or_nvr.removesuffix(".rpm")
    stem = stem.removesuffix(".src")
    parts = stem.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else file_or_nvr


_VALIDATORS: dict[int, tuple[dict[str, Any], Any, Any]] = {}


def _validator(schema: dict[str, Any]) -> tuple[Any, Any]:
    """Per schema object (schemas are class attributes, never mutated): a fastjsonschema
    function that accepts or refuses, and jsonschema's validator that explains a refusal."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)  # once per schema, not once per message
        # Formats off: jsonschema checks none by default, and a schema-valid but unreadable
        # time must reach the handler (which drops it with a clear log line).
        fast = fastjsonschema.compile(schema, use_formats=False)
        cached = _VALIDATORS[id(schema)] = (schema, fast, cls(schema))
    return cached[1], cached[2]


class SkylineMessage(message.Message):
    """Base for every Skyline message: identifies the app for notification tools."""

    def validate(self) -> None:
        """The same checks as fedora-messaging's `Message.validate`, with compiled schemas.

        `jsonschema.validate` re-checks the schema itself on every call, and even a reused
        jsonschema validator costs ~200 us a message; fastjsonschema's generated code accepts a
        valid message in a few microseconds. Only a refused message goes through jsonschema,
        so errors keep jsonschema's type and wording.
        """
        for instance, schemas in (
            (self._headers, (self.headers_schema, message.Message.headers_schema)),
            (self.body, (self.body_schema, message.Message.body_schema)),
        ):
            # A class that keeps fedora-messaging's headers schema has it twice: check it once.
            for schema in {id(schema): schema for schema in schemas}.values():
                fast, slow = _validator(schema)
                try:
                    fast(instance)
                    continue
                except fastjsonschema.JsonSchemaException:
                    pass
                error = jsonschema.exceptions.best_match(slow.iter_errors(instance))
                if error is not None:
                    raise error

    @property
    def app_name(self) -> str:
        return "Skyline"

    @property
    def app_icon(self) -> str | None:
        return None

    @property
    def url(self) -> str | None:
        return None

    @property
    def summary(self) -> str:  # pragma: no cover - every leaf class overrides it
        return self.topic

    def __str__(self) -> str:
        details = json.dumps(self.body, sort_keys=True, indent=2)
        return f"{self.summary}\n\n{details}\n"


class Signed(SkylineMessage):
    """A message its sender signed (services/common/signing.py): `signature` is over the rest."""

    @property
    def signed_at(self) -> str:
        return str(self.body["signed_at"])

    @property
    def signature(self) -> str:
        return str(self.body["signature"])


class SourceRpm(SkylineMessage):
    """A message that names a source RPM by URL and digest (a request, a lease)."""

    @property
    def srpm_url(self) -> str:
        return str(self.body["srpm_url"])

    @property
    def srpm_sha256(self) -> str:
        return str(self.body["srpm_sha256"])


class PartyTopic(message.Message):
    """Published on `<topic>.<party>`: the routing key names the host or owner the message is
    from (or, for leases, for), so the broker's topic permissions can hold each party to its
    own routing keys, and a consumer can tell who may have sent it."""

    #: What a consumer of every party's messages binds ("#" where a party name has dots).
    binding: ClassVar[str]

    @classmethod
    def topic_for(cls, party: str) -> str:
        return f"{cls.topic}.{party}"

    @property
    def party(self) -> str | None:
        """The host or owner named by the routing key, or None if it names none."""
        base = type(self).topic + "."
        return self.topic[len(base) :] if self.topic.startswith(base) else None
