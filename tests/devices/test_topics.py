import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.topics import TopicError, device_topic, parse_topic, subscription
from devices.types import Channel, DeviceType

ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)


@given(site=ids, device_id=ids, device_type=st.sampled_from(DeviceType), channel=st.sampled_from(Channel))
def test_build_then_parse_round_trips(site: str, device_id: str, device_type: DeviceType, channel: Channel) -> None:
    topic = parse_topic(device_topic(site, device_type, device_id, channel))
    assert (topic.site, topic.device_type, topic.device_id, topic.channel) == (site, device_type, device_id, channel)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("estate/v1/luedi/smoke_sensor/s1", "bad_topic"),
        ("estate/v2/luedi/smoke_sensor/s1/telemetry", "bad_topic"),
        ("estate/v1/luedi/smoke_sensor/s1/telemetry/extra", "bad_topic"),
        ("estate/v1/Luedi/smoke_sensor/s1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/s 1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/s,x=1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/s\\1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/s\n1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/-s1/telemetry", "bad_id"),
        ("estate/v1/luedi/smoke_sensor/" + "a" * 65 + "/telemetry", "bad_id"),
        ("estate/v1/luedi/toaster/s1/telemetry", "unknown_type"),
        ("estate/v1/luedi/smoke_sensor/s1/command", "bad_channel"),
        ("estate/v1/luedi/smoke_sensor/s1/", "bad_channel"),
    ],
)
def test_rejects_what_is_not_a_device_topic(topic: str, reason: str) -> None:
    with pytest.raises(TopicError) as err:
        parse_topic(topic)
    assert err.value.reason == reason


@given(st.text(max_size=200))
def test_any_string_parses_or_raises_topic_error(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return
    assert str(parsed) == topic


def test_builder_refuses_bad_ids() -> None:
    with pytest.raises(TopicError):
        device_topic("luedi", DeviceType.RADIO, "r 1", Channel.TELEMETRY)


def test_subscription_filters() -> None:
    assert subscription() == "estate/v1/+/+/+/+"
    assert subscription(Channel.EVENT, site="luedi") == "estate/v1/luedi/+/+/event"
