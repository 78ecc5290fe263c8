/* yiyun hospital pages: small interactions (no dependencies).
 *  - [data-icd10] input: searches /doctor/icd10 and adds chosen codes to the diagnoses field
 *  - [data-locate] button: adds the browser's position to the fever-clinic finder
 *  - [data-queue] table: reloads the doctor's queue when it changes
 *  - input[type=file][data-preview]: shows the photos chosen for the pre-consultation form
 *  - form[data-confirm]: asks before submitting
 *  - [data-guardian-box]: the under-6 guardian box, shown (and required) only while a child
 *    under 6 is chosen as the consultation's patient
 *  - [data-queue-live] table: drops a consultation from the waiting queue the moment it is
 *    accepted, cancelled or ended (queue WebSocket), without reloading
 */
(function () {
  "use strict";
  function debounce(fn, ms) { let t; return function () { const a = arguments; clearTimeout(t); t = setTimeout(() => fn.apply(null, a), ms); }; }

  document.querySelectorAll("[data-icd10]").forEach(function (input) {
    const target = document.getElementById(input.dataset.icd10);
    const list = document.createElement("div");
    list.className = "icd-results"; list.hidden = true; list.setAttribute("role", "listbox");
    input.after(list);
    const search = debounce(function () {
      const q = input.value.trim();
      if (!q) { list.hidden = true; return; }
      fetch("/doctor/icd10?q=" + encodeURIComponent(q), { credentials: "same-origin" })
        .then((r) => r.json()).then(function (data) {
          list.textContent = "";
          data.results.forEach(function (item) {
            const b = document.createElement("button");
            b.type = "button"; b.textContent = item.code + "  " + item.name; b.dataset.code = item.code;
            b.addEventListener("click", function () {
              const codes = target.value.split(/[,，]/).map((s) => s.trim()).filter(Boolean);
              if (codes.indexOf(item.code) < 0) codes.push(item.code);
              target.value = codes.join(", ");
              const names = document.getElementById(input.dataset.icd10 + "-names");
              if (names) { const c = document.createElement("span"); c.className = "chip"; c.textContent = item.code + " " + item.name; names.appendChild(c); }
              list.hidden = true; input.value = "";
            });
            list.appendChild(b);
          });
          list.hidden = data.results.length === 0;
        });
    }, 200);
    input.addEventListener("input", search);
  });

  document.querySelectorAll("[data-locate]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      if (!navigator.geolocation) return;
      btn.disabled = true;
      navigator.geolocation.getCurrentPosition(function (pos) {
        const u = new URL(location.href);
        u.searchParams.set("lat", pos.coords.latitude.toFixed(5));
        u.searchParams.set("lon", pos.coords.longitude.toFixed(5));
        location.href = u.toString();
      }, function () { btn.disabled = false; btn.textContent = btn.dataset.failed || btn.textContent; });
    });
  });

  // reloads when the doctor's own queue differs from what the page shows (`data-queue`)
  function checkQueue(table) {
    fetch("/api/consultations/queue", { credentials: "same-origin" }).then((r) => r.json()).then(function (q) {
      const now = (q.waiting || []).map((c) => c.id).join(",") + "|" + (q.active || []).map((c) => c.id + ":" + c.unread).join(",");
      if (now !== table.dataset.queue) location.reload();
    }).catch(function () {});
  }

  document.querySelectorAll("[data-queue]").forEach(function (table) {
    setInterval(() => checkQueue(table), 10000);
  });

  document.querySelectorAll("input[type=file][data-preview]").forEach(function (input) {
    const box = document.getElementById(input.dataset.preview);
    input.addEventListener("change", function () {
      box.textContent = "";
      Array.from(input.files).slice(0, 6).forEach(function (f) {
        const img = document.createElement("img"); img.alt = f.name; img.src = URL.createObjectURL(f); box.appendChild(img);
      });
    });
  });

  document.querySelectorAll("[data-guardian-box]").forEach(function (box) {
    const form = box.closest("form");
    const check = box.querySelector("input[type=checkbox]");
    function sync() {
      const chosen = form.querySelector("input[name=patient]:checked");
      const child = !!(chosen && chosen.dataset.child);
      box.hidden = !child; check.required = child;
      if (!child) check.checked = false;
    }
    form.querySelectorAll("input[name=patient]").forEach((r) => r.addEventListener("change", sync));
    sync();
  });

  document.querySelectorAll("[data-queue-live]").forEach(function (table) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let retry = 0;
    function drop(id) {
      const row = table.querySelector('tr[data-consultation="' + CSS.escape(id) + '"]');
      if (!row) return;
      row.remove();
      const left = table.querySelectorAll("tbody tr[data-consultation]").length;
      const count = document.querySelector("[data-waiting-count]");
      if (count) count.textContent = count.dataset.template.replace("%n", left);
      // `checkQueue` compares the server's queue with what the page shows
      const parts = (table.dataset.queue || "|").split("|");
      parts[0] = parts[0].split(",").filter((x) => x && x !== id).join(",");
      table.dataset.queue = parts.join("|");
      if (!left && table.dataset.empty) {
        const tr = document.createElement("tr"); const td = document.createElement("td");
        td.colSpan = 6; td.className = "muted"; td.textContent = table.dataset.empty; tr.appendChild(td);
        table.querySelector("tbody").appendChild(tr);
      }
    }
    function connect() {
      const ws = new WebSocket(proto + "//" + location.host + "/api/consultations/queue/ws");
      table.dataset.live = "";
      ws.onopen = () => { retry = 0; table.dataset.live = "1"; };
      ws.onmessage = function (e) {
        let f; try { f = JSON.parse(e.data); } catch (err) { return; }
        if (f.type !== "queue") return;
        // the channel is the hospital's: whether a change is this doctor's, their queue says
        if (f.state !== "waiting") drop(f.consultation);
        if (f.state === "waiting" || f.state === "active") checkQueue(table);
      };
      ws.onclose = function (e) {
        table.dataset.live = "";
        if (e.code === 4401 || e.code === 4403) return;
        setTimeout(connect, Math.min(10000, 500 * Math.pow(2, retry++)));
      };
    }
    connect();
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  });
})();
