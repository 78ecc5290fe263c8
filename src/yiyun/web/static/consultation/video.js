/* yiyun video consultation (视频问诊): WebRTC in the browser, yiyun as the signalling server.
 *
 *   const call = YiyunVideo.start({consultationId, callId, token, local: videoEl, remote: videoEl,
 *                                  onState: (s) => ...});
 *   call.hangup();
 *
 * `callId` comes from POST /api/consultations/<id>/calls. The side that started the call
 * makes the offer whenever the other side joins, so either may open the page first.
 * States passed to onState: "media", "waiting", "connecting", "connected", "ended",
 * "failed". `call.pc` is the RTCPeerConnection. Chat stays available as a fallback
 * (YiyunChat on the same page). Sign-in as in chat.js.
 */
(function (global) {
  "use strict";

  function start(opts) {
    const token = opts.token || null;
    const base = "/api/consultations/" + encodeURIComponent(opts.consultationId);
    const headers = (global.YiyunChat ? YiyunChat.authHeaders(token) : (token ? { Authorization: "Bearer " + token } : {}));
    const call = { pc: null, state: "new", role: null, caller: false, ws: null, stream: null, pending: [], ended: false,
      offered: false, hangup: hangup };
    function setState(s) { call.state = s; if (opts.onState) opts.onState(s, call); }

    function send(frame) {
      frame.call_id = opts.callId;
      if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(frame));
    }

    async function getJson(path) {
      const r = await fetch(base + path, { headers: headers });
      if (!r.ok) throw new Error((await r.json()).detail || r.status);
      return r.json();
    }

    async function boot() {
      const [ice, detail] = await Promise.all([getJson("/ice-servers"), getJson("")]);
      const mine = (detail.calls || []).find(c => c.id === opts.callId);
      if (!mine) throw new Error("未找到视频通话");
      if (mine.state === "ended") { setState("ended"); return; }
      call.role = detail.relation;
      call.caller = mine.started_by === detail.relation;
      try {
        call.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      } catch (e) {
        setState("failed");
        throw new Error("无法打开摄像头或麦克风，请改用文字问诊");
      }
      if (opts.local) { opts.local.srcObject = call.stream; opts.local.muted = true; }
      setState("media");
      const pc = new RTCPeerConnection({ iceServers: ice.iceServers });
      call.pc = pc;
      call.stream.getTracks().forEach(t => pc.addTrack(t, call.stream));
      pc.onicecandidate = (e) => send({ type: "ice", candidate: e.candidate ? e.candidate.toJSON() : null });
      pc.ontrack = (e) => { if (opts.remote && opts.remote.srcObject !== e.streams[0]) opts.remote.srcObject = e.streams[0]; };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") { send({ type: "state", state: "connected" }); setState("connected"); }
        else if (pc.connectionState === "failed") setState("failed");
      };
      const params = { messages: "none" };
      if (token) params.access_token = token;
      const url = (global.YiyunChat ? YiyunChat.socketUrl : defaultUrl)(base + "/ws", params);
      const ws = new WebSocket(url);
      call.ws = ws;
      ws.onmessage = (e) => onFrame(JSON.parse(e.data));
      ws.onopen = () => { setState("waiting"); send({ type: "join" }); };
    }

    function defaultUrl(path, params) {
      return (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + path + "?" + new URLSearchParams(params);
    }

    async function offer() {
      const pc = call.pc;
      // both joins (the callee's own and its reply to ours) may arrive: offer once
      if (call.offered || pc.signalingState !== "stable") return;
      call.offered = true;
      setState("connecting");
      await pc.setLocalDescription(await pc.createOffer());
      send({ type: "offer", sdp: pc.localDescription.sdp });
    }

    async function flushIce() {
      while (call.pending.length) await call.pc.addIceCandidate(call.pending.shift());
    }

    async function onFrame(f) {
      if (f.call_id && f.call_id !== opts.callId) return;
      const pc = call.pc;
      switch (f.type) {
        case "join":
          if (call.caller) await offer();
          else if (!f.reply) send({ type: "join", reply: true });
          break;
        case "offer":
          if (call.caller || pc.remoteDescription) return;
          setState("connecting");
          await pc.setRemoteDescription({ type: "offer", sdp: f.sdp });
          await pc.setLocalDescription(await pc.createAnswer());
          send({ type: "answer", sdp: pc.localDescription.sdp });
          await flushIce();
          break;
        case "answer":
          if (!call.caller || pc.signalingState !== "have-local-offer") return;
          await pc.setRemoteDescription({ type: "answer", sdp: f.sdp });
          await flushIce();
          break;
        case "ice":
          if (!f.candidate) return;
          if (pc.remoteDescription) await pc.addIceCandidate(f.candidate);
          else call.pending.push(f.candidate);
          break;
        case "hangup":
          close();
          break;
        case "state":
          if (f.call && f.call.id === opts.callId && f.call.state === "ended") close();
          break;
      }
    }

    function close() {
      if (call.ended) return;
      call.ended = true;
      if (call.pc) call.pc.close();
      if (call.stream) call.stream.getTracks().forEach(t => t.stop());
      if (call.ws) setTimeout(() => call.ws.close(), 200);
      setState("ended");
    }

    function hangup() {
      send({ type: "hangup" });
      close();
    }

    call.ready = boot().catch(err => { call.error = String(err.message || err); if (opts.onError) opts.onError(call.error); });
    return call;
  }

  global.YiyunVideo = { start: start };
})(window);
