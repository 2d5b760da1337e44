# A Skyline builder (the volunteer's agent): rebuilds leased SRPMs with rpmbuild, signs and
# uploads the results. It connects out only (registry, collector, broker): no port to open.
# Build from the repository's root:
#   podman build -f deploy/podman/Containerfile.builder -t localhost/skyline-builder .
# BASE_IMAGE and PIP_ARGS as in deploy/podman/Containerfile (default: the public
# docker.io/library/debian:bookworm). On Debian the builder uses `rpmbuild --rebuild --nodeps`
# (Debian's rpm database is empty); a Fedora-based image with mock would build in a chroot.
# rpmbuild runs in bubblewrap (services/builder/sandbox.py; `mount` lays a lease's buildroot
# packages over /usr in it). The container needs `--security-opt unmask=/proc/*` and
# `--security-opt seccomp=deploy/podman/seccomp-builder.json` for that: compose.yaml sets
# them, deploy/podman/README.md ("Build sandbox") says why.
ARG BASE_IMAGE=docker.io/library/debian:bookworm
FROM ${BASE_IMAGE}
ARG PIP_ARGS=""
ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1 PATH=/opt/skyline/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN set -e; missing=""; \
    for p in ca-certificates python3 python3-venv python3-rpm python3-gssapi rpm cpio bubblewrap mount; do \
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY schemas /src/schemas
COPY pyproject.toml /src/
COPY services /src/services
RUN python3 -m venv --system-site-packages /opt/skyline \
    && /opt/skyline/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_ARGS \
        /src/schemas /src \
    && rm -rf /src
COPY deploy/podman/entrypoint /usr/local/bin/skyline-entrypoint
COPY deploy/podman/healthcheck.py /opt/skyline/deploy/healthcheck.py
RUN printf '#!/bin/sh\nexec /opt/skyline/bin/python /opt/skyline/deploy/healthcheck.py "$@"\n' \
        > /usr/local/bin/skyline-healthcheck && chmod 0755 /usr/local/bin/skyline-healthcheck
# The work directory holds the host's key (made on first start unless one is mounted) and
# its journal: a volume, so a restarted container is the same host.
ENV SKYLINE_CONF=/etc/skyline/skyline.toml SKYLINE_BUILDER_WORKDIR=/var/lib/skyline-builder
VOLUME /var/lib/skyline-builder
WORKDIR /var/lib/skyline-builder
ENTRYPOINT ["/usr/local/bin/skyline-entrypoint"]
CMD ["skyline-builder"]
