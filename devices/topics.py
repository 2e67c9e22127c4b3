"""MQTT topic layout: ``estate/v1/{site}/{device_type}/{device_id}/{channel}``."""

from dataclasses import dataclass

from devices.ids import ID_RE, is_valid_id
from devices.types import Channel, DeviceType

__all__ = ["ID_RE", "is_valid_id"]  # re-exported: the topic checks name the rule they apply

ROOT = "estate/v1"
ESTATE_GRID = "_estate"  # the grid level (and InfluxDB tag) of alerts no grid owns: radios, estate-wide rules
_TYPES = {t.value: t for t in DeviceType}
_CHANNELS = {c.value: c for c in Channel}


class TopicError(ValueError):
    """A topic that is not a device topic of this protocol; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    site: str
    device_type: DeviceType
    device_id: str
    channel: Channel

    def __str__(self) -> str:
        return device_topic(self.site, self.device_type, self.device_id, self.channel)


def device_topic(site: str, device_type: DeviceType, device_id: str, channel: Channel) -> str:
    for name, value in (("site", site), ("device_id", device_id)):
        if not is_valid_id(value):
            raise TopicError("bad_id", f"{name} {value!r} does not match {ID_RE.pattern}")
    return f"{ROOT}/{site}/{device_type.value}/{device_id}/{channel.value}"


def device_root(site: str, device_type: DeviceType | str, device_id: str) -> str:
    """The level every topic of one device is under (its credentials publish there and nowhere else)."""
    kind = device_type.value if isinstance(device_type, DeviceType) else device_type
    return f"{ROOT}/{site}/{kind}/{device_id}"


def command_topic(site: str, device_type: DeviceType, device_id: str) -> str:
    """Where a device listens for commands (voice warnings, resets)."""
    return f"{device_root(site, device_type, device_id)}/command"


def alerts_topic(site: str, grid: str | None, rule: str) -> str:
    """Where alert changes go for radios and apps: per grid, so a radio subscribes to its own.

    Seven levels, so that no six-level device subscription (``estate/v1/+/+/+/+``) ever matches.
    """
    return f"{ROOT}/{site}/alerts/{grid or ESTATE_GRID}/{rule}/change"


def alerts_filter(site: str = "+") -> str:
    """Every alert change of a site (or of every site)."""
    return f"{ROOT}/{site}/alerts/#"


def subscription(channel: Channel | None = None, site: str = "+") -> str:
    """A wildcard filter for every device topic, optionally one channel only."""
    return f"{ROOT}/{site}/+/+/{channel.value if channel else '+'}"


def parse_topic(topic: str) -> DeviceTopic:
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise TopicError("bad_topic", f"not {ROOT}/site/type/id/channel: {topic[:200]!r}")
    _, _, site, type_name, device_id, channel_name = parts
    if not is_valid_id(site):
        raise TopicError("bad_id", f"site {site[:80]!r} does not match {ID_RE.pattern}")
    if not is_valid_id(device_id):
        raise TopicError("bad_id", f"device id {device_id[:80]!r} does not match {ID_RE.pattern}")
    device_type = _TYPES.get(type_name)
    if device_type is None:
        raise TopicError("unknown_type", f"unknown device type {type_name[:80]!r}")
    channel = _CHANNELS.get(channel_name)
    if channel is None:
        raise TopicError("bad_channel", f"unknown channel {channel_name[:80]!r}")
    return DeviceTopic(site, device_type, device_id, channel)
