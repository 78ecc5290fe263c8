"""A WebSocket without a session or token is told why: close code 4401 after the handshake."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, WebSocket

from yiyun.identity import sessions


def test_unauthenticated_websocket_is_closed_with_4401():
    from fastapi import FastAPI
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    app = FastAPI()

    @app.websocket("/ws/test")
    async def endpoint(websocket: WebSocket):
        try:
            await sessions.websocket_context(websocket)
        except sessions.WebSocketUnauthorized:
            return
        await websocket.accept()
        await websocket.send_text("hello")

    with TestClient(app) as tc:
        for url in ("/ws/test", "/ws/test?access_token=forged"):
            with tc.websocket_connect(url) as ws:
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
            assert closed.value.code == 4401
