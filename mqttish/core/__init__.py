"""The broker's brain: routing, sessions, retained messages. Sans-IO: time is passed in as `now`."""
