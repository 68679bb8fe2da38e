"""The only modules that talk to outside things: libvirt, libguestfs, pyroute2, SQLite,
and command-line tools. One adapter per outside thing."""
