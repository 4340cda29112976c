-- Issue 23: intake ranking reads only rows that are due. A producer's row
-- with a due time (or a bulk load of them) is ranked by the first claim
-- after it comes due, not by the claims of the hour before, which ranked
-- every waiting row one batch a claim ahead of the rows at hand.
DROP INDEX queue_unranked;
CREATE INDEX queue_unranked ON queue (id) WHERE state = 'pending' AND ranked = 0 AND next_attempt_at = 0;
