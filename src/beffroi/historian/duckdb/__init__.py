"""The embedded historian: one DuckDB file, hot rows, compacted runs, sealed daily blocks."""
