"""Alarms: rules, the ISA-18.2 state machine, the journal, performance figures, notifiers."""
