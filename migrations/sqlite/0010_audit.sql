-- Issue 15: every change a person makes (CLI or console), with who made it:
-- agents marked away and back, rows retried, console sign-ins. The away and
-- back rows are also the history of absences that `simulate --history`
-- replays. Pruned with the other history.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL CHECK (action IN ('away', 'back', 'retry', 'sign_in')),
    subject TEXT NOT NULL,
    until   INTEGER,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
