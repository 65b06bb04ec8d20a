"""Energy and service KPIs: definitions, scheduled computation, auditor exports."""
