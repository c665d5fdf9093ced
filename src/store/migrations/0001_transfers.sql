-- Transfers (downloads and uploads), their files, and the chunks committed so far: what a
-- restarted agent resumes from.
CREATE TABLE transfers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('download', 'upload')),
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    remote TEXT,
    error TEXT,
    rule TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE transfer_files (
    transfer_id TEXT NOT NULL REFERENCES transfers(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    remote_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    local_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    last_modified TEXT,
    state TEXT NOT NULL,
    error TEXT,
    extra TEXT,
    PRIMARY KEY (transfer_id, idx)
);
CREATE TABLE chunks (
    transfer_id TEXT NOT NULL,
    file_idx INTEGER NOT NULL,
    chunk_idx INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    PRIMARY KEY (transfer_id, file_idx, chunk_idx),
    FOREIGN KEY (transfer_id, file_idx) REFERENCES transfer_files(transfer_id, idx) ON DELETE CASCADE
);
