-- Issue 21: the queue order known at intake. A row takes its rule's
-- priority before its first claim, from what it carries; `ranked` says
-- that was done. A producer's plain INSERT leaves it 0, and the daemon
-- ranks such rows in the transaction of its next claim.
ALTER TABLE queue ADD COLUMN ranked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX queue_unranked ON queue (id) WHERE state = 'pending' AND ranked = 0;

