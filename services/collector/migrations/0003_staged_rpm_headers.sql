-- The header of each staged RPM as read when it was uploaded, so the verifier can judge whether
-- it belongs to the lease (package, arch) without reading the file itself: {"name", "version",
-- "release", "epoch", "arch", "sourcerpm"}, or {"error": why it is not an intact RPM}.
-- NULL for logs, and for RPMs staged before this column existed (the verifier refuses those).
ALTER TABLE staged_files ADD COLUMN rpm jsonb;
