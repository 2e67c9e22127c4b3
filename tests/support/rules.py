"""The rules service's settings for tests, and a publisher that plays devices by hand."""

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.estate import Estate, dump_estate
from rules.settings import RulesSettings
from tests.support.servers import PASSWORD, Broker


def rules_settings(
    broker: Broker,
    influx_url: str,
    db: str,
    registry_url: str,
    tmp: Path,
    estate: Estate,
    hook_url: str | None,
    **over: Any,
) -> RulesSettings:
    """Settings for a rules service in a test; ``hook_url`` None: no notification channels."""
    estate_file = tmp / "estate.yaml"
    estate_file.write_text(dump_estate(estate))
    config = tmp / "rules.yaml"
    hook = f"\n    - {{name: hook, kind: webhook, url: '{hook_url}/alerts', min_severity: info}}" if hook_url else " []"
    config.write_text(f"notify:\n  page_url: http://estate.example/page\n  channels:{hook}\n")
    values: dict[str, Any] = {
        "mqtt_url": broker.url("service"),
        "influx_url": influx_url,
        "influx_database": db,
        "db_url": registry_url,
        "estate_file": estate_file,
        "run_dir": tmp / "run",
        "rules_config": config,
        "rules_client_id": "rules-test",
        "rules_metrics_port": 0,
        "rules_escalation_check_s": 0.2,
        **over,
    }
    return RulesSettings.model_validate(values)


class Device:
    """Publishes as the devices do (QoS 1, simulator credentials), waiting for each PUBACK."""

    def __init__(self, broker: Broker, site: str, client_id: str = "test-devices") -> None:
        self.site = site
        self.seq: dict[str, int] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.username_pw_set("simulator", PASSWORD)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, device_type: str, device: str, channel: str, **body: Any) -> None:
        """``seq`` counts per device from 1 unless ``body`` names one."""
        self.seq[device] = self.seq.get(device, 0) + 1
        self.raw(f"estate/v1/{self.site}/{device_type}/{device}/{channel}", {"seq": self.seq[device], **body})

    def raw(self, topic: str, body: Any) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
