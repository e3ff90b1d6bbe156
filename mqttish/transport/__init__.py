"""The only code that touches sockets and tasks: trio streams around the sans-IO core."""
