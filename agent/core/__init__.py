"""Workflows, jobs, the monitor and recovery. Talks to the outside only through ports."""
