"""compute-agent: a per-host daemon that turns server jobs into libvirt guests."""

__version__ = "0.1.0"
