"""A redundant pair of central gateways: one active, one hot standby, a lease in PostgreSQL."""
