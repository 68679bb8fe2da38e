"""Job workflows: each turns one job into hypervisor and disk changes, step by step."""
