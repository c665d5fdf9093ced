-- One row the health check writes: a database that cannot take a write (its disk full, say)
-- is seen as such, not only one that cannot answer a read.
CREATE TABLE health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
