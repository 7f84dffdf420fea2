// Redpoll console: the token lives in sessionStorage and goes out as
// `Authorization: Bearer` on every htmx and fetch request (docs/console.md).
"use strict";
(function () {
  var KEY = "redpoll.token";
  var token = function () { return sessionStorage.getItem(KEY) || ""; };
  var onSignIn = location.pathname === "/ui" || location.pathname === "/ui/";

  if (!onSignIn && !token()) {
    location.replace("/ui/?next=" + encodeURIComponent(location.pathname));
    return;
  }

  function authHeaders() { return { Authorization: "Bearer " + token() }; }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  // ---- htmx: send the token; show refusals as a page instead of dropping them
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers.Authorization = "Bearer " + token();
  });
  document.addEventListener("htmx:beforeSwap", function (e) {
    var xhr = e.detail.xhr;
    if (xhr.status < 400) return;
    var message = xhr.statusText;
    try { message = JSON.parse(xhr.responseText).error || message; } catch (_) { /* not JSON */ }
    var box = el("section", null, "card refused");
    box.id = "refused";
    box.appendChild(el("h2", xhr.status === 403 ? "403 — not for this token" : "Error " + xhr.status));
    box.appendChild(el("p", message));
    if (e.detail.target.id === "nav") {
      var link = el("a", "Sign in again");
      link.href = "/ui/";
      box = link;
    }
    e.detail.shouldSwap = false;
    e.detail.isError = false; // handled here: htmx would also log it to the console
    e.detail.target.replaceChildren(box);
  });

  // ---- sign in / out
  function setupSignIn() {
    var form = document.getElementById("signin");
    if (!form) return;
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var value = form.elements.token.value.trim();
      var error = document.getElementById("signin-error");
      fetch("/ui/f/nav", { headers: { Authorization: "Bearer " + value } }).then(function (r) {
        if (!r.ok) {
          error.textContent = "This token was refused (" + r.status + ").";
          error.hidden = false;
          return;
        }
        sessionStorage.setItem(KEY, value);
        var next = new URLSearchParams(location.search).get("next") || "";
        location.assign(/^\/ui\/[a-z]+$/.test(next) ? next : "/ui/endpoints");
      });
    });
  }
  document.addEventListener("click", function (e) {
    if (e.target && e.target.id === "signout") {
      sessionStorage.removeItem(KEY);
      location.assign("/ui/");
    }
  });

  // ---- Endpoints: the try-it forms call the real endpoint
  function snippetUrl(name, query) {
    return location.origin + "/v0/pipes/" + name + ".json" + (query ? "?" + query : "");
  }
  function renderRows(table, data) {
    table.replaceChildren();
    if (!data.length) { table.appendChild(el("caption", "no rows")); return; }
    var columns = Object.keys(data[0]);
    var head = el("tr");
    columns.forEach(function (c) { head.appendChild(el("th", c)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    data.forEach(function (row) {
      var tr = body.appendChild(el("tr"));
      columns.forEach(function (c) { tr.appendChild(el("td", row[c])); });
    });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("tryit")) return;
    e.preventDefault();
    var name = form.dataset.endpoint;
    var params = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (input) {
      if (input.name && input.value !== "") params.append(input.name, input.value);
    });
    var query = params.toString();
    var result = form.querySelector(".result");
    var stats = result.querySelector(".stats");
    var started = performance.now();
    fetch("/v0/pipes/" + encodeURIComponent(name) + ".json" + (query ? "?" + query : ""), {
      headers: authHeaders(),
    }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    }).then(function (answer) {
      var ms = performance.now() - started;
      result.hidden = false;
      var table = result.querySelector(".rows");
      if (answer.status >= 400) {
        stats.textContent = "HTTP " + answer.status + ": " + (answer.body.error || "");
        stats.className = "stats error";
        table.replaceChildren();
      } else {
        var server = answer.body.statistics ? answer.body.statistics.elapsed * 1000 : NaN;
        stats.className = "stats";
        stats.textContent = answer.body.data.length + " rows · " + ms.toFixed(1) + " ms in the browser" +
          (isNaN(server) ? "" : " · " + server.toFixed(1) + " ms in ClickHouse");
        stats.dataset.rows = String(answer.body.data.length);
        renderRows(table, answer.body.data);
      }
      var url = snippetUrl(name, query);
      result.querySelector(".curl").textContent =
        "curl -H \"Authorization: Bearer $REDPOLL_TOKEN\" \\\n  '" + url + "'";
      var pyParams = {};
      params.forEach(function (v, k) { pyParams[k] = v; });
      result.querySelector(".python").textContent =
        "import os, httpx\n\nr = httpx.get(\n    \"" + location.origin + "/v0/pipes/" + name + ".json\",\n" +
        "    params=" + JSON.stringify(pyParams) + ",\n" +
        "    headers={\"Authorization\": f\"Bearer {os.environ['REDPOLL_TOKEN']}\"},\n)\nrows = r.json()[\"data\"]";
    });
  });

  // ---- Data: counters and the live events/s chart, polling /v0/datasources
  var live = null;
  var COLORS = 6, POINTS = 60;
  function startLive(svg) {
    if (live && live.svg === svg) return;
    if (live) clearInterval(live.timer);
    live = { svg: svg, last: null, series: {}, total: 0 };
    var poll = function () {
      if (!document.body.contains(svg)) { clearInterval(live.timer); live = null; return; }
      fetch("/v0/datasources", { headers: authHeaders() }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (body) {
        if (!body || !live) return;
        var now = performance.now();
        body.datasources.forEach(function (ds) {
          var rows = ds.statistics.row_count;
          var cell = document.querySelector('[data-rows="' + ds.name + '"]');
          if (cell) cell.textContent = rows;
          var series = live.series[ds.name] || (live.series[ds.name] = []);
          if (live.last && live.last.rows[ds.name] !== undefined) {
            var rate = Math.max(0, rows - live.last.rows[ds.name]) / ((now - live.last.t) / 1000);
            series.push(rate);
            if (series.length > POINTS) series.shift();
            live.total += Math.max(0, rows - live.last.rows[ds.name]);
            var eps = document.querySelector('[data-eps="' + ds.name + '"]');
            if (eps) eps.textContent = rate.toFixed(1);
          }
        });
        var rowsNow = {};
        body.datasources.forEach(function (ds) { rowsNow[ds.name] = ds.statistics.row_count; });
        live.last = { t: now, rows: rowsNow };
        drawLive();
      });
    };
    poll();
    live.timer = setInterval(poll, 1000);
  }
  function drawLive() {
    var svg = live.svg, NS = "http://www.w3.org/2000/svg";
    var names = Object.keys(live.series).sort();
    var peak = 1;
    names.forEach(function (n) { live.series[n].forEach(function (v) { peak = Math.max(peak, v); }); });
    svg.replaceChildren();
    var legend = document.getElementById("live-legend");
    legend.replaceChildren();
    names.forEach(function (n, i) {
      var points = live.series[n].map(function (v, j) {
        return (j * 600 / (POINTS - 1)).toFixed(1) + "," + (160 - v / peak * 150).toFixed(1);
      }).join(" ");
      var line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("class", "s" + (i % COLORS));
      svg.appendChild(line);
      legend.appendChild(el("span", n, "key s" + (i % COLORS)));
    });
    legend.appendChild(el("span", "peak " + peak.toFixed(1) + "/s", "muted"));
    svg.dataset.total = String(live.total);
    svg.dataset.peak = peak.toFixed(3);
  }

  // ---- Evaluation: the chart needs the token, so it is fetched, not linked
  function loadChart(img) {
    if (img.dataset.loaded) return;
    img.dataset.loaded = "1";
    fetch(img.dataset.src, { headers: authHeaders() }).then(function (r) {
      return r.status === 200 ? r.blob() : null;
    }).then(function (blob) { if (blob) img.src = URL.createObjectURL(blob); });
  }

  function markCurrent() {
    var slug = (document.getElementById("nav") || {}).dataset;
    if (!slug) return;
    document.querySelectorAll("#nav a[data-slug]").forEach(function (a) {
      if (a.dataset.slug === slug.page) a.setAttribute("aria-current", "page");
    });
  }

  document.addEventListener("htmx:afterSettle", function (e) {
    // when the page's content is in: what the browser test reports next to first paint
    if (e.detail.target.id === "content" && !performance.getEntriesByName("content-ready").length) {
      performance.mark("content-ready");
    }
    var svg = document.getElementById("live");
    if (svg) startLive(svg);
    var img = document.getElementById("eval-chart");
    if (img) loadChart(img);
    markCurrent();
  });
  document.addEventListener("DOMContentLoaded", setupSignIn);
})();
