// Show epoch-microsecond times (data-ts) in the reader's local time.
document.querySelectorAll("[data-ts]").forEach(function (el) {
  var us = Number(el.getAttribute("data-ts"));
  if (!us) return;
  var tag = el.querySelector(".tag");
  el.textContent = new Date(us / 1000).toLocaleString();
  if (tag) { el.appendChild(document.createTextNode(" ")); el.appendChild(tag); }
});
