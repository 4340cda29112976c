-- Issue 23: a decision reads each agent's seats in time that does not grow
-- with the open chats. open_chats stays the truth (exact, idempotent per
-- chat); triggers record every change of it as +1/-1 rows in
-- agent_seat_changes, inserts only, so that no two writers ever wait on
-- one agent's row (PostgreSQL) in opposite orders. A decision folds the
-- changes into agent_seats under the routing lock, then reads the sum of
-- both (store/seats.rs): a few rows per agent, whatever the open chats.
CREATE TABLE agent_seats (
    agent TEXT PRIMARY KEY,
    seats INTEGER NOT NULL
);
CREATE TABLE agent_seat_changes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT    NOT NULL,
    delta INTEGER NOT NULL
);
INSERT INTO agent_seats (agent, seats)
    SELECT agent, COUNT(*) FROM (
        SELECT agent FROM open_chats
        UNION ALL SELECT previous_agent FROM open_chats WHERE previous_agent IS NOT NULL)
     GROUP BY agent;

CREATE TRIGGER open_chats_seat_insert AFTER INSERT ON open_chats
BEGIN
    INSERT INTO agent_seat_changes (agent, delta)
        SELECT NEW.agent, 1
        UNION ALL SELECT NEW.previous_agent, 1 WHERE NEW.previous_agent IS NOT NULL;
END;
CREATE TRIGGER open_chats_seat_delete AFTER DELETE ON open_chats
BEGIN
    INSERT INTO agent_seat_changes (agent, delta)
        SELECT OLD.agent, -1
        UNION ALL SELECT OLD.previous_agent, -1 WHERE OLD.previous_agent IS NOT NULL;
END;
CREATE TRIGGER open_chats_seat_update AFTER UPDATE OF agent, previous_agent ON open_chats
    WHEN OLD.agent IS NOT NEW.agent OR OLD.previous_agent IS NOT NEW.previous_agent
BEGIN
    INSERT INTO agent_seat_changes (agent, delta)
        SELECT OLD.agent, -1
        UNION ALL SELECT OLD.previous_agent, -1 WHERE OLD.previous_agent IS NOT NULL
        UNION ALL SELECT NEW.agent, 1
        UNION ALL SELECT NEW.previous_agent, 1 WHERE NEW.previous_agent IS NOT NULL;
END;

-- The hourly counts read the reserved seats (store/outcomes.rs
-- RECENT_ASSIGNMENTS): the few decisions in flight, not every open chat.
CREATE INDEX open_chats_reserved ON open_chats (assigned_at) WHERE reserved = 1;
