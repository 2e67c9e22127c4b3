from enum import StrEnum


class DeviceType(StrEnum):
    DOOR_CONTROLLER = "door_controller"
    VEHICLE_GATE = "vehicle_gate"
    EV_CHARGER = "ev_charger"
    SMOKE_SENSOR = "smoke_sensor"
    CAMERA = "camera"
    POWER_METER = "power_meter"
    SPACE_SENSOR = "space_sensor"
    RADIO = "radio"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
