"""The living asset inventory: imported files, discovery, operators' confirmations, live changes."""
