-- Webhook event ids already applied: HelpCrunch retries deliveries and
-- sends no timestamp to check, so the id is the replay protection.
CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    event       TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX webhook_events_by_time ON webhook_events (received_at);
