-- The hash of a file's bytes, computed as they moved: "FORMAT:DIGEST", e.g. "xxh64:e4c191d091bd8853".
ALTER TABLE transfer_files ADD COLUMN hash TEXT;
