"""Credential issuing: who may get an API key (``issuing.py``), the keys' lifecycle over HTTP
(``views.py``) and from the command line (``cli.py``, ``accord credentials``).

Apart from ``services/auth/`` (principals, key hashing, the route dependencies), because
issuing looks the subject up in the registry, whose own views need auth's roles.
"""
