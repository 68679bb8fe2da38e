"""In-memory fakes of the ports, for fast unit tests of the core. Each one is held to the
real adapter's behaviour by a contract suite in tests/integration."""
