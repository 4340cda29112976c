-- How an outcome came about, where it was not the plain decision of a
-- queue row: an escalation step, a hand-back, a reassignment hop. Reports
-- count these from this column, not from the reason's words. Older rows
-- are classified once, from the reasons those versions wrote.
ALTER TABLE outcomes ADD COLUMN route TEXT
    CHECK (route IN ('escalated', 'handed_back', 'reassigned'));

UPDATE outcomes SET route = 'escalated'
 WHERE result = 'assigned' AND reason LIKE '% had no available agent; escalated after %'
   AND reason NOT LIKE '%none there either%';
UPDATE outcomes SET route = 'handed_back'
 WHERE result = 'skipped' AND reason LIKE 'handed back from %';
UPDATE outcomes SET route = 'reassigned'
 WHERE result = 'assigned' AND queue_id IS NULL AND reason LIKE 'reassigned: %';
