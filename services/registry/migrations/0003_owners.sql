-- Owners (packagers, tools) who may upload sources and request builds. Only a digest of
-- each token is kept: the token itself is shown once, when the owner is created.
CREATE TABLE owners (
    name          text PRIMARY KEY,
    token_sha256  text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz  -- a revoked name stays taken: builds and sources name it
);
