-- storage (written by adminapi/backup at a restore): the positions each
-- stream had reached in the backup a restore came from (lost_after) and
-- where the restored server continues (base). The old server may have
-- handed out positions in (lost_after, base) after the backup was taken;
-- they are gone, so a sync token naming one is answered as an initial
-- sync, and no stream hands them out again (it goes on from base).
CREATE TABLE IF NOT EXISTS restore_windows (
	stream      TEXT NOT NULL,
	restored_ts BIGINT NOT NULL,
	lost_after  BIGINT NOT NULL,
	base        BIGINT NOT NULL,
	PRIMARY KEY (stream, restored_ts)
);
