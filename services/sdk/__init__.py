"""Accord partner SDK: receive your deliveries over Kafka or the HTTP feed, check that the
relay sealed them for you, open them, and acknowledge each once your handler has succeeded.

    from services.sdk import HttpFeed, PartnerClient, load_private_key

    client = PartnerClient(
        "lighthouse-shelter",
        load_private_key("partner.key"),
        relay_key="<the relay's public key, base64>",
        source=HttpFeed("https://accord.example", api_key="acc_..."),
    )
    await client.run(handle)  # handle(delivery) may be sync or async

Referrals delivered to you are moved with ``Referrals`` (docs/referrals.md). See
docs/partners.md.
"""

from services.sdk.client import Handler, PartnerClient
from services.sdk.delivery import Delivery, DeliveryRejected, open_record
from services.sdk.http import FeedError, HttpFeed
from services.sdk.kafka import KafkaFeed
from services.sdk.keys import load_private_key, new_key_file
from services.sdk.referrals import ReferralRefused, Referrals
from services.sdk.source import RawItem, Source

__all__ = [
    "Delivery",
    "DeliveryRejected",
    "FeedError",
    "Handler",
    "HttpFeed",
    "KafkaFeed",
    "PartnerClient",
    "RawItem",
    "ReferralRefused",
    "Referrals",
    "Source",
    "load_private_key",
    "new_key_file",
    "open_record",
]
