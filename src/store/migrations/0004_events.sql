-- The outbox of post-transfer actions: an event is recorded in the same transaction as the
-- state change that causes it (a transfer complete or failed, a rule in error), then delivered
-- to each action it concerns by the delivery worker, at least once, across restarts.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    transfer_id TEXT,
    rule TEXT,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- 1 once a delivery row exists for every action the event concerns.
    dispatched INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_undispatched ON events(dispatched) WHERE dispatched = 0;
CREATE TABLE deliveries (
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- pending, delivered, failed (given up).
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- What the last attempt left: an HTTP status, the tail of a command's output.
    output TEXT,
    -- Unix milliseconds: when the next attempt is due, and since when it has been failing.
    next_attempt_ms INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (event_id, action)
);
CREATE INDEX deliveries_due ON deliveries(state, next_attempt_ms);
