-- Which claim (owner, epoch) settled each row last. A settlement whose
-- commit succeeded but whose answer was lost (the connection dropped at
-- COMMIT: a failover, a restart) is retried; the retry finds the row no
-- longer leased, and without this could not tell its own earlier commit
-- from a lost lease, so it recorded the outcomes a second time.
ALTER TABLE queue ADD COLUMN settled_owner TEXT;
ALTER TABLE queue ADD COLUMN settled_epoch INTEGER;
