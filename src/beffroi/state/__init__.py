"""Small state files beside the historian: alarm journal, KPI store, audit log, users."""
