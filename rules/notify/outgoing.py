"""What an alert change sends to people, as outbox items: a message for every robot that wants it,
and commands to the radios and speakers it names (one row per kind, not per radio)."""

import time
from collections.abc import Sequence
from typing import Any

from devices.alerts import NOTIFY_ACTIONS, Action
from devices.topics import command_topic
from devices.types import DeviceType
from rules.config import NotifyChannel
from rules.notify.messages import Directory, message, text, wants
from store.alert_copies import MQTT_CHANNEL
from store.alerts import AlertView
from store.outbox import Item

VOICE_WARNING = "消防通道禁止停车，请立即驶离"


def notifications(
    alert: AlertView, action: Action, channels: Sequence[NotifyChannel], directory: Directory, page_url: str | None
) -> list[Item]:
    msg = message(alert, action, directory, page_url)
    level = f"{alert.escalation}.{alert.ack_escalations}.{alert.severity}"
    out: list[Item] = [(f"{alert.id}:{action}:{level}:{ch.name}", ch.name, alert.id, msg)
                       for ch in channels if wants(ch, alert)]  # fmt: skip
    if action not in NOTIFY_ACTIONS:
        return out
    now = int(time.time() * 1000)
    commands: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for recipient in alert.recipients:
        kind, _, target = recipient.partition(":")
        if kind == "radio":
            topic = command_topic(alert.site, DeviceType.RADIO, target)
            body = {"ts": now, "type": "alert", "alert_id": alert.id, "severity": alert.severity, "text": text(msg)}
        elif kind == "speaker":
            topic = command_topic(alert.site, DeviceType.CAMERA, target)
            body = {"ts": now, "type": "voice_warning", "zone": alert.zone, "text": VOICE_WARNING}
        else:
            continue
        commands.setdefault(kind, ([], body))[0].append(topic)
    for kind, (topics, body) in commands.items():
        out.append((f"{alert.id}:{action}:{level}:{kind}", MQTT_CHANNEL, alert.id, {"topics": topics, "payload": body}))
    return out
