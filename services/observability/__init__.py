"""Health, readiness and Prometheus metrics of every Accord process (docs/operations.md).

- ``metrics``: every metric Accord exports, in one module, with bounded label values only;
- ``readiness``: checks that Kafka, the database and OPA answer, each within a short timeout,
  never blocking the event loop;
- ``server``: the small HTTP server of the workers (``/healthz``, ``/readyz``, ``/metrics``).
"""
