-- The acceptance policy may quarantine a host (trust.record_odd_one_out): `quarantined` is a
-- trust level as well as a state (the state cuts the host off, the level records why).
ALTER TABLE hosts DROP CONSTRAINT hosts_trust_check;
ALTER TABLE hosts ADD CONSTRAINT hosts_trust_check
    CHECK (trust IN ('untrusted', 'trusted', 'core', 'quarantined'));
