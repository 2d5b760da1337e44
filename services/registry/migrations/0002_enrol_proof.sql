-- Re-enrolment must prove possession of the host's key with a fresh signature: the newest
-- signature time seen, so that a recorded enrolment cannot be replayed.
ALTER TABLE hosts ADD COLUMN enrol_signed_at timestamptz;
