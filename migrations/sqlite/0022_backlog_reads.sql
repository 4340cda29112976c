-- Issue 23: what `status`, the console and `report` read stays a bounded
-- index read whatever the backlog. The console lists active rows by
-- priority then age, a page at a time (store/console.rs); dead rows, the
-- newest first, for the console and `status`; the rows that wait with a
-- reason, the soonest first, for `status`. Each state's count is read
-- from its partial index alone (queue_due, queue_leases, queue_finished,
-- queue_dead), never from the table.
CREATE INDEX queue_active_order ON queue (priority DESC, enqueued_at, id)
    WHERE state IN ('pending', 'leased');
CREATE INDEX queue_dead ON queue (id) WHERE state = 'dead';
-- The report's dead letters: the newest of a window, by when they died.
CREATE INDEX queue_dead_by_time ON queue (updated_at, id) WHERE state = 'dead';
CREATE INDEX queue_waiting ON queue (next_attempt_at)
    WHERE state = 'pending' AND last_error IS NOT NULL;
