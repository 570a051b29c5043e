// deepsift: small progressive enhancements (no framework, nothing from another origin).
// Elements with data-poll="URL" are refreshed from that JSON URL every few seconds while any of
// their [data-field] children shows a state that is still moving (queued, running, or scored with
// its bootstrap intervals pending).
(function () {
  "use strict";
  function fill(el, data) {
    el.querySelectorAll("[data-field]").forEach(function (cell) {
      var v = data;
      cell.getAttribute("data-field").split(".").forEach(function (k) { v = v == null ? v : v[k]; });
      if (v === undefined) return;
      var text = v === null ? "–" : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : String(v));
      if (cell.textContent !== text) cell.textContent = text;
      if (cell.hasAttribute("data-state-class")) cell.className = "state-" + text;
    });
  }
  function moving(el) {
    var s = el.querySelector("[data-field=state]");
    var i = el.querySelector("[data-field=intervals]");
    return !s || s.textContent === "queued" || s.textContent === "running" ||
      (s.textContent === "scored" && i !== null && i.textContent === "pending");
  }
  function poll(el) {
    if (!moving(el)) return;
    fetch(el.getAttribute("data-poll"), { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data) fill(el, data);
        if (moving(el)) setTimeout(function () { poll(el); }, data ? 1500 : 5000);
        else if (el.hasAttribute("data-reload-when-done")) location.reload();
      })
      .catch(function () { setTimeout(function () { poll(el); }, 4000); });
  }
  document.querySelectorAll("[data-poll]").forEach(function (el) { setTimeout(function () { poll(el); }, 1000); });
})();
