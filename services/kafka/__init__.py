"""Kafka plumbing, in one place: the client connection (``client``), the hand-declared protocol
requests (``protocol``), the admin calls (``admin``), the ACL and quota table (``acls``), the
provision/revoke/rotate workflows (``provisioning``), topics (``topics``), the stable committed
offset (``offsets``), the compacted-topic reader (``compacted``) and the topic-to-database sink
(``sink``). Nothing here knows consents, partners' agreements or the relay's decisions."""
