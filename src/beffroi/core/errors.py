"""Errors that reach users as clear messages rather than tracebacks."""


class BeffroiError(Exception):
    """Base class of errors shown to users as a message."""


class MissingCredentials(BeffroiError):
    """An environment variable named in the config for a user name or password is not set."""


class ConfigError(BeffroiError):
    """A configuration file that cannot be used, with one line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))

    @property
    def lines(self) -> list[str]:
        """Return one `FILE: toml.path: what was expected` line per problem."""
        return [f"{self.path}: {p}" for p in self.problems]
