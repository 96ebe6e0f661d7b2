"""The real brokers a test can run the queue through (RabbitMQ, Redis),
and removing a test's own queues from them afterwards."""

from __future__ import annotations

import pytest

from tests.support.environment import RABBITMQ_URL, REDIS_URL, missing_component, port_open

BROKERS = {"rabbitmq": (RABBITMQ_URL, 5672), "redis": (REDIS_URL, 6379)}


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each broker in turn; missing, it fails the test in CI and skips it
    elsewhere."""
    url, port = BROKERS[request.param]
    if not port_open("127.0.0.1", port):
        missing_component(f"{request.param} at 127.0.0.1:{port}")
    return url


def delete_queues(broker_url: str, queue_name: str) -> None:
    """Queues are named per test; remove them so the broker does not fill up."""
    names = [queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"]
    if broker_url.startswith("amqp"):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = connection.channel()
        for name in names:
            channel.queue_delete(queue=name)
        connection.close()
    else:
        import redis

        client = redis.Redis.from_url(broker_url)
        for key in client.scan_iter(f"dramatiq:{queue_name}*"):
            client.delete(key)
        client.close()
