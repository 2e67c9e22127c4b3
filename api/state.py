"""What the API's lifespan owns: one of each client, built at start, closed at stop."""

import asyncio
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api.auth import Authenticator
from api.cache import ChangeCache, list_affected_by
from api.last_values import LastValues
from api.mqtt import ApiBroker
from api.settings import ApiSettings
from ingest.admission import CurrentAdmission
from runtime.service import Service
from store.alerts import AlertStore
from store.devices import DeviceAdmin
from store.estate_settings import EstateSettings
from store.influx import Influx
from store.registry.db import Registry
from store.tokens import TokenStore

log = logging.getLogger("estatewatch.api")


class ApiMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("api_requests", "HTTP requests", ["route", "status"], registry=r)
        self.seconds = Histogram(
            "api_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.streams = Gauge("api_alert_streams", "open alert event streams", registry=r)
        self.connected = Gauge("api_mqtt_connected", "1 while connected to the broker", registry=r)


@dataclass
class ApiState:
    settings: ApiSettings
    registry: Registry
    influx: Influx
    broker: ApiBroker
    auth: Authenticator
    alerts: AlertStore
    devices: DeviceAdmin
    estate: EstateSettings
    metrics: ApiMetrics
    alert_lists: ChangeCache
    last_values: LastValues
    fill_lock: asyncio.Lock
    admission: CurrentAdmission


class ApiService(Service):
    """The API's clients and its broker connection, under the runtime every service shares: a task
    that dies stops the service, and the API command then stops uvicorn and exits 1. Requests are
    uvicorn's to drain (``timeout_graceful_shutdown``); nothing here holds work of its own."""

    def __init__(self, settings: ApiSettings) -> None:
        super().__init__("api", log, settings.drain_s)
        self.settings = settings
        self.state: ApiState | None = None

    async def open(self) -> None:
        settings = self.settings
        registry = await self.stack.enter_async_context(Registry(settings.db_url, pooled=True))
        influx = await self.stack.enter_async_context(
            Influx(settings.influx_url, settings.influx_database, timeout_s=settings.api_query_timeout_s)
        )
        last_values = LastValues()
        broker = ApiBroker(settings.mqtt, settings.api_client_id, settings.api_broker_timeout_s)
        broker.on_telemetry = last_values.on_message  # before connecting: it subscribes on connect
        broker.on_reconnect.append(last_values.forget_known)
        alert_lists = ChangeCache(settings.api_alert_cache_s)
        broker.on_alert_change.append(lambda doc: alert_lists.changed(list_affected_by(doc)))
        self.task("mqtt", broker.run())
        # Not connected in time: readiness says so, and the API serves reads meanwhile.
        await broker.wait_connected(settings.api_broker_timeout_s)
        self.state = ApiState(
            settings=settings,
            registry=registry,
            influx=influx,
            broker=broker,
            auth=Authenticator(TokenStore(registry), settings.api_token_cache_s),
            alerts=AlertStore(registry),
            devices=DeviceAdmin(registry, settings.api_device_cache_s),
            estate=EstateSettings(registry),
            metrics=ApiMetrics(),
            alert_lists=alert_lists,
            last_values=last_values,
            fill_lock=asyncio.Lock(),
            admission=CurrentAdmission(influx, settings),
        )
