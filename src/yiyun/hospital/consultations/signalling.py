"""WebRTC signalling for video consultations: yiyun relays the peers' offer, answer and
ICE candidates over the consultation's WebSocket (https://www.w3.org/TR/webrtc/ leaves
signalling to the application); media flows browser to browser, through TURN if set.

Frames a party sends (all carry `call_id`, a call started with `POST .../calls`):

- `join` {reply?}: "I am on the call page". The callee answers a join with a join
  (`reply: true`); the caller (who started the call) sends the offer on any join, so
  whichever side arrives first, the call is set up when the second arrives.
- `offer` / `answer` {sdp}, `ice` {candidate}: relayed to the other party only.
- `state` {state: "connected"}: the peer connection is up (recorded once per call).
- `hangup`: ends the call for both; the call and its length go into the conversation.

Only the two parties of an in-progress consultation may signal, and only for a call of
that consultation that has not ended.
"""

from __future__ import annotations

from typing import Any

from yiyun.core.errors import BadRequest
from yiyun.core.settings import Settings, get_settings

RELAYED = frozenset({"join", "offer", "answer", "ice"})
MAX_SDP = 32_000  # an SDP with several media sections and candidates is a few kB
MAX_CANDIDATE = 2_000


def ice_servers(settings: Settings | None = None) -> list[dict[str, Any]]:
    """RTCIceServer entries (https://www.w3.org/TR/webrtc/#rtciceserver-dictionary) from
    YIYUN_STUN_URLS and YIYUN_TURN_URLS / _USERNAME / _CREDENTIAL; none by default, which
    is enough for two browsers on one host or one LAN."""
    settings = settings or get_settings()
    servers: list[dict[str, Any]] = []
    stun = [u.strip() for u in settings.stun_urls.split(",") if u.strip()]
    turn = [u.strip() for u in settings.turn_urls.split(",") if u.strip()]
    if stun:
        servers.append({"urls": stun})
    if turn:
        servers.append({"urls": turn, "username": settings.turn_username, "credential": settings.turn_credential})
    return servers


def relay_frame(frame: dict, sender_role: str, cid: str) -> dict:
    """The frame to publish for a relayed signalling message, validated and cut to what is
    needed (a client cannot smuggle other fields to the peer)."""
    kind = frame.get("type")
    out: dict[str, Any] = {"type": kind, "consultation": cid, "call_id": str(frame.get("call_id"))[:32],
                           "from": sender_role}
    if kind in ("offer", "answer"):
        sdp = frame.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
            raise BadRequest("SDP 不合法 (invalid session description)")
        out["sdp"] = sdp
    elif kind == "ice":
        cand = frame.get("candidate")
        if cand is not None and (not isinstance(cand, dict) or len(str(cand)) > MAX_CANDIDATE):
            raise BadRequest("ICE 候选不合法 (invalid ICE candidate)")
        out["candidate"] = cand and {k: cand.get(k) for k in ("candidate", "sdpMid", "sdpMLineIndex",
                                                                 "usernameFragment") if k in cand}
    elif kind == "join":
        out["reply"] = bool(frame.get("reply"))
    return out
