"""Authentication and authorisation: password file, ACL file, limits, plugged in as hooks."""
