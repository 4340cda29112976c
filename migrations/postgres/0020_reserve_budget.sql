-- The shared budget hands out a slot up to `ahead` ms before it is due:
-- the processing loop asks that early, claims and decides meanwhile, and
-- its call goes when the slot is due. Asked only when due, a slow decision
-- (a loaded host, a pooler's extra round trips) sent its call after the
-- slot's margin, and the slot was lost to the account for good.
--
-- `admitted`: the slot is the caller's, to be sent `ms` from now (0: at
-- once) and no earlier. Else ask again in `ms`. The schedule is
-- assignd_take_budget's, which now asks this with `ahead` 0, so daemons of
-- the previous version keep sharing the row during an upgrade.
CREATE FUNCTION assignd_reserve_budget(period DOUBLE PRECISION, tau DOUBLE PRECISION,
                                       slack DOUBLE PRECISION, assignment BOOLEAN,
                                       ahead DOUBLE PRECISION,
                                       OUT admitted BOOLEAN, OUT ms DOUBLE PRECISION)
LANGUAGE plpgsql AS $$
DECLARE
    b api_budget%ROWTYPE;
    now_ms DOUBLE PRECISION;
    start DOUBLE PRECISION;
BEGIN
    admitted := FALSE;
    SELECT * INTO b FROM api_budget WHERE id = 1 FOR UPDATE;
    now_ms := extract(epoch FROM clock_timestamp()) * 1000;
    IF b.paused_until_ms > now_ms THEN
        ms := b.paused_until_ms - now_ms;
        RETURN;
    END IF;
    start := GREATEST(b.tat_ms, now_ms);
    IF now_ms > b.tat_ms AND now_ms - b.tat_ms <= slack THEN
        start := b.tat_ms;
    END IF;
    IF NOT assignment AND (b.assign_waiting_until_ms > now_ms OR GREATEST(b.tat_ms, now_ms) > now_ms) THEN
        -- Background calls only take a budget nobody is queueing for.
        ms := GREATEST(b.assign_waiting_until_ms, start) - now_ms + 1;
        RETURN;
    END IF;
    IF start - tau - now_ms > ahead THEN
        IF assignment THEN
            UPDATE api_budget
               SET assign_waiting_until_ms = GREATEST(assign_waiting_until_ms, start - tau + period)
             WHERE id = 1;
        END IF;
        ms := start - tau - now_ms - ahead;
        RETURN;
    END IF;
    -- The first call after an idle spell may be slow to arrive (a cold
    -- connection, a busy host) and land among the next ones: the next slot
    -- waits one period more for it.
    UPDATE api_budget
       SET tat_ms = start + period + CASE WHEN b.tat_ms + period < now_ms THEN period ELSE 0 END
     WHERE id = 1;
    admitted := TRUE;
    ms := GREATEST(start - tau - now_ms, 0);
END $$;

CREATE OR REPLACE FUNCTION assignd_take_budget(period DOUBLE PRECISION, tau DOUBLE PRECISION,
                                               slack DOUBLE PRECISION, assignment BOOLEAN)
RETURNS DOUBLE PRECISION
LANGUAGE SQL AS $$
    SELECT CASE WHEN r.admitted THEN 0 ELSE r.ms END
      FROM assignd_reserve_budget(period, tau, slack, assignment, 0) AS r
$$;
