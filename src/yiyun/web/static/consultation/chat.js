/* yiyun online consultation chat (图文问诊).
 *
 *   const chat = YiyunChat.mount(containerElement, consultationId, {token, onState, onFrame});
 *
 * Connects to /api/consultations/<id>/ws, shows the conversation, sends text and images,
 * read receipts and typing state, and reconnects with ?since=<last seq> so nothing is
 * missed. Sign-in: `token` (a bearer access token) or, without it, the session cookie
 * (CSRF token from <meta name="csrf-token">). No dependencies.
 */
(function (global) {
  "use strict";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function authHeaders(token) {
    const h = {};
    if (token) h["Authorization"] = "Bearer " + token;
    else {
      const meta = document.querySelector('meta[name="csrf-token"]');
      if (meta) h["X-CSRF-Token"] = meta.content;
    }
    return h;
  }

  function socketUrl(path, params) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams(params).toString();
    return proto + "//" + location.host + path + (q ? "?" + q : "");
  }

  function uuid() {
    if (global.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // A message's time in the viewer's own time zone (the browser's): "HH:mm" for today,
  // "MM-DD HH:mm" before; the server sends UTC instants.
  function formatSent(sent, now) {
    const d = new Date(sent);
    if (!sent || isNaN(d.getTime())) return "";
    now = now ? new Date(now) : new Date();
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    const today = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
    return today ? hm : pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm;
  }

  const STYLE = ".yc{display:flex;flex-direction:column;height:100%;min-height:320px;border:1px solid #e3e9ec;background:#fff}" +
    ".yc-log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:8px}" +
    ".yc-msg{max-width:78%;padding:8px 10px;border-radius:10px;background:#eef3f5;word-break:break-word}" +
    ".yc-mine{align-self:flex-end;background:#d8f0ea}.yc-system{align-self:center;background:none;color:#5b6b75;font-size:12px}" +
    ".yc-msg img{max-width:100%;border-radius:6px;display:block}.yc-meta{font-size:11px;color:#5b6b75;margin-top:2px}" +
    ".yc-typing{font-size:12px;color:#5b6b75;padding:0 10px;min-height:16px}.yc-bar{display:flex;gap:6px;padding:8px;border-top:1px solid #e3e9ec}" +
    ".yc[data-state=cancelled] .yc-bar{display:none}" +
    ".yc-bar input[type=text]{flex:1;padding:8px;font-size:16px}.yc-bar button{padding:8px 12px}.yc-error{color:#b3261e;font-size:12px;padding:0 10px}";

  function mount(container, consultationId, options) {
    options = options || {};
    const token = options.token || null;
    const base = "/api/consultations/" + encodeURIComponent(consultationId);
    if (!document.getElementById("yc-style")) {
      const s = el("style"); s.id = "yc-style"; s.textContent = STYLE; document.head.appendChild(s);
    }
    const root = el("div", "yc");
    const log = el("div", "yc-log"); log.setAttribute("aria-live", "polite");
    const typing = el("div", "yc-typing");
    const error = el("div", "yc-error");
    const bar = el("form", "yc-bar");
    const input = el("input"); input.type = "text"; input.placeholder = "输入消息"; input.maxLength = 4000;
    input.setAttribute("aria-label", "消息");
    const file = el("input"); file.type = "file"; file.accept = "image/jpeg,image/png,image/webp"; file.hidden = true;
    const pick = el("button", "yc-pick", "图片"); pick.type = "button";
    const send = el("button", "yc-send", "发送"); send.type = "submit";
    bar.append(input, pick, file, send);
    root.append(log, typing, error, bar);
    container.appendChild(root);

    const state = { role: null, lastSeq: 0, readUpTo: 0, peerRead: 0, seen: new Map(), ws: null, closed: false,
      retry: 0, typingSent: 0, typingTimer: null, readTimer: null, consultation: null };

    function other(role) { return role === "patient" ? "doctor" : "patient"; }

    function render(frame) {
      if (state.seen.has(frame.seq)) return;
      const mine = frame.from === state.role;
      const box = el("div", "yc-msg" + (frame.from === "system" ? " yc-system" : mine ? " yc-mine" : ""));
      box.dataset.seq = frame.seq;
      if (frame.text !== undefined) box.appendChild(el("div", "yc-text", frame.text));
      if (frame.image) {
        const img = el("img"); img.alt = "图片";
        loadImage(img, frame.image.url);
        box.appendChild(img);
      }
      const meta = el("div", "yc-meta", formatSent(frame.sent));
      meta.title = frame.sent || "";
      if (mine) { const r = el("span", "yc-read"); meta.append(" ", r); }
      box.appendChild(meta);
      // keep the conversation in sequence order whatever order frames arrive in
      let before = null;
      for (const [seq, node] of state.seen) if (seq > frame.seq && (!before || seq < Number(before.dataset.seq))) before = node;
      log.insertBefore(box, before);
      state.seen.set(frame.seq, box);
      state.lastSeq = Math.max(state.lastSeq, frame.seq);
      showReceipts();
      log.scrollTop = log.scrollHeight;
    }

    function loadImage(img, url) {
      if (!token) { img.src = url; return; }
      fetch(url, { headers: authHeaders(token) }).then(r => r.ok ? r.blob() : null).then(b => { if (b) img.src = URL.createObjectURL(b); });
    }

    function showReceipts() {
      for (const [seq, node] of state.seen) {
        const r = node.querySelector(".yc-read");
        if (r) r.textContent = seq <= state.peerRead ? "已读" : "未读";
      }
    }

    // read receipts at most once a second: a burst of messages costs one write, not one each
    function markRead() {
      if (!state.role || state.role === "candidate" || document.hidden || state.readTimer) return;
      state.readTimer = setTimeout(() => {
        state.readTimer = null;
        if (state.lastSeq > state.readUpTo && sendFrame({ type: "read", seq: state.lastSeq })) state.readUpTo = state.lastSeq;
      }, 1000);
    }

    function sendFrame(frame) {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(frame)); return true; }
      return false;
    }

    function onFrame(frame) {
      switch (frame.type) {
        case "hello":
          state.role = frame.role;
          state.peerRead = frame.role === "patient" ? frame.doctor_read_seq : frame.patient_read_seq;
          state.consultation = frame.state;
          root.dataset.state = frame.state; root.dataset.role = frame.role;
          break;
        case "message": render(frame); markRead(); break;
        case "read":
          if (frame.by !== state.role) { state.peerRead = Math.max(state.peerRead, frame.seq); showReceipts(); }
          break;
        case "typing":
          typing.textContent = frame.typing ? (frame.by === "doctor" ? "医生正在输入…" : "患者正在输入…") : "";
          root.dataset.peerTyping = frame.typing ? "1" : "";
          break;
        case "state":
          state.consultation = frame.state; root.dataset.state = frame.state;
          break;
        case "error":
          error.textContent = frame.detail || "出错了";
          break;
      }
      if (options.onFrame) options.onFrame(frame);
      if (frame.type === "state" && options.onState) options.onState(frame);
    }

    function connect() {
      const params = { since: String(state.lastSeq) };
      if (token) params.access_token = token;
      const ws = new WebSocket(socketUrl(base + "/ws", params));
      state.ws = ws;
      ws.onopen = () => { state.retry = 0; error.textContent = ""; root.dataset.connected = "1"; };
      ws.onmessage = (e) => { try { onFrame(JSON.parse(e.data)); } catch (err) { console.error(err); } };
      ws.onclose = (e) => {
        root.dataset.connected = "";
        if (state.closed || e.code === 4401 || e.code === 4403 || e.code === 4404) return;
        const delay = Math.min(10000, 500 * Math.pow(2, state.retry++));
        setTimeout(connect, delay);
      };
    }

    function sendText(text) {
      text = (text || "").trim();
      if (!text) return;
      const frame = { type: "message", text: text, client_id: uuid() };
      if (!sendFrame(frame)) {
        // socket down: the REST fallback stores it the same way (the client_id keeps it single)
        fetch(base + "/messages", { method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders(token)),
          body: JSON.stringify({ text: frame.text, client_id: frame.client_id }) })
          .then(r => r.json().then(j => { if (r.ok) render(j); else error.textContent = j.detail; }));
      }
    }

    function sendImage(blob) {
      const form = new FormData();
      form.append("file", blob, blob.name || "photo.jpg");
      form.append("client_id", uuid());
      return fetch(base + "/images", { method: "POST", headers: authHeaders(token), body: form })
        .then(r => r.json().then(j => { if (!r.ok) error.textContent = j.detail; return j; }));
    }

    bar.addEventListener("submit", (e) => { e.preventDefault(); sendText(input.value); input.value = ""; typingOff(); });
    pick.addEventListener("click", () => file.click());
    file.addEventListener("change", () => { if (file.files[0]) sendImage(file.files[0]); file.value = ""; });
    function typingOff() { if (state.typingSent) { sendFrame({ type: "typing", typing: false }); state.typingSent = 0; } }
    input.addEventListener("input", () => {
      const now = Date.now();
      if (now - state.typingSent > 2000) { sendFrame({ type: "typing", typing: true }); state.typingSent = now; }
      clearTimeout(state.typingTimer);
      state.typingTimer = setTimeout(typingOff, 3000);
    });
    document.addEventListener("visibilitychange", markRead);
    connect();

    return {
      element: root,
      sendText: sendText,
      sendImage: sendImage,
      send: sendFrame,
      get role() { return state.role; },
      get lastSeq() { return state.lastSeq; },
      get peerRead() { return state.peerRead; },
      close() { state.closed = true; if (state.ws) state.ws.close(); },
    };
  }

  global.YiyunChat = { mount: mount, authHeaders: authHeaders, socketUrl: socketUrl, formatSent: formatSent };
})(window);
