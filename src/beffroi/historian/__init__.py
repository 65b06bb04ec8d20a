"""Storage of every value: back ends, write buffer, queries."""
