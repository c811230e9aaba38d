"""The partner registry: agencies that publish, partners that receive, their agreements and
subscriptions (tables, schemas, operations, the admin API). The relay reads it through
``services/broker/registry.py``; nothing here imports the relay."""
