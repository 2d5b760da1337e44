-- What the dispatcher leased: the only leases a host may attest to.
CREATE TABLE leases (
    lease_id     uuid PRIMARY KEY,
    task_id      bigint NOT NULL,
    build_id     bigint NOT NULL,
    host         text NOT NULL,
    arch         text NOT NULL,
    nvr          text NOT NULL,
    srpm_sha256  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One attestation per lease: a second, different one for the same lease is a replay.
CREATE TABLE attestations (
    lease_id       uuid PRIMARY KEY,
    host           text NOT NULL,
    status         text NOT NULL,
    result_digest  text NOT NULL,
    env_digest     text NOT NULL,
    signature      text NOT NULL,
    verdict        text NOT NULL,     -- 'verified' or a refusal reason
    detail         text,
    body           jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attestations_host ON attestations (host, received_at);
