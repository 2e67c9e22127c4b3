"""Group robots and webhooks over HTTP: WeCom (企业微信), DingTalk (钉钉, signed), a JSON webhook.

Both robots answer HTTP 200 with an ``errcode``; 0 is success. Their "too fast" codes (WeCom 45009,
DingTalk 130101) and 429/5xx/network failures are worth a retry; anything else (a wrong key, a bad
signature) will not get better by resending, so it fails for good and is logged.
"""

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from rules.config import ChannelKind, NotifyChannel
from rules.notify import messages

RETRYABLE_ERRCODES = {45009, -1, 130101}  # WeCom too fast, system busy; DingTalk too fast


class SendError(RuntimeError):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature: HMAC-SHA256 of "timestamp\\nsecret" keyed by the secret, base64."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class HttpRobot:
    def __init__(self, channel: NotifyChannel, http: httpx.AsyncClient, clock: Callable[[], float] = time.time) -> None:
        if channel.url is None:
            raise ValueError(f"notify channel {channel.name}: no url")
        self.channel = channel
        self.url: str = channel.url
        self._http = http
        self._clock = clock

    # -- bodies ----------------------------------------------------------------------------------
    def body(self, msg: dict[str, Any], key: str) -> dict[str, Any]:
        if msg.get("mention"):
            body = self.mention_body(msg["mobiles"], msg["count"])
            if body is not None:
                return body
        return self.text_body(msg, key)

    def text_body(self, msg: dict[str, Any], key: str) -> dict[str, Any]:
        kind = self.channel.kind
        if kind is ChannelKind.WECOM:
            return {
                "msgtype": "text",
                "text": {"content": messages.text(msg), "mentioned_mobile_list": msg["mobiles"]},
            }
        if kind is ChannelKind.DINGTALK:
            # DingTalk shows a mention only when the text itself carries "@mobile".
            mentions = "".join(f" @{m}" for m in msg["mobiles"])
            return {
                "msgtype": "text",
                "text": {"content": messages.text(msg) + mentions},
                "at": {"atMobiles": msg["mobiles"], "isAtAll": False},
            }
        return {"idempotency_key": key, "summary": False, "alerts": [msg]}

    def summary_body(self, msgs: list[dict[str, Any]], key: str) -> dict[str, Any]:
        title, markdown = messages.summary(msgs)
        kind = self.channel.kind
        if kind is ChannelKind.WECOM:
            return {"msgtype": "markdown", "markdown": {"content": markdown}}
        if kind is ChannelKind.DINGTALK:
            return {"msgtype": "markdown", "markdown": {"title": title, "text": markdown}}
        return {"idempotency_key": key, "summary": True, "alerts": msgs}

    def mention_body(self, mobiles: list[str], count: int) -> dict[str, Any] | None:
        """Markdown cannot ring phones: after a summary, one text that mentions everyone it names."""
        if not mobiles or self.channel.kind is ChannelKind.WEBHOOK:
            return None
        content = f"{count} alerts above need you"
        if self.channel.kind is ChannelKind.WECOM:
            return {"msgtype": "text", "text": {"content": content, "mentioned_mobile_list": mobiles}}
        mentions = "".join(f" @{m}" for m in mobiles)
        return {"msgtype": "text", "text": {"content": content + mentions}, "at": {"atMobiles": mobiles}}

    # -- sending ---------------------------------------------------------------------------------
    async def post(self, body: dict[str, Any], key: str) -> None:
        url = self.url
        if self.channel.kind is ChannelKind.DINGTALK and self.channel.secret:
            ts = int(self._clock() * 1000)
            sign = urllib.parse.quote_plus(dingtalk_sign(self.channel.secret, ts))
            url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign}"
        try:
            response = await self._http.post(url, json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            raise SendError(f"{self.channel.name}: {exc!r}", retryable=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SendError(f"{self.channel.name}: HTTP {response.status_code}", retryable=True)
        if response.status_code // 100 != 2:
            raise SendError(f"{self.channel.name}: HTTP {response.status_code}: {response.text[:200]}", False)
        if self.channel.kind is ChannelKind.WEBHOOK:
            return
        try:
            answer = response.json()
            errcode = int(answer.get("errcode", 0))
        except (ValueError, TypeError, AttributeError):
            raise SendError(f"{self.channel.name}: not a robot's answer: {response.text[:200]}", True) from None
        if errcode != 0:
            detail = f"{self.channel.name}: errcode {errcode}: {answer.get('errmsg', '')}"
            raise SendError(detail, retryable=errcode in RETRYABLE_ERRCODES)
