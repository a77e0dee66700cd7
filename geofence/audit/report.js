// Renders the audit report from the JSON in #audit-data. No network, no libraries:
// charts are SVG built here. Log text (examples) is attacker-controlled, so every
// value goes into the page through textContent, never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("audit-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = {
    allow: "#2e7d32", deny: "#c62828", challenge: "#ef6c00", review: "#6a1b9a", route: "#1565c0"
  };

  function color(action) {
    return COLORS[action.split(":")[0]] || "#546e7a";
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  function section(id, title, note) {
    var s = el("section", { id: id });
    s.appendChild(el("h2", {}, title));
    if (note) { s.appendChild(el("p", { "class": "note" }, note)); }
    document.getElementById("main").appendChild(s);
    return s;
  }

  // A table whose columns sort on click (numbers numerically).
  function table(parent, columns, rows) {
    var t = el("table", { "class": "sortable" });
    var head = el("tr");
    columns.forEach(function (c, i) {
      var th = el("th", {}, c.title);
      th.addEventListener("click", function () { sortBy(t, i, c.numeric); });
      head.appendChild(th);
    });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    rows.forEach(function (r) {
      var tr = el("tr");
      columns.forEach(function (c) {
        var v = c.value(r);
        tr.appendChild(el("td", c.numeric ? { "class": "num", "data-v": v } : {},
          c.numeric ? fmt(v) : v));
      });
      body.appendChild(tr);
    });
    if (!rows.length) {
      var tr = el("tr");
      tr.appendChild(el("td", { colspan: columns.length, "class": "empty" }, "none"));
      body.appendChild(tr);
    }
    parent.appendChild(t);
    return t;
  }
  function sortBy(t, i, numeric) {
    var body = t.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = t.getAttribute("data-sorted") !== String(i);
    rows.sort(function (a, b) {
      var x = numeric ? Number(a.cells[i].getAttribute("data-v")) : a.cells[i].textContent;
      var y = numeric ? Number(b.cells[i].getAttribute("data-v")) : b.cells[i].textContent;
      var c = x < y ? -1 : x > y ? 1 : 0;
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    t.setAttribute("data-sorted", down ? String(i) : "");
  }

  function cards() {
    var box = el("div", { "class": "cards" });
    [["lines", data.lines], ["decided", data.decided],
     ["distinct addresses", data.distinct_addresses], ["invalid address", data.invalid],
     ["unparsed", data.unparsed]].forEach(function (c) {
      var card = el("div", { "class": "card" });
      card.appendChild(el("div", { "class": "big" }, fmt(c[1])));
      card.appendChild(el("div", {}, c[0]));
      box.appendChild(card);
    });
    document.getElementById("main").appendChild(box);
  }

  // Stacked bars: requests per action per time bin; the legend toggles actions.
  function timeline() {
    var s = section("timeline", "Actions over time");
    var bins = data.timeline.bins;
    if (!bins.length) { s.appendChild(el("p", {}, "The log has no usable times.")); return; }
    var actions = data.by_action.map(function (a) { return a.key; });
    var hidden = {};
    var W = 960, H = 260, L = 60, B = 30;
    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img" });
    s.appendChild(chart);
    var legend = el("div", { "class": "legend" });
    s.appendChild(legend);
    actions.forEach(function (a) {
      var item = el("label", {});
      var box = el("input", { type: "checkbox", checked: "checked" });
      box.addEventListener("change", function () { hidden[a] = !box.checked; draw(); });
      item.appendChild(box);
      var swatch = el("span", { "class": "swatch" });
      swatch.style.background = color(a);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(a));
      legend.appendChild(item);
    });
    function draw() {
      while (chart.firstChild) { chart.removeChild(chart.firstChild); }
      var max = 1;
      bins.forEach(function (b) {
        var t = 0;
        actions.forEach(function (a) { if (!hidden[a]) { t += b.actions[a] || 0; } });
        max = Math.max(max, t);
      });
      var w = (W - L - 10) / bins.length;
      chart.appendChild(svg("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#888" }));
      chart.appendChild(svg("text", { x: L - 6, y: 14, "text-anchor": "end", "class": "axis" },
        fmt(max)));
      chart.appendChild(svg("text", { x: L - 6, y: H - B, "text-anchor": "end", "class": "axis" },
        "0"));
      bins.forEach(function (b, i) {
        var y = H - B;
        actions.forEach(function (a) {
          var n = hidden[a] ? 0 : (b.actions[a] || 0);
          if (!n) { return; }
          var h = n / max * (H - B - 20);
          y -= h;
          var r = svg("rect", { x: L + i * w, y: y, width: Math.max(w - 1, 1), height: h,
            fill: color(a), "class": "bar" });
          r.appendChild(svg("title", {}, new Date(b.start * 1000).toISOString() + " " + a +
            ": " + fmt(n)));
          chart.appendChild(r);
        });
      });
      [0, bins.length - 1].forEach(function (i) {
        chart.appendChild(svg("text", { x: L + i * w, y: H - 8, "class": "axis",
          "text-anchor": i ? "end" : "start" },
          new Date(bins[i].start * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC"));
      });
    }
    draw();
    s.appendChild(el("p", { "class": "note" }, "Bins of " + data.timeline.width / 60 +
      " minutes; hover a bar for its count."));
  }

  // Horizontal bars of the top entries of a breakdown.
  function bars(parent, rows, top, colorOf, unit) {
    unit = unit || ["requests", "addresses", "addr."];
    rows = rows.slice(0, top);
    var W = 960, row = 22, L = 150;
    var H = rows.length * row + 10;
    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img" });
    var max = Math.max.apply(null, rows.map(function (r) { return r.requests; }).concat([1]));
    rows.forEach(function (r, i) {
      var y = 5 + i * row;
      chart.appendChild(svg("text", { x: L - 8, y: y + 15, "text-anchor": "end" }, r.key));
      var bar = svg("rect", { x: L, y: y + 3, height: row - 6, fill: colorOf(r), "class": "bar",
        width: Math.max(r.requests / max * (W - L - 140), 1) });
      bar.appendChild(svg("title", {}, r.key + ": " + fmt(r.requests) + " " + unit[0] + ", " +
        fmt(r.addresses) + " " + unit[1]));
      chart.appendChild(bar);
      chart.appendChild(svg("text", { x: L + r.requests / max * (W - L - 140) + 6, y: y + 15,
        "class": "axis" }, fmt(r.requests) + " / " + fmt(r.addresses) + " " + unit[2]));
    });
    parent.appendChild(chart);
  }

  var COUNT = [
    { title: "requests", numeric: true, value: function (r) { return r.requests; } },
    { title: "addresses", numeric: true, value: function (r) { return r.addresses; } }
  ];
  function keyed(title) {
    return [{ title: title, value: function (r) { return r.key; } }].concat(COUNT);
  }

  function breakdowns() {
    var s = section("countries", "Top countries", "Requests / distinct addresses.");
    bars(s, data.by_country, 15, function () { return "#455a64"; });
    s = section("actions", "By action and rule");
    bars(s, data.by_action, 10, function (r) { return color(r.key); });
    table(s, keyed("rule (or outcome)"), data.by_rule);
    s = section("kinds", "By network kind");
    table(s, keyed("network kind"), data.by_kind);
    if (data.by_subdivision.length) {
      s = section("subdivisions", "By subdivision");
      table(s, keyed("subdivision"), data.by_subdivision);
    }
    if (data.shadow.length) {
      s = section("shadow", "Shadow mode", "What shadow rules would have done if enforced.");
      table(s, keyed("shadow action"), data.shadow);
    }
  }

  // Equirectangular world view: a bubble per country at its representative point
  // (from the tz database), area by requests; the red part is the denied share.
  function worldMap(parent) {
    var W = 960, H = 480;
    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart map", role: "img" });
    chart.appendChild(svg("rect", { x: 0, y: 0, width: W, height: H, fill: "#eef3f7" }));
    for (var lon = -180; lon <= 180; lon += 30) {
      chart.appendChild(svg("line", { x1: (lon + 180) / 360 * W, y1: 0,
        x2: (lon + 180) / 360 * W, y2: H, stroke: "#d5dde3" }));
    }
    for (var lat = -90; lat <= 90; lat += 30) {
      chart.appendChild(svg("line", { x1: 0, y1: (90 - lat) / 180 * H, x2: W,
        y2: (90 - lat) / 180 * H, stroke: lat === 0 ? "#b0bec5" : "#d5dde3" }));
    }
    var max = Math.max.apply(null, data.map.map(function (p) { return p.requests; }).concat([1]));
    data.map.forEach(function (p) {
      var x = (p.lon + 180) / 360 * W, y = (90 - p.lat) / 180 * H;
      var r = 3 + 27 * Math.sqrt(p.requests / max);
      var g = svg("g", { "class": "place" });
      g.appendChild(svg("circle", { cx: x, cy: y, r: r, fill: "#90a4ae", "fill-opacity": 0.6 }));
      if (p.denied) {
        g.appendChild(svg("circle", { cx: x, cy: y, r: r * Math.sqrt(p.denied / p.requests),
          fill: COLORS.deny, "fill-opacity": 0.85 }));
      }
      g.appendChild(svg("text", { x: x, y: y - r - 2, "text-anchor": "middle",
        "class": "axis" }, p.country));
      g.appendChild(svg("title", {}, p.country + ": " + fmt(p.requests) + " requests, " +
        fmt(p.denied) + " denied"));
      chart.appendChild(g);
    });
    parent.appendChild(chart);
  }

  function denied() {
    var s = section("denied", "Denied traffic by place",
      "Bubbles: requests per country (area), the denied share in red. " +
      "Tables: click a column to sort; subdivisions are ISO 3166-2 codes.");
    worldMap(s);
    table(s, [
      { title: "country", value: function (r) { return r.country; } },
      { title: "subdivision", value: function (r) { return r.subdivision; } },
      COUNT[0], COUNT[1],
      { title: "rules", value: function (r) { return r.rules.join(", "); } },
      { title: "top ASNs", value: function (r) { return r.asns.join(", "); } }
    ], data.denied);
    Object.keys(data.non_allow).forEach(function (action) {
      var d = data.non_allow[action];
      var sub = el("div", { "class": "pair" });
      s.appendChild(el("h3", {}, "Top networks and ASNs: " + action));
      table(sub, [
        { title: "network", value: function (r) { return r.network; } },
        { title: "organisation", value: function (r) { return r.org; } }
      ].concat(COUNT), d.networks);
      table(sub, [{ title: "ASN", value: function (r) { return r.asn; } }].concat(COUNT), d.asns);
      s.appendChild(sub);
    });
  }

  function workarounds() {
    var s = section("workarounds", "Workaround signals",
      "Account-history signals replayed per user over the log (see docs/history.md).");
    var w = data.workarounds;
    if (!w) {
      s.appendChild(el("p", {}, "The log names no users, so no account history was replayed."));
    } else {
      s.appendChild(el("p", {}, fmt(w.requests) + " requests of " + fmt(w.subjects) +
        " users replayed."));
      var rows = Object.keys(w.signals).map(function (code) {
        return { key: code, requests: w.signals[code].events, addresses: w.signals[code].subjects };
      });
      bars(s, rows, 10, function () { return "#ad1457"; }, ["requests", "users", "users"]);
      var examples = [];
      Object.keys(w.signals).forEach(function (code) {
        w.signals[code].examples.forEach(function (e) {
          examples.push({ code: code, subject: e.subject, address: e.address, at: e.at,
            detail: e.detail });
        });
      });
      table(s, [
        { title: "signal", value: function (r) { return r.code; } },
        { title: "user", value: function (r) { return r.subject; } },
        { title: "address", value: function (r) { return r.address; } },
        { title: "time (UTC)", value: function (r) {
          return new Date(r.at * 1000).toISOString().replace("T", " ").slice(0, 19); } },
        { title: "detail", value: function (r) { return r.detail; } }
      ], examples);
    }
    if (data.client_signals.length) {
      s.appendChild(el("h3", {}, "Forwarding headers"));
      table(s, [
        { title: "signal", value: function (r) { return r.code; } },
        { title: "lines", numeric: true, value: function (r) { return r.lines; } },
        { title: "example", value: function (r) { return r.examples[0] || ""; } }
      ], data.client_signals);
    }
  }

  function problems() {
    var s = section("problems", "Lines not decided",
      "Every line is decided, counted as an invalid address, or counted here.");
    table(s, [
      { title: "reason", value: function (r) { return r.reason; } },
      { title: "lines", numeric: true, value: function (r) { return r.lines; } },
      { title: "examples", value: function (r) { return r.examples.join("\n"); } }
    ], data.unparsed_reasons);
    if (data.invalid_examples.length) {
      s.appendChild(el("h3", {}, "Invalid client addresses"));
      table(s, [
        { title: "address", value: function (r) { return r.address; } },
        { title: "lines", numeric: true, value: function (r) { return r.lines; } }
      ], data.invalid_examples);
    }
    if (data.unknown_fields.length) {
      s.appendChild(el("h3", {}, "Fields no option reads"));
      s.appendChild(el("p", { "class": "note" },
        "JSON keys and CSV columns present in the log but not read as address, " +
        "X-Forwarded-For, time or user (see --ip-field and friends)."));
      table(s, [
        { title: "field", value: function (r) { return r.field; } },
        { title: "lines", numeric: true, value: function (r) { return r.lines; } }
      ], data.unknown_fields);
    }
    data.read_problems.forEach(function (p) {
      s.appendChild(el("p", { "class": "error" }, p.source + ": stopped after line " +
        fmt(p.after_line) + ": " + p.reason));
    });
  }

  document.getElementById("subtitle").textContent = "Policy " + data.policy_id + " @ " +
    data.policy_digest + ", snapshot " + data.snapshot_id + "; " +
    data.sources.map(function (x) { return x.source; }).join(", ");
  cards();
  timeline();
  breakdowns();
  denied();
  workarounds();
  problems();
  document.documentElement.setAttribute("data-rendered", "1");
})();
