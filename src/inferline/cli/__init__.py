"""The `inferline` command line."""
