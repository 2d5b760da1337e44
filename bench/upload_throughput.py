"""A builder's upload of one big file to a real collector, against a raw disk write, same run.

Raw: the file copied to the same file system by the spool's own writer (spool.Writer:
batches of spool.CHUNK bytes, its writeback started as it goes, one fsync at the end), so the
ratio is what receiving, authenticating and hashing over HTTP cost, not a difference in how
the file is written. Skyline: the same file PUT through the builder's own uploader
(services/builder/client.py: signed with the host's key, streamed) to a collector started as
its own process (`python -m services.collector`, its real PostgreSQL schema and broker user),
which authenticates the host against a registry stand-in (GET /api/v1/hosts/{host}), hashes
and spools the body (spool.py), fsyncs it and stages it. The lease is recorded the way the
collector's handler records a `task.leased` (store.add_lease). The upload's digest is
computed before timing, as the builder does before it signs.

Fair by construction: both sides write the same bytes to the same file system from a warm
page cache (the source file is read back by both), and both make them durable the same way,
one fsync at the end before the time is taken (the spool also fsyncs its folder after the
rename, as the atomic move into place needs); neither uses O_DIRECT. The writer starts the
writeback of what it has written while it goes on (spool.py), where a plain
`dd bs=1M conv=fsync` leaves all of it to the final fsync: the raw copy writes as the spool
does, so that only the upload's own costs differ. The raw copy and the upload take turns
(raw, upload, raw, upload, ...) and the result is the median of the per-pair ratios, so one
noisy moment on a shared machine does not decide it.

Prints, per pair, MB/s of both, their ratio, and the CPU seconds the collector and the
uploader (this process) spent on the upload; then the medians (target ratio >= 0.70), the
collector's peak RSS (VmHWM; target < 150 MB) and its RSS before the upload, and the load
average at the start and the end.

    .venv/bin/python bench/upload_throughput.py [--size-mb 2048] [--rounds 3] [--dir DIR]
        [--amqp-url ADMIN_URL --broker-api-url URL --database-url URL]

Without URLs it starts a private RabbitMQ and PostgreSQL in a temp dir
(services/common/localstack.py). The file, the raw copy and the collector's storage live in
a temp dir under --dir (default: the system's temp dir), so all three share a file system.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from bench_broker import add_broker_arguments, principals_of, private_stack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.builder import client
from services.collector import spool, store
from services.common import db
from services.common.localstack import free_port
from services.common.signing import public_key_b64

MB = 1024 * 1024
HOST = "bench-builder"
NAME = "bench-result.tar"  # not an .rpm: the collector would read its header after the upload
ROOT = Path(__file__).resolve().parents[1]


def make_file(path: Path, size: int) -> str:
    """`size` bytes that no layer can compress or dedupe cheaply; returns their sha256."""
    block = bytearray(os.urandom(16 * MB))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for n, offset in enumerate(range(0, size, MB)):
            # Each MiB differs: a counter stamped into a random block.
            at = (n % 16) * MB
            block[at : at + 8] = n.to_bytes(8, "little")
            chunk = memoryview(block)[at : at + min(MB, size - offset)]
            digest.update(chunk)
            out.write(chunk)
    os.sync()  # its dirty pages must not be flushed during the timed runs
    return digest.hexdigest()


def raw_copy(src: Path, dest: Path) -> float:
    """MB/s of copying `src` to `dest` the way the spool writes (spool.Writer: batches of
    spool.CHUNK bytes, writeback started as it goes, one fsync at the end)."""
    buf = bytearray(spool.CHUNK)
    start = time.perf_counter()
    out = spool.Writer.create(dest)
    try:
        with src.open("rb", buffering=0) as inp:
            while n := inp.readinto(buf):
                out.write([memoryview(buf)[:n]])
        out.sync()
    finally:
        out.close()
    elapsed = time.perf_counter() - start
    size = dest.stat().st_size
    dest.unlink()
    os.sync()
    return size / MB / elapsed


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """The process's VmRSS and VmHWM (peak RSS), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


