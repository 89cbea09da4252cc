// Step-through player: reads the steps embedded as JSON and moves a highlight through the
// drawn graph. One step = one BackwardStep of microtensor's engine, in the engine's order.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("steps").textContent);
  var steps = data.steps;
  var current = 0;

  function nodeById(id) {
    var el = document.getElementById(id);
    return el && el.classList.contains("node") ? el : null;
  }

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

  function show(index) {
    current = Math.max(0, Math.min(index, steps.length - 1));
    var step = steps[current];
    document.querySelectorAll("g.node").forEach(function (g) {
      g.classList.remove("current", "visited", "receiving");
    });
    for (var i = 0; i < current; i++) {
      var done = nodeById(steps[i].node);
      if (done) done.classList.add("visited");
    }
    step.sends.forEach(function (s) {
      var target = nodeById(s.node);
      if (target) target.classList.add("receiving");
    });
    var node = nodeById(step.node);
    if (node) {
      node.classList.remove("visited", "receiving");
      node.classList.add("current");
      if (node.scrollIntoView) node.scrollIntoView({block: "nearest", inline: "nearest"});
    }
    document.getElementById("counter").textContent = (current + 1) + " / " + steps.length;
    document.getElementById("prev").disabled = current === 0;
    document.getElementById("next").disabled = current === steps.length - 1;
    document.getElementById("step-title").textContent = step.kind === "leaf"
      ? "leaf " + step.name + ": its gradient is complete"
      : step.op + (step.config ? " (" + step.config + ")" : "") + " \u2192 " + step.name;
    document.getElementById("rule").textContent = step.rule;
    var numbers = document.getElementById("numbers");
    numbers.textContent = "";
    numbers.appendChild(block(step.kind === "leaf" ? step.name + ".grad += g, where g ="
      : "gradient arriving at " + step.name + " (g)", step.grad_out));
    step.sends.forEach(function (s) {
      numbers.appendChild(block("sends to " + s.to, s));
    });
  }

  document.getElementById("next").addEventListener("click", function () { show(current + 1); });
  document.getElementById("prev").addEventListener("click", function () { show(current - 1); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "ArrowRight") { show(current + 1); event.preventDefault(); }
    if (event.key === "ArrowLeft") { show(current - 1); event.preventDefault(); }
  });
  document.body.dataset.steps = String(steps.length);
  if (steps.length) show(0);
})();
