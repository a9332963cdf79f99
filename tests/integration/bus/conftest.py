"""The bus contract runs against both back ends: `embedded` on a temp folder, `kafka` on a Tansu
broker started once for the session (`tansu_broker`, defined beside this file)."""

import uuid

import pytest


@pytest.fixture(params=["embedded", "kafka"])
def backend(request) -> str:
    return request.param


@pytest.fixture
async def make_bus(backend, request, tmp_path):
    """A factory of bus instances sharing one store (embedded: one folder; kafka: one broker),
    so a test can close one and open another to check what survives a restart."""
    opened = []

    async def make(**options):
        if backend == "embedded":
            from inferline.bus.embedded import EmbeddedBus

            bus = EmbeddedBus(tmp_path / "bus", **options)
        else:
            from inferline.bus.kafka import KafkaBus

            bus = KafkaBus(
                {"bootstrap.servers": request.getfixturevalue("tansu_broker")}, **options
            )
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


@pytest.fixture
def topic() -> str:
    """A fresh topic name per test (the Kafka broker is shared by the session)."""
    return f"test.{uuid.uuid4().hex[:12]}"
