-- The daemons on this database, for `assignd status` and for taking back
-- the leases of a daemon that died: each keeps its heartbeat fresh, on the
-- database's clock.
CREATE TABLE daemons (
    owner        TEXT PRIMARY KEY,
    host         TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Named leases with a fencing epoch; `leader` runs the periodic jobs.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    since      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The account's one API budget, shared by every daemon: a GCRA whose
-- theoretical arrival time (`tat_ms`) advances on the database's clock, the
-- pause after a 429, and until when an assignment call is waiting (so that
-- background calls of any daemon stand back).
CREATE TABLE api_budget (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    tat_ms                 DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused_until_ms        DOUBLE PRECISION NOT NULL DEFAULT 0,
    assign_waiting_until_ms DOUBLE PRECISION NOT NULL DEFAULT 0
);
INSERT INTO api_budget (id) VALUES (1);

-- Takes one call's slot: returns 0 when admitted, else how many
-- milliseconds to wait before asking again. `period` is the spacing of
-- calls, `tau` how far ahead of time a call may go (the burst), both in
-- milliseconds. The row lock serializes every daemon; the clock is read
-- after it is taken. A caller that comes at most `slack` ms after its slot
-- (the round trip that woke it) keeps the schedule instead of pushing it
-- back by its lateness: the period's safety margin covers that much jitter.
CREATE FUNCTION assignd_take_budget(period DOUBLE PRECISION, tau DOUBLE PRECISION,
                                    slack DOUBLE PRECISION, assignment BOOLEAN)
RETURNS DOUBLE PRECISION
LANGUAGE plpgsql AS $$
DECLARE
    b api_budget%ROWTYPE;
    now_ms DOUBLE PRECISION;
    start DOUBLE PRECISION;
BEGIN
    SELECT * INTO b FROM api_budget WHERE id = 1 FOR UPDATE;
    now_ms := extract(epoch FROM clock_timestamp()) * 1000;
    IF b.paused_until_ms > now_ms THEN
        RETURN b.paused_until_ms - now_ms;
    END IF;
    start := GREATEST(b.tat_ms, now_ms);
    IF now_ms > b.tat_ms AND now_ms - b.tat_ms <= slack THEN
        start := b.tat_ms;
    END IF;
    IF NOT assignment AND (b.assign_waiting_until_ms > now_ms OR GREATEST(b.tat_ms, now_ms) > now_ms) THEN
        -- Background calls only take a budget nobody is queueing for.
        RETURN GREATEST(b.assign_waiting_until_ms, start) - now_ms + 1;
    END IF;
    IF start - now_ms > tau THEN
        IF assignment THEN
            UPDATE api_budget
               SET assign_waiting_until_ms = GREATEST(assign_waiting_until_ms, start - tau + period)
             WHERE id = 1;
        END IF;
        RETURN start - tau - now_ms;
    END IF;
    -- The first call after an idle spell may be slow to arrive (a cold
    -- connection, a busy host) and land among the next ones: the next slot
    -- waits one period more for it.
    UPDATE api_budget
       SET tat_ms = start + period + CASE WHEN b.tat_ms + period < now_ms THEN period ELSE 0 END
     WHERE id = 1;
    RETURN 0;
END $$;

-- After a 429: every daemon's calls wait until then.
CREATE FUNCTION assignd_pause_budget(pause_ms DOUBLE PRECISION)
RETURNS VOID
LANGUAGE SQL AS $$
    UPDATE api_budget
       SET paused_until_ms = GREATEST(paused_until_ms,
                                      extract(epoch FROM clock_timestamp()) * 1000 + pause_ms)
     WHERE id = 1;
$$;
