"""Readers that turn public data sets into Redpoll events and catalog rows."""
