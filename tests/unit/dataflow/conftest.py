import pytest

from inferline.bus.embedded import EmbeddedBus


@pytest.fixture
async def bus(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus")
    yield bus
    await bus.close()
