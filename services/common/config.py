"""One TOML file configures every process; `SKYLINE_*` environment variables override it.

Top-level keys are shared (broker, database, logging); each service reads its own table.
An unknown key is an error, so a typo never silently falls back to a default.
Environment overrides: `SKYLINE_AMQP_URL`, `SKYLINE_DATABASE_URL`, and
`SKYLINE_<SECTION>_<KEY>` for a service's key (lists are comma-separated).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import platform
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from services.registry.qos import QosConfig
from services.registry.standing import StandingConfig
from services.registry.trust import TrustConfig
from services.verifier.policy import PolicyConfig
from services.verifier.throttle import ThrottleConfig

from .errors import ConfigError


def _native_arches() -> list[str]:
    machine = platform.machine()
    return ["noarch", {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)]


@dataclasses.dataclass(frozen=True)
class BusConfig:
    """Plumbing every service shares: consumers, batched handling, the outbox relay, retention."""

    prefetch: int = 10  # unacked deliveries per consumer (handlers run concurrently up to this)
    delivery_limit: int = 5  # redeliveries of a failing message before its dead-letter queue
    batch_size: int = 100  # deliveries a batched consumer commits in one transaction
    batch_wait: float = 0.05  # seconds a partial batch waits for more deliveries
    batch_concurrency: int = 2  # batch transactions in flight at once per consumer
    relay_batch: int = 100  # outbox rows claimed and published (confirms pipelined) per round
    # Rounds in flight at once per relay (bench/relay_throughput.py measured 1 fastest on a
    # 2-core machine; several service processes still publish in parallel).
    relay_concurrency: int = 1
    relay_interval: float = 2.0  # seconds between flushes when nothing wakes the relay
    # Processed-message ids are kept this long: longer than any redelivery can take (a message
    # left in a queue while its service is down, a relay resending after a crash).
    processed_retention_hours: float = 7 * 24.0
    sent_retention_hours: float = 1.0  # sent outbox rows are kept this long, for inspection
    retention_interval: float = 300.0  # seconds between retention runs
    retention_chunk: int = 10000  # rows deleted per statement, so no delete holds locks long


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    listen: str = "127.0.0.1:8410"
    heartbeat_timeout: float = 120.0  # a host silent this long is offline
    # A host's status is published when what the dispatcher uses changes, and at least this
    # often while its heartbeats arrive (so a consumer that missed one catches up).
    status_refresh: float = 300.0
    # Hosts one owner may have enrolled (revoked ones do not count); an admin may set another
    # limit per owner (PUT /api/v1/owners/{name}/max_hosts). Enrolment needs the owner's token.
    max_hosts_per_owner: int = 20
    # Guards the owner admin API (POST/DELETE /api/v1/owners) as a Bearer token; empty = disabled.
    admin_token: str = ""
    # Public keys (base64) of the infrastructure's own builders: they enrol as "core".
    core_keys: list[str] = dataclasses.field(default_factory=list)
    # RabbitMQ's management API, where the registry creates each enrolled host's broker user
    # (an administrator's credentials: only the registry holds them). Empty: no broker users
    # are made, and hosts must be given credentials by hand.
    broker_api_url: str = ""
    broker_api_user: str = ""
    broker_api_password_file: str = ""
    enrol_max_skew: float = 600.0  # seconds an enrolment's signature may be old (or early)
    # Worker processes that check each heartbeat batch's signatures beside the event loop
    # (registry/verifying.py); 0: checked in the event loop. Worth one per spare core.
    verify_processes: int = 0
    # Heartbeat batch transactions in flight at once ([bus] batch_concurrency for the others).
    # One: heartbeats are CPU-bound here, and while a batch commits the next one fills (group
    # commit); bench/heartbeat_consume.py's drain phase measured it no worse, mostly better.
    heartbeat_batch_concurrency: int = 1
    # What a new volunteer's machine needs to know, served read-only at GET /api/v1/farm
    # (`skyline host enroll` and `skyline host cloud-init` read it): the farm admins' SSH
    # public keys ("ssh-ed25519 AAAA... admin@example.org"), put on every cloud-init VM;
    # the broker's URL as builders reach it (no credentials: each host gets its own at
    # enrolment); and the collector's URL as builders reach it. Empty: not published.
    admin_ssh_keys: list[str] = dataclasses.field(default_factory=list)
    public_amqp_url: str = ""
    public_collector_url: str = ""
    # [registry.trust]: when verified results promote or demote a host (trust.TrustConfig:
    # promote_after, demote_trusted_to, demote_untrusted_to, quarantine_after).
    trust: TrustConfig = dataclasses.field(default_factory=TrustConfig)
    # [registry.standing]: how confirmed frauds lower an owner's and its sponsor's standing
    # (standing.StandingConfig: sponsor_weight, probation_at, suspend_at).
    standing: StandingConfig = dataclasses.field(default_factory=StandingConfig)
    # [registry.qos]: how each host's quality of service is measured (qos.QosConfig).
    qos: QosConfig = dataclasses.field(default_factory=QosConfig)
    # Days the availability history (host_state_changes) and the builds each host ran
    # (host_tasks) are kept; the retention job deletes older rows. Never less than
    # [registry.qos] window_seconds: availability and MTBF are computed over that window (each
    # host's last change before the window is kept too: the state the window opens in).
    history_days: float = 30.0

    @property
    def history_seconds(self) -> float:
        return max(self.history_days * 86400.0, self.qos.window_seconds)


@dataclasses.dataclass(frozen=True)
class DispatcherConfig:
    listen: str = "127.0.0.1:8411"
    # A lease expires (its task is requeued) this long after it was given or after its host
    # last said, through the registry's host.status, that it is running builds: a build may
    # take hours, a host that went silent loses its leases within this.
    lease_seconds: int = 3600
    # Statuses renew a lease at most this long after it was given: a build hung on a host
    # that still reports is requeued then (the builder's own build_timeout is 4 h).
    lease_max_seconds: int = 24 * 3600
    # ... and at most this many times its task's estimated build time on its host (work /
    # speed; never under lease_seconds) after it was given: a host that says it runs builds
    # but sits on them holds a short build's lease for an hour, not a day.
    lease_overrun: float = 4.0
    # Once its holder reports the build finished, a lease waits this long for its verdict
    # (the verifier and the collector may be slow or restarting) before it is requeued.
    verdict_grace_seconds: int = 3600
    # Principals that may request builds for other owners, as "principal:owner" or
    # "principal:*" (a Koschei- or Packit-like tool); anyone else builds as itself.
    may_act_for: list[str] = dataclasses.field(default_factory=list)
    sweep_seconds: float = 15.0  # how often expired leases are requeued
    # Queued tasks whose waiting reason each sweep says again (the farm may have changed since
    # it was written): in id order from where the last sweep stopped, round the queue, so a
    # reason is at most ceil(queued / this) sweeps old. 0: reasons change only when a task is
    # queued or fails to be leased.
    reasons_per_sweep: int = 500
    # Asked at lease expiry whether the lease's results were stored (its build.stored lost).
    collector_url: str = "http://127.0.0.1:8412"
    # Builds one owner may have in progress; a request beyond it fails at once (quota.py).
    max_active_builds_per_owner: int = 500
    # Fair share among owners within a priority class: an owner's usage (one unit per lease)
    # halves every this many seconds (OBS uses 4 h; see dispatcher/fairshare.py).
    fair_share_half_life: float = 4 * 3600.0
    # Asked whose owner token a cancel request carries (GET /api/v1/owners/whoami).
    registry_url: str = "http://127.0.0.1:8410"
    # Where builders fetch a chain link's repository of earlier links' RPMs: the collector's
    # public URL (it serves /api/v1/repos/builds/<id>/); empty: collector_url.
    chain_repo_url: str = ""
    # A slower host leaves a critical task (matching.declines) to a faster host that will be
    # free soon; after this many seconds declined, any host takes it (none came in time).
    decline_max_seconds: float = 600.0
    # matching.declines (critical-path rules): a task's own estimated work counts this many
    # times its estimate when judging it (an upper quantile of the estimates' error: a lease
    # commits it, while the rest of the path is judged again link by link and padded only
    # by matching.ESTIMATE_PAD); and a task whose padded work on the pulling host is at least
    # heavy_share of the time left to the batch's expected end is left to a faster host as a
    # critical one is, even with slack (0: never). bench/mass_rebuild_sim.py: with both, a
    # mass rebuild ends within 1.09x and 1.20x its lower bound (two seeds) with estimates off
    # by 30% and the live dispatcher's inputs (1.20-1.38x without, as the sim ran before).
    work_pad: float = 1.5
    heavy_share: float = 0.25
    # A fast host leaves a free slot idle for a blocked chain link of a longer path than
    # what it could take now, if the link will be queued within this many seconds (its
    # predecessors' leases' estimated ends), will be critical then and would find no other
    # slot as fast (matching.keeps; 0: never).
    keep_seconds: float = 600.0


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    registry_url: str = "http://127.0.0.1:8410"
    collector_url: str = "http://127.0.0.1:8412"
    # The acceptance policy ([verifier.policy], services/verifier/policy.py's PolicyConfig).
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    # Packages whose results are sampled for replicas more often (risk_critical_package).
    critical_packages: list[str] = dataclasses.field(default_factory=list)
    # The farm-wide throttle (services/verifier/throttle.py): engaged when at least
    # throttle_min_results non-core results of the last throttle_window_seconds (the newest
    # throttle_window_results) are in and this share of them is bad, from the hosts of at
    # least throttle_min_bad_owners owners; released under
    # throttle_release_rate, or when too few are left to judge. Checked again every
    # throttle_check_seconds too, so that bad results age out while no volunteer builds.
    throttle_engage_rate: float = 0.25
    throttle_release_rate: float = 0.10
    throttle_min_results: int = 20
    throttle_window_seconds: int = 3600
    throttle_window_results: int = 200
    throttle_min_bad_owners: int = 2
    throttle_check_seconds: float = 60.0

    def __post_init__(self) -> None:
        self.throttle  # noqa: B018 - checks the throttle settings at load time
        if self.throttle_check_seconds <= 0:
            raise ValueError("throttle_check_seconds must be > 0")

    @property
    def throttle(self) -> ThrottleConfig:
        return ThrottleConfig(
            engage_rate=self.throttle_engage_rate,
            release_rate=self.throttle_release_rate,
            min_results=self.throttle_min_results,
            window_seconds=self.throttle_window_seconds,
            window_results=self.throttle_window_results,
            min_bad_owners=self.throttle_min_bad_owners,
        )


@dataclasses.dataclass(frozen=True)
class CollectorConfig:
    listen: str = "127.0.0.1:8412"
    public_url: str = "http://127.0.0.1:8412"  # how builders and users reach this collector
    koji_topdir: str = "koji"
    staging_dir: str = "staging"
    max_upload_mb: int = 4096
    registry_url: str = "http://127.0.0.1:8410"  # where uploads' signing keys are looked up
    # The dashboard shows the queue as the dispatcher counts it (its GET /api/v1/queue).
    dispatcher_url: str = "http://127.0.0.1:8411"
    # What one lease may stage in all (a big multi-package build such as texlive needs more).
    max_files_per_lease: int = 500
    max_lease_mb: int = 16384
    host_uploads_per_minute: int = 600  # result uploads per host, in bursts of as many
    # Per owner: source RPMs stored in any hour, and their bytes in any day.
    source_uploads_per_hour: int = 60
    source_mb_per_day: int = 10240
    # Leases whose RPM facts (GET /api/v1/leases/{id}/facts) are read at once: each hashes
    # every payload file of up to max_lease_mb.
    facts_reads: int = 2
    # A Koji hub's XML-RPC URL (https://koji.example.org/kojihub): when set, every complete
    # non-scratch build is imported into it as a content generator (collector/kojiimport.py);
    # empty: builds stay in koji_topdir only. The CG user logs in with a password (from a file).
    koji_hub_url: str = ""
    koji_cg_user: str = ""
    koji_cg_password_file: str = ""
    koji_cg_name: str = "skyline"  # the content generator the admin granted (grantCGAccess)
    koji_import_interval: float = 10.0  # seconds between looks for pending imports
    # With a hub of Koji 1.34+: import a build waiting for agreement (the verifier asked for a
    # replica) as a draft build from each task's first result, and promote that draft on
    # build.complete if the accepted files are its files (collector/kojidraft.py). Off, or an
    # older hub: builds are imported only once accepted, as before.
    koji_drafts: bool = True
    koji_draft_wait_hours: float = 24.0  # a draft not importable by then is given up


@dataclasses.dataclass(frozen=True)
class BuilderConfig:
    host: str = ""
    owner: str = ""
    arches: list[str] = dataclasses.field(default_factory=_native_arches)
    releases: list[str] = dataclasses.field(default_factory=lambda: ["local"])
    slots: int = 1
    workdir: str = "builder"
    key_file: str = ""  # defaults to <workdir>/host.key
    registry_url: str = "http://127.0.0.1:8410"
    collector_url: str = "http://127.0.0.1:8412"
    # The owner's token (what POST /api/v1/owners or a sponsor's invite returned): the registry
    # enrols a host only for the owner whose token it brings.
    enrol_token: str = ""
    heartbeat_seconds: float = 10.0
    build_path: str = "/var/tmp/skyline-build"  # identical on every host: see builder/rpmbuild.py
    backend: str = "auto"  # auto: mock where installed, else rpmbuild in a bwrap sandbox
    build_timeout: float = 4 * 3600
    # Without a sandbox (no bwrap, no user namespaces) the agent refuses to build, unless this
    # is true: then strangers' spec files run unconfined next to the host's key.
    allow_unsandboxed: bool = False
    build_user: str = "nobody"  # an agent running as root builds as this user, never as root
    build_max_processes: int = 1024  # per build, inside its sandbox (0: no limit)
    build_max_memory_mb: int = 16384  # address space per build process (0: no limit)
    build_max_file_mb: int = 20480  # largest file a build may write (0: no limit)
    build_max_disk_mb: int = 65536  # the build directory's size, checked every 5 s (0: none)
    tool_path: str = ""  # PATH for builds and the environment manifest; empty: the agent's
    sandbox_hide: list[str] = dataclasses.field(default_factory=list)  # more paths to hide


@dataclasses.dataclass(frozen=True)
class CliConfig:
    """Where the `skyline` command finds the services (empty: derived from the services'
    own tables, [dispatcher] listen, [registry] listen, [collector] public_url, which is
    what a config written by `skyline local up` holds)."""

    dispatcher_url: str = ""
    registry_url: str = ""
    collector_url: str = ""
    timeout: float = 30.0  # seconds one HTTP call may take before the service is unreachable


@dataclasses.dataclass(frozen=True)
class Config:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    # This process's own broker user, and a file holding its password: they replace the
    # credentials in amqp_url, so one file can serve every process, each with its own secret.
    amqp_user: str = ""
    amqp_password_file: str = ""
    database_url: str = "postgresql://skyline@127.0.0.1:5432/skyline"
    exchange: str = "amq.topic"
    log_level: str = "INFO"
    otlp_endpoint: str = ""  # OpenTelemetry traces go here when set
    base_dir: str = "."  # relative paths in the file are relative to the file's folder
    registry: RegistryConfig = dataclasses.field(default_factory=RegistryConfig)
    dispatcher: DispatcherConfig = dataclasses.field(default_factory=DispatcherConfig)
    verifier: VerifierConfig = dataclasses.field(default_factory=VerifierConfig)
    collector: CollectorConfig = dataclasses.field(default_factory=CollectorConfig)
    builder: BuilderConfig = dataclasses.field(default_factory=BuilderConfig)
    bus: BusConfig = dataclasses.field(default_factory=BusConfig)
    cli: CliConfig = dataclasses.field(default_factory=CliConfig)

    def path(self, value: str) -> Path:
        """Resolve a path setting against the config file's folder."""
        return (Path(self.base_dir) / value).resolve()

    def broker_url(self) -> str:
        """amqp_url with this process's own credentials (amqp_user, amqp_password_file)."""
        if not self.amqp_user:
            return self.amqp_url
        password = self.secret(self.amqp_password_file, "amqp_password_file")
        return with_credentials(self.amqp_url, self.amqp_user, password)

    def secret(self, path: str, setting: str) -> str:
        """The first line of a secret file named by a setting, with a clear error."""
        if not path:
            raise ConfigError(f"{setting} is not set")
        try:
            return self.path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` (amqp:// or http://) with its user and password replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{netloc}"))


SECTIONS = ("registry", "dispatcher", "verifier", "collector", "builder", "bus", "cli")


def _coerce(name: str, kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return value
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"{name}: expected true or false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        # TOML booleans are not numbers, and 1.5 slots is not 1 slot: refuse, never truncate.
        if isinstance(value, bool) or (
            kind is int and isinstance(value, float) and not value.is_integer()
        ):
            raise ConfigError(
                f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            )
        try:
            return kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise ConfigError(f"{name}: expected one of {choices}, got {value!r}") from None
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return value
    raise ConfigError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def _build(cls: type, data: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    # Section tables are read separately, and only at the top level: inside a section, a key
    # named like a section (`collector` for `collector_url`) is a typo like any other.
    sections = set(SECTIONS) if cls is Config else set()
    names = {f.name for f in dataclasses.fields(cls)} - sections
    unknown = set(data) - names - sections
    # [registry] for SKYLINE_REGISTRY_, [registry.trust] for SKYLINE_REGISTRY_TRUST_.
    where = prefix.removeprefix("SKYLINE_").rstrip("_").lower().replace("_", ".", 1)
    where = where or "top level"
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} in [{where}]")
    values: dict[str, Any] = {}
    for name in names:
        env_key = f"{prefix}{name.upper()}"
        kind = hints[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            # A sub-table such as [registry.trust]: its own keys, SKYLINE_REGISTRY_TRUST_*.
            table = data.get(name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"[{where}.{name}] must be a table")
            values[name] = _build(kind, table, env, f"{env_key}_")
        elif env_key in env:
            values[name] = _coerce(env_key, kind, env[env_key])
        elif name in data:
            values[name] = _coerce(name, kind, data[name])
    try:
        return cls(**values)
    except ValueError as exc:  # a dataclass's own checks (TrustConfig.__post_init__)
        raise ConfigError(f"[{where}]: {exc}") from None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file at `path` (or `$SKYLINE_CONF`), then apply environment overrides."""
    env = os.environ if env is None else env
    path = path or env.get("SKYLINE_CONF")
    data: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        base_dir = path.resolve().parent
    sections = {}
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        section_cls = typing.get_type_hints(Config)[section]
        sections[section] = _build(section_cls, table, env, f"SKYLINE_{section.upper()}_")
    top = _build(Config, data, env, "SKYLINE_")
    return dataclasses.replace(top, base_dir=str(base_dir), **sections)


def masked(url: str) -> str:
    """A URL with its password hidden, for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
