// Step-through player: reads the steps embedded as JSON and moves a highlight through the
// drawn graph. One step = one BackwardStep of microtensor's engine, in the engine's order,
// except that a folded module's steps are one step. The view follows the current node
// (zoom with the wheel, a pinch, the buttons or +/-; drag to pan; "fit all" shows it all).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("steps").textContent);
  var steps = data.steps;
  var nodeModules = data.nodes || {};          // node id -> module path
  var clusterPaths = data.clusters || {};      // cluster id -> module path
  var folded = (data.folded || []).slice();    // module paths drawn as one box
  var items = [];                              // what one press of "next" moves over
  var current = 0;
  var $ = function (id) { return document.getElementById(id); };
  var SVG_NS = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------------ the view
  var pane = $("graph");
  var svg = pane.querySelector("svg");
  var canvas = svg ? svg.querySelector("g.graph") : null;
  var whole = svg ? svg.viewBox.baseVal : null;
  var fullBox = whole ? {x: whole.x, y: whole.y, w: whole.width, h: whole.height} : null;
  var view = {cx: 0, cy: 0, s: 1};             // centre (graph units) and pixels per unit
  var overview = false;
  if (svg) {
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  }

  function paneSize() {
    return {w: Math.max(pane.clientWidth, 1), h: Math.max(pane.clientHeight, 1)};
  }

  function render() {
    if (!svg) return;
    var size = paneSize(), w = size.w / view.s, h = size.h / view.s;
    svg.setAttribute("viewBox", [view.cx - w / 2, view.cy - h / 2, w, h].join(" "));
  }

  function fitScale(box) {
    var size = paneSize();
    return 0.96 * Math.min(size.w / box.w, size.h / box.h);
  }

  function showBox(box) {
    view = {cx: box.x + box.w / 2, cy: box.y + box.h / 2, s: fitScale(box)};
    render();
  }

  function zoomAt(factor, px, py) {
    // Keep the graph point under (px, py) (pixels in the pane) where it is.
    var size = paneSize();
    var gx = view.cx + (px - size.w / 2) / view.s, gy = view.cy + (py - size.h / 2) / view.s;
    view.s = Math.min(Math.max(view.s * factor, fitScale(fullBox) / 4), 40);
    view.cx = gx - (px - size.w / 2) / view.s;
    view.cy = gy - (py - size.h / 2) / view.s;
    render();
  }

  function boxOf(el) {
    // An element's box in the SVG's own units (Graphviz translates the whole graph).
    var b = el.getBBox(), m = canvas.transform.baseVal.consolidate();
    m = m ? m.matrix : {a: 1, b: 0, c: 0, d: 1, e: 0, f: 0};
    var x = m.a * b.x + m.c * b.y + m.e, y = m.b * b.x + m.d * b.y + m.f;
    return {x: x, y: y, w: b.width * m.a, h: b.height * m.d};
  }

  function textSize(el) {
    // The largest font of an element's text, in graph units (Graphviz's font-size).
    var largest = 0;
    el.querySelectorAll("text").forEach(function (t) {
      largest = Math.max(largest, parseFloat(t.getAttribute("font-size")) || 0);
    });
    return largest || 10;
  }

  function union(boxes) {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    boxes.forEach(function (b) {
      x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y);
      x1 = Math.max(x1, b.x + b.w); y1 = Math.max(y1, b.y + b.h);
    });
    return {x: x0, y: y0, w: x1 - x0, h: y1 - y0};
  }

  function keepInside() {
    // Never show blank space beyond the graph's edge where the graph could fill it.
    var size = paneSize(), w = size.w / view.s, h = size.h / view.s;
    view.cx = w >= fullBox.w ? fullBox.x + fullBox.w / 2 :
      Math.min(Math.max(view.cx, fullBox.x + w / 2), fullBox.x + fullBox.w - w / 2);
    view.cy = h >= fullBox.h ? fullBox.y + fullBox.h / 2 :
      Math.min(Math.max(view.cy, fullBox.y + h / 2), fullBox.y + fullBox.h - h / 2);
  }

  function follow(el, neighbours) {
    // The rule: the current node, and the nodes it sends gradients to when they fit too,
    // in view with its text 11.5 to 14 px high (font-size times pixels per unit).
    if (!svg || !el) return;
    var label = el.classList.contains("fold-box") ? el.querySelector("text") : el;
    var font = textSize(el), box = boxOf(label);
    var around = union([box].concat((neighbours || []).map(boxOf)));
    var fits = fitScale(around);
    var least = 11.5 / font, most = 14 / font;
    view.s = Math.min(Math.max(fits, least), most);
    var centre = fits >= least ? around : box;
    view.cx = centre.x + centre.w / 2;
    view.cy = centre.y + centre.h / 2;
    keepInside();
    render();
  }

  function setOverview(on) {
    overview = on;
    $("fit").setAttribute("aria-pressed", String(on));
    $("fit").classList.toggle("on", on);
    if (on) showBox(fullBox); else show(current);
  }

  // ------------------------------------------------------------------ folding
  function within(path, outer) {
    return path === outer || path.indexOf(outer + ".") === 0;
  }

  function foldOf(path) {
    if (!path) return null;
    for (var i = 0; i < folded.length; i++) if (within(path, folded[i])) return folded[i];
    return null;
  }

  function stepFold(step) {
    return foldOf(step.module);        // the folded box a step is inside, or null
  }

  function clusterOf(path) {
    for (var id in clusterPaths) if (clusterPaths[id] === path) return $(id);
    return null;
  }

  function buildItems() {
    // One item per step, but all the steps inside one folded module are one item, at the
    // place of its first step: stepping over a folded block is one step.
    items = [];
    var byFold = {};
    steps.forEach(function (step, i) {
      var fold = stepFold(step);
      if (fold === null) { items.push({steps: [i]}); return; }
      if (!byFold[fold]) { byFold[fold] = {fold: fold, steps: []}; items.push(byFold[fold]); }
      byFold[fold].steps.push(i);
    });
  }

  function itemOfStep(i) {
    for (var k = 0; k < items.length; k++) if (items[k].steps.indexOf(i) >= 0) return k;
    return 0;
  }

  function drawFolds() {
    document.querySelectorAll(".fold-box").forEach(function (el) { el.remove(); });
    document.querySelectorAll(".infold").forEach(function (el) {
      el.classList.remove("infold");
    });
    if (!svg) return;
    document.querySelectorAll("g.node, g.edge").forEach(function (g) {
      var ends = g.classList.contains("edge")
        ? (g.querySelector("title") || {}).textContent.split("->") : [g.id];
      if (ends.every(function (id) { return foldOf(nodeModules[id]) !== null; }))
        g.classList.add("infold");
    });
    document.querySelectorAll("g.cluster").forEach(function (g) {
      if (foldOf(clusterPaths[g.id]) !== null) g.classList.add("infold");
    });
    folded.forEach(function (path) {
      var cluster = clusterOf(path);
      if (!cluster) return;
      var box = cluster.getBBox(), count = steps.filter(function (s) {
        return stepFold(s) === path; }).length;
      var g = document.createElementNS(SVG_NS, "g");
      g.setAttribute("class", "fold-box");
      g.setAttribute("data-path", path);
      var rect = document.createElementNS(SVG_NS, "rect");
      ["x", "y", "width", "height"].forEach(function (key, j) {
        rect.setAttribute(key, [box.x, box.y, box.width, box.height][j]);
      });
      rect.setAttribute("rx", 6);
      g.appendChild(rect);
      // The module's name at the top of the box, where the gradient arrives, in a fixed
      // size: following it then zooms to the same readable text as any other node.
      var lines = [path, "folded: " + count + " steps, click to open"];
      var top = box.height > 60 ? box.y + 22 : box.y + box.height / 2 - 6;
      lines.forEach(function (line, j) {
        var text = document.createElementNS(SVG_NS, "text");
        text.setAttribute("x", box.x + box.width / 2);
        text.setAttribute("y", top + 16 * j);
        text.setAttribute("font-size", j ? 11 : 13);
        text.textContent = line;
        g.appendChild(text);
      });
      canvas.appendChild(g);     // in the graph's own units, over the module's nodes
    });
  }

  function refold(change, path) {
    var step = items.length ? items[current].steps[0] : 0;
    if (change === "open") {
      folded = folded.filter(function (f) { return !within(f, path); });
    } else if (folded.indexOf(path) < 0) {
      folded = folded.filter(function (f) { return !within(f, path); });
      folded.push(path);
    }
    buildItems();
    drawFolds();
    var overviewed = overview;     // opening or closing a module is no step: keep the view
    show(itemOfStep(step));
    if (overviewed) setOverview(true);
  }

  // ------------------------------------------------------------------ the panel
  function fmt(v) {
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e4 || a < 1e-3) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
  }

  function grid(values) {
    // Values come nested like the array; show them as rows of the last axis.
    var rows = [];
    (function flatten(v) {
      if (!Array.isArray(v)) { rows.push([v]); return; }
      if (v.length === 0 || !Array.isArray(v[0])) { rows.push(v); return; }
      v.forEach(flatten);
    })(values);
    var scale = 0;
    rows.forEach(function (r) { r.forEach(function (x) {
      if (typeof x === "number") scale = Math.max(scale, Math.abs(x)); }); });
    var table = document.createElement("table");
    table.className = "grid";
    rows.forEach(function (r) {
      var tr = table.insertRow();
      r.forEach(function (x) {
        var td = tr.insertCell();
        td.textContent = fmt(x);
        if (typeof x === "number" && scale > 0) {
          var t = Math.min(Math.abs(x) / scale, 1);
          td.style.background = x < 0 ? "rgba(118,42,131," + (0.6 * t) + ")"
                                      : "rgba(27,120,55," + (0.6 * t) + ")";
        }
      });
    });
    return table;
  }

  function block(what, summary) {
    var div = document.createElement("div");
    div.className = "block";
    var head = document.createElement("div");
    head.className = "what";
    head.textContent = what;
    div.appendChild(head);
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "shape (" + summary.shape.join(", ") + ")  " + summary.dtype +
      (summary.stats ? "  " + summary.stats : "");
    div.appendChild(meta);
    if (summary.values !== undefined) div.appendChild(grid(summary.values));
    return div;
  }

  function crumbs(path) {
    var bar = $("crumbs");
    bar.textContent = "";
    var parts = path ? path.split(".") : [], trail = ["model"], paths = [""];
    parts.forEach(function (part, i) {
      var sofar = parts.slice(0, i + 1).join(".");
      if (/^\d+$/.test(part) && trail.length > 1) {
        trail[trail.length - 1] += "." + part;      // "blocks.1": one place, not two
        paths[paths.length - 1] = sofar;
      } else { trail.push(part); paths.push(sofar); }
    });
    trail.forEach(function (name, i) {
      var link = document.createElement("button");
      link.type = "button";
      link.className = "crumb";
      link.textContent = name;
      link.addEventListener("click", function () {
        var cluster = paths[i] ? clusterOf(paths[i]) : null;
        overview = false;
        showBox(cluster ? boxOf(cluster) : fullBox);
      });
      bar.appendChild(link);
    });
  }

  function nodeById(id) {
    var el = document.getElementById(id);
    return el && el.classList.contains("node") ? el : null;
  }

  function foldBox(path) {
    return document.querySelector('.fold-box[data-path="' + CSS.escape(path) + '"]');
  }

  function shownAs(id) {
    // The element a node id is drawn as now: the node, or the folded box around it.
    var fold = foldOf(nodeModules[id]);
    return fold === null ? nodeById(id) : foldBox(fold);
  }

  function itemElement(item) {
    return item.fold ? foldBox(item.fold) : shownAs(steps[item.steps[0]].node);
  }

  var badges = {};                             // step index -> its "|g| ..." text

  function drawGradients() {
    // The picture fills in as you step: each tensor whose gradient is complete (its own
    // step is done, or is this one) shows the gradient's norm on its node. Only what
    // changed since the last step is added or removed.
    if (!svg) return;
    var wanted = {};
    for (var i = 0; i <= current; i++) {
      items[i].steps.forEach(function (k) {
        var step = steps[k];
        if (nodeById(step.tensor) && foldOf(nodeModules[step.tensor]) === null &&
            step.grad_out.norm !== undefined) wanted[k] = true;
      });
    }
    Object.keys(badges).forEach(function (k) {
      if (!wanted[k]) { badges[k].remove(); delete badges[k]; }
    });
    Object.keys(wanted).forEach(function (k) {
      if (badges[k]) return;
      var step = steps[k], b = nodeById(step.tensor).getBBox();
      var text = document.createElementNS(SVG_NS, "text");
      text.setAttribute("class", "grad-badge");
      text.setAttribute("x", b.x + b.width);
      text.setAttribute("y", b.y - 2);
      text.setAttribute("font-size", 9);
      text.textContent = "|g| " + fmt(step.grad_out.norm);
      canvas.appendChild(text);
      badges[k] = text;
    });
  }

  function show(index) {
    // Every step, jump or search leaves "fit all": the view follows the current node.
    overview = false;
    $("fit").setAttribute("aria-pressed", "false");
    $("fit").classList.remove("on");
    current = Math.max(0, Math.min(index, items.length - 1));
    var item = items[current];
    document.querySelectorAll(".current, .visited, .receiving").forEach(function (g) {
      g.classList.remove("current", "visited", "receiving");
    });
    for (var i = 0; i < current; i++) {
      var done = itemElement(items[i]);
      if (done) done.classList.add("visited");
    }
    var first = steps[item.steps[0]];
    var sends = [];
    item.steps.forEach(function (k) {
      steps[k].sends.forEach(function (s) {
        var into = item.steps.some(function (j) { return steps[j].tensor === s.node; });
        if (!item.fold || !(into || within(nodeModules[s.node] || "", item.fold))) sends.push(s);
      });
    });
    var receiving = [];
    sends.forEach(function (s) {
      var target = shownAs(s.node);
      if (target) { target.classList.add("receiving"); receiving.push(target); }
    });
    drawGradients();
    var node = itemElement(item);
    if (node) {
      node.classList.remove("visited", "receiving");
      node.classList.add("current");
      follow(node, receiving.filter(function (t) { return t !== node; }));
    }
    $("counter").textContent = (current + 1) + " / " + items.length;
    $("prev").disabled = current === 0;
    $("next").disabled = current === items.length - 1;
    $("inside").disabled = !item.fold;
    crumbs(item.fold || first.module || "");
    var numbers = $("numbers");
    numbers.textContent = "";
    if (item.fold) {
      $("step-title").textContent = item.fold + " (folded): " + item.steps.length +
        " steps in one";
      $("rule").textContent = "the gradient flows back through every op inside " + item.fold +
        "; \u201cstep inside\u201d (Enter) opens it";
      numbers.appendChild(block("gradient arriving at " + first.name + " (g)", first.grad_out));
    } else {
      $("step-title").textContent = first.kind === "leaf"
        ? "leaf " + first.name + ": its gradient is complete"
        : first.op + (first.config ? " (" + first.config + ")" : "") + " \u2192 " + first.name;
      $("rule").textContent = first.rule;
      numbers.appendChild(block(first.kind === "leaf" ? first.name + ".grad += g, where g ="
        : "gradient arriving at " + first.name + " (g)", first.grad_out));
    }
    sends.forEach(function (s) { numbers.appendChild(block("sends to " + s.to, s)); });
  }

  var matches = [], matchAt = -1, matchQuery = null;

  function findMatches(query) {
    // Every step whose tensor's name contains the query: parameters first, then tensors
    // their user named, then the rest; within each, an exact name, then a name ending in
    // it ("...W_q.weight" for "weight"), then the others, each in step order.
    var q = query.trim().toLowerCase();
    if (!q) return [];
    var found = [];
    steps.forEach(function (s, i) {
      var name = s.name.toLowerCase().split(" (")[0];
      if (name.indexOf(q) < 0) return;
      var how = name === q ? 0 : name.slice(-q.length - 1) === "." + q ? 1 : 2;
      found.push({step: i, key: [s.rank === undefined ? 2 : s.rank, how, i]});
    });
    found.sort(function (a, b) {
      for (var j = 0; j < 3; j++) if (a.key[j] !== b.key[j]) return a.key[j] - b.key[j];
      return 0;
    });
    return found.map(function (f) { return f.step; });
  }

  function search(query) {
    // Enter on the same query moves to its next match; the view follows, and the keys
    // go back to the graph so that ← and → step on from there.
    if (query !== matchQuery) {
      matches = findMatches(query);
      matchQuery = query;
      matchAt = -1;
    }
    if (!matches.length) {
      $("found").textContent = query.trim() ? "no tensor called \u201c" + query + "\u201d" : "";
      return;
    }
    matchAt = (matchAt + 1) % matches.length;
    var found = matches[matchAt], fold = stepFold(steps[found]);
    if (fold !== null) refold("open", fold);
    show(itemOfStep(found));
    $("found").textContent = steps[found].name + ": " + (matchAt + 1) + " of " +
      matches.length + (matches.length > 1 ? " (Enter: next)" : "");
    pane.focus();
  }

  function leaveSearch() {
    matches = []; matchQuery = null;
    $("found").textContent = "";
    pane.focus();
  }

  function toggleKey() {
    var key = $("key");
    key.hidden = !key.hidden;
    $("key-button").setAttribute("aria-pressed", String(!key.hidden));
  }

  // ------------------------------------------------------------------ input
  function stepInside() {
    // Open the folded block and stand on its first op (not on a residual add beside it).
    var item = items[current], path = item.fold;
    if (!path) return;
    var first = item.steps.filter(function (i) { return within(steps[i].module, path); })[0];
    refold("open", path);
    if (first !== undefined) show(itemOfStep(first));
  }

  $("next").addEventListener("click", function () { show(current + 1); });
  $("prev").addEventListener("click", function () { show(current - 1); });
  $("inside").addEventListener("click", stepInside);
  $("zoom-in").addEventListener("click", function () {
    var size = paneSize(); zoomAt(1.4, size.w / 2, size.h / 2); });
  $("zoom-out").addEventListener("click", function () {
    var size = paneSize(); zoomAt(1 / 1.4, size.w / 2, size.h / 2); });
  $("fit").addEventListener("click", function () { setOverview(!overview); });
  $("key-button").addEventListener("click", toggleKey);
  $("search").addEventListener("keydown", function (event) {
    if (event.key === "Enter") { search(event.target.value); event.preventDefault(); }
    else if (event.key === "Escape") { leaveSearch(); event.preventDefault(); }
    event.stopPropagation();           // typing a name does not step or zoom
  });
  document.addEventListener("keydown", function (event) {
    var size = paneSize();
    if (event.key === "ArrowRight") show(current + 1);
    else if (event.key === "ArrowLeft") show(current - 1);
    else if (event.key === "+" || event.key === "=") zoomAt(1.4, size.w / 2, size.h / 2);
    else if (event.key === "-") zoomAt(1 / 1.4, size.w / 2, size.h / 2);
    else if (event.key === "f") setOverview(!overview);
    else if (event.key === "k") toggleKey();
    else if (event.key === "/") $("search").focus();
    else if (event.key === "Escape") leaveSearch();
    else if (event.key === "Enter") {
      // On a folded box Enter steps inside; after a search it moves to the next match.
      if (items[current].fold || matches.length < 2) stepInside();
      else search(matchQuery);
    } else return;
    event.preventDefault();
  });

  if (svg) {
    pane.addEventListener("wheel", function (event) {
      // A trackpad pinch arrives as a wheel event with ctrlKey set: one handler for both.
      var r = pane.getBoundingClientRect();
      zoomAt(Math.exp(-event.deltaY * (event.ctrlKey ? 0.01 : 0.0015)),
             event.clientX - r.left, event.clientY - r.top);
      event.preventDefault();
    }, {passive: false});

    var pointers = {}, moved = 0;
    pane.addEventListener("pointerdown", function (event) {
      pointers[event.pointerId] = {x: event.clientX, y: event.clientY};
      moved = 0;
    });
    pane.addEventListener("pointermove", function (event) {
      var last = pointers[event.pointerId];
      if (!last) return;
      var ids = Object.keys(pointers);
      if (ids.length === 2) {          // a touch pinch: zoom by the change in distance
        var other = pointers[ids[0] == event.pointerId ? ids[1] : ids[0]];
        var before = Math.hypot(last.x - other.x, last.y - other.y);
        var after = Math.hypot(event.clientX - other.x, event.clientY - other.y);
        var r = pane.getBoundingClientRect();
        if (before > 0) zoomAt(after / before, (event.clientX + other.x) / 2 - r.left,
                               (event.clientY + other.y) / 2 - r.top);
      } else {
        view.cx -= (event.clientX - last.x) / view.s;
        view.cy -= (event.clientY - last.y) / view.s;
        render();
      }
      moved += Math.abs(event.clientX - last.x) + Math.abs(event.clientY - last.y);
      pointers[event.pointerId] = {x: event.clientX, y: event.clientY};
    });
    ["pointerup", "pointercancel", "pointerleave"].forEach(function (type) {
      pane.addEventListener(type, function (event) { delete pointers[event.pointerId]; });
    });
    pane.addEventListener("click", function (event) {
      if (moved > 4) return;            // the end of a drag, not a click
      var box = event.target.closest(".fold-box");
      if (box) { refold("open", box.getAttribute("data-path")); return; }
      var cluster = event.target.closest("g.cluster");
      if (cluster && clusterPaths[cluster.id] && event.target.tagName === "text")
        refold("close", clusterPaths[cluster.id]);
    });
    window.addEventListener("resize", function () {
      if (overview) showBox(fullBox); else render();
    });
    showBox(fullBox);
  }

  buildItems();
  drawFolds();
  document.body.dataset.steps = String(steps.length);
  if (items.length) show(0);
})();
