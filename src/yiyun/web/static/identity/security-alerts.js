// Live security alerts for privacy officers: a badge with the unread count in the header
// and a toast when a high-severity event is raised (socket /ws/security-alerts).
(function () {
  "use strict";
  var badge = document.getElementById("security-alerts");
  if (!badge || !window.WebSocket) return;
  var count = badge.querySelector(".count");
  var delay = 1000;

  function show(unread) {
    count.textContent = String(unread);
    badge.hidden = !(unread > 0);
  }

  function toast(text) {
    var box = document.createElement("div");
    box.className = "alert-toast";
    box.setAttribute("role", "alert");
    box.textContent = text;
    box.addEventListener("click", function () { window.location.href = badge.href; });
    document.body.appendChild(box);
    setTimeout(function () { box.remove(); }, 15000);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + window.location.host + "/ws/security-alerts");
    ws.onopen = function () { delay = 1000; };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "hello") badge.dataset.live = "on";
      if (typeof msg.unread === "number") show(msg.unread);
      if (msg.type === "security-events") toast(badge.dataset.toast);
    };
    ws.onclose = function (event) {
      badge.dataset.live = "off";
      if (event.code === 4401 || event.code === 4403) return;  // signed out, or not an officer
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 60000);
    };
  }
  connect();
})();
