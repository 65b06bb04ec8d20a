"""Interventions (work orders) and residents' reports: from a fault to a closed job."""
