"""Notifiers: WeCom and DingTalk group robots, a JSON webhook, and MQTT for radios and speakers."""
