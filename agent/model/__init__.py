"""Pure domain types and the state machine. Imports nothing else of the project."""