@contextlib.asynccontextmanager
async def registry_stand_in(key: Ed25519PrivateKey) -> AsyncIterator[str]:
    """GET /api/v1/hosts/{host} as the registry answers it, for the one enrolled host."""

    async def get_host(request: web.Request) -> web.Response:
        if request.match_info["host"] != HOST:
            return web.json_response({"error": "no such host", "status": 404}, status=404)
        return web.json_response(
            {"host": HOST, "public_key": public_key_b64(key), "state": "online"}
        )

    app = web.Application()
    app.router.add_get("/api/v1/hosts/{host}", get_host)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def collector_process(
    work: Path, amqp_url: str, database_url: str, registry_url: str, size: int
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """The collector as its own process; yields (process, its URL) once it answers HTTP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    room = size // MB + 1
    conf = work / "collector.toml"
    conf.write_text(
        f'amqp_url = "{amqp_url}"\n'
        f'database_url = "{database_url}"\n'
        'log_level = "WARNING"\n'
        "[collector]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f'public_url = "{url}"\n'
        f'registry_url = "{registry_url}"\n'
        'staging_dir = "staging"\n'
        'koji_topdir = "koji"\n'
        # The limits stay; only raised when the file would not fit the defaults.
        f"max_upload_mb = {max(room, 4096)}\n"
        f"max_lease_mb = {max(room, 16384)}\n"
    )
    proc = spawn(conf, work / "collector.log")
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the collector exited: {(work / 'collector.log').read_text()}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/api/v1/uploads/{uuid.uuid4()}") as resp:
                        if resp.status == 404:  # routed and reading its database: ready
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("the collector did not answer within 60 s")
                await asyncio.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "services.collector", "--conf", str(conf)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def add_lease(database_url: str) -> str:
    """Record a lease for HOST as the collector's task.leased handler does."""
    lease_id = str(uuid.uuid4())
    pool = await db.create_pool(database_url, "collector")
    try:
        async with pool.acquire() as conn:
            await store.add_lease(
                conn,
                {
                    "lease_id": lease_id,
                    "task_id": 1,
                    "build_id": 1,
                    "host": HOST,
                    "arch": "x86_64",
                    "owner": "bench",
                    "nvr": "bench-1.0-1",
                    "srpm_sha256": "0" * 64,
                },
            )
    finally:
        await pool.close()
    return lease_id


async def upload(
    url: str, lease_id: str, path: Path, size: int, digest: str, key: Ed25519PrivateKey
) -> float:
    """MB/s of one upload through the builder's uploader; checks what the collector staged."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
        start = time.perf_counter()
        await client.upload(http, url, lease_id, path, digest, host=HOST, key=key, tries=1)
        elapsed = time.perf_counter() - start
        async with http.get(f"{url}/api/v1/uploads/{lease_id}") as resp:
            files = (await resp.json())["files"]
    assert [(f["name"], f["size"], f["sha256"]) for f in files] == [(NAME, size, digest)], files
    return size / MB / elapsed


async def measure(work: Path, amqp_url: str, database_url: str, size: int, rounds: int) -> None:
    load = loadavg()
    source = work / NAME
    start = time.perf_counter()
    digest = make_file(source, size)
    print(f"made a {size // MB} MiB file in {time.perf_counter() - start:.1f} s")
    key = Ed25519PrivateKey.generate()
    async with (
        registry_stand_in(key) as registry_url,
        collector_process(work, amqp_url, database_url, registry_url, size) as (proc, url),
    ):
        before = memory_mb(proc.pid)
        pairs = []
        for n in range(1, rounds + 1):
            raw = raw_copy(source, work / "raw-copy")
            lease_id = await add_lease(database_url)
            cpu = cpu_seconds(proc.pid), time.process_time()
            ours = await upload(url, lease_id, source, size, digest, key)
            server_cpu = cpu_seconds(proc.pid) - cpu[0]
            client_cpu = time.process_time() - cpu[1]
            shutil.rmtree(work / "staging" / lease_id, ignore_errors=True)
            os.sync()
            pairs.append((raw, ours))
            print(
                f"pair {n}: raw copy + fsync {raw:7.1f} MB/s   skyline upload {ours:7.1f} MB/s"
                f"   ratio {ours / raw:.2f}   CPU s: collector {server_cpu:.1f},"
                f" uploader {client_cpu:.1f}",
                flush=True,
            )
        after = memory_mb(proc.pid)
    raw_median = statistics.median(r for r, _ in pairs)
    ours_median = statistics.median(o for _, o in pairs)
    ratio = statistics.median(o / r for r, o in pairs)
    print(
        f"{size // MB} MiB x {rounds}: medians raw {raw_median:.1f} MB/s, skyline"
        f" {ours_median:.1f} MB/s; median of the pairs' ratios {ratio:.2f} (target >= 0.70),"
        f" ratio of the medians {ours_median / raw_median:.2f}"
    )
    print(
        f"collector RSS: {before['VmRSS']:.0f} MB before, peak {after['VmHWM']:.0f} MB"
        " (target < 150 MB)"
    )
    print(f"load average: {load} at the start, {loadavg()} at the end")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(
    admin_url: str, api_url: str, database_url: str, work: Path, size: int, rounds: int
) -> None:
    async with principals_of(admin_url, api_url) as made:
        amqp_url = await made.service("collector")
        await measure(work, amqp_url, database_url, size, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3, help="raw/upload pairs")
    parser.add_argument("--dir", help="where the file and the collector's storage go")
    add_broker_arguments(parser)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    size = args.size_mb * MB
    work = Path(tempfile.mkdtemp(prefix="skyline-upload-bench-", dir=args.dir))
    try:
        if args.amqp_url and args.database_url:
            if not args.broker_api_url:
                parser.error("--amqp-url needs --broker-api-url: principals are made through it")
            asyncio.run(
                run(args.amqp_url, args.broker_api_url, args.database_url, work, size, args.rounds)
            )
            return
        with private_stack(work / "servers") as (broker, postgres):
            asyncio.run(
                run(broker.url, broker.management_url, postgres.url, work, size, args.rounds)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
