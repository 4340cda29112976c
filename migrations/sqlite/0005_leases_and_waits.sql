-- A claim's owner is the process (`<pid>-<random>`), so shutdown releases
-- every row and message it holds by that one key; `lease_epoch` is the
-- claim's batch within the process, the fence that keeps a task whose
-- lease expired from settling a row its own process claimed again.
ALTER TABLE queue ADD COLUMN lease_epoch INTEGER;

-- Outbox messages are claimed like queue rows, so that a stopping process
-- can put back the ones it has not sent.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
CREATE INDEX outbox_leases ON outbox (lease_owner) WHERE lease_owner IS NOT NULL;

-- Why a pending row is held back on purpose, so that what ends the wait
-- finds it by a value rather than by the wording of its last error.
ALTER TABLE queue ADD COLUMN waiting TEXT CHECK (waiting IN ('candidate', 'api_key'));
UPDATE queue SET waiting = CASE
        WHEN last_error = 'waiting: HelpCrunch rejected the API key (401)' THEN 'api_key'
        ELSE 'candidate' END
 WHERE state = 'pending' AND substr(last_error, 1, 8) = 'waiting:';

-- A queue row's outcomes, for `queue retry` (its last outcome) and audits.
CREATE INDEX outcomes_by_queue ON outcomes (queue_id);
