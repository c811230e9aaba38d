"""Inbound events: the CloudEvents envelope (``cloudevents``) and the agencies' signatures over
it (``provenance``). The JSON Schemas of each event type's ``data`` are ``schemas/events/``."""
