-- Issue 23: a claim reads the rows it takes, whatever the backlog
-- (store/claim.rs). Rows due from the start (next_attempt_at = 0) are held
-- in claim order: priority, bounded, less the 10-minute marks before the
-- row was enqueued (aging counts the marks passed since), then id. A row
-- with a due time is promoted to 0 by the first claim after it, found
-- through queue_due, which also serves the loop's "when is the next row
-- due". The expression is the claim's own, character for character.
DROP INDEX queue_claimable;
CREATE INDEX queue_due ON queue (next_attempt_at) WHERE state = 'pending';
CREATE INDEX queue_claim_order ON queue (
    (CASE WHEN typeof(priority) = 'integer' THEN MIN(MAX(priority, -1000000), 1000000)
               ELSE 2000000 END
          - CASE WHEN typeof(enqueued_at) = 'integer' THEN MAX(enqueued_at, 0) / 600000
                 ELSE 0 END) DESC,
    id)
    WHERE state = 'pending' AND next_attempt_at = 0;
