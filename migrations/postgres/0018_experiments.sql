-- Shadow mode and experiments (SPEC §14): an outcome may be `shadow` (what
-- assignd would have done, nothing written to HelpCrunch), and every
-- outcome records its arm.
ALTER TABLE outcomes DROP CONSTRAINT outcomes_result_check;
ALTER TABLE outcomes ADD CONSTRAINT outcomes_result_check
    CHECK (result IN ('assigned', 'skipped', 'no_match', 'no_agent', 'failed', 'retry', 'shadow'));
ALTER TABLE outcomes ADD COLUMN arm TEXT NOT NULL DEFAULT 'a'
    CHECK (arm IN ('a', 'b', 'shadow', 'left'));

-- Each chat's arm, taken at its first decision and kept for good: a
-- change of share or rules never moves a chat between arms.
CREATE TABLE chat_arms (
    chat_id BIGINT PRIMARY KEY,
    arm     TEXT   NOT NULL CHECK (arm IN ('a', 'b', 'left')),
    at      BIGINT NOT NULL
);
CREATE INDEX chat_arms_by_time ON chat_arms (at);
