"""Layouts of the DuckDB historian file: create the tables, migrate an older layout, or refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from beffroi.historian.duckdb import sql as q

log = logging.getLogger(__name__)


class LayoutError(RuntimeError):
    """The file holds a historian layout this version cannot use as it is."""


# Layout 1 kept every compacted sample in `samples` and rollups of every compacted hour, and of
# hours whose samples retention removed. Its samples become the unsealed runs, their rollups stay
# theirs, and the next compaction seals the days past SEAL_AFTER. SCHEMA then adds what is
# missing, and MIGRATED_DAYS the daily statistics of the days retention emptied.
MIGRATE_FROM_1 = """
ALTER TABLE hot ADD COLUMN status UINTEGER DEFAULT 0;
CREATE TABLE recent AS
    SELECT tag_id, ts, value, quality, 0::UINTEGER AS status FROM samples ORDER BY tag_id, ts;
DROP TABLE samples;
ALTER TABLE text_samples RENAME TO text_samples_1;
CREATE TABLE text_samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value VARCHAR, quality UTINYINT NOT NULL,
    status UINTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tag_id, ts)
);
INSERT INTO text_samples SELECT tag_id, ts, value, quality, 0 FROM text_samples_1;
DROP TABLE text_samples_1;
"""

_EMPTIED = (
    f"(SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM rollup_1h WHERE (tag_id, bucket::DATE) "
    "NOT IN (SELECT tag_id, ts::DATE FROM recent UNION SELECT tag_id, ts::DATE FROM hot))"
)
MIGRATED_DAYS = (
    f"INSERT INTO blocks SELECT tag_id, bucket::DATE, 0, {q.STATS_COLUMNS}, NULL FROM ("
    + q.FROM_STATS.format(step=q.DAY_US, stats=_EMPTIED)
    + ")"
)


def open_layout(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
    """Create the tables of a new file, migrate an older layout, refuse an unknown one."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    version = None
    if "samples" in tables:
        version = 1  # layout 1 had no version row
    elif "meta" in tables:
        rows = con.execute("SELECT value FROM meta WHERE key = 'layout'").fetchall()
        version = int(rows[0][0]) if rows else None
    if version == q.SCHEMA_VERSION:
        return
    if version is not None and version > q.SCHEMA_VERSION:
        raise LayoutError(
            f"{path}: historian layout {version} is newer than this version of beffroi reads "
            f"({q.SCHEMA_VERSION}); upgrade beffroi"
        )
    if read_only:
        if version is None:
            raise LayoutError(f"{path}: no historian in this file yet")
        raise LayoutError(
            f"{path}: historian layout {version} must be upgraded to {q.SCHEMA_VERSION}; "
            "open the file once read-write (start the gateway) first"
        )
    con.execute("BEGIN")
    try:
        if version == 1:
            log.warning("%s: migrating historian layout 1 to %d", path, q.SCHEMA_VERSION)
            con.execute(MIGRATE_FROM_1)
        con.execute(q.SCHEMA)
        if version == 1:
            con.execute(MIGRATED_DAYS)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", [q.SCHEMA_VERSION])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
