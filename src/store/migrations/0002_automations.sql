-- What each automation has done: a file sent (by its path, size and time), a link or package
-- downloaded. A ledger entry keeps the same thing from being sent or fetched twice.
CREATE TABLE ledger (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    transfer_id TEXT,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rule, key)
);
CREATE INDEX ledger_transfer ON ledger(transfer_id);
-- Per-rule state that outlives a restart: switched off at run time, when it first ran.
CREATE TABLE automations (
    name TEXT PRIMARY KEY,
    enabled INTEGER,
    first_run TEXT,
    last_run TEXT,
    last_error TEXT
);
