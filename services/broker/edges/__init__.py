"""The broker's HTTP edges, apart from the relay: ingest (agencies publish), the partner feed
(partners read) and rejections (agencies learn why the relay dead-lettered their events)."""
