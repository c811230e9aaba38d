"""Each survivor's snapshot for the relay: built from the consent and legal services
(``build.py``), sealed and published to the compacted topic the relay reads (``publisher.py``).
It sits above both services, so neither imports the other."""
