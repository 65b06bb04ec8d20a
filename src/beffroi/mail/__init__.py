"""E-mail delivery shared by every feature: the SMTP relay's config and a sender with backoff."""
