"""Alarm notifiers: e-mail to maintenance teams, through a durable outbox."""
