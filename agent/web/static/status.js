// Kassabro status page: live updates without reloading.
// Every few seconds it fetches the server-rendered live part of the page ("live")
// and swaps it in, so all wording stays in one place (the server's templates).
// No inline script anywhere: the Content-Security-Policy allows only this file.
(function () {
  "use strict";
  var region = document.getElementById("live");
  if (!region || !window.fetch || !window.DOMParser) { return; }
  var source = region.getAttribute("data-src") || "live";
  var every = Math.max(1, Number(region.getAttribute("data-refresh")) || 5) * 1000;
  var stale = document.getElementById("stale");
  var timer = null;

  function schedule() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refresh, every);
  }

  function showStale(on) {
    if (stale) { stale.hidden = !on; }
  }

  function refresh() {
    if (document.hidden) { schedule(); return; }
    fetch(source, { cache: "no-store", credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (answer) {
        return answer.text().then(function (html) { return { ok: answer.ok, html: html }; });
      })
      .then(function (result) {
        var fresh = new DOMParser().parseFromString(result.html, "text/html").getElementById("live");
        // Never pull the rug from under someone pressing a button or reading with the keyboard.
        if (fresh && !region.contains(document.activeElement)) {
          region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
        }
        showStale(!result.ok);
      })
      .catch(function () { showStale(true); })
      .then(schedule);
  }

  // An action needs the admin token: point at the field instead of sending an empty one.
  var form = document.getElementById("admin-form");
  var token = document.getElementById("admin-token");
  if (form && token) {
    form.addEventListener("submit", function (event) {
      if (!token.value) {
        event.preventDefault();
        token.scrollIntoView({ block: "center" });
        token.focus();
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { refresh(); }
  });
  schedule();
}());
