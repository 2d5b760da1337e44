CREATE TABLE hosts (
    host            text PRIMARY KEY,
    owner           text NOT NULL,
    public_key      text NOT NULL,
    arches          text[] NOT NULL,
    releases        text[] NOT NULL,
    cpus            integer,
    memory_mb       integer,
    disk_gb         integer,
    trust           text NOT NULL DEFAULT 'untrusted'
                    CHECK (trust IN ('untrusted', 'trusted', 'core')),
    state           text NOT NULL DEFAULT 'offline'
                    CHECK (state IN ('online', 'offline', 'quarantined')),
    free_slots      integer NOT NULL DEFAULT 0,
    running         integer NOT NULL DEFAULT 0,
    last_heartbeat  timestamptz,
    last_signed_at  timestamptz,   -- newest heartbeat signature time: older ones are replays
    enrolled_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hosts_online ON hosts (last_heartbeat) WHERE state = 'online';
