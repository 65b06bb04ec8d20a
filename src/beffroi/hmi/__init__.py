"""The Dash web HMI: map of the metropolis, trends, served by waitress in a background thread."""
