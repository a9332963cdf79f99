"""The agent: lives in each server process, and loads what the scheduler places there."""
