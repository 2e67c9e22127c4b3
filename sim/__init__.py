"""The vendor side: every device of an estate as its own MQTT client, with realistic traffic."""
