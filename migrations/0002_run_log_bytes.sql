-- How many bytes of output a run has written in all (its live tail while it runs, its final
-- count once it ended). `log_tail` keeps only the end of it; `log_bytes - length(log_tail)` is
-- the offset of the tail's first byte, so a reader can follow the output by offset.
ALTER TABLE runs ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0 CHECK (log_bytes >= 0);
