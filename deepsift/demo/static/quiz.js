// deepsift demo: the quiz, a client of /api/v1/quiz (guess first; the truth comes back only with the stored guess).
(function () {
  "use strict";
  var csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";
  var img = document.getElementById("quiz-img");
  var real = document.getElementById("guess-real"), fake = document.getElementById("guess-fake");
  var next = document.getElementById("next-round"), reveal = document.getElementById("reveal");
  var status = document.getElementById("quiz-status");
  var current = null, focusImage = false;

  function post(url, body) {
    return fetch(url, { method: "POST", credentials: "same-origin",
                        headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrf },
                        body: JSON.stringify(body || {}) })
      .then(function (r) { return r.json().then(function (b) { if (!r.ok) throw new Error(b.detail || r.status); return b; }); });
  }
  function tally(t) {
    document.getElementById("tally-rounds").textContent = t.rounds;
    document.getElementById("tally-you").textContent = t.you;
    document.getElementById("tally-detector").textContent = t.detector;
  }
  function buttons(on) { real.disabled = fake.disabled = !on; }

  function start() {
    buttons(false);
    next.hidden = true;
    reveal.textContent = "";
    reveal.className = "reveal";
    status.textContent = "Loading an image…";
    post("/api/v1/quiz/rounds").then(function (r) {
      current = r.id;
      tally(r.tally);
      img.onload = function () {
        status.textContent = "";
        buttons(true);
        if (focusImage) img.focus();  // after "Next image", focus returns to the new image
        focusImage = false;
      };
      img.src = r.image_url;
    }).catch(function (e) { status.textContent = "Cannot start a round: " + e.message; status.className = "status error"; });
  }

  function guess(which) {
    if (!current) return;
    buttons(false);
    post("/api/v1/quiz/rounds/" + current + "/guess", { guess: which }).then(function (r) {
      current = null;
      tally(r.tally);
      var name = r.generator_name || r.generator;
      var truth = r.truth === "fake" ? "AI-generated" + (name ? " (" + name + ")" : "") : "a real photo";
      var det = r.detector ? (r.detector === "fake" ? "AI-generated" : "real") +
        " (" + (100 * r.detector_probability).toFixed(0) + " % chance of AI)" : "no answer";
      reveal.textContent = (r.you_right ? "Right! " : "Not quite. ") + "You said " +
        (r.guess === "fake" ? "AI-generated" : "real") + "; it is " + truth + ". The detector said " + det +
        (r.detector_right === null ? "." : r.detector_right ? " and was right." : " and was wrong.");
      reveal.className = "reveal " + (r.you_right ? "ok" : "error");
      next.hidden = false;
      next.focus();
    }).catch(function (e) { status.textContent = e.message; status.className = "status error"; });
  }

  real.addEventListener("click", function () { guess("real"); });
  fake.addEventListener("click", function () { guess("fake"); });
  next.addEventListener("click", function () { focusImage = true; start(); });
  start();
})();
