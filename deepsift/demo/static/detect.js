// deepsift demo: the detect page, a client of POST /api/v1/detect (no framework, nothing from another origin).
(function () {
  "use strict";
  var csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";
  var results = document.getElementById("results");
  var statusEl = document.getElementById("status");
  var tpl = document.getElementById("result-template");
  var WORDS = { real: "Real", fake: "AI-generated", unsure: "Unsure", error: "Could not check" };
  var checked = 0;

  function setStatus(text, isError) {
    statusEl.textContent = text || "";
    statusEl.className = "status" + (isError ? " error" : "");
  }

  function send(form) {
    form.append("heatmap", "true");
    form.append("preview", "true");
    setStatus("Checking…");
    document.body.classList.add("busy");
    return fetch("/api/v1/detect", { method: "POST", body: form, credentials: "same-origin",
                                     headers: { "Accept": "application/json", "X-CSRF-Token": csrf } })
      .then(function (r) {
        return r.json().catch(function () { return { detail: "the server answered " + r.status }; })
          .then(function (body) { return { status: r.status, body: body }; });
      })
      .then(function (res) {
        var list = (res.body && res.body.results) || [];
        list.forEach(function (item) { results.insertBefore(card(item), results.firstChild); });
        checked += list.filter(function (x) { return !x.error; }).length;
        if (res.status === 200) setStatus(checked + (checked === 1 ? " image checked" : " images checked") + " so far.");
        else setStatus(res.body.detail || ("error " + res.status), true);
      })
      .catch(function (e) { setStatus("The server could not be reached: " + e, true); })
      .then(function () { document.body.classList.remove("busy"); });
  }

  function pct(p) { return (100 * p).toFixed(1) + "%"; }

  function card(item) {
    var node = tpl.content.firstElementChild.cloneNode(true);
    node.classList.add("band-" + item.band);
    node.querySelector(".source").textContent = item.source;
    var band = node.querySelector(".band");
    band.textContent = WORDS[item.band] || item.band;
    band.className = "band is-" + item.band;
    if (item.error) {
      var msg = node.querySelector("p.error");
      msg.hidden = false;
      msg.textContent = item.error;
      ["figure", "meter", "heads", "meta"].forEach(function (c) { node.querySelector("." + c).hidden = true; });
      return node;
    }
    node.querySelector(".prob").textContent = "P(fake) = " + pct(item.probability);
    node.querySelector(".fill").style.width = pct(item.probability);
    node.querySelector(".mark").style.left = pct(0.5);
    if (item.generator) {
      var g = node.querySelector(".generator");
      g.hidden = false;
      g.querySelector("strong").textContent = item.generator;
    }
    var body = node.querySelector(".heads tbody");
    Object.keys(item.heads || {}).forEach(function (name) {
      var h = item.heads[name], tr = document.createElement("tr");
      [name + (name === item.head ? " (decides)" : ""), pct(h.probability), h.score.toFixed(3), h.label ? "fake" : "real"]
        .forEach(function (v, i) { var td = document.createElement("td"); td.textContent = v; if (i === 1 || i === 2) td.className = "num"; tr.appendChild(td); });
      body.appendChild(tr);
    });
    renderMeta(node.querySelector(".meta-body"), item.metadata);
    var img = node.querySelector("img");
    img.alt = "uploaded image " + item.source;
    img.src = item.preview || "";
    if (item.heatmap) setupHeatmap(node, img, item.heatmap);
    return node;
  }

  function renderMeta(el, meta) {
    if (!meta) { el.textContent = "Not read."; return; }
    var dl = document.createElement("dl");
    dl.className = "facts";
    function row(k, v) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; dl.appendChild(dt); dl.appendChild(dd);
      return dd;
    }
    var c = meta.c2pa || {};
    row("C2PA manifest", c.present === true ? ("present, " + (c.valid ? "valid" : "not valid") +
        (c.state ? " (" + c.state + ")" : "") + (c.claim_generator ? ", made with " + c.claim_generator : "") +
        (c.declares_ai ? "; declares AI-generated content" : ""))
        : c.present === false ? "none" : "unknown" + (c.error ? " (" + c.error + ")" : ""));
    var exifKeys = Object.keys(meta.exif || {});
    if (!exifKeys.length) row("Camera (EXIF)", "no camera fields");
    exifKeys.forEach(function (k) { row("EXIF " + k, meta.exif[k]); });
    if (!(meta.generation || []).length) row("Generator parameters", "none found in text chunks");
    (meta.generation || []).forEach(function (g) { row(g.tool, g.value).className = "long"; });
    el.appendChild(dl);
  }

  function colour(p) {  // green (real) -> amber -> red (fake)
    var r = p < 0.5 ? Math.round(60 + 390 * p) : 230, g = p < 0.5 ? 170 : Math.round(170 - 260 * (p - 0.5));
    return "rgba(" + r + "," + Math.max(g, 40) + ",40,0.55)";
  }

  function setupHeatmap(node, img, hm) {
    var canvas = node.querySelector("canvas.heat"), btn = node.querySelector(".toggle-heatmap");
    btn.hidden = false;
    function draw() {
      var w = img.clientWidth, h = img.clientHeight;
      if (!w || !h) return;
      canvas.width = w; canvas.height = h;
      var ctx = canvas.getContext("2d"), sx = w / hm.width, sy = h / hm.height;
      ctx.clearRect(0, 0, w, h);
      // each cell: the part of the image nearest to its crop (Voronoi-like split of overlapping crops)
      var xs = [], ys = [];
      for (var c = 0; c < hm.cols; c++) xs.push(hm.boxes[c][0] + hm.boxes[c][2] / 2);
      for (var r = 0; r < hm.rows; r++) ys.push(hm.boxes[r * hm.cols][1] + hm.boxes[r * hm.cols][3] / 2);
      function edges(centres, total) {
        var e = [0];
        for (var i = 1; i < centres.length; i++) e.push((centres[i - 1] + centres[i]) / 2);
        e.push(total);
        return e;
      }
      var ex = edges(xs, hm.width), ey = edges(ys, hm.height);
      var font = Math.max(10, Math.min(16, Math.round(Math.min(w / hm.cols, h / hm.rows) / 5)));
      ctx.font = "600 " + font + "px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      for (r = 0; r < hm.rows; r++) for (c = 0; c < hm.cols; c++) {
        var x0 = ex[c] * sx, y0 = ey[r] * sy, cw = (ex[c + 1] - ex[c]) * sx, ch = (ey[r + 1] - ey[r]) * sy;
        ctx.fillStyle = colour(hm.values[r][c]);
        ctx.fillRect(x0, y0, cw, ch);
        ctx.strokeStyle = "rgba(255,255,255,0.8)";
        ctx.lineWidth = 1;
        ctx.strokeRect(x0 + 0.5, y0 + 0.5, cw - 1, ch - 1);
        var label = Math.round(100 * hm.values[r][c]) + "%";
        ctx.lineWidth = 3;
        ctx.strokeStyle = "rgba(0,0,0,0.6)";
        ctx.strokeText(label, x0 + cw / 2, y0 + ch / 2);
        ctx.fillStyle = "#fff";
        ctx.fillText(label, x0 + cw / 2, y0 + ch / 2);
      }
    }
    btn.addEventListener("click", function () {
      var on = btn.getAttribute("aria-pressed") !== "true";
      btn.setAttribute("aria-pressed", on ? "true" : "false");
      btn.textContent = on ? "Hide heatmap" : "Show heatmap";
      canvas.hidden = !on;
      node.querySelector(".heat-legend").hidden = !on;
      if (on) draw();
    });
    window.addEventListener("resize", function () { if (!canvas.hidden) draw(); });
  }

  var maxImages = parseInt(document.getElementById("dropzone").getAttribute("data-max-images"), 10) || 8;
  var queue = Promise.resolve();

  function sendFiles(files) {  // many files go in requests of at most maxImages, one after the other
    var list = Array.prototype.slice.call(files || []);
    for (var start = 0; start < list.length; start += maxImages) {
      (function (chunk, offset) {
        var form = new FormData();
        chunk.forEach(function (f, i) { form.append("files", f, f.name || ("pasted-" + (offset + i + 1) + ".png")); });
        queue = queue.then(function () { return send(form); });
      })(list.slice(start, start + maxImages), start);
    }
  }

  function sendUrl(url) {
    var form = new FormData();
    form.append("url", url);
    send(form);
  }

  var input = document.getElementById("file-input");
  input.addEventListener("change", function () { sendFiles(input.files); input.value = ""; });
  document.getElementById("url-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = document.getElementById("url-input").value.trim();
    if (v) sendUrl(v);
  });
  var zone = document.getElementById("dropzone");
  ["dragenter", "dragover"].forEach(function (t) {
    zone.addEventListener(t, function (ev) { ev.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    zone.addEventListener(t, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (ev) {
    ev.preventDefault();
    if (ev.dataTransfer.files && ev.dataTransfer.files.length) sendFiles(ev.dataTransfer.files);
    else {
      var text = (ev.dataTransfer.getData("text/uri-list") || ev.dataTransfer.getData("text/plain") || "").trim();
      if (/^https?:\/\//i.test(text)) sendUrl(text.split(/\s+/)[0]);
    }
  });
  document.addEventListener("paste", function (ev) {
    var dt = ev.clipboardData;
    if (!dt) return;
    var files = Array.prototype.filter.call(dt.files || [], function (f) { return /^image\//.test(f.type); });
    if (files.length) { ev.preventDefault(); sendFiles(files); return; }
    var text = (dt.getData("text/plain") || "").trim();
    if (/^https?:\/\/\S+$/i.test(text) && document.activeElement !== document.getElementById("url-input")) {
      ev.preventDefault();
      document.getElementById("url-input").value = text;
      sendUrl(text);
    }
  });
})();
