"""The gateway's HTTP API: routes declared once, the server side the HMI mounts, one client."""
