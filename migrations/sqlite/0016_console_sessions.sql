-- Issue 22: console sessions kept in the database, so that a sign-out ends
-- a session on every daemon and an idle one ends by itself. `id` is the
-- SHA-256 of the cookie's random id (the table holds nothing a cookie can
-- be made from); a session is live while `ends_at` (its idle end, never
-- past `expires_at`) is ahead. Pruned by the retention job once ended.
CREATE TABLE console_sessions (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL
);
CREATE INDEX console_sessions_ends_at ON console_sessions (ends_at);
