"""The HTTP surface: an OpenStack Compute API v2.1-compatible app (see app.create_api)."""
