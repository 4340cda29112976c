-- Issue 23: rows that become pending without an INSERT (a dead row put
-- back by `assignd queue retry`, rows released at shutdown or reclaimed)
-- count here, in the transaction that changes them, so that the daemon's
-- watch of the database file (`store/watch.rs`) sees them as it sees the
-- queue's AUTOINCREMENT sequence rise for a new row.
CREATE TABLE queue_signal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO queue_signal (id, n) VALUES (1, 0);
