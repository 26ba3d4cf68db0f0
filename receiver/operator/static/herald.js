/* Herald's status page: live updates of <main> and the buttons that call the operator API.
   Plain JavaScript, no dependency, nothing inline (the page's Content-Security-Policy).

   <main data-live="1"> (a run in progress): its fragment (?fragment=1) is fetched every 2 s and
   swapped in when its X-Herald-State changed; otherwise every 5 s, to notice a run starting
   (never where data-idle="0": the dead letters, whose listing is not free on every broker).
   After a button, every 2 s until its effect has shown. */
(function () {
  "use strict";

  var POLL_MS = 2000;       // while the page is live (a run in progress)
  var IDLE_MS = 5000;       // otherwise, to notice a run starting; 0 (data-idle) on pages that must not
  var WATCH_MS = 60000;     // after a button: look for its effect this long at most
  var SETTLE_MS = 6000;     // and this long at least (a replayed message may die again)
  var main = document.getElementById("main");
  var flash = document.getElementById("flash");
  var note = document.getElementById("refresh");
  if (!main) { return; }
  var api = document.body.getAttribute("data-api") || "/api/v1";
  var watchUntil = 0;       // after an action: poll until then, or until its effect has shown
  var watchChanged = false;
  var watchSettled = 0;
  var timer = null;
  var inFlight = false;

  // ---- relative times ("2m ago"), as the server writes them ----------------------------------

  function ago(at) {
    var seconds = Math.max(0, Math.floor(Date.now() / 1000 - at));
    var units = [[86400, "d"], [3600, "h"], [60, "m"]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][0]) { return Math.floor(seconds / units[i][0]) + units[i][1] + " ago"; }
    }
    return seconds + "s ago";
  }

  function refreshTimes(root) {
    var times = root.querySelectorAll("time[data-at]");
    for (var i = 0; i < times.length; i++) {
      var at = parseFloat(times[i].getAttribute("data-at"));
      if (!isNaN(at)) { times[i].textContent = ago(at); }
    }
  }

  // ---- live <main> ---------------------------------------------------------------------------

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    url.hash = "";
    return url.toString();
  }

  function openDetails() {
    var open = {};
    var all = main.querySelectorAll("details");
    for (var i = 0; i < all.length; i++) {
      var key = detailsKey(all[i]);
      if (key) { open[key] = all[i].open; }
    }
    return open;
  }

  function detailsKey(el) {
    if (el.getAttribute("data-key")) { return el.getAttribute("data-key"); }
    var summary = el.querySelector("summary");
    return summary ? "s:" + summary.textContent : "";
  }

  function swap(html, state, live) {
    var open = openDetails();
    main.innerHTML = html;
    main.setAttribute("data-state", state || "");
    var all = main.querySelectorAll("details");
    for (var i = 0; i < all.length; i++) {
      var key = detailsKey(all[i]);
      if (key && Object.prototype.hasOwnProperty.call(open, key)) { all[i].open = open[key]; }
    }
    refreshTimes(main);
  }

  function polling() {
    return main.getAttribute("data-live") === "1" || Date.now() < watchUntil;
  }

  function idle() {
    return main.getAttribute("data-idle") === "0" ? 0 : IDLE_MS;
  }

  function schedule(delay) {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    var every = polling() ? POLL_MS : idle();
    if (note) { note.textContent = polling() ? "updating every 2 s" : ""; }
    if (!every) { return; }
    timer = setTimeout(poll, delay === undefined ? every : delay);
  }

  function poll() {
    timer = null;
    if (inFlight) { return; }
    if (document.hidden) { schedule(); return; }
    refresh(schedule);
  }

  // One fetch of the fragment, swapped in when it changed; `then` runs after it, whatever happened.
  function refresh(then) {
    inFlight = true;
    fetch(fragmentUrl(), { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (resp) {
        if (resp.redirected && /\/login$/.test(new URL(resp.url).pathname)) {
          // Reading needs a token and the cookie went: the login page sends one back here.
          var login = new URL(document.body.getAttribute("data-login"), window.location.href);
          login.searchParams.set("next", window.location.pathname + window.location.search);
          window.location.assign(login.toString());
          return null;
        }
        if (!resp.ok && resp.status !== 404) { return null; }
        var state = resp.headers.get("X-Herald-State") || "";
        var live = resp.headers.get("X-Herald-Live") === "1";
        return resp.text().then(function (html) {
          if (state !== main.getAttribute("data-state")) {
            swap(html, state, live);
            watchChanged = true;
          }
          main.setAttribute("data-live", live ? "1" : "0");
          // An action's effect has shown and nothing is under way any more: stop watching.
          if (watchChanged && !live && Date.now() > watchSettled) { watchUntil = 0; }
        });
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { inFlight = false; then(); });
  }

  // After a dead letter's Replay or Drop: two looks (now, and once a replayed message may have
  // died again), not a watch: listing dead letters is not free on every broker.
  function refreshTwice() {
    refresh(function () {});
    setTimeout(function () { if (!inFlight) { refresh(function () {}); } }, 3000);
  }

  function watch() {
    watchUntil = Date.now() + WATCH_MS;
    watchSettled = Date.now() + SETTLE_MS;
    watchChanged = false;
    schedule(0);
  }

  // ---- the buttons: the operator API, with the cookie and X-Herald-Intent --------------------

  function say(text, kind, withLogin) {
    if (!flash) { return; }
    flash.textContent = text;
    if (withLogin) {
      var link = document.createElement("a");
      link.href = document.body.getAttribute("data-login") + "?next=" +
        encodeURIComponent(window.location.pathname + window.location.search);
      link.textContent = "Log in";
      flash.appendChild(document.createTextNode(" "));
      flash.appendChild(link);
    }
    flash.className = "flash " + kind;
    flash.hidden = false;
  }

  function target(b) {
    return b.getAttribute("data-kind") + " " + b.getAttribute("data-namespace") + "/" + b.getAttribute("data-name");
  }

  function describe(action, b, data) {
    var what = target(b);
    switch (action) {
      case "reconcile": return "Reconcile of " + what + " requested" +
        (data && data.request ? " (request " + String(data.request).slice(0, 8) + ")" : "") + "; its run shows below.";
      case "suspend": return what + " suspended.";
      case "resume": return what + " resumed.";
      case "replay": return "Replayed " + (data ? data.count : "") + " dead letter(s) of " + b.getAttribute("data-queue") + ".";
      case "drop": return "Dropped " + (data ? data.count : "") + " dead letter(s) of " + b.getAttribute("data-queue") + ".";
    }
    return "Done.";
  }

  function request(action, b) {
    var enc = encodeURIComponent;
    if (action === "reconcile" || action === "suspend" || action === "resume") {
      return { method: "POST", url: api + "/" + action, body: JSON.stringify({
        kind: b.getAttribute("data-kind"), namespace: b.getAttribute("data-namespace"), name: b.getAttribute("data-name")
      }) };
    }
    var where = api + "/dead-letters/" + enc(b.getAttribute("data-queue"));
    if (action === "replay") { return { method: "POST", url: where + "/replay/" + enc(b.getAttribute("data-id")), body: null }; }
    if (action === "drop") { return { method: "DELETE", url: where + "/" + enc(b.getAttribute("data-id")), body: null }; }
    return null;
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button[data-action]") : null;
    if (!b || b.disabled) { return; }
    ev.preventDefault();
    var action = b.getAttribute("data-action");
    var call = request(action, b);
    if (!call) { return; }
    if (action === "drop" && !window.confirm("Drop dead letter " + b.getAttribute("data-id") + " of " +
        b.getAttribute("data-queue") + "? It cannot be replayed afterwards.")) { return; }
    b.disabled = true;
    say(b.textContent.trim() + "…", "pending");
    var headers = { "Accept": "application/json", "X-Herald-Intent": "1" };
    if (call.body !== null) { headers["Content-Type"] = "application/json"; }
    fetch(call.url, { method: call.method, credentials: "same-origin", cache: "no-store", headers: headers,
                      body: call.body })
      .then(function (resp) {
        return resp.text().then(function (text) {
          var data = null;
          try { data = JSON.parse(text); } catch (e) { data = null; }
          if (!resp.ok) {
            var why = data && data.error ? data.error : text.slice(0, 300);
            say(b.textContent.trim() + " failed (HTTP " + resp.status + "): " + why, "error", resp.status === 401);
            b.disabled = false;
            return;
          }
          say(describe(action, b, data), "ok");
          if (action === "replay" || action === "drop") { refreshTwice(); } else { watch(); }
        });
      })
      .catch(function (err) {
        say(b.textContent.trim() + " failed: " + (err && err.message ? err.message : "no answer from Herald"), "error");
        b.disabled = false;
      });
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && (polling() || idle())) { schedule(0); }
  });

  refreshTimes(document);
  setInterval(function () { refreshTimes(document); }, 10000);
  schedule();
})();
