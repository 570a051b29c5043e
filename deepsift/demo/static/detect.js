// deepsift demo: the detect page, a client of POST /api/v1/detect (no framework, nothing from another origin).
// Every text that came with an image (file name, metadata, errors) is set with textContent, never as markup.
(function () {
  "use strict";
  var csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";
  var results = document.getElementById("results");
  var statusEl = document.getElementById("status");
  var log = document.getElementById("verdicts-log");
  var clearBtn = document.getElementById("clear-results");
  var tpl = document.getElementById("result-template");
  var progress = { total: 0, done: 0 };

  function setStatus(text, isError) {
    statusEl.textContent = text || "";
    statusEl.className = "status" + (isError ? " error" : "");
  }

  function pct(p, digits) { return (100 * p).toFixed(digits || 0) + " %"; }

  // what a visitor reads instead of a message written for developers (the original stays in "Technical details")
  var PLAIN_ERRORS = [
    [/returned [\w.+-]+\/[\w.+-]+, not an image/i,
     "This link leads to a web page, not to an image. Open the page and use the image's own link."],
    [/loopback|private|link-local|unspecified|reserved|multicast|not a public|url policy|not allowed/i,
     "This link points to a private or local address. The demo only fetches images from public web sites."],
    [/timed out|deadline|too slow|timeout/i, "The site took too long to send the image. Try again, or download it and upload the file."],
    [/larger than|exceeds the cap of \d+ bytes|upload limit|too large/i, "The file is too large for this demo."],
    [/MP exceeds|megapixel/i, "The image has too many pixels for this demo."],
    [/SVG\/HTML\/XML|not a supported image|not an image|format not recognised/i,
     "This file is not an image the demo can read (send a JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF image)."],
    [/corrupt|truncated|cannot read image/i, "The image file is damaged or incomplete."],
    [/empty file|0 bytes/i, "The file is empty."],
    [/too many .*requests|rate limit|429/i, "Too many checks in a short time. Please wait a minute and try again."],
    [/HTTP (4\d\d)|status 4\d\d|404|not found/i, "The site says there is no image at this link."],
    [/HTTP (5\d\d)|status 5\d\d/i, "The site that holds the image had a problem. Try again later."],
    [/name or service|resolve|dns|connect|refused|unreachable/i, "The site could not be reached."],
    [/inputs: at most|per request/i, "Too many images at once."],
    [/no model|not available|503/i, "The detector is not available right now. Please try again later."]
  ];
  function plainError(msg, source) {
    msg = String(msg || "");
    if (source && msg.indexOf(source + ": ") === 0) msg = msg.slice(source.length + 2);  // the name is no clue
    for (var i = 0; i < PLAIN_ERRORS.length; i++) if (PLAIN_ERRORS[i][0].test(msg)) return PLAIN_ERRORS[i][1];
    return "This image could not be checked.";
  }

  function headline(item) {
    var p = item.probability;
    if (item.band === "fake") return "Likely AI-generated: " + pct(p);
    if (item.band === "real") return "Likely real: " + pct(1 - p);
    if (item.band === "unsure") return "Unsure: " + pct(p) + " chance of AI";
    return "Could not check this image";
  }

  function meterColour(p) {  // the bar's colour is that of its value: green (real) .. amber .. red (AI)
    return "hsl(" + Math.round(120 * (1 - p)) + ", 65%, 34%)";
  }

  function send(form, slots) {
    form.append("heatmap", "true");
    form.append("preview", "true");
    document.body.classList.add("busy");
    return fetch("/api/v1/detect", { method: "POST", body: form, credentials: "same-origin",
                                     headers: { "Accept": "application/json", "X-CSRF-Token": csrf } })
      .then(function (r) {
        return r.json().catch(function () { return { detail: "the server answered " + r.status }; })
          .then(function (body) { return { status: r.status, body: body }; });
      })
      .catch(function (e) { return { status: 0, body: { detail: "network: " + e } }; })
      .then(function (res) {
        var list = (res.body && res.body.results) || [];
        list.forEach(function (x) { x.threshold = res.body.threshold; x.unsure_band = res.body.unsure_band; });
        slots.forEach(function (slot, i) {
          var item = list[i] || { source: slot.name, band: "error", error: res.body.detail || ("error " + res.status) };
          var node = card(item);
          slot.node.replaceWith(node);
          if (slot.first) node.focus({ preventScroll: true });
          if (slot.first) node.scrollIntoView({ block: "start" });
          announce(item);
        });
        progress.done += slots.length;
        var failed = res.status !== 200;
        setStatus((progress.done < progress.total ? "Checked " + progress.done + " of " + progress.total + " images…"
          : (progress.total === 1 ? "Checked 1 image." : "Checked " + progress.total + " of " + progress.total + " images."))
          + (failed ? " " + plainError(res.body.detail, slots.length === 1 ? slots[0].name : null) : ""), failed);
      })
      .then(function () { if (progress.done >= progress.total) document.body.classList.remove("busy"); });
  }

  function announce(item) {
    var p = document.createElement("p");
    p.textContent = item.source + ": " + headline(item) + (item.error ? ". " + plainError(item.error, item.source) : "");
    log.appendChild(p);
  }

  function placeholder(name) {
    var node = document.createElement("article");
    node.className = "result pending";
    var p = document.createElement("p");
    p.textContent = "Checking " + name + "…";
    node.appendChild(p);
    return node;
  }

  function card(item) {
    var node = tpl.content.firstElementChild.cloneNode(true);
    node.classList.add("band-" + item.band);
    node.setAttribute("aria-label", item.source);
    node.querySelector(".source").textContent = item.source;
    var band = node.querySelector(".band");
    band.textContent = headline(item);
    band.className = "band is-" + item.band;
    if (item.error) {
      var msg = node.querySelector("p.error");
      msg.hidden = false;
      msg.textContent = plainError(item.error, item.source);
      var tech = node.querySelector(".tech");
      tech.hidden = false;
      tech.querySelector(".tech-text").textContent = item.error;
      ["figure", "meter", "plain", "expert", "meta"].forEach(function (c) { node.querySelector("." + c).hidden = true; });
      return node;
    }
    node.querySelector(".plain").textContent = "Chance that it was made by AI, as the detector estimates it: " +
      pct(item.probability) + ".";
    var fill = node.querySelector(".fill");
    fill.style.width = pct(item.probability, 1).replace(" ", "");
    fill.style.backgroundColor = meterColour(item.probability);
    node.querySelector(".mark").style.left = (100 * (item.threshold === undefined ? 0.5 : item.threshold)) + "%";
    if (item.generator && item.band === "fake") {
      var g = node.querySelector(".generator");
      g.hidden = false;
      g.querySelector("strong").textContent = item.generator_name || item.generator;
    }
    renderExpert(node.querySelector(".expert-body"), item);
    var meta = item.metadata || {};
    renderMeta(node.querySelector(".meta-body"), item.metadata);
    renderProvenance(node.querySelector(".provenance"), meta.c2pa || {});
    var img = node.querySelector("img");
    img.alt = "the checked image, " + item.source;
    orient(item.preview || "", meta.orientation, function (src) {
      img.src = src;
      if (item.heatmap) setupHeatmap(node, img, displayHeatmap(item.heatmap, meta.orientation));
    });
    return node;
  }

  function facts(el, rows) {
    var dl = document.createElement("dl");
    dl.className = "facts";
    rows.forEach(function (kv) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = kv[0]; dd.textContent = kv[1];
      if (kv[2]) dd.className = kv[2];
      dl.appendChild(dt); dl.appendChild(dd);
    });
    el.appendChild(dl);
  }

  function renderExpert(el, item) {
    facts(el, [["P(fake), calibrated", pct(item.probability, 1)],
               ["Decision rule", "AI-generated when P(fake) ≥ " + pct(item.threshold, 0) +
                 (item.unsure_band ? "; unsure from " + pct(item.unsure_band[0]) + " to below " + pct(item.unsure_band[1]) : "")],
               ["Deciding classifier head", item.head + " (raw score " + item.score.toFixed(3) + ")"],
               ["Most likely generator (model's name)", item.generator || "none (per-generator heads say nothing or the verdict is real)"]]);
    var heads = Object.keys(item.heads || {});
    if (heads.length) {
      var table = document.createElement("table");
      table.className = "data";
      var cap = document.createElement("caption");
      cap.textContent = "Every classifier head";
      table.appendChild(cap);
      var head = table.createTHead().insertRow();
      ["head", "P(fake)", "score", "label"].forEach(function (t, i) {
        var th = document.createElement("th"); th.textContent = t; th.scope = "col"; if (i === 1 || i === 2) th.className = "num"; head.appendChild(th);
      });
      var body = table.createTBody();
      heads.forEach(function (name) {
        var h = item.heads[name], tr = body.insertRow();
        [name + (name === item.head ? " (decides)" : ""), pct(h.probability, 1), h.score.toFixed(3), h.label ? "fake" : "real"]
          .forEach(function (v, i) { var td = tr.insertCell(); td.textContent = v; if (i === 1 || i === 2) td.className = "num"; });
      });
      el.appendChild(table);
    }
  }

  function renderProvenance(el, c) {
    if (c.present === true && c.declares_ai) {
      el.hidden = false;
      el.className = "provenance ai";
      el.textContent = "Content Credentials (C2PA) in this file say it was made by AI" +
        (c.trusted ? " (signed by a trusted signer)." : c.valid ? " (signed, signer not verified)." : " (the signature does not check out).");
    }
  }

  function c2paText(c) {
    if (c.present === false) return "none";
    if (c.present !== true) return "could not be checked";
    var s = c.trusted ? "signed by a trusted signer" : c.valid ? "signed, signer not verified"
      : "present, but the signature does not check out" + (c.state ? " (" + c.state + ")" : "");
    if (c.signer) s += "; the certificate says: " + c.signer;
    if (c.claim_generator) s += "; made with (as it claims): " + c.claim_generator;
    if (c.declares_ai) s += "; declares AI-generated content";
    return s;
  }

  function renderMeta(el, meta) {
    if (!meta) { el.textContent = "Not read."; return; }
    var rows = [["Content Credentials (C2PA)", c2paText(meta.c2pa || {})]];
    var exifKeys = Object.keys(meta.exif || {});
    if (!exifKeys.length) rows.push(["Camera (EXIF)", "no camera details"]);
    exifKeys.forEach(function (k) { rows.push(["EXIF " + k, meta.exif[k], "long"]); });
    if (!(meta.generation || []).length) rows.push(["Image generator settings", "none found"]);
    (meta.generation || []).forEach(function (g) { rows.push([g.tool, g.value, "long"]); });
    facts(el, rows);
  }

  // EXIF orientation: the preview and heatmap are turned for display (the detector reads the stored pixels)
  var TURN = { 2: [-1, 0, 0, 1, "w", 0], 3: [-1, 0, 0, -1, "w", "h"], 4: [1, 0, 0, -1, 0, "h"], 5: [0, 1, 1, 0, 0, 0],
               6: [0, 1, -1, 0, "h", 0], 7: [0, -1, -1, 0, "h", "w"], 8: [0, -1, 1, 0, 0, "w"] };
  function orient(src, o, done) {
    if (!src || !TURN[o]) { done(src); return; }
    var im = new Image();
    im.onload = function () {
      var w = im.naturalWidth, h = im.naturalHeight, t = TURN[o], c = document.createElement("canvas");
      c.width = o >= 5 ? h : w; c.height = o >= 5 ? w : h;
      var v = function (x) { return x === "w" ? w : x === "h" ? h : x; };
      var ctx = c.getContext("2d");
      ctx.transform(t[0], t[1], t[2], t[3], v(t[4]), v(t[5]));
      ctx.drawImage(im, 0, 0);
      done(c.toDataURL("image/jpeg", 0.9));
    };
    im.onerror = function () { done(src); };
    im.src = src;
  }
  function displayHeatmap(hm, o) {  // boxes and size in display coordinates
    var W = hm.width, H = hm.height, cells = [];
    for (var r = 0; r < hm.rows; r++) for (var c = 0; c < hm.cols; c++) {
      var b = hm.boxes[r * hm.cols + c], x = b[0], y = b[1], w = b[2], h = b[3], d;
      switch (TURN[o] ? o : 1) {
        case 2: d = [W - x - w, y, w, h]; break;
        case 3: d = [W - x - w, H - y - h, w, h]; break;
        case 4: d = [x, H - y - h, w, h]; break;
        case 5: d = [y, x, h, w]; break;
        case 6: d = [H - y - h, x, h, w]; break;
        case 7: d = [H - y - h, W - x - w, h, w]; break;
        case 8: d = [y, W - x - w, h, w]; break;
        default: d = [x, y, w, h];
      }
      cells.push({ box: d, value: hm.values[r][c] });
    }
    var swap = TURN[o] && o >= 5;
    return { width: swap ? H : W, height: swap ? W : H, cells: cells };
  }

  function colour(p) {  // green (real) -> amber -> red (fake)
    var r = p < 0.5 ? Math.round(60 + 390 * p) : 230, g = p < 0.5 ? 170 : Math.round(170 - 260 * (p - 0.5));
    return "rgba(" + r + "," + Math.max(g, 40) + ",40,0.55)";
  }

  function layout(hm) {  // each cell: the part of the image nearest to its crop (a grid of the crops' centres)
    function uniq(a) { return a.filter(function (v, i) { return a.indexOf(v) === i; }).sort(function (p, q) { return p - q; }); }
    var xs = uniq(hm.cells.map(function (c) { return c.box[0] + c.box[2] / 2; }));
    var ys = uniq(hm.cells.map(function (c) { return c.box[1] + c.box[3] / 2; }));
    function edges(centres, total) {
      var e = [0];
      for (var i = 1; i < centres.length; i++) e.push((centres[i - 1] + centres[i]) / 2);
      e.push(total);
      return e;
    }
    var ex = edges(xs, hm.width), ey = edges(ys, hm.height), grid = [];
    ys.forEach(function () { grid.push(new Array(xs.length)); });
    hm.cells.forEach(function (cell) {
      var c = xs.indexOf(cell.box[0] + cell.box[2] / 2), r = ys.indexOf(cell.box[1] + cell.box[3] / 2);
      grid[r][c] = { x: ex[c], y: ey[r], w: ex[c + 1] - ex[c], h: ey[r + 1] - ey[r], value: cell.value };
    });
    return grid;
  }

  function place(r, c, rows, cols) {
    var v = rows === 1 ? "" : r === 0 ? "top" : r === rows - 1 ? "bottom" : "middle";
    var h = cols === 1 ? "" : c === 0 ? "left" : c === cols - 1 ? "right" : "centre";
    return (v + " " + h).trim() || "whole image";
  }

  function describe(node, canvas, grid) {
    var rows = grid.length, cols = grid[0].length, lo = null, hi = null;
    var tbody = node.querySelector(".heat-table tbody");
    grid.forEach(function (row, r) {
      var tr = tbody.insertRow();
      row.forEach(function (cell, c) {
        var td = tr.insertCell();
        td.textContent = Math.round(100 * cell.value) + " %";
        td.className = "num";
        if (!hi || cell.value > hi.value) hi = { value: cell.value, where: place(r, c, rows, cols) };
        if (!lo || cell.value < lo.value) lo = { value: cell.value, where: place(r, c, rows, cols) };
      });
    });
    canvas.setAttribute("aria-label", "Heatmap of " + rows * cols + " parts: chance of AI from " + pct(lo.value) +
      " (" + lo.where + ") to " + pct(hi.value) + " (" + hi.where + ")");
    node.querySelector(".heat-text").hidden = false;
  }

  function setupHeatmap(node, img, hm) {
    var canvas = node.querySelector("canvas.heat"), btn = node.querySelector(".toggle-heatmap");
    var grid = layout(hm);
    describe(node, canvas, grid);
    btn.hidden = false;
    function draw() {
      var w = img.clientWidth, h = img.clientHeight;
      if (!w || !h) return;
      canvas.width = w; canvas.height = h;
      var ctx = canvas.getContext("2d"), sx = w / hm.width, sy = h / hm.height;
      ctx.clearRect(0, 0, w, h);
      var font = Math.max(10, Math.min(16, Math.round(Math.min(w / grid[0].length, h / grid.length) / 5)));
      ctx.font = "600 " + font + "px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      grid.forEach(function (row) {
        row.forEach(function (cell) {
          var x0 = cell.x * sx, y0 = cell.y * sy, cw = cell.w * sx, ch = cell.h * sy;
          ctx.fillStyle = colour(cell.value);
          ctx.fillRect(x0, y0, cw, ch);
          ctx.strokeStyle = "rgba(255,255,255,0.8)";
          ctx.lineWidth = 1;
          ctx.strokeRect(x0 + 0.5, y0 + 0.5, cw - 1, ch - 1);
          var label = Math.round(100 * cell.value) + "%";
          ctx.lineWidth = 3;
          ctx.strokeStyle = "rgba(0,0,0,0.6)";
          ctx.strokeText(label, x0 + cw / 2, y0 + ch / 2);
          ctx.fillStyle = "#fff";
          ctx.fillText(label, x0 + cw / 2, y0 + ch / 2);
        });
      });
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

  function startBatch(names) {  // placeholders in the order picked, above earlier results
    if (progress.done >= progress.total) progress = { total: 0, done: 0 };
    progress.total += names.length;
    clearBtn.hidden = false;
    setStatus("Checking " + (progress.total === 1 ? "1 image" : progress.done + " of " + progress.total + " images") + "…");
    var batch = document.createElement("div");
    batch.className = "batch";
    results.insertBefore(batch, results.firstChild);
    return names.map(function (name, i) {
      var node = placeholder(name);
      batch.appendChild(node);
      return { name: name, node: node, first: i === 0 };
    });
  }

  function sendFiles(files) {  // many files go in requests of at most maxImages, one after the other
    var list = Array.prototype.slice.call(files || []);
    if (!list.length) return;
    var names = list.map(function (f, i) { return f.name || ("pasted-" + (i + 1) + ".png"); });
    var slots = startBatch(names);
    for (var start = 0; start < list.length; start += maxImages) {
      (function (chunk, part) {
        var form = new FormData();
        chunk.forEach(function (f, i) { form.append("files", f, part[i].name); });
        queue = queue.then(function () { return send(form, part); });
      })(list.slice(start, start + maxImages), slots.slice(start, start + maxImages));
    }
  }

  function sendUrl(url) {
    var form = new FormData();
    form.append("url", url);
    var slots = startBatch([url]);
    queue = queue.then(function () { return send(form, slots); });
  }

  clearBtn.addEventListener("click", function () {
    results.textContent = "";
    log.textContent = "";
    setStatus("");
    clearBtn.hidden = true;
    document.getElementById("file-input").focus();
  });
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
